"""The hot path reads no files, validates no bundle and does no per-row Python work,
and the audit that says so sees each of those when it happens."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_ml.bench.hotpath import PER_ROW_NOISE, RouteAudit, Trace, audit, trace_call
from serve_ml.bundles.loader import load_bundle


def test_the_detectors_see_file_reads_bundle_loads_and_per_row_loops(demo_root: Path, tmp_path: Path) -> None:
    probe = tmp_path / "probe.txt"
    probe.write_text("x")
    assert trace_call(probe.exists).fs_calls  # os.stat: no audit event, seen by the profiler
    assert trace_call(probe.read_text).fs_calls["open " + str(probe)] == 1
    loaded = trace_call(lambda: load_bundle(demo_root / "press-02" / "7.5kW" / "1.0.0", demo_root))
    assert loaded.loading_frames and loaded.fs_calls
    lines = [trace_call(lambda n=n: [abs(i) for i in range(n)]).lines for n in (10, 1010)]
    assert lines[1] - lines[0] >= 1000  # a comprehension: at least a line per element


@pytest.fixture(scope="module")
def audited(demo_root: Path) -> tuple[Trace, dict[str, RouteAudit]]:
    single, routes = audit(demo_root)
    return single, {r.route: r for r in routes}


def test_a_warm_single_row_predict_reads_no_files_and_loads_no_bundle(
        audited: tuple[Trace, dict[str, RouteAudit]]) -> None:
    single, _ = audited
    assert single.lines > 0  # it was traced at all
    assert not single.fs_calls
    assert not single.loading_frames


@pytest.mark.parametrize("route", ["row bulk", "columnar JSON", "columnar binary", "V2 binary"])
def test_warm_bulk_routes_read_no_files_and_load_no_bundle(
        audited: tuple[Trace, dict[str, RouteAudit]], route: str) -> None:
    r = audited[1][route]
    assert r.small.lines > 0 and r.large.lines > 0
    assert not r.small.fs_calls and not r.large.fs_calls
    assert not r.small.loading_frames and not r.large.loading_frames


@pytest.mark.parametrize("route", ["row bulk", "columnar JSON", "columnar binary", "V2 binary"])
def test_bulk_routes_do_no_per_row_python_work(audited: tuple[Trace, dict[str, RouteAudit]], route: str) -> None:
    assert abs(audited[1][route].lines_per_extra_row) < PER_ROW_NOISE
