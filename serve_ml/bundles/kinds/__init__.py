"""The model-kind registry, keyed by the manifest's ``model.kind``.

To add a kind: write a module with a :class:`~serve_ml.bundles.kinds.base.ModelKind`
subclass and add one instance to ``_BUILT_IN`` below (or call :func:`register` from
code that embeds serve-ml). The manifest, loader, scorer and builder need no edits.
"""

from __future__ import annotations

from typing import Any

from serve_ml.bundles.kinds.base import KindSpec, ModelKind
from serve_ml.bundles.kinds.dense import DenseAutoencoderKind
from serve_ml.bundles.kinds.sequence import SequenceAutoencoderKind

_BUILT_IN: tuple[ModelKind, ...] = (DenseAutoencoderKind(), SequenceAutoencoderKind())
# Names the manifest schema declares for kinds this version does not serve: the
# loader refuses them by name. None at present.
RESERVED: dict[str, type[KindSpec]] = {}

_registry: dict[str, ModelKind] = {k.name: k for k in _BUILT_IN}


def register(kind: ModelKind) -> None:
    """Add a kind. A name already taken (or reserved) is refused."""
    if kind.name in _registry or kind.name in RESERVED:
        raise ValueError(f"model kind {kind.name!r} is already registered")
    _registry[kind.name] = kind


def unregister(name: str) -> None:
    """Remove a kind added with :func:`register` (built-in kinds stay)."""
    if any(k.name == name for k in _BUILT_IN):
        raise ValueError(f"model kind {name!r} is built in")
    _registry.pop(name, None)


def names() -> list[str]:
    return sorted(_registry)


def get(name: str) -> ModelKind | None:
    """The registered kind, or None for a reserved or unknown name."""
    return _registry.get(name)


def parse_spec(value: Any) -> KindSpec:
    """Validate a manifest's ``model`` block against its kind's own spec."""
    if isinstance(value, KindSpec):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("kind"), str):
        raise ValueError(f"model must be an object with a 'kind' (one of {', '.join(names())})")
    kind = value["kind"]
    spec = _registry[kind].spec if kind in _registry else RESERVED.get(kind)
    if spec is None:
        raise ValueError(f"unknown model kind {kind!r}; this server knows {', '.join(names() + sorted(RESERVED))}")
    return spec.model_validate(value)


__all__ = ["RESERVED", "KindSpec", "ModelKind", "get", "names", "parse_spec", "register", "unregister"]
