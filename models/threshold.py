"""Alarm thresholds calibrated from healthy scores (separate from scoring)."""

from __future__ import annotations

__all__ = ["calibrate_threshold"]

import numpy as np
import numpy.typing as npt

from machinewatch.engine.errors import ModelError


def calibrate_threshold(
    healthy_scores: npt.ArrayLike, quantile: float = 0.995, margin: float = 1.25
) -> float:
    """A high quantile of healthy scores times a margin.

    >>> calibrate_threshold([1.0, 2.0, 3.0, 4.0], quantile=0.5, margin=2.0)
    5.0
    """
    s = np.asarray(healthy_scores, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        raise ModelError("no finite healthy scores to calibrate a threshold from")
    if not 0.0 < quantile < 1.0 or margin < 1.0:
        raise ModelError("quantile must be in (0, 1) and margin >= 1")
    q = float(np.quantile(s, quantile))
    return q * margin if q > 0 else max(float(np.max(s)), 1e-12) * margin
