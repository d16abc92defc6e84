"""Derived features: a closed vocabulary of expressions a manifest may declare.

A bundle can use ``power_w`` or ``delta_t_k`` without every client sending them:
the manifest lists how each is computed from the reading's own features, and
:func:`derive` computes them, the same way for the builder, HTTP and the stream
(all score through :func:`serve_ml.bundles.scoring.score_group`). Nothing is
evaluated as code: an expression is an operator name from :data:`OPERATORS` and
the names of its inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

_TWO_PI_PER_MIN = 2 * math.pi / 60.0

# operator -> (number of inputs, function)
OPERATORS: dict[str, tuple[int, Callable[..., np.ndarray]]] = {
    "sum": (2, lambda a, b: a + b),
    "difference": (2, lambda a, b: a - b),
    "product": (2, lambda a, b: a * b),
    "ratio": (2, lambda a, b: np.divide(a, b, out=np.full_like(a, np.nan), where=b != 0)),
    # mechanical power of a shaft: torque [Nm] x speed [rpm] x 2*pi/60 = watts
    "power_w": (2, lambda torque, speed: torque * speed * _TWO_PI_PER_MIN),
}
Operator = Literal["sum", "difference", "product", "ratio", "power_w"]


class DerivedFeature(BaseModel):
    """``name = op(inputs...)``; inputs are reading features or earlier derived ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_]{0,63}$", description="Feature name it defines.")
    op: Operator = Field(description="Operator: sum, difference (a-b), product, ratio (a/b), "
                                     "power_w (torque_nm, speed_rpm -> W).")
    inputs: list[str] = Field(min_length=1, max_length=4, description="Input feature names, in operator order.")

    @model_validator(mode="after")
    def _arity(self) -> DerivedFeature:
        want = OPERATORS[self.op][0]
        if len(self.inputs) != want:
            raise ValueError(f"{self.op} takes {want} inputs, got {len(self.inputs)}")
        if self.name in self.inputs:
            raise ValueError(f"derived feature {self.name!r} uses itself")
        return self


def check_order(derived: Sequence[DerivedFeature]) -> None:
    """Names are unique and each is defined before it is used."""
    seen: set[str] = set()
    names = {d.name for d in derived}
    if len(names) != len(derived):
        raise ValueError("a derived feature is defined twice")
    for d in derived:
        late = [i for i in d.inputs if i in names and i not in seen]
        if late:
            raise ValueError(f"derived feature {d.name!r} uses {late} before they are defined")
        seen.add(d.name)


def raw_inputs(derived: Sequence[DerivedFeature]) -> list[str]:
    """The reading features the derived ones are computed from."""
    names = {d.name for d in derived}
    return list(dict.fromkeys(i for d in derived for i in d.inputs if i not in names))


def derive(columns: Mapping[str, np.ndarray], derived: Sequence[DerivedFeature]) -> dict[str, np.ndarray]:
    """``columns`` plus every derived feature whose inputs are all present."""
    out = dict(columns)
    for d in derived:
        if all(i in out for i in d.inputs):
            out[d.name] = np.asarray(OPERATORS[d.op][1](*(out[i] for i in d.inputs)), dtype=np.float64)
    return out
