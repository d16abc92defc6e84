"""Where a running ``serve-ml up`` says it is, and calling its management API."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil

from serve_ml.core.settings import Settings

STATE_FILE = "state.json"
STOP_REQUEST_FILE = "stop-request"


def state_path(settings: Settings) -> Path:
    return settings.state_dir / STATE_FILE


def stop_request_path(settings: Settings) -> Path:
    """Written by ``serve-ml down`` just before it signals ``up`` (the signal then
    reached ``up`` alone, not its whole process group)."""
    return settings.state_dir / STOP_REQUEST_FILE


def read_state(settings: Settings) -> dict[str, Any] | None:
    try:
        state = json.loads(state_path(settings).read_text())
    except (OSError, ValueError):
        return None
    return state if alive(state.get("pid")) else None  # else stale: its writer is gone


def alive(pid: Any) -> bool:
    """True if ``pid`` runs; a zombie (exited, not yet reaped by its parent) is not alive."""
    try:
        return psutil.Process(int(pid)).status() != psutil.STATUS_ZOMBIE
    except (psutil.Error, TypeError, ValueError):
        return False


def admin_request(s: Settings, method: str, path: str, url: str | None, **kw: object) -> int:
    """Call a management endpoint with SERVE_ML_ADMIN_TOKEN; print the JSON answer."""
    import httpx

    base = url or (read_state(s) or {}).get("http_url")
    if not base:
        print("serve-ml is not running; start it with `make up` or pass --url", file=sys.stderr)
        return 1
    token = s.admin_secret()
    if not token:
        print("set SERVE_ML_ADMIN_TOKEN (or SERVE_ML_ADMIN_TOKEN_FILE) to the server's admin token", file=sys.stderr)
        return 1
    r = httpx.request(method, f"{base}/api/v1/serve-ml{path}", headers={"Authorization": f"Bearer {token}"},
                      timeout=120, **kw)  # type: ignore[arg-type]
    print(json.dumps(r.json(), indent=2))
    return 0 if r.status_code == 200 else 1
