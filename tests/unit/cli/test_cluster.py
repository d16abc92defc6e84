"""``serve-ml predict`` against a real HTTP server whose reads need a token."""

from __future__ import annotations

import json

import pytest

from serve_ml.cli.main import main
from serve_ml.deployments.api import create_api
from serve_ml.deployments.auth import TokenGuard
from serve_ml.deployments.local import LocalCore, serve_in_thread
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.conftest import DEMO_ROOT

READ_TOKEN, ADMIN_TOKEN = "cli-read-token-00000001", "cli-admin-token-0001"
READING = ["air_temp_k=300.2", "process_temp_k=310.1", "speed_rpm=1500", "torque_nm=41",
           "vibration_rms_mm_s=1.4", "current_a=11.4"]


@pytest.mark.parametrize("env", [{"SERVE_ML_READ_TOKEN": READ_TOKEN}, {"SERVE_ML_ADMIN_TOKEN": ADMIN_TOKEN}])
def test_predict_sends_a_token_that_may_read(env: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    core = LocalCore(ScoringService(DEMO_ROOT, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=10,
                     guard=TokenGuard(ADMIN_TOKEN, READ_TOKEN))
    for name in ("SERVE_ML_READ_TOKEN", "SERVE_ML_ADMIN_TOKEN", "SERVE_ML_ADMIN_TOKEN_FILE"):
        monkeypatch.delenv(name, raising=False)
    with serve_in_thread(create_api(core, max_request_bytes=1 << 20)) as address:
        argv = ["predict", "--url", f"http://{address}", "pump-03", *READING]
        assert main(argv) == 1  # no token in the environment: refused
        assert json.loads(capsys.readouterr().out)["error"] == "Unauthenticated"
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        assert main(argv) == 0
        verdict = json.loads(capsys.readouterr().out)
    assert verdict["equipment_id"] == "pump-03" and "score" in verdict
