"""Warm-up check: a bundle must reproduce the outputs recorded at build time.

Catches weights or code that load but score differently (a corrupted but
re-checksummed file, an incompatible numeric library) before anything is served.
"""

from __future__ import annotations

import math

import numpy as np

from serve_ml.bundles.loader import Bundle
from serve_ml.bundles.scoring import materialise, score_group
from serve_ml.core.errors import BundleInvalid


def verify_warmup(bundle: Bundle) -> None:
    if bundle.warmup is None or bundle.manifest.warmup is None:
        return
    spec = bundle.manifest.warmup
    rows, expected = bundle.warmup.rows, bundle.warmup.expected  # shapes checked by its schema
    names = sorted(rows[0])
    try:
        cols = {f: np.array([r[f] for r in rows], dtype=np.float64) for f in names}
        got = materialise(score_group(bundle, cols, len(rows), enable_xgb=True))
    except Exception as exc:  # a FeatureError or bad row shape is a broken warm-up file
        raise BundleInvalid(str(bundle.path), f"warm-up rows cannot be scored: {exc}") from None
    for i, (g, e) in enumerate(zip(got, expected, strict=True)):
        if not isinstance(g, dict):
            raise BundleInvalid(str(bundle.path), f"warm-up row {i} failed: {g}")
        if not math.isclose(g["score"], e.score, rel_tol=spec.rtol, abs_tol=spec.atol):
            raise BundleInvalid(str(bundle.path),
                                f"warm-up mismatch: row {i} score {g['score']:.6g} != recorded {e.score:.6g}")
        if g["anomaly"] != e.anomaly:
            raise BundleInvalid(str(bundle.path), f"warm-up mismatch: row {i} verdict differs from the recorded one")
        probs = g["classifier"].get("probabilities")
        if e.probabilities and (probs is None or any(
                not math.isclose(probs.get(k, math.nan), v, rel_tol=1e-3, abs_tol=1e-5)
                for k, v in e.probabilities.items())):
            raise BundleInvalid(str(bundle.path), f"warm-up mismatch: row {i} classifier probabilities differ")
        rul = (g.get("rul") or {}).get("value")
        if e.rul is not None and (rul is None or not math.isclose(rul, e.rul, rel_tol=1e-3, abs_tol=1e-3)):
            raise BundleInvalid(str(bundle.path), f"warm-up mismatch: row {i} RUL {rul} != recorded {e.rul:.6g}")
