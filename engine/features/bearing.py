"""Bearing fault lines read from the envelope spectrum, as multiples of shaft speed."""

from __future__ import annotations

__all__ = ["ENVELOPE_LINES", "envelope_names", "envelope_orders"]

import numpy as np

from machinewatch.engine.config import BearingGeometry

#: (feature name, fault order key, harmonic): BPFO and BPFI with their 2nd harmonic, the ball
#: spin line at 2 x BSF (a ball defect strikes both races once per spin turn) and the cage (FTF).
ENVELOPE_LINES: tuple[tuple[str, str, int], ...] = (
    ("env_bpfo", "bpfo", 1),
    ("env_bpfo_h2", "bpfo", 2),
    ("env_bpfi", "bpfi", 1),
    ("env_bpfi_h2", "bpfi", 2),
    ("env_bsf2", "bsf", 2),
    ("env_ftf", "ftf", 1),
)


def envelope_names(bearing: BearingGeometry | None) -> tuple[str, ...]:
    """Names of the envelope features (none without a bearing geometry)."""
    return () if bearing is None else tuple(name for name, _, _ in ENVELOPE_LINES)


def envelope_orders(bearing: BearingGeometry) -> np.ndarray:
    """Orders (multiples of shaft speed) of :data:`ENVELOPE_LINES`, float64.

    >>> g = BearingGeometry(9, 7.94, 39.04)
    >>> np.round(envelope_orders(g), 3).tolist()
    [3.585, 7.17, 5.415, 10.83, 4.713, 0.398]
    """
    o = bearing.orders()
    return np.array([o[key] * h for _, key, h in ENVELOPE_LINES], dtype=np.float64)
