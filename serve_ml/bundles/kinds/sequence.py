"""``lstm_autoencoder``: an LSTM autoencoder over ``window_steps`` consecutive readings.

The encoder reads the window; its last hidden state, repeated once per step, is what
the decoder rebuilds the window from. The error is the window's mean squared
reconstruction error, and the verdict is the window's last step's: a sensor that
drifts slowly moves whole windows together, which a window model learns as normal
where a point model (one reading at a time) sees every drifted reading as new.
Serving runs the trained torch module in inference mode on whole batches of windows.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

import numpy as np
import torch
from pydantic import Field
from torch import nn

from serve_ml.bundles.kinds.base import KindSpec, ModelKind, Progress, train_reconstruction


class SequenceAutoencoder(KindSpec):
    """An LSTM autoencoder over ``window_steps`` consecutive readings."""

    kind: Literal["lstm_autoencoder"] = "lstm_autoencoder"
    window_steps: int = Field(ge=2, le=4096, description="Readings per window, e.g. 30.")
    hidden_size: int = Field(ge=1, le=4096, description="LSTM hidden size.")
    num_layers: int = Field(default=1, ge=1, le=8, description="Stacked LSTM layers.")
    centre: bool = Field(default=False, description="Subtract each window's own mean per feature first: the model "
                         "then judges how the readings move within the window, not their level, so a slow drift "
                         "of the level is not an anomaly (and a fault that only shifts the level is not seen "
                         "once it fills the window).")


def centred(x: np.ndarray, spec: SequenceAutoencoder) -> np.ndarray:
    return x - x.mean(axis=1, keepdims=True) if spec.centre else x


class LstmAutoencoder(nn.Module):
    def __init__(self, n_features: int, spec: SequenceAutoencoder) -> None:
        super().__init__()
        self.encoder = nn.LSTM(n_features, spec.hidden_size, num_layers=spec.num_layers, batch_first=True)
        self.decoder = nn.LSTM(spec.hidden_size, spec.hidden_size, num_layers=spec.num_layers, batch_first=True)
        self.output = nn.Linear(spec.hidden_size, n_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (batch, steps, features)
        _, (h, _) = self.encoder(x)
        code = h[-1].unsqueeze(1).expand(-1, x.shape[1], -1)
        out, _ = self.decoder(code)
        return self.output(out)


class TorchSequenceScorer:
    """Inference over scaled windows ``(rows, steps, features)``."""

    def __init__(self, module: LstmAutoencoder, spec: SequenceAutoencoder) -> None:
        self.module = module.eval()
        self.spec = spec

    def errors(self, x: np.ndarray) -> np.ndarray:
        """Mean squared reconstruction error per window."""
        with torch.inference_mode():
            t = torch.from_numpy(np.ascontiguousarray(centred(x, self.spec), dtype=np.float32))
            diff = (self.module(t) - t).double().numpy()
        return np.einsum("ijk,ijk->i", diff, diff) / (x.shape[1] * x.shape[2])


class SequenceAutoencoderKind(ModelKind):
    name = "lstm_autoencoder"
    spec = SequenceAutoencoder
    input = "windows"

    def default_spec(self, n_features: int, options: Mapping[str, Any]) -> SequenceAutoencoder:
        hidden = options.get("hidden")
        return SequenceAutoencoder(window_steps=int(options.get("window_steps") or 30),
                                   hidden_size=int(hidden[0]) if hidden else max(8, 2 * n_features),
                                   centre=bool(options.get("centre", False)))

    def expected_shapes(self, n_features: int, spec: KindSpec) -> dict[str, tuple[int, ...]]:
        assert isinstance(spec, SequenceAutoencoder)
        return {k: tuple(v.shape) for k, v in LstmAutoencoder(n_features, spec).state_dict().items()}

    def scorer(self, state: dict[str, torch.Tensor], spec: KindSpec) -> TorchSequenceScorer:
        assert isinstance(spec, SequenceAutoencoder)
        n_features = int(state["output.weight"].shape[0])
        module = LstmAutoencoder(n_features, spec)
        module.load_state_dict(state)
        return TorchSequenceScorer(module, spec)

    def fit(self, x: np.ndarray, spec: KindSpec, *, seed: int, epochs: int, batch_size: int,
            progress: Progress, label: str) -> dict[str, torch.Tensor]:
        """Train on scaled normal windows ``x`` of shape (windows, steps, features)."""
        assert isinstance(spec, SequenceAutoencoder)
        if x.ndim != 3 or x.shape[1] != spec.window_steps:
            raise ValueError(f"expected windows of {spec.window_steps} steps, got shape {x.shape}")
        torch.manual_seed(seed)
        module = LstmAutoencoder(x.shape[2], spec)
        data = torch.from_numpy(centred(x, spec).astype(np.float32))
        return train_reconstruction(module, data, seed=seed, epochs=epochs, batch_size=batch_size, progress=progress,
                                    label=label)
