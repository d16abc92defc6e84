"""Where a setting applies: an equipment, its type, or a location and everything
under it; and the order in which they are consulted, most specific first."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Scope = Literal["equipment", "type", "location"]


@dataclass(frozen=True, slots=True)
class Placement:
    """What the registry says of one equipment that resolution needs."""

    type: str | None
    location: tuple[str, ...]


UNPLACED = Placement(None, ())


def scope_chain(equipment_id: str, place: Placement) -> list[tuple[Scope, str]]:
    """The scopes of one equipment, most specific first: itself, its type, then its
    location deepest node first (a location target is its path joined by "/")."""
    chain: list[tuple[Scope, str]] = [("equipment", equipment_id)]
    if place.type:
        chain.append(("type", place.type))
    chain += [("location", "/".join(place.location[:d])) for d in range(len(place.location), 0, -1)]
    return chain
