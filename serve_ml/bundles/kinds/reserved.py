"""Kinds the manifest reserves but this server does not serve yet."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from serve_ml.bundles.kinds.base import KindSpec


class SequenceAutoencoder(KindSpec):
    """An LSTM autoencoder over ``window_steps`` consecutive readings."""

    kind: Literal["lstm_autoencoder"] = "lstm_autoencoder"
    window_steps: int = Field(ge=2, le=4096, description="Readings per window, e.g. 30.")
    hidden_size: int = Field(ge=1, le=4096, description="LSTM hidden size.")
    num_layers: int = Field(default=1, ge=1, le=8, description="Stacked LSTM layers.")
