"""``dense_autoencoder``: a feed-forward autoencoder over one reading.

Training uses a torch module; serving runs the forward pass in numpy on weights
copied out of the state dict: for models this small, torch's per-call dispatch costs
more than the maths, and a batch of one must stay cheap. ``tests/unit/bundles``
proves both forwards agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from serve_ml.bundles.kinds.base import KindSpec, ModelKind, Progress, train_reconstruction


class DenseAutoencoder(KindSpec):
    """Encoder widths and activation; the decoder mirrors the encoder."""

    kind: Literal["dense_autoencoder"] = "dense_autoencoder"
    hidden: list[Annotated[int, Field(ge=1, le=4096)]] = Field(
        min_length=1, max_length=8, description="Encoder layer widths; the decoder mirrors them."
    )
    activation: Literal["tanh", "relu"] = Field(default="tanh", description="Hidden activation.")


def layer_sizes(n_features: int, arch: DenseAutoencoder) -> list[int]:
    """``[n, h1, .., hk, .., h1, n]``: the encoder widths mirrored by the decoder."""
    return [n_features, *arch.hidden, *reversed(arch.hidden[:-1]), n_features]


def build_module(n_features: int, arch: DenseAutoencoder) -> nn.Sequential:
    sizes = layer_sizes(n_features, arch)
    act = nn.Tanh if arch.activation == "tanh" else nn.ReLU
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class NumpyAutoencoder:
    """Inference-only forward pass over float64 weights; input is already scaled."""

    __slots__ = ("_layers", "_relu")

    def __init__(self, state: dict[str, torch.Tensor], arch: DenseAutoencoder) -> None:
        keys = sorted({k.rsplit(".", 1)[0] for k in state}, key=lambda k: int(k))
        self._layers = [
            (
                state[f"{k}.weight"].detach().numpy().astype(np.float64).T.copy(),
                state[f"{k}.bias"].detach().numpy().astype(np.float64).copy(),
            )
            for k in keys
        ]
        self._relu = arch.activation == "relu"

    def reconstruct(self, x: np.ndarray) -> np.ndarray:
        h = x
        last = len(self._layers) - 1
        for i, (w, b) in enumerate(self._layers):
            h = h @ w
            h += b
            if i < last:
                h = np.maximum(h, 0.0, out=h) if self._relu else np.tanh(h, out=h)
        return h

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per row."""
        diff = self.reconstruct(x)
        diff -= x
        return np.einsum("ij,ij->i", diff, diff) / x.shape[1]


class DenseAutoencoderKind(ModelKind):
    name = "dense_autoencoder"
    spec = DenseAutoencoder
    input = "rows"

    def default_spec(self, n_features: int, options: Mapping[str, Any]) -> DenseAutoencoder:
        hidden = options.get("hidden") or [max(4, 2 * n_features), max(1, n_features - 1)]
        return DenseAutoencoder(hidden=list(hidden))

    def expected_shapes(self, n_features: int, spec: KindSpec) -> dict[str, tuple[int, ...]]:
        assert isinstance(spec, DenseAutoencoder)
        return {k: tuple(v.shape) for k, v in build_module(n_features, spec).state_dict().items()}

    def scorer(self, state: dict[str, torch.Tensor], spec: KindSpec) -> NumpyAutoencoder:
        assert isinstance(spec, DenseAutoencoder)
        return NumpyAutoencoder(state, spec)

    def fit(self, x: np.ndarray, spec: KindSpec, *, seed: int, epochs: int, batch_size: int,
            progress: Progress, label: str) -> dict[str, torch.Tensor]:
        assert isinstance(spec, DenseAutoencoder)
        torch.manual_seed(seed)
        module = build_module(x.shape[1], spec).double()
        data = torch.from_numpy(x)
        return train_reconstruction(module, data, seed=seed, epochs=epochs, batch_size=batch_size, progress=progress,
                                    label=label)
