"""Property-based fuzzing of the HTTP API from its own OpenAPI schema (schemathesis
with every check: server errors, undocumented statuses and bodies, responses that
break their schema, auth that is not enforced, valid requests refused, invalid ones
accepted) against a running server with a database and a read token. Every failure
must be one the README explains as a limit of what OpenAPI can state (``EXPLAINED``);
anything else fails the test. Bounded examples so it fits CI."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from serve_ml.bench.servers import wait_ready
from serve_ml.core.ports import free_port
from serve_ml.pipelines.stack import Stack

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
API = "/api/v1/serve-ml"
# (operation, check) pairs that are limits of OpenAPI, each explained in the README's
# "A truthful contract": the request is valid by the schema but refused by a rule the
# schema cannot state (which power class a reading falls in, a binary body's length
# against its query, one time before another).
EXPLAINED = {
    (f"POST {API}/predict", "ST202"),  # the power class is chosen from the reading's own values
    (f"POST {API}/predict/columns", "ST202"),  # columns of equal length; the bundle's features
    (f"POST {API}/predict/columns/binary", "ST202"),  # body length = rows x features x dtype size
    (f"POST {API}/maintenance", "ST202"),  # starts_at before ends_at
    (f"PUT {API}/thresholds", "ST202"),  # warning/critical limits in order (min <= max, warning inside critical)
    (f"PUT {API}/alarm-rules", "ST202"),  # raise_count <= raise_window
    (f"GET {API}/equipment/{{equipment_id}}/aggregates", "ST202"),  # range or start/end, not both
    (f"GET {API}/alarm-rules/history", "ST202"),  # what target may be depends on scope
    (f"GET {API}/thresholds", "ST202"),  # likewise; and PostgreSQL text holds no NUL character
    ("POST /v2/models/{name}/infer", "ST202"),  # a body that is JSON, or JSON + binary tensors
    ("POST /v2/models/{name}/versions/{version}/infer", "ST202"),
}


def failures(report: str) -> set[tuple[str, str]]:
    """(operation, check code) for each failure in schemathesis's report."""
    found, operation = set(), None
    for line in report.splitlines():
        header = re.match(r"^_+ (GET|POST|PUT|PATCH|DELETE) (\S+) _+$", line)
        if header:
            operation = f"{header.group(1)} {header.group(2)}"
            continue
        code = re.match(r"^- (ST\d+) ", line)
        if code and operation:
            found.add((operation, code.group(1)))
    return found


def test_schema_fuzzing_finds_only_explained_failures(stack: Stack, serve_root: Path, tmp_path: Path) -> None:
    port = free_port()
    env = {**os.environ, "SERVE_ML_ROOT": str(serve_root), "DATABASE_URL": stack.database_url,
           "KAFKA_BOOTSTRAP": stack.bootstrap,  # the dead-letter route reads the stream's broker
           "SERVE_ML_ADMIN_TOKEN": "fuzz-admin-token-01", "SERVE_ML_READ_TOKEN": "fuzz-read-token-0001"}
    server = subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "serve_ml.deployments.local:create_local_app",
                               "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning"],
                              env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "server.log").open("w"))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, 60)
        out = subprocess.run(
            [str(BIN / "schemathesis"), "run", f"{base}/openapi.json", "--checks", "all",
             "-n", "30", "--generation-deterministic", "--phases", "examples,fuzzing",
             "-H", "Authorization: Bearer fuzz-admin-token-01",  # so management endpoints are fuzzed past auth too
             # a health probe's 503 is its purpose; the fuzzer cannot generate gzip bodies
             "--exclude-path", f"{API}/stream/health", "--exclude-path", f"{API}/bundles/upload"],
            capture_output=True, text=True, timeout=900, cwd=tmp_path, env={**os.environ, "NO_COLOR": "1"})
        print(out.stdout)
        assert "generated" in out.stdout, out.stdout[-3000:] + out.stderr[-2000:]
        unexplained = failures(out.stdout) - EXPLAINED
        assert not unexplained, (sorted(unexplained), out.stdout[-6000:])
        assert httpx.get(f"{base}{API}/health/live").status_code == 200  # still up
    finally:
        server.terminate()
        server.wait(10)
