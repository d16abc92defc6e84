"""One management service: activate, roll back, unpin, upload and sync, for the Serve
graph and the in-process app alike.

What differs between the two is only where the live-version state lives (the
control-plane actor, read by every replica; or this process) and whether other
replicas must be waited for. That is a :class:`LiveState`; the algorithm, its
persistence and its reports are written once, here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

from serve_ml.bundles.archive import install_archive
from serve_ml.bundles.catalog import Override
from serve_ml.scoring.history import History, record_catalog, record_change
from serve_ml.scoring.service import ScoringService, diff_catalogs
from serve_ml.scoring.versions import decide, outcome, override_dict

Key = tuple[str, str]


class LiveState(Protocol):
    """Where explicit live versions, their history and the sync generation are kept."""

    async def history(self) -> list[dict[str, Any]]: ...
    async def apply(self, key: Key, override: Override | None, entry: dict[str, Any]) -> int: ...
    async def bump(self, reason: str) -> int: ...
    async def state(self) -> tuple[int, Mapping[Key, Override]]: ...
    async def converge(self, generation: int, equipment: Collection[str]) -> bool:
        """True once every other replica serving ``equipment`` serves ``generation``
        (bounded wait)."""
        ...
    async def reconcile(self) -> dict[str, Any] | None:
        """Start whatever follows a sync beyond the catalog (e.g. graph redeploys)."""
        ...


class LocalState:
    """Live state of a single process: nothing else to tell or wait for."""

    def __init__(self) -> None:
        self.generation = 0
        self.overrides: dict[Key, Override] = {}
        self.changes: list[dict[str, Any]] = []

    async def history(self) -> list[dict[str, Any]]:
        return list(self.changes)

    async def apply(self, key: Key, override: Override | None, entry: dict[str, Any]) -> int:
        if override is None:
            self.overrides.pop(key, None)
        else:
            self.overrides[key] = override
        self.changes.append(entry)
        return await self.bump(entry["action"])

    async def bump(self, reason: str) -> int:
        self.generation += 1
        return self.generation

    async def state(self) -> tuple[int, Mapping[Key, Override]]:
        return self.generation, dict(self.overrides)

    async def converge(self, generation: int, equipment: Collection[str]) -> bool:
        return True

    async def reconcile(self) -> dict[str, Any] | None:
        return None


class Management:
    def __init__(self, service: ScoringService, live: LiveState, history: History) -> None:
        self.service = service
        self.live = live
        self.history = history

    async def live_history(self) -> list[dict[str, Any]]:
        return await self.live.history()

    async def install(self, archive: bytes) -> str:
        bundle = await asyncio.to_thread(install_archive, archive, Path(self.service.root))
        return "/".join(bundle.key)

    async def _reload(self) -> None:
        # The state read after a bump is at least as new as it; reloads never go back
        # (ScoringService.reload), so concurrent changes end on the newest.
        current, overrides = await self.live.state()
        await asyncio.to_thread(self.service.reload, current, overrides)

    async def change_live(self, action: str, eq: str, power: str, *, version: str | None = None,
                          pin: bool = True, reason: str = "") -> dict[str, Any]:
        override, entry = decide(action, self.service.catalog, eq, power, await self.live.history(),
                                 version=version, pin=pin, reason=reason)
        generation = await self.live.apply((eq, power), override, entry)
        await self._reload()
        converged = await self.live.converge(generation, self.service.catalog.equipment_ids())
        persisted = await record_change(self.history, entry, override_dict(override))
        await record_catalog(self.history, self.service.catalog)
        return outcome(entry, self.service.catalog, (eq, power), generation=generation,
                       converged=converged, persisted=persisted)

    async def sync(self) -> dict[str, Any]:
        # Another thread of this process (a generation watcher) may rescan as soon as
        # the counter moves; report against the catalog from before the bump, or a
        # sync could say nothing was added.
        before = self.service.catalog
        generation = await self.live.bump("sync")
        await self._reload()
        report = diff_catalogs(before, self.service.catalog)
        report["generation"] = generation
        # Only equipment still in the catalog: a removed one's deployment may already be
        # gone, and a call to it would wait for replicas that never come.
        report["converged"] = await self.live.converge(generation, self.service.catalog.equipment_ids())
        report["recorded"] = await record_catalog(self.history, self.service.catalog)
        deployments = await self.live.reconcile()
        if deployments is not None:
            report["deployments"] = deployments
        return report
