"""Spectrum helpers shared by the vibration and current kernels.

Conventions (the references in ``tests/engine/naive.py`` follow them too):

- Hann in the frequency domain: the periodic Hann window ``w[n] = 0.5 - 0.5 cos(2 pi n / N)``
  multiplies the signal, so its rFFT is the 3-tap convolution
  ``Xw[k] = 0.5 X[k] - 0.25 X[k-1] - 0.25 X[k+1]`` with ``X[-k] = conj(X[k])`` and
  ``X[N-k] = conj(X[k])``. One unwindowed rFFT thus feeds both the windowed features and the
  envelope (which wants the raw band).
- A line at ``f`` Hz searched with relative tolerance ``tol`` covers the bins whose centres lie
  in ``[f (1 - tol) - df/2, f (1 + tol) + df/2]``, clipped to the usable bins; an empty range
  (speed unknown, line above the usable band) gives NaN.
"""

from __future__ import annotations

__all__ = ["hann_bin", "line_bins", "median_abs", "power_weights"]

import math

import numpy as np
from numba import njit

from machinewatch.engine.numba_opts import NJIT


@njit(**NJIT)
def _line_bins(f_hz: float, tol: float, df: float, kmin: int, kmax: int) -> tuple[int, int]:
    """Inclusive bin range ``(lo, hi)`` of a line; ``lo > hi`` when it is not observable."""
    if not (f_hz > 0.0 and f_hz < np.inf) or not df > 0.0:
        return 1, 0
    lo = math.ceil(f_hz * (1.0 - tol) / df - 0.5)
    hi = math.floor(f_hz * (1.0 + tol) / df + 0.5)
    if hi > kmax:
        return 1, 0  # the line (or part of its band) lies beyond the usable spectrum
    return max(lo, kmin), hi


def line_bins(f_hz: float, tol: float, df: float, kmin: int, kmax: int) -> tuple[int, int]:
    """Inclusive bin range of a line searched at ``f_hz`` +- ``tol`` (relative).

    ``lo > hi`` when the line is not observable: unknown (NaN) or non-positive frequency, or
    a band reaching beyond ``kmax``.

    >>> line_bins(25.0, 0.03, 6.25, 1, 2048)
    (4, 4)
    """
    lo, hi = _line_bins(f_hz, tol, df, kmin, kmax)
    return int(lo), int(hi)


@njit(**NJIT)
def _hann_bin(xr: np.ndarray, xi: np.ndarray, k: int, n: int) -> tuple[float, float]:
    """Real and imaginary part of bin ``k`` of the Hann-windowed spectrum (3-tap rule).

    ``xr``/``xi`` are the real/imaginary parts of an rFFT of length ``n // 2 + 1`` of an
    ``n``-point signal.
    """
    nb = n // 2 + 1
    # X[k-1]: for k = 0 it is conj(X[1])
    if k == 0:
        ar, ai = xr[1], -xi[1]
    else:
        ar, ai = xr[k - 1], xi[k - 1]
    # X[k+1]: beyond the last bin it is conj(X[n - k - 1])
    if k + 1 < nb:
        br, bi = xr[k + 1], xi[k + 1]
    else:
        br, bi = xr[n - k - 1], -xi[n - k - 1]
    return 0.5 * xr[k] - 0.25 * (ar + br), 0.5 * xi[k] - 0.25 * (ai + bi)


def hann_bin(spectrum: np.ndarray, k: int, n: int) -> complex:
    """Bin ``k`` of the Hann-windowed spectrum from an unwindowed rFFT ``spectrum``.

    >>> x = np.cos(2 * np.pi * 4 * np.arange(64) / 64)
    >>> round(abs(hann_bin(np.fft.rfft(x), 4, 64)), 6)
    16.0
    """
    s = np.asarray(spectrum)
    re, im = _hann_bin(np.ascontiguousarray(s.real), np.ascontiguousarray(s.imag), k, n)
    return complex(re, im)


@njit(**NJIT)
def _power_weights(n: int) -> np.ndarray:
    """One-sided weights: 1 for DC and (even ``n``) Nyquist, 2 for the other bins."""
    nb = n // 2 + 1
    c = np.full(nb, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[nb - 1] = 1.0
    return c


def power_weights(n: int) -> np.ndarray:
    """One-sided power weights of an ``n``-point rFFT (Parseval with a one-sided spectrum)."""
    return np.asarray(_power_weights(n))


@njit(**NJIT)
def _select(buf: np.ndarray, m: int, k: int) -> float:
    """The ``k``-th smallest of ``buf[:m]`` (Hoare quickselect; reorders ``buf``)."""
    lo = 0
    hi = m - 1
    while lo < hi:
        a = buf[lo]
        b = buf[(lo + hi) // 2]
        c = buf[hi]
        if a > b:
            a, b = b, a
        if b > c:
            b = c
        if a > b:
            b = a
        piv = b  # median of three
        i = lo
        j = hi
        while i <= j:
            while buf[i] < piv:
                i += 1
            while buf[j] > piv:
                j -= 1
            if i <= j:
                t = buf[i]
                buf[i] = buf[j]
                buf[j] = t
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            break
    return float(buf[k])


@njit(**NJIT)
def _median_abs(a: np.ndarray, lo: int, hi: int, buf: np.ndarray) -> float:
    """Median of ``a[lo:hi+1]`` (numpy's even-count rule), by quickselect in ``buf``."""
    m = hi - lo + 1
    if m <= 0:
        return np.nan
    for i in range(m):
        buf[i] = a[lo + i]
    h = m // 2
    upper = float(_select(buf, m, h))
    if m % 2 == 1:
        return upper
    low = buf[0]  # after the selection buf[:h] holds the h smallest
    for i in range(1, h):
        low = max(low, buf[i])
    return 0.5 * (float(low) + upper)


def median_abs(a: np.ndarray, lo: int, hi: int) -> float:
    """Median of ``a[lo:hi+1]`` (the kernel used for envelope-line floors)."""
    arr = np.ascontiguousarray(a, dtype=np.float64)
    return float(_median_abs(arr, lo, hi, np.empty(max(hi - lo + 1, 1))))
