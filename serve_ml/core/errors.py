"""One error hierarchy for the whole project.

Every error carries its HTTP status and builds its own message, so the HTTP edge
translates them in exactly one place (``deployments.api``) and the stream
pipeline can use the same message as a dead-letter reason.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


class ServeMLError(Exception):
    """Base class. ``status_code`` is what the HTTP edge answers with."""

    status_code: int = 500

    def __init__(self, message: str, *, detail: Mapping[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail: dict[str, Any] = dict(detail or {})

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {"error": type(self).__name__, "message": self.message}
        if self.detail:
            body["detail"] = self.detail
        return body

    def __reduce__(self) -> tuple[Any, ...]:
        # Subclasses take other constructor arguments, so rebuild from the fields:
        # every attribute (retry_after_s, reason, status_code...) crosses a Ray
        # process boundary intact.
        return (_rebuild, (type(self), dict(self.__dict__)))


def _rebuild(cls: type[ServeMLError], fields: dict[str, Any]) -> ServeMLError:
    err = cls.__new__(cls)
    Exception.__init__(err, fields.get("message", ""))
    err.__dict__.update(fields)
    return err


MAX_NAMES_LISTED = 10
"""An error names at most this many alternatives: a bulk request of unknown ids must
not get the whole fleet back once per row."""


def _names(items: Iterable[str]) -> str:
    items = sorted(items)
    if not items:
        return "(none)"
    shown = ", ".join(items[:MAX_NAMES_LISTED])
    return shown if len(items) <= MAX_NAMES_LISTED else f"{shown} and {len(items) - MAX_NAMES_LISTED} more"


class BundleInvalid(ServeMLError):
    """A bundle on disk failed validation; it is never served."""

    status_code = 422

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"bundle {path} refused: {reason}", detail={"path": path, "reason": reason})
        self.reason = reason


class NotFound(ServeMLError):
    status_code = 404


class EquipmentNotFound(NotFound):
    def __init__(self, equipment_id: str, known: Iterable[str]) -> None:
        super().__init__(
            f"unknown equipment_id {equipment_id!r}; known: {_names(known)}",
            detail={"equipment_id": equipment_id},
        )


class PowerNotFound(NotFound):
    def __init__(self, equipment_id: str, power: str, known: Iterable[str]) -> None:
        super().__init__(
            f"equipment {equipment_id!r} has no power class {power!r}; known: {_names(known)}",
            detail={"equipment_id": equipment_id, "power": power},
        )


class VersionNotFound(NotFound):
    def __init__(self, equipment_id: str, power: str, version: str, known: Iterable[str]) -> None:
        super().__init__(
            f"equipment {equipment_id!r} power {power!r} has no model_version {version!r}; "
            f"known: {_names(known)}",
            detail={"equipment_id": equipment_id, "power": power, "model_version": version},
        )


class AmbiguousPower(ServeMLError):
    status_code = 400

    def __init__(self, equipment_id: str, candidates: Iterable[str], why: str) -> None:
        cands = sorted(candidates)
        super().__init__(
            f"cannot choose a power class for equipment {equipment_id!r} ({why}); "
            f"candidates: {_names(cands)}; pass 'power' explicitly",
            detail={"equipment_id": equipment_id, "candidates": cands},
        )


class FeatureError(ServeMLError):
    """Missing, unknown or non-finite features; names every offending feature."""

    status_code = 422

    def __init__(self, problems: Mapping[str, str]) -> None:
        parts = "; ".join(f"{name}: {why}" for name, why in sorted(problems.items()))
        super().__init__(f"invalid features: {parts}", detail={"features": dict(problems)})


class InvalidQuery(ServeMLError):
    status_code = 422


class PayloadTooLarge(ServeMLError):
    status_code = 413


class UnsupportedMediaType(ServeMLError):
    status_code = 415


class Unauthenticated(ServeMLError):
    status_code = 401

    def __init__(self, message: str = "missing or malformed bearer token") -> None:
        super().__init__(message)


class Forbidden(ServeMLError):
    status_code = 403

    def __init__(self, message: str = "not allowed") -> None:
        super().__init__(message)


class BundleExists(ServeMLError):
    """An upload of a version that is already in the root (bundles are immutable)."""

    status_code = 409


class NothingToRollBack(ServeMLError):
    status_code = 409


class Overloaded(ServeMLError):
    """The target deployment's queue is full; the client should retry later."""

    status_code = 503

    def __init__(self, what: str, retry_after_s: int = 1) -> None:
        super().__init__(f"{what} is overloaded; retry after {retry_after_s}s")
        self.retry_after_s = retry_after_s


class Unavailable(ServeMLError):
    status_code = 503


class GatewayTimeout(ServeMLError):
    status_code = 504
