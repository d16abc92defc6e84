"""schemathesis with every check against a running server, and the failures the
README explains as limits of what OpenAPI can state (its "A truthful contract")."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

BIN = Path(sys.executable).parent
API = "/api/v1/serve-ml"
# (operation, check) pairs that are limits of OpenAPI, each explained in the README's
# "A truthful contract": the request is valid by the schema but refused by a rule the
# schema cannot state (which power class a reading falls in, a binary body's length
# against its query, one time before another).
EXPLAINED = {
    (f"POST {API}/predict", "ST202"),  # the power class is chosen from the reading's own values
    (f"POST {API}/predict/bulk", "ST202"),  # every reading of a window has the same names
    (f"POST {API}/predict/columns", "ST202"),  # columns of equal length; the bundle's features
    (f"POST {API}/predict/columns/binary", "ST202"),  # body length = rows x features x dtype size
    (f"POST {API}/maintenance", "ST202"),  # starts_at before ends_at
    (f"PUT {API}/thresholds", "ST202"),  # warning/critical limits in order (min <= max, warning inside critical)
    (f"PUT {API}/alarm-rules", "ST202"),  # raise_count <= raise_window
    (f"GET {API}/equipment/{{equipment_id}}/aggregates", "ST202"),  # range or start/end, not both
    (f"GET {API}/equipment/{{equipment_id}}/predictions", "ST202"),  # start before end, each with a timezone
    (f"GET {API}/equipment/{{equipment_id}}/readings", "ST202"),
    (f"GET {API}/alarm-rules/history", "ST202"),  # what target may be depends on scope
    (f"GET {API}/thresholds", "ST202"),  # likewise; and PostgreSQL text holds no NUL character
    (f"POST {API}/train", "ST202"),  # start before end; a live bundle of that equipment and power class
    ("POST /v2/models/{name}/infer", "ST202"),  # a body that is JSON, or JSON + binary tensors
    ("POST /v2/models/{name}/versions/{version}/infer", "ST202"),
}


def schemathesis_run(base: str, admin_token: str, cwd: Path, *, examples: int,
                     exclude_path_regex: str | None = None) -> str:
    """``schemathesis run --checks all`` over the server's own OpenAPI document, as an
    admin (so management endpoints are fuzzed past auth too); its report."""
    more = ["--exclude-path-regex", exclude_path_regex] if exclude_path_regex else []
    out = subprocess.run(
        [str(BIN / "schemathesis"), "run", f"{base}/openapi.json", "--checks", "all",
         "-n", str(examples), "--generation-deterministic", "--phases", "examples,fuzzing",
         "-H", f"Authorization: Bearer {admin_token}",
         # a health probe's 503 is its purpose; the fuzzer cannot generate gzip bodies
         "--exclude-path", f"{API}/stream/health", "--exclude-path", f"{API}/bundles/upload", *more],
        capture_output=True, text=True, timeout=900, cwd=cwd, env={**os.environ, "NO_COLOR": "1"})
    print(out.stdout)
    if "generated" not in out.stdout:
        raise AssertionError(f"schemathesis did not run: {out.stdout[-3000:]} {out.stderr[-2000:]}")
    return out.stdout


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


def unexplained_failures(report: str) -> set[tuple[str, str]]:
    return failures(report) - EXPLAINED
