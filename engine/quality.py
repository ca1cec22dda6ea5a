"""Data-quality checks on a window (pure): NaN/inf, flat line, clipping."""

from __future__ import annotations

__all__ = ["QUALITY_FLAGS", "quality_flag", "quality_flags"]

import numpy as np
from numba import njit

from machinewatch.engine.config import StreamConfig
from machinewatch.engine.features.base import bit_views, float_extremes
from machinewatch.engine.numba_opts import NJIT_REDUCE

QUALITY_FLAGS = ("nan", "flatline", "clipping")


#: a ~2 us kernel keeps the GIL: releasing it per window would cost a reacquisition each time,
#: up to the switch interval (5 ms) while the event loop runs Python (the GIL convoy)
@njit(**{**NJIT_REDUCE, "nogil": False})
def _scan(x: np.ndarray, keys: np.ndarray, ukeys: np.ndarray, clip: float) -> tuple[float, float, float, int]:
    """NaN-if-non-finite marker, min, max and the count of ``|x| >= clip``.

    Min and max come from the extremes of the bit patterns (``keys``, ``ukeys``:
    :func:`.features.base.bit_views`, :func:`.features.base.float_extremes`): a float min/max
    keeps a numba loop scalar, and four numpy passes cost ~25 us per window.
    """
    bad = 0.0
    n = 0
    for j in range(x.shape[0]):  # floats and 32-bit ints in separate loops vectorise better
        v = np.float64(x[j])
        bad += v - v
        if abs(v) >= clip:
            n += 1
    smin = keys[0]
    smax = keys[0]
    umin = ukeys[0]
    umax = ukeys[0]
    for j in range(keys.shape[0]):
        k = keys[j]
        u = ukeys[j]
        smin = min(smin, k)
        smax = max(smax, k)
        umin = min(umin, u)
        umax = max(umax, u)
    lo, hi = float_extremes(smin, smax, umin, umax, keys, x)
    return bad, lo, hi, n


def quality_flag(values: np.ndarray, stream: StreamConfig) -> str | None:
    """The first data-quality problem of a window, or ``None`` when it is fit to score.

    >>> from machinewatch.engine.config import StreamConfig
    >>> s = StreamConfig("v", "vibration", 100.0, 4, 4, clip_level=1.0)
    >>> [quality_flag(np.array(v, np.float32), s) for v in ([0, 1, 0, 0.5], [2, 2, 2, 2], [0, 1, 0, -1])]
    [None, 'flatline', 'clipping']
    """
    a = np.ascontiguousarray(values).reshape(-1)
    if a.dtype != np.float32 and a.dtype != np.float64:
        a = a.astype(np.float64)
    bad, lo, hi, nclip = _scan(a, *bit_views(a), stream.clip_level)
    if bad != 0.0:
        return "nan"
    if stream.window_samples > 1 and hi - lo <= stream.flatline_p2p:
        return "flatline"
    if stream.clip_level > 0 and nclip >= max(2, a.size // 1000):
        return "clipping"
    return None


@njit(**{**NJIT_REDUCE, "nogil": False})
def _scan_rows(
    x: np.ndarray, keys: np.ndarray, ukeys: np.ndarray, clip: float, res: np.ndarray, nclip: np.ndarray
) -> None:
    for i in range(x.shape[0]):
        bad, lo, hi, n = _scan(x[i], keys[i], ukeys[i], clip)
        res[i, 0] = bad
        res[i, 1] = lo
        res[i, 2] = hi
        nclip[i] = n


def quality_flags(windows: np.ndarray, stream: StreamConfig) -> list[str | None]:
    """:func:`quality_flag` of every window of a stacked batch ``(n, ...)`` in one kernel call."""
    n = windows.shape[0]
    a = np.ascontiguousarray(windows).reshape(n, -1)
    if a.dtype != np.float32 and a.dtype != np.float64:
        a = a.astype(np.float64)
    if n == 0 or a.shape[1] == 0:
        return [quality_flag(w, stream) for w in a]
    res = np.empty((n, 3))
    nclip = np.empty(n, dtype=np.int64)
    _scan_rows(a, *bit_views(a), stream.clip_level, res, nclip)
    out: list[str | None] = []
    flat = stream.window_samples > 1
    need = max(2, a.shape[1] // 1000)
    for (bad, lo, hi), nc in zip(res.tolist(), nclip.tolist(), strict=True):
        if bad != 0.0:
            out.append("nan")
        elif flat and hi - lo <= stream.flatline_p2p:
            out.append("flatline")
        elif stream.clip_level > 0 and nc >= need:
            out.append("clipping")
        else:
            out.append(None)
    return out
