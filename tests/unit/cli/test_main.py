"""The console command's own flags, and one version everywhere it is shown."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import serve_ml
from serve_ml.deployments.api import create_api
from serve_ml.deployments.local import LocalCore
from serve_ml.scoring.metrics import NoMetrics
from serve_ml.scoring.service import ScoringService
from tests.conftest import DEMO_ROOT


def test_version_flag_prints_the_package_version() -> None:
    out = subprocess.run([str(Path(sys.executable).parent / "serve-ml"), "--version"], capture_output=True,
                         text=True, check=True, timeout=60)
    assert out.stdout.strip() == f"serve-ml {serve_ml.__version__}"


def test_installed_metadata_and_openapi_carry_the_same_version() -> None:
    assert version("serve-ml") == serve_ml.__version__
    core = LocalCore(ScoringService(DEMO_ROOT, enable_xgb=False, metrics=NoMetrics()), max_bulk_rows=10)
    assert create_api(core, max_request_bytes=1024).openapi()["info"]["version"] == serve_ml.__version__
