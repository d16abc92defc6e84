"""The pieces that keep a local Ray cluster on loopback, without Ray running: the
HAProxy wrapper (run for real, in front of a stand-in binary that reports what it
was given) and the narrowing of wildcard gRPC addresses. The e2e security test
lists the sockets of a whole `serve-ml up`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from serve_ml.deployments.loopback import _narrowed, haproxy_binary, write_haproxy_wrapper

# The bind lines of Ray 2.60's HAProxy template, as rendered with an operator who
# chose to serve HTTP on every interface.
CONFIG = """global
    stats socket /private/admin.sock mode 666 level admin
frontend prometheus
    bind :9101
    mode http
frontend http_frontend
    bind *:8000
listen stats
  bind *:8404
  stats enable
frontend other
    bind *:84040
"""


def _run_wrapper(tmp_path: Path, *args: str) -> tuple[list[str], str]:
    real = tmp_path / "real-haproxy"
    real.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    real.chmod(0o700)
    wrapper = write_haproxy_wrapper(tmp_path, str(real), (8404, 9101))
    out = subprocess.run([str(wrapper), *args], capture_output=True, text=True, check=True).stdout
    argv = out.splitlines()
    return argv, Path(argv[argv.index("-f") + 1]).read_text()


def test_the_wrapper_narrows_stats_and_metrics_binds_only(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(CONFIG)
    argv, narrowed = _run_wrapper(tmp_path, "-db", "-f", str(cfg), "-dR", "-sf", "123", "456")
    assert argv == ["-db", "-f", f"{cfg}.loopback", "-dR", "-sf", "123", "456"]
    assert "    bind 127.0.0.1:9101\n" in narrowed and "  bind 127.0.0.1:8404\n" in narrowed
    # the HTTP frontend keeps the operator's choice; another port that merely starts alike is untouched
    assert "    bind *:8000\n" in narrowed and "    bind *:84040\n" in narrowed
    assert cfg.read_text() == CONFIG  # Ray's own file stays as Ray wrote it
    assert (tmp_path / "haproxy").stat().st_mode & 0o777 == 0o700


def test_the_wrapper_passes_arguments_through_when_there_is_no_config(tmp_path: Path) -> None:
    real = tmp_path / "real-haproxy"
    real.write_text('#!/bin/sh\nprintf "%s\\n" "$@"\n')
    real.chmod(0o700)
    wrapper = write_haproxy_wrapper(tmp_path, str(real), (8404, 9101))
    out = subprocess.run([str(wrapper), "-v", "a b"], capture_output=True, text=True, check=True).stdout
    assert out.splitlines() == ["-v", "a b"]


def test_a_missing_config_fails_instead_of_running_haproxy_on_every_interface(tmp_path: Path) -> None:
    real = tmp_path / "real-haproxy"
    real.write_text("#!/bin/sh\necho RAN\n")
    real.chmod(0o700)
    wrapper = write_haproxy_wrapper(tmp_path, str(real), (8404, 9101))
    done = subprocess.run([str(wrapper), "-f", str(tmp_path / "nope.cfg")], capture_output=True, text=True)
    assert done.returncode != 0 and "RAN" not in done.stdout


def test_wildcard_grpc_addresses_are_narrowed_to_loopback() -> None:
    assert _narrowed("[::]:0") == "127.0.0.1:0"
    assert _narrowed("0.0.0.0:9000") == "127.0.0.1:9000"
    assert _narrowed("10.1.2.3:9000") == "10.1.2.3:9000"
    assert _narrowed("127.0.0.1:0") == "127.0.0.1:0"


def test_the_real_haproxy_is_found_past_a_wrapper_left_in_the_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # a process that starts a second cluster still has the first one's wrapper in its environment
    real = haproxy_binary()
    wrapper = write_haproxy_wrapper(tmp_path, real, (8404, 9101))
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(wrapper))
    assert haproxy_binary() == real
    wrapper.unlink()  # and that cluster's private directory is gone
    assert haproxy_binary() == real
    own = tmp_path / "operators-haproxy"
    own.write_text("#!/bin/sh\nexec true\n")
    own.chmod(0o700)
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(own))
    assert haproxy_binary() == str(own)  # an operator's own choice is kept


@pytest.mark.parametrize(("auth", "loopback"), [(True, True), (True, False), (False, True), (False, False)])
def test_join_env_matches_what_the_cluster_was_started_with(tmp_path: Path, auth: bool, loopback: bool) -> None:
    """A client on this machine joins with the same authentication mode and address
    mode as the Ray processes of the start (``ray_env``, and ``single_machine`` on a
    loopback start); Ray refuses a mismatch."""
    from serve_ml.core.settings import Settings
    from serve_ml.deployments.launch import join_env, ray_env
    from serve_ml.deployments.loopback import SINGLE_MACHINE_ENV

    settings = Settings(state_dir=tmp_path, ray_auth=auth, ray_loopback=loopback)
    started = ray_env(settings, tmp_path)
    joined = join_env(settings)
    assert joined["RAY_AUTH_MODE"] == started["RAY_AUTH_MODE"] == ("token" if auth else "disabled")
    assert joined.get("RAY_AUTH_TOKEN_PATH") == started.get("RAY_AUTH_TOKEN_PATH")
    for key, value in SINGLE_MACHINE_ENV.items():
        assert (joined.get(key) == value) is loopback
