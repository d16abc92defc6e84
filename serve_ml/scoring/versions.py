"""Activate, pin, unpin and roll back live versions: the decision logic.

The ingress validates a change against its catalog here, then hands the resulting
override to whoever holds cluster state (the control-plane actor, or the local
core), which bumps the sync generation so every replica reloads.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any

from serve_ml.bundles.catalog import Catalog, Override, version_key
from serve_ml.core.errors import NotFound, NothingToRollBack

Key = tuple[str, str]


def _check(catalog: Catalog, eq: str, power: str, version: str | None = None) -> None:
    catalog.get(eq, power, version)  # raises 404s naming what exists


def activate(catalog: Catalog, eq: str, power: str, version: str, *, pin: bool, reason: str) -> tuple[Override, dict]:
    _check(catalog, eq, power, version)
    newest = max(catalog.versions(eq, power), key=version_key)
    override = Override(version, pinned=pin, newest_at_set=None if pin else newest)
    return override, _entry("activate" if not pin else "pin", eq, power, catalog.live[(eq, power)], version, reason)


def unpin(catalog: Catalog, eq: str, power: str, *, reason: str) -> tuple[None, dict]:
    _check(catalog, eq, power)
    newest = max(catalog.versions(eq, power), key=version_key)
    return None, _entry("unpin", eq, power, catalog.live[(eq, power)], newest, reason)


def rollback(catalog: Catalog, eq: str, power: str, history: list[dict], *, reason: str) -> tuple[Override, dict]:
    """Back to the version that was live before the current one (pinned, so it stays)."""
    _check(catalog, eq, power)
    current = catalog.live[(eq, power)]
    for e in reversed(history):
        if (e["equipment_id"], e["power"]) == (eq, power) and e["to"] == current and e["from"] not in (None, current):
            if (eq, power, e["from"]) not in catalog.bundles:
                raise NotFound(f"previous version {e['from']!r} of {eq}/{power} is no longer in the bundle root")
            return Override(e["from"], pinned=True), _entry("rollback", eq, power, current, e["from"], reason)
    raise NothingToRollBack(f"{eq}/{power}: no earlier live version recorded to roll back to")


def _entry(action: str, eq: str, power: str, frm: str | None, to: str, reason: str) -> dict[str, Any]:
    return {"at": time.time(), "action": action, "equipment_id": eq, "power": power, "from": frm, "to": to,
            "reason": reason[:500]}


def override_dict(o: Override | None) -> dict[str, Any] | None:
    return asdict(o) if o else None


def decide(action: str, catalog: Catalog, eq: str, power: str, history: list[dict], *, version: str | None,
           pin: bool, reason: str) -> tuple[Override | None, dict[str, Any]]:
    """The override and history entry for one management action."""
    if action == "activate":
        return activate(catalog, eq, power, version or "", pin=pin, reason=reason)
    if action == "unpin":
        return unpin(catalog, eq, power, reason=reason)
    return rollback(catalog, eq, power, history, reason=reason)


def outcome(entry: dict[str, Any], catalog: Catalog, key: Key, **extra: Any) -> dict[str, Any]:
    return {**entry, "live": catalog.live[key], "pinned": catalog.pinned[key], **extra}
