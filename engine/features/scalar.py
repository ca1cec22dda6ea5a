"""Slow scalar features (temperature, speed, any scalar): level, slope, rate of change, range.

- ``level``: mean of the window (first, so a speed stream's first feature is its speed);
- ``slope``: least-squares slope per second over the window (sample times ``i / rate_hz``);
- ``roc``: ``(last - first) / duration`` per second, ``duration = (n - 1) / rate_hz``;
- ``min``, ``max``.

A one-sample window has slope 0 and roc 0. NaN/inf gives a NaN row and ``ok = False``.
"""

from __future__ import annotations

__all__ = ["SCALAR_NAMES", "ScalarExtractor"]

import math

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.features.base import F64, BoolArray, FeatureExtractor
from machinewatch.engine.numba_opts import NJIT

SCALAR_NAMES = ("level", "slope", "roc", "min", "max")


@njit(**NJIT)
def _scalar_batch(x: np.ndarray, rate: float, out: np.ndarray, ok: np.ndarray) -> None:
    nw, n = x.shape
    tmean = 0.5 * (n - 1)
    # sum over i of (i - tmean)^2, in sample units
    sxx = n * (n * n - 1) / 12.0
    for i in range(nw):
        row = x[i]
        s = 0.0
        mn = np.inf
        mx = -np.inf
        good = True
        for j in range(n):
            v = np.float64(row[j])
            if not math.isfinite(v):
                good = False
                break
            s += v
            mn = min(mn, v)
            mx = max(mx, v)
        ok[i] = good
        if not good:
            out[i, :] = np.nan
            continue
        mean = s / n
        sxy = 0.0
        for j in range(n):
            sxy += (j - tmean) * (np.float64(row[j]) - mean)
        out[i, 0] = mean
        out[i, 1] = sxy / sxx * rate if n > 1 else 0.0
        out[i, 2] = (np.float64(row[n - 1]) - np.float64(row[0])) * rate / (n - 1) if n > 1 else 0.0
        out[i, 3] = mn
        out[i, 4] = mx


class ScalarExtractor(FeatureExtractor):
    """Level, slope and rate of change of a slow scalar stream (see the module docstring)."""

    def __init__(self, stream: StreamConfig, machine: MachineConfig) -> None:
        super().__init__(stream, machine)
        if stream.channels != 1:
            raise ValueError(f"a {stream.kind} stream has one channel, got {stream.channels}")
        self.names = SCALAR_NAMES

    def _batch(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        _scalar_batch(x, float(self.stream.rate_hz), out, ok)
