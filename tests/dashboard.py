"""What the shipped Grafana dashboard queries, for the tests that check each series exists."""

from __future__ import annotations

import json
import re

from serve_ml.core.settings import REPO_ROOT

CLUSTER = REPO_ROOT / "cluster"

STREAM_PREFIXES = ("ray_serve_ml_stream_", "ray_serve_ml_mqtt_")


def dashboard_metrics(*, stream: bool | None = None) -> set[str]:
    """Every metric the dashboard queries; ``stream``: only the stream's (True) or
    only the serving graph's (False)."""
    dash = json.loads((CLUSTER / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {m for e in exprs for m in re.findall(r"\b(ray_[a-z_]+)", e)}
    return names if stream is None else {n for n in names if n.startswith(STREAM_PREFIXES) is stream}
