"""Dense autoencoder: a torch module for training, a numpy forward for serving.

Serving runs the forward pass in numpy on weights copied out of the torch state
dict: for models this small, torch's per-call dispatch costs more than the maths,
and a batch of one must stay cheap. ``tests/unit/bundles`` proves both forwards agree.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from bundles.manifest import DenseAutoencoder


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


def expected_shapes(n_features: int, arch: DenseAutoencoder) -> dict[str, tuple[int, ...]]:
    """State-dict keys and shapes the module for this architecture has."""
    return {k: tuple(v.shape) for k, v in build_module(n_features, arch).state_dict().items()}


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
