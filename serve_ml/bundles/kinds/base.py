"""What a modality's model is: the contract every model kind implements.

A kind turns a manifest's ``model`` block (its :class:`KindSpec`) into weights'
expected shapes, a scorer over scaled inputs and, for the builder, a way to train
one. Loader, scoring and builder talk to this contract only, so a new kind is one
module plus one line in :mod:`serve_ml.bundles.kinds`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from typing import Any, ClassVar, Literal, Protocol

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

Input = Literal["rows", "windows"]
Progress = Callable[[str], None]


class KindSpec(BaseModel):
    """A manifest's ``model`` block. Each kind subclasses it with its own fields."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: str = Field(description="The model kind; selects the implementation.")


class Scorer(Protocol):
    """A loaded model, ready to serve."""

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Per-row anomaly error of already-scaled input ``x`` of shape (rows, features)."""
        ...


class ModelKind(ABC):
    """One kind of modality model. Instances are stateless; state lives in the weights."""

    name: ClassVar[str]
    spec: ClassVar[type[KindSpec]]
    input: ClassVar[Input] = "rows"

    @abstractmethod
    def default_spec(self, n_features: int, options: Mapping[str, Any]) -> KindSpec:
        """The spec the builder writes for ``n_features`` inputs and the user's options."""

    @abstractmethod
    def expected_shapes(self, n_features: int, spec: KindSpec) -> dict[str, tuple[int, ...]]:
        """State-dict keys and shapes a valid weights file for ``spec`` has."""

    @abstractmethod
    def scorer(self, state: dict[str, torch.Tensor], spec: KindSpec) -> Scorer:
        """A serving model from weights already checked against :meth:`expected_shapes`."""

    @abstractmethod
    def fit(self, x: np.ndarray, spec: KindSpec, *, seed: int, epochs: int, batch_size: int,
            progress: Progress, label: str) -> dict[str, torch.Tensor]:
        """Train on scaled normal rows ``x``; return the weights to save."""


def train_reconstruction(module: torch.nn.Module, data: torch.Tensor, *, seed: int, epochs: int, batch_size: int,
                         progress: Progress, label: str) -> dict[str, torch.Tensor]:
    """Adam on the mean squared reconstruction error of ``data`` (rows or windows),
    shuffled by ``seed``; one progress message per epoch; the weights to save."""
    opt = torch.optim.Adam(module.parameters(), lr=5e-3)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        perm = torch.randperm(len(data), generator=gen)
        total = 0.0
        for start in range(0, len(data), batch_size):
            batch = data[perm[start:start + batch_size]]
            opt.zero_grad()
            loss = torch.mean((module(batch) - batch) ** 2)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(batch)
        progress(f"  [{label}] epoch {epoch + 1}/{epochs} loss {total / len(data):.5f}")
    return {k: v.detach().float().contiguous() for k, v in module.state_dict().items()}
