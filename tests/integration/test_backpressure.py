"""A full equipment queue answers 503 with Retry-After, loses nothing else, and the
service recovers when the load drops. Runs as a second application in the session's
Ray instance, with an equipment queue of one."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from ray import serve

from deployments.app import build_graph
from deployments.launch import app_args_from_config
from serve_ml.settings import Settings

pytestmark = pytest.mark.integration


def test_full_queue_gives_503_with_retry_after(cluster, serve_root: Path) -> None:
    settings = Settings(root=serve_root, http_port=cluster.http_port, max_bulk_rows=5000,
                        max_request_bytes=16 * 1024 * 1024)
    args = app_args_from_config(root=str(serve_root), max_dedicated_deployments=1, autoscaling={
        "min_replicas": 1, "max_replicas": 1}, equipment_max_ongoing_requests=1, equipment_max_queued_requests=1)
    serve.run(build_graph(args, settings), name="overload", route_prefix="/overload")
    base = f"{cluster.http_url}/overload/api/v1/serve-ml"
    rows = json.loads((serve_root / "mill-01" / "7.5kW" / "1.0.0" / "warmup.json").read_text())["rows"]
    body = {"readings": [{"equipment_id": "mill-01", "power": "7.5kW", "features": rows[i % len(rows)]}
                         for i in range(4000)]}
    try:
        def post(_: int) -> httpx.Response:
            return httpx.post(f"{base}/predict/bulk", json=body, timeout=60)

        with ThreadPoolExecutor(24) as pool:
            responses = list(pool.map(post, range(48)))
        codes = sorted({r.status_code for r in responses})
        rejected = [r for r in responses if r.status_code == 503]
        print(f"requests=48 ok={sum(r.status_code == 200 for r in responses)} rejected={len(rejected)}")
        assert set(codes) <= {200, 503}, codes
        assert rejected, "the queue never filled"
        assert any(r.status_code == 200 for r in responses)
        for r in rejected:
            assert r.headers.get("retry-after", "").isdigit(), r.headers
            assert "overloaded" in r.json()["message"]
        ok = [r.json() for r in responses if r.status_code == 200]
        assert all(len(b["results"]) == 4000 and b["errors"] == 0 for b in ok)
        assert post(0).status_code == 200  # recovered once the load dropped
    finally:
        serve.delete("overload")
