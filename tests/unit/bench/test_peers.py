"""``bench peers`` without the peers: every body it sends decodes to the same rows on
the receiving side, every answer form it reads gives the model core's scores, the
peer apps score like the model core, and the ratios and verdicts come out right."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import threading
from collections.abc import Iterator
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.bench import peers as P
from serve_ml.bench.loadgen import LoadResult, run_load, write_bodies, wrk_path
from serve_ml.bench.peer_servers import PeerEnv, copy_model_core
from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import from_binary, score_columns
from serve_ml.deployments.api.oip import encode_response as v2_encode
from serve_ml.deployments.api.oip import parse_infer, split_body


@pytest.fixture(scope="module")
def rows(demo_root: Path) -> list[dict[str, float]]:
    return P.rows_of(demo_root, 300)


def _columns(rows: list[dict[str, float]]) -> dict[str, np.ndarray]:
    return {f: np.array([r[f] for r in rows]) for f in rows[0]}


def test_every_bulk_body_decodes_to_the_same_rows(rows: list[dict[str, float]]) -> None:
    features = sorted(rows[0])
    want = _columns(rows)
    cols, n = from_binary(P.binary_columns(rows, features), ",".join(features), "float64", 10_000)
    assert n == len(rows) and all(np.array_equal(cols[f], want[f]) for f in features)
    body, head_len = P.v2_binary(rows, features)
    doc, tail = split_body(body, str(head_len))
    for req in (parse_infer(doc, tail, max_rows=10_000), parse_infer(orjson.loads(P.v2_json(rows, features)), b"",
                                                                     max_rows=10_000)):
        assert req.n == len(rows) and all(np.array_equal(req.columns[f], want[f]) for f in features)
    assert parse_infer(doc, tail, max_rows=10_000).binary_default  # answers asked for in binary too
    assert orjson.loads(P.json_columns(rows, features))["columns"] == {f: list(want[f]) for f in features}


def test_answer_scores_reads_serve_ml_json_and_v2_json_and_binary(demo_root: Path, rows: list[dict[str, float]]) -> None:
    catalog = Catalog.scan(demo_root)
    features = list(rows[0])
    expected = P.expected_scores(catalog, rows, features)
    result = score_columns(catalog, P.EQUIPMENT, P.POWER, None, _columns(rows), len(rows), enable_xgb=True)
    assert np.array_equal(P.answer_scores(orjson.dumps(result, option=orjson.OPT_SERIALIZE_NUMPY), None), expected)
    binary, head_len = P.v2_binary(rows, features)
    for form, length in ((P.v2_json(rows, features), None), (binary, str(head_len))):
        doc, tail = split_body(form, length)
        answer, head = v2_encode(P.EQUIPMENT, parse_infer(doc, tail, max_rows=10_000), result)
        got = P.answer_scores(answer, None if head is None else str(head))
        assert np.allclose(got, expected, rtol=0, atol=0)
    single = orjson.dumps({"equipment_id": P.EQUIPMENT, "score": float(expected[0])})
    assert P.answer_scores(single, None).tolist() == [expected[0]]


def test_the_fastapi_peer_scores_like_the_model_core(demo_root: Path, rows: list[dict[str, float]],
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_ML_PEER_ROOT", str(demo_root))
    from serve_ml.bench.peer_apps.fastapi_app import app

    catalog = Catalog.scan(demo_root)
    features = list(rows[0])
    with TestClient(app) as client:
        one = client.post("/predict", json={"features": rows[0]})
        assert one.status_code == 200
        assert P.answer_scores(one.content, None).tolist() == P.expected_scores(catalog, rows[:1], features).tolist()
        bulk = client.post("/predict/columns/binary", params={"features": ",".join(features)},
                           content=P.binary_columns(rows, features))
        assert bulk.status_code == 200
        assert np.array_equal(P.answer_scores(bulk.content, None), P.expected_scores(catalog, rows, features))


def test_the_peers_get_the_model_core_and_nothing_else_of_serve_ml(tmp_path: Path, demo_root: Path) -> None:
    core = copy_model_core(tmp_path)
    probe = ("import importlib.util, json, serve_ml\n"
             "from serve_ml.bench.peer_apps.model import PeerModel\n"
             "m = PeerModel()\n"
             "print(json.dumps({'file': serve_ml.__file__, 'scoring': importlib.util.find_spec('serve_ml.scoring') "
             "is not None, 'deployments': importlib.util.find_spec('serve_ml.deployments') is not None,"
             " 'answer': json.loads(m.score_row(m.catalog.live_bundle(m.equipment_id, m.power).warmup.point_rows()[0]))"
             "['rows']}))\n")
    # -S: no site hooks, so this venv's editable install of serve-ml cannot answer the
    # import; its packages (numpy, torch, xgboost) come from site-packages named plainly.
    env = {**os.environ, "PYTHONPATH": f"{core}:{sysconfig.get_paths()['purelib']}",
           "SERVE_ML_PEER_ROOT": str(demo_root)}
    out = subprocess.run([sys.executable, "-S", "-c", probe], env=env, capture_output=True, text=True, timeout=120,
                         cwd=tmp_path)  # not the checkout: its serve_ml would be found first
    assert out.returncode == 0, out.stderr[-2000:]
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["file"].startswith(str(core))
    assert not seen["scoring"] and not seen["deployments"]
    assert seen["answer"] == 1


def test_a_peer_virtualenv_is_reused_only_for_the_same_requirements(tmp_path: Path) -> None:
    env = PeerEnv("fastapi", tmp_path / "fastapi", ["fastapi==1", "numpy==2"])
    assert not env.ready()
    (env.path / "bin").mkdir(parents=True)
    env.python.write_text("")
    (env.path / "serve-ml-requirements.json").write_text(json.dumps(env.requirements))
    assert env.ready()
    assert not PeerEnv("fastapi", env.path, ["fastapi==2", "numpy==2"]).ready()


def test_no_wrk_no_bench(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_ML_LOADGEN", "python")
    with pytest.raises(P.NoWrk, match="needs wrk"):
        P.require_wrk()


def _lr(rps: float, p99_ms: float = 5.0) -> LoadResult:
    return LoadResult(rps, 1.0, p99_ms, 0, int(rps), "wrk")


def test_ratios_pair_each_repeat_with_the_best_peer_of_that_repeat() -> None:
    res = P.Results()
    for serve, fast, lit in ((100, 80, 120), (90, 100, 60)):
        res.add("single-16", P.SERVE, _lr(serve))
        res.add("single-16", "fastapi", _lr(fast))
        res.add("single-16", "litserve", _lr(lit))
    assert P._paired(res, "single-16", P.SERVE, ["fastapi", "litserve"], lambda r: r.rps) == \
        pytest.approx([100 / 120, 90 / 100])


def test_the_report_judges_each_target_on_its_figures() -> None:
    res = P.Results()
    servers = [P.SERVE, "fastapi"]
    for _ in range(3):
        for conc in (1, 16):
            res.add(f"single-{conc}", P.SERVE, _lr(900, p99_ms=14.0))
            res.add(f"single-{conc}", "fastapi", _lr(1000, p99_ms=9.0))
        for n in P.BULK_SIZES:
            res.add(f"bulk-{n}", P.SERVE, _lr(1.1 * 400_000 / n))
            res.add(f"bulk-{n}", P.SERVE_V2, _lr(0.5 * 400_000 / n))
            res.add(f"bulk-{n}", "fastapi", _lr(400_000 / n))
        for n in P.CURVE_SIZES:
            if n not in P.BULK_SIZES:
                res.add(f"bulk-{n}", P.SERVE, _lr(300_000 / n))
            res.add(f"floor-{n}", "floor", _lr(4_000_000 / n))
    inproc = {n: [600_000.0] * 3 for n in P.CURVE_SIZES}
    rep = P.report(res, inproc, 3, 1.0, servers, workers=1)
    verdicts = {f.name: f.met for f in rep.figures if f.target}
    assert verdicts["serve-ml single-row, 16 client(s) p99"] is True
    assert verdicts["serve-ml / best peer req/s, 16 client(s)"] is True  # 0.9 >= 0.8
    assert verdicts["serve-ml's faster form / best peer, bulk 1,000"] is True  # 1.1: the binary columnar form
    assert verdicts["client-visible errors (all cells)"] is True
    figures = {f.name: f.median for f in rep.figures}
    assert figures["curve 100,000 rows: serve-ml / model core"] == pytest.approx(0.5)


class _Echo(BaseHTTPRequestHandler):
    seen: list[Message] = []  # each request's headers (names case-insensitive)

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers["content-length"]))
        _Echo.seen.append(self.headers)
        self.send_response(200)
        self.send_header("content-length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def echo() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Echo)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("generator", ["wrk", "python"])
def test_both_load_generators_send_the_extra_headers(echo: str, generator: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_ML_LOADGEN", generator)
    if generator == "wrk" and wrk_path() is None:
        pytest.fail("wrk is not installed: `make install` installs it")
    _Echo.seen.clear()
    result = run_load(echo, write_bodies([b"\x00\x01binary", b"{}"]), 1, 1.0, "application/octet-stream",
                      {"Inference-Header-Content-Length": "2"})
    assert result.requests > 0 and result.errors == 0 and result.tool.startswith("wrk" if generator == "wrk" else "serve-ml")
    assert _Echo.seen and all(h.get("Inference-Header-Content-Length") == "2" for h in _Echo.seen)
    assert all(h.get("Content-Type") == "application/octet-stream" for h in _Echo.seen)


@pytest.mark.parametrize("workers", [1, 2])
def test_each_peer_is_started_with_the_workers_asked_for(tmp_path: Path, workers: int) -> None:
    from serve_ml.bench.peer_servers import PEER_VERSIONS, _launch

    for name in PEER_VERSIONS:
        cmd, base, ready = _launch(PeerEnv(name, tmp_path / name), tmp_path, tmp_path / "bundles", workers)
        assert base.startswith("http://127.0.0.1:") and ready.startswith("/")
        if name == "fastapi":
            assert cmd[cmd.index("--workers") + 1] == str(workers)
        elif name == "litserve":
            assert cmd[-1] == str(workers)
        elif name == "mlserver":
            settings = json.loads((tmp_path / "mlserver" / "settings.json").read_text())
            # one worker: inference in the server process, no hop to a pool of one
            assert settings["parallel_workers"] == (0 if workers == 1 else workers)
            model = json.loads((tmp_path / "mlserver" / "press-02" / "model-settings.json").read_text())
            assert model["parameters"]["uri"] == str(tmp_path / "bundles")
