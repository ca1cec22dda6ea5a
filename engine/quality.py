"""Data-quality checks on a window (pure): NaN/inf, flat line, clipping."""

from __future__ import annotations

__all__ = ["QUALITY_FLAGS", "quality_flag"]

import numpy as np
from machinewatch.engine.config import StreamConfig

QUALITY_FLAGS = ("nan", "flatline", "clipping")


def quality_flag(values: np.ndarray, stream: StreamConfig) -> str | None:
    """The first data-quality problem of a window, or ``None`` when it is fit to score.

    >>> from machinewatch.engine.config import StreamConfig
    >>> s = StreamConfig("v", "vibration", 100.0, 4, 4, clip_level=1.0)
    >>> [quality_flag(np.array(v, np.float32), s) for v in ([0, 1, 0, 0.5], [2, 2, 2, 2], [0, 1, 0, -1])]
    [None, 'flatline', 'clipping']
    """
    lo = float(np.min(values))
    hi = float(np.max(values))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return "nan"
    if stream.window_samples > 1 and hi - lo <= stream.flatline_p2p:
        return "flatline"
    if stream.clip_level > 0:
        n = int(np.count_nonzero(np.abs(values) >= stream.clip_level))
        if n >= max(2, values.size // 1000):
            return "clipping"
    return None
