"""The newest dead letters over the API: what the stream refused, why and from
where, read from the real broker's dead-letter topic."""

from __future__ import annotations

import secrets
import time
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from serve_ml.deployments.api import create_api
from serve_ml.deployments.local import LocalCore
from serve_ml.operations.dead_letters import DeadLetters
from serve_ml.pipelines.stack import Stack
from serve_ml.scoring.service import ScoringService
from tests.streamkit import now, produce_raw

pytestmark = pytest.mark.integration
API = "/api/v1/serve-ml"


def test_refused_records_are_listed_newest_first_with_their_reason(stack: Stack, serve_root: Path) -> None:
    marker = secrets.token_hex(4)
    bad = [b"not json " + marker.encode(),
           orjson.dumps({"equipment_id": f"ghost-{marker}", "ts": now().isoformat(), "features": {"a": 1.0}})]
    produce_raw(stack, stack.settings.features_topic, [(b"k", v) for v in bad])
    core = LocalCore(ScoringService(serve_root, enable_xgb=False), max_bulk_rows=10,
                     dead_letters=DeadLetters(stack.bootstrap, stack.settings.dead_letter_topic))
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as c:
        deadline, mine = time.monotonic() + 60, []
        while time.monotonic() < deadline and len(mine) < 2:
            r = c.get(f"{API}/stream/dead-letters", params={"limit": 200})
            assert r.status_code == 200, r.text
            mine = [d for d in r.json()["dead_letters"] if marker in d["value_preview"]]
            time.sleep(1)
        assert len(mine) == 2, mine
        by_value = {d["value_preview"]: d for d in mine}
        assert "not valid JSON" in by_value[bad[0].decode()]["reason"]
        assert f"unknown equipment_id 'ghost-{marker}'" in by_value[bad[1].decode()]["reason"]
        assert mine[0]["at"] >= mine[1]["at"]  # newest first
        assert all(d["headers"]["source_topic"] == stack.settings.features_topic for d in mine)
        assert c.get(f"{API}/stream/dead-letters", params={"limit": 0}).status_code == 422


def test_without_a_broker_it_says_so(serve_root: Path) -> None:
    core = LocalCore(ScoringService(serve_root, enable_xgb=False), max_bulk_rows=10)
    with TestClient(create_api(core, max_request_bytes=1 << 20)) as c:
        r = c.get(f"{API}/stream/dead-letters")
    assert r.status_code == 503 and "no stream broker configured" in r.json()["message"]
