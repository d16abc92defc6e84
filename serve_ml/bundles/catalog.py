"""The set of valid bundles under a root, which version is live, and resolution.

Version ordering rule: ``model_version`` directory names are PEP 440 versions and
the live version of an (equipment, power) is the newest by PEP 440 ordering
(``1.10.0`` > ``1.9.2`` > ``1.9.2rc1``), unless an explicit live map says otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from packaging.version import InvalidVersion, Version

from serve_ml.bundles.loader import Bundle, load_bundle
from serve_ml.bundles.manifest import PowerFromFeature, is_safe_segment
from serve_ml.bundles.warmup import verify_warmup
from serve_ml.core.errors import (
    AmbiguousPower,
    BundleInvalid,
    EquipmentNotFound,
    PowerNotFound,
    VersionNotFound,
)

RPM_NM_TO_KW = 2 * math.pi / 60 / 1000


def version_key(version: str) -> Version:
    return Version(version)


@dataclass(frozen=True, slots=True)
class Override:
    """An explicit live version. ``pinned`` overrides stay live whatever appears;
    unpinned ones yield once a version newer than ``newest_at_set`` is valid."""

    version: str
    pinned: bool = True
    newest_at_set: str | None = None


@dataclass(frozen=True, slots=True)
class Rejection:
    path: str
    reason: str


@dataclass
class Catalog:
    root: Path
    bundles: dict[tuple[str, str, str], Bundle] = field(default_factory=dict)
    rejected: list[Rejection] = field(default_factory=list)
    live: dict[tuple[str, str], str] = field(default_factory=dict)
    pinned: dict[tuple[str, str], bool] = field(default_factory=dict)
    live_equipment: frozenset[str] = frozenset()
    _powers: dict[str, list[str]] = field(default_factory=dict)

    # ---- building -------------------------------------------------------
    @classmethod
    def scan(
        cls,
        root: Path,
        *,
        equipment_ids: set[str] | None = None,
        live_overrides: Mapping[tuple[str, str], Override] | None = None,
        reuse: Mapping[tuple[str, str, str], Bundle] | None = None,
    ) -> Catalog:
        """Load every bundle under ``root`` (optionally only some equipment).

        ``reuse`` maps keys to already-loaded bundles: one whose manifest digest is
        unchanged on disk is kept as is instead of being reloaded.
        """
        root = Path(root).resolve()
        cat = cls(root=root)
        if not root.is_dir():
            cat.rejected.append(Rejection(str(root), "bundle root does not exist"))
            return cat
        for eq_dir in sorted(root.iterdir()):
            if eq_dir.name.startswith("."):
                continue
            if equipment_ids is not None and eq_dir.name not in equipment_ids:
                continue
            for power_dir in _subdirs(eq_dir, cat):
                for ver_dir in _subdirs(power_dir, cat):
                    cat._add(ver_dir, reuse or {})
        cat._choose_live(live_overrides or {})
        return cat

    def _add(self, path: Path, reuse: Mapping[tuple[str, str, str], Bundle]) -> None:
        try:
            version_key(path.name)
        except InvalidVersion:
            self.rejected.append(Rejection(str(path), f"{path.name!r} is not a PEP 440 version"))
            return
        key = (path.parent.parent.name, path.parent.name, path.name)
        old = reuse.get(key)
        try:
            if old is not None and _manifest_digest(path) == old.digest:
                self.bundles[key] = old
                return
            bundle = load_bundle(path, self.root)
            verify_warmup(bundle)  # nothing that fails its warm-up is ever visible
            self.bundles[key] = bundle
        except BundleInvalid as exc:
            self.rejected.append(Rejection(str(path), exc.reason))
        except OSError as exc:
            self.rejected.append(Rejection(str(path), f"unreadable: {exc}"))

    def _choose_live(self, overrides: Mapping[tuple[str, str], Override]) -> None:
        by_power: dict[tuple[str, str], list[str]] = {}
        for eq, power, ver in self.bundles:
            by_power.setdefault((eq, power), []).append(ver)
        for key, versions in by_power.items():
            newest = max(versions, key=version_key)
            o = overrides.get(key)
            usable = o is not None and o.version in versions and (
                o.pinned or o.newest_at_set is None or version_key(newest) <= version_key(o.newest_at_set))
            self.live[key] = o.version if usable else newest  # type: ignore[union-attr]
            self.pinned[key] = bool(usable and o.pinned)  # type: ignore[union-attr]
        self.live_equipment = frozenset(eq for eq, _ in self.live)
        for eq, power in sorted(self.live):
            self._powers.setdefault(eq, []).append(power)

    # ---- queries ---------------------------------------------------------
    def equipment_ids(self) -> list[str]:
        return sorted({eq for eq, _, _ in self.bundles})

    def powers(self, equipment_id: str) -> list[str]:
        return self._powers.get(equipment_id, [])

    def versions(self, equipment_id: str, power: str) -> list[str]:
        vs = [v for eq, p, v in self.bundles if eq == equipment_id and p == power]
        return sorted(vs, key=version_key)

    def live_bundle(self, equipment_id: str, power: str) -> Bundle:
        return self.bundles[(equipment_id, power, self.live[(equipment_id, power)])]

    def get(self, equipment_id: str, power: str, version: str | None) -> Bundle:
        """The bundle for an explicit power (and the live version unless pinned)."""
        if equipment_id not in self.live_equipment:
            raise EquipmentNotFound(equipment_id, self.equipment_ids())
        if (equipment_id, power) not in self.live:
            raise PowerNotFound(equipment_id, power, self.powers(equipment_id))
        if version is None:
            return self.live_bundle(equipment_id, power)
        b = self.bundles.get((equipment_id, power, version))
        if b is None:
            raise VersionNotFound(equipment_id, power, version, self.versions(equipment_id, power))
        return b

    def resolve(
        self,
        equipment_id: str,
        power: str | None,
        version: str | None,
        columns: Mapping[str, np.ndarray],
        n: int,
    ) -> list[tuple[Bundle, np.ndarray | None]]:
        """Assign rows to bundles. Returns ``[(bundle, row_indices or None for all)]``.

        With ``power`` omitted: the bucket whose ``power_range_kw`` contains each
        row's power; rows it cannot place go to the declared default bucket; if there
        is none, AmbiguousPower names the candidates.
        """
        if power is not None:
            return [(self.get(equipment_id, power, version), None)]
        powers = self.powers(equipment_id)
        if not powers:
            raise EquipmentNotFound(equipment_id, self.equipment_ids())
        cands = [self.get(equipment_id, p, None) for p in powers]
        if version is not None:
            cands = [self.bundles[(equipment_id, p, version)] for p in powers
                     if (equipment_id, p, version) in self.bundles]
            if not cands:
                known = sorted({v for eq, _, v in self.bundles if eq == equipment_id}, key=version_key)
                raise VersionNotFound(equipment_id, "(any)", version, known)
        if len(cands) == 1:
            return [(cands[0], None)]

        kw = _row_power_kw(cands, columns, n)
        chosen = np.full(n, -1)
        if kw is not None:
            hits = np.stack([(kw >= b.manifest.power_range_kw[0]) & (kw < b.manifest.power_range_kw[1])
                             for b in cands])
            unique = hits.sum(axis=0) == 1
            chosen[unique] = hits[:, unique].argmax(axis=0)
        undecided = chosen < 0
        if undecided.any():
            defaults = [i for i, b in enumerate(cands) if b.manifest.default_power]
            if len(defaults) != 1:
                why = ("reading carries no power" if kw is None else
                       "reading's power is in no single declared range") + (
                       "; no default power class declared" if not defaults else
                       "; several default power classes declared")
                raise AmbiguousPower(equipment_id, [b.manifest.power for b in cands], why)
            chosen[undecided] = defaults[0]
        out: list[tuple[Bundle, np.ndarray | None]] = []
        for i, b in enumerate(cands):
            idx = np.flatnonzero(chosen == i)
            if idx.size == n:
                return [(b, None)]
            if idx.size:
                out.append((b, idx))
        return out


def _row_power_kw(cands: list[Bundle], columns: Mapping[str, np.ndarray], n: int) -> np.ndarray | None:
    for b in cands:
        src = b.manifest.power_source
        if src is None:
            continue
        if isinstance(src, PowerFromFeature):
            if src.feature in columns:
                return columns[src.feature]
        elif src.torque_feature in columns and src.speed_feature in columns:
            return columns[src.torque_feature] * columns[src.speed_feature] * RPM_NM_TO_KW
    return None


def _subdirs(path: Path, cat: Catalog) -> list[Path]:
    if not path.is_dir():
        return []
    out = []
    for p in sorted(path.iterdir()):
        if p.name.startswith("."):
            continue  # temporary build/upload directories are dot-prefixed
        if not is_safe_segment(p.name):
            cat.rejected.append(Rejection(str(p), f"{p.name!r} is not a safe path segment"))
        elif p.is_symlink() and not p.resolve().is_relative_to(cat.root):
            cat.rejected.append(Rejection(str(p), "link pointing outside the root"))
        elif p.is_dir():
            out.append(p)
    return out


def _manifest_digest(path: Path) -> str:
    import hashlib

    return hashlib.sha256((path / "manifest.json").read_bytes()).hexdigest()
