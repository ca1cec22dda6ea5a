"""Numba int8 kernels behind typed wrappers: row quantisation, int8 x int8 -> int32 matmul, trees.

Quantisation scheme (one for every model):

- **weights**: symmetric int8 per output channel (column ``j`` of ``W`` has its own scale
  ``ws[j] = max |W[:, j]| / 127``), fixed at export time;
- **activations**: symmetric int8 per row, chosen at run time (``xs = max |x| / 127``), so an
  anomalous row with huge values is not clipped (a clipped anomaly would score like a mild one);
- **accumulation** in int32 (``127 * 127 * 2**17`` would overflow; feature counts are far
  below that), converted to float once per output: ``y = acc * xs * ws + b``.

Float only at the ends: standardising the input and the final score arithmetic.
"""

from __future__ import annotations

__all__ = [
    "QMAX",
    "iforest_depths",
    "qlinear",
    "quantize_columns",
    "quantize_rows",
]

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.numba_opts import NJIT

F64 = npt.NDArray[np.float64]
I8 = npt.NDArray[np.int8]
QMAX = 127


@njit(**NJIT)
def _quantize_rows(x: np.ndarray, q: np.ndarray, s: np.ndarray) -> None:
    n, f = x.shape
    for i in range(n):
        m = 0.0
        for j in range(f):
            a = abs(x[i, j])
            if a > m:
                m = a
        sc = m / 127.0 if m > 0.0 else 1.0
        s[i] = sc
        inv = 1.0 / sc
        for j in range(f):
            v = np.rint(x[i, j] * inv)
            if v > 127.0:
                v = 127.0
            elif v < -127.0:
                v = -127.0
            q[i, j] = np.int8(v)


@njit(**NJIT)
def _qmatmul(
    xq: np.ndarray, xs: np.ndarray, wq: np.ndarray, ws: np.ndarray, b: np.ndarray, out: np.ndarray
) -> None:
    n, k = xq.shape
    m = wq.shape[1]
    for i in range(n):
        for j in range(m):
            acc = np.int32(0)
            for t in range(k):
                acc += np.int32(xq[i, t]) * np.int32(wq[t, j])
            out[i, j] = np.float64(acc) * xs[i] * ws[j] + b[j]


@njit(**NJIT)
def _iforest_depths(
    x: np.ndarray,
    feature: np.ndarray,
    thr: np.ndarray,
    left: np.ndarray,
    right: np.ndarray,
    value: np.ndarray,
    value_scale: float,
    roots: np.ndarray,
    depth: np.ndarray,
    counts: np.ndarray,
) -> None:
    """Mean path length over the trees, and per feature how often it made the isolating split.

    The isolating split (the last one on a row's path) is what set the row apart; counting it
    per feature attributes an anomaly to the sensor that drove it.

    Children are tree-local indices (``-1`` marks a leaf); ``roots[t]`` is tree ``t``'s offset.
    """
    n = x.shape[0]
    n_trees = roots.shape[0]
    for i in range(n):
        total = 0.0
        for f in range(counts.shape[1]):
            counts[i, f] = 0.0
        for t in range(n_trees):
            r = roots[t]
            node = r
            last = -1
            while left[node] >= 0:
                f = feature[node]
                last = f
                if x[i, f] <= thr[node]:
                    node = r + left[node]
                else:
                    node = r + right[node]
            if last >= 0:
                counts[i, last] += 1.0
            total += value[node] * value_scale
        depth[i] = total / n_trees


def quantize_rows(x: npt.ArrayLike) -> tuple[I8, F64]:
    """Symmetric per-row int8 quantisation: ``x ~ q * s[:, None]``.

    >>> q, s = quantize_rows([[1.0, -2.0]])
    >>> q.tolist(), round(float(s[0]) * 127, 6)
    ([[64, -127]], 2.0)
    """
    a = np.ascontiguousarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"x must be 2-D, got shape {a.shape}")
    q = np.empty(a.shape, dtype=np.int8)
    s = np.empty(a.shape[0], dtype=np.float64)
    _quantize_rows(a, q, s)
    return q, s


def quantize_columns(w: npt.ArrayLike) -> tuple[I8, F64]:
    """Symmetric per-output-channel (column) int8 quantisation of a weight matrix."""
    a = np.asarray(w, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"weights must be 2-D, got shape {a.shape}")
    m = np.max(np.abs(a), axis=0)
    s = np.where(m > 0, m / QMAX, 1.0)
    q = np.clip(np.rint(a / s), -QMAX, QMAX).astype(np.int8)
    return np.ascontiguousarray(q), np.ascontiguousarray(s)


def qlinear(x: npt.ArrayLike, wq: I8, ws: F64, b: F64 | None = None) -> F64:
    """``x @ W + b`` with ``x`` quantised per row to int8, int32 accumulation.

    ``wq``/``ws`` come from :func:`quantize_columns`.
    """
    xq, xs = quantize_rows(x)
    if xq.shape[1] != wq.shape[0]:
        raise ValueError(f"x has {xq.shape[1]} columns, weights {wq.shape[0]} rows")
    bias = np.zeros(wq.shape[1]) if b is None else np.ascontiguousarray(b, dtype=np.float64)
    out = np.empty((xq.shape[0], wq.shape[1]), dtype=np.float64)
    _qmatmul(xq, xs, np.ascontiguousarray(wq), np.ascontiguousarray(ws, dtype=np.float64), bias, out)
    return out


def iforest_depths(
    x: npt.NDArray[np.generic], arrays: dict[str, np.ndarray], value_scale: float = 1.0
) -> tuple[F64, F64]:
    """Mean isolation depth of rows over flattened trees, plus per-feature isolating-split counts.

    ``x`` is float64 (float model) or int8 (int8 model, compared with int8 thresholds).
    ``arrays`` holds ``feature``, ``threshold``, ``left``, ``right``, ``value`` and ``roots``.
    """
    n, f = x.shape
    depth = np.empty(n, dtype=np.float64)
    counts = np.empty((n, f), dtype=np.float64)
    _iforest_depths(
        np.ascontiguousarray(x),
        arrays["feature"],
        arrays["threshold"],
        arrays["left"],
        arrays["right"],
        arrays["value"],
        float(value_scale),
        arrays["roots"],
        depth,
        counts,
    )
    return depth, counts
