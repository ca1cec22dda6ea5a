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
    "RowScratch",
    "iforest_depths",
    "qlinear",
    "qmahalanobis_row",
    "qpca_row",
    "quantize_columns",
    "quantize_rows",
    "warmup",
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


@njit(**NJIT)
def _qvec(v: np.ndarray, q: np.ndarray) -> float:
    """One row of :func:`_quantize_rows`: ``q`` int8 and the returned scale."""
    m = 0.0
    for j in range(v.shape[0]):
        a = abs(v[j])
        if a > m:
            m = a
    sc = m / 127.0 if m > 0.0 else 1.0
    inv = 1.0 / sc
    for j in range(v.shape[0]):
        r = np.rint(v[j] * inv)
        if r > 127.0:
            r = 127.0
        elif r < -127.0:
            r = -127.0
        q[j] = np.int8(r)
    return sc


@njit(**NJIT)
def _qmv(q: np.ndarray, s: float, w: np.ndarray, ws: np.ndarray, out: np.ndarray) -> None:
    """``out = (q @ w) * s * ws``, int32 accumulation (one row of :func:`_qmatmul`, zero bias)."""
    k = q.shape[0]
    for j in range(w.shape[1]):
        acc = np.int32(0)
        for t in range(k):
            acc += np.int32(q[t]) * np.int32(w[t, j])
        out[j] = np.float64(acc) * s * ws[j] + 0.0


@njit(**NJIT)
def _qmv_t(q: np.ndarray, s: float, w: np.ndarray, out: np.ndarray) -> None:
    """``out = (q @ w.T) * s``, int32 accumulation, unit column scales."""
    k = q.shape[0]
    for j in range(w.shape[0]):
        acc = np.int32(0)
        for t in range(k):
            acc += np.int32(q[t]) * np.int32(w[j, t])
        out[j] = np.float64(acc) * s * 1.0 + 0.0


@njit(**NJIT)
def _standardise(x: np.ndarray, center: np.ndarray, scale: np.ndarray, z: np.ndarray) -> None:
    for j in range(x.shape[0]):
        z[j] = (x[j] - center[j]) / scale[j]


@njit(**NJIT)
def qmahalanobis_row(
    x: np.ndarray,
    cs: np.ndarray,
    w1: np.ndarray,
    w1s: np.ndarray,
    b: np.ndarray,
    q: np.ndarray,
    contrib: np.ndarray,
) -> float:
    """Score and contributions of one row of the int8 Mahalanobis model in one kernel call.

    The same arithmetic as ``QuantizedMahalanobis.score``/``contributions`` (``x`` standardised,
    quantised per row, ``y = z L``, ``d^2 / f``; ``P z = y L^T`` re-quantised). ``cs`` holds the
    center and scale rows, ``b`` three float64 scratch rows (:class:`RowScratch`), ``q`` the
    int8 scratch; ``contrib`` receives the contributions. Few arguments: each array argument
    costs ~0.2 us to unbox on every call, and this runs once per scored window.
    """
    f = x.shape[0]
    z = b[0]
    y = b[1]
    u = b[2]
    _standardise(x, cs[0], cs[1], z)
    s = _qvec(z, q)
    _qmv(q, s, w1, w1s, y)
    tot = 0.0
    for j in range(y.shape[0]):
        tot += y[j] * y[j]
        u[j] = y[j] * w1s[j]
    s = _qvec(u, q)
    _qmv_t(q, s, w1, y)  # y now holds P z
    for j in range(f):
        c = z[j] * y[j] / f
        contrib[j] = c if c > 0.0 else 0.0
    return float(tot / f)


@njit(**NJIT)
def qpca_row(
    x: np.ndarray,
    cs: np.ndarray,
    w1: np.ndarray,
    w1s: np.ndarray,
    wr: np.ndarray,
    wrs: np.ndarray,
    spe_ref: float,
    b: np.ndarray,
    q: np.ndarray,
    contrib: np.ndarray,
) -> float:
    """Score and contributions of one row of the int8 PCA model in one kernel call; arguments
    packed like :func:`qmahalanobis_row`'s (``b``: four scratch rows)."""
    f = x.shape[0]
    k = w1.shape[1]
    z = b[0]
    u = b[1]
    r = b[2]
    back = b[3]
    _standardise(x, cs[0], cs[1], z)
    s = _qvec(z, q)
    _qmv(q, s, w1, w1s, u)
    _qmv(q, s, wr, wrs, r)
    t2 = 0.0
    for j in range(k):
        t2 += u[j] * u[j]
        u[j] = u[j] * w1s[j]
    spe = 0.0
    for j in range(f):
        spe += r[j] * r[j]
    s = _qvec(u[:k], q)
    _qmv_t(q[:k], s, w1, back)
    for j in range(f):
        c = z[j] * back[j] / k + r[j] * r[j] / spe_ref
        contrib[j] = c if c > 0.0 else 0.0
    return float(t2 / k + spe / spe_ref)


class RowScratch:
    """Preallocated float64 buffers of one model's single-row path (not thread-safe: one per
    model, used by the thread that scores)."""

    __slots__ = ("f64", "i8")

    def __init__(self, n_float: int, n_int8: int, *, rows: int = 4) -> None:
        self.f64 = np.empty((rows, n_float), dtype=np.float64)
        self.i8 = np.empty(n_int8, dtype=np.int8)


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


def warmup() -> None:
    """Compile (or load from numba's cache) the single-row kernels before the first score."""
    f = 3
    x = np.ones(f)
    w = np.ones((f, f), dtype=np.int8)
    c = np.empty(f)
    sc = RowScratch(f, f)
    cs = np.stack([x, x])
    qmahalanobis_row(x, cs, w, x, sc.f64, sc.i8, c)
    qpca_row(x, cs, w[:, :1].copy(), x[:1].copy(), w, x, 1.0, sc.f64, sc.i8, c)
