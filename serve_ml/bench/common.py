"""Benchmark plumbing: repeated runs, medians with min/max, one table, one JSON file."""

from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from serve_ml.core.settings import REPO_ROOT, in_checkout

RESULTS_DIR = (REPO_ROOT if in_checkout() else Path.cwd()) / "bench-results"


@dataclass
class Figure:
    name: str
    unit: str
    runs: list[float]
    target: str | None = None
    met: bool | None = None
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs)


@dataclass
class Report:
    title: str
    figures: list[Figure] = field(default_factory=list)

    def add(self, fig: Figure) -> Figure:
        self.figures.append(fig)
        return fig

    def table(self) -> str:
        rows = [("figure", "median", "min", "max", "unit", "target", "met")]
        for f in self.figures:
            rows.append((f.name, _fmt(f.median), _fmt(min(f.runs)), _fmt(max(f.runs)), f.unit, f.target or "",
                         "" if f.met is None else ("MET" if f.met else "MISSED")))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        lines = [f"== {self.title} =="]
        for j, r in enumerate(rows):
            lines.append("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip())
            if j == 0:
                lines.append("  ".join("-" * w for w in widths))
        lines += [f"  * {f.name}: {f.note}" for f in self.figures if f.note]
        return "\n".join(lines)

    def write(self, name: str) -> Path:
        RESULTS_DIR.mkdir(exist_ok=True)
        path = RESULTS_DIR / f"{name}.json"
        body = {"title": self.title, "machine": machine(), "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "figures": [{**asdict(f), "median": f.median} for f in self.figures]}
        path.write_text(json.dumps(body, indent=2))
        return path


def _fmt(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 100 else f"{x:.3g}"


def machine() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()}


def time_it(fn: Callable[[], Any], *, min_time_s: float = 0.3) -> float:
    """Seconds per call, from enough calls to fill ``min_time_s``."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        el = time.perf_counter() - t0
        if el >= min_time_s:
            return el / n
