"""The scoring graph's deployment options (built, not deployed: no Ray cluster)."""

from __future__ import annotations

import numpy as np

from serve_ml.bundles.catalog import Catalog
from serve_ml.bundles.columns import CLASSIFIER_S, dumps, score_columns
from serve_ml.core.settings import DEMO_BUNDLES, Settings
from serve_ml.deployments.app import HOP_LIMIT_ENV, AppArgs, build_graph, hop_message_bytes


def _answer_bytes_per_row(rows: int = 2000) -> float:
    """What one row of the demo bundles' richest columnar answer weighs (classifier on)."""
    catalog = Catalog.scan(DEMO_BUNDLES)
    bundle = catalog.live_bundle("press-02", "7.5kW")
    warm = bundle.warmup.point_rows() if bundle.warmup else []
    cols = {f: np.array([warm[i % len(warm)][f] for i in range(rows)]) for f in warm[0]}
    out = score_columns(catalog, "press-02", "7.5kW", None, cols, rows, enable_xgb=True)
    out.pop(CLASSIFIER_S)
    return len(dumps(out)) / rows


def test_a_hop_carries_the_largest_request_and_answer_the_ingress_accepts() -> None:
    for s in (Settings(root=DEMO_BUNDLES), Settings(root=DEMO_BUNDLES, max_bulk_rows=100_000),
              Settings(root=DEMO_BUNDLES, max_request_bytes=64 << 20)):
        limit = hop_message_bytes(s)
        assert limit > s.max_request_bytes
        assert limit > s.max_bulk_rows * _answer_bytes_per_row() * 2  # room for richer bundles
        assert 4 << 20 <= limit < 1 << 31


def test_every_deployment_of_the_graph_gets_the_hop_limit() -> None:
    s = Settings(root=DEMO_BUNDLES, max_bulk_rows=100_000)
    app = build_graph(AppArgs(root=str(DEMO_BUNDLES)), s)
    ingress = app._bound_deployment
    deployments = [ingress, *(h._bound_deployment for h in ingress.init_args[0].values())]
    assert len(deployments) > 1
    for d in deployments:
        assert d.ray_actor_options["runtime_env"]["env_vars"][HOP_LIMIT_ENV] == str(hop_message_bytes(s)), d.name


def test_the_ingress_keeps_three_quarters_of_its_slots_from_websockets() -> None:
    """Sockets reach the ingress only when serve-ml-live is not deployed; each holds a
    request slot for as long as it is open."""
    for ongoing, sockets in ((64, 16), (8, 2), (3, 1), (1, 1)):
        s = Settings(root=DEMO_BUNDLES, max_ongoing_requests=ongoing)
        ingress = build_graph(AppArgs(root=str(DEMO_BUNDLES)), s)._bound_deployment
        assert ingress._deployment_config.max_ongoing_requests == ongoing
        assert ingress.init_args[1]["ws_max_connections"] == sockets
