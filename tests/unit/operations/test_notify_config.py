"""Notification routing rules and the sinks file: no network, no database."""

from __future__ import annotations

from pathlib import Path

import pytest

from serve_ml.operations.notify_config import Route, load_config, summary

EVENT = {"event": "opened", "alert_id": 7, "type": "threshold", "source": "current_a", "equipment_id": "p1",
         "severity": "major", "detail": {"sensor": "current_a", "value": 31.5, "limits": {"critical_max": 30.0}}}


@pytest.mark.parametrize("route, location, sent", [
    (Route(), None, True),
    (Route(min_severity="critical"), None, False),
    (Route(min_severity="major"), None, True),
    (Route(types=["anomaly"]), None, False),
    (Route(locations=["site-a"]), ("site-a", "hall-1"), True),
    (Route(locations=["site-a/hall-2"]), ("site-a", "hall-1"), False),
    (Route(locations=["site-a"]), None, False),  # unregistered equipment is nowhere
    (Route(events=["cleared"]), None, False),
])
def test_a_route_matches_on_severity_type_location_and_event(route: Route, location, sent: bool) -> None:
    assert route.matches(EVENT, location) is sent


def test_the_summary_says_what_where_and_why() -> None:
    assert summary(EVENT) == ("[MAJOR] threshold current_a alarm opened on p1: current_a = 31.5 "
                              "(limits {'critical_max': 30.0}) [alarm 7]")
    ack = summary({**EVENT, "event": "acknowledged", "actor": "ana (operator)", "comment": "seen"})
    assert "acknowledged on p1" in ack and "by ana (operator) (seen)" in ack


def test_the_file_is_validated_with_its_name_in_the_error(tmp_path: Path) -> None:
    f = tmp_path / "n.yaml"
    f.write_text("sinks:\n  - {name: a, kind: webhook, url: 'http://x/h', secret: short}\n")
    with pytest.raises(ValueError, match=r"n.yaml: sinks.0.webhook.secret: .*at least 16 characters") as err:
        load_config(f)
    assert "short" not in str(err.value)  # the secret itself is never repeated
    f.write_text("sinks:\n  - {name: a, kind: slack, url: 'http://x/h'}\n  - {name: a, kind: slack, url: 'http://y'}\n")
    with pytest.raises(ValueError, match="sink names must be unique: a"):
        load_config(f)
    f.write_text("sinks:\n  - {name: a, kind: pager, url: 'http://x/h'}\n")
    with pytest.raises(ValueError, match="kind"):
        load_config(f)
    f.write_text("sinks:\n  - {name: m, kind: email, host: h, sender: s@x, to: [t@x], route: {min_severity: major}}\n"
                 "backoff_initial_s: 2\nbackoff_max_s: 10\n")
    cfg = load_config(f)
    assert [cfg.backoff_s(n) for n in (1, 2, 3, 4, 5)] == [2, 4, 8, 10, 10]


def test_the_demo_sink_is_valid_and_points_where_nothing_listens(tmp_path: Path) -> None:
    import socket

    from serve_ml.core.ports import free_port
    from serve_ml.operations.demo import DEMO_SINK, write_demo_sinks

    port = free_port()
    cfg = load_config(write_demo_sinks(tmp_path, port))
    [sink] = cfg.sinks
    assert (sink.name, sink.kind, sink.url) == (DEMO_SINK, "slack", f"http://127.0.0.1:{port}/nothing-listens-here")
    assert cfg.fault_after_failures == 3 and sink.route.min_severity == "major"
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
