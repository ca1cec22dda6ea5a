"""Slow, obvious numpy/scipy references of every feature kernel (stumpy's ``tests/naive.py``).

Each function takes one window and returns ``(values, ok)`` in the extractor's feature order.
They follow the definitions in the docstrings of ``machinewatch.engine.features.*`` literally:
time-domain windowing with a Hann window, a full-length Hilbert envelope, ``np.median`` and
``scipy.stats`` moments, no tricks.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.signal
import scipy.stats

N_BANDS = 8
HALF = 16  # envelope floor half width, bins


def _line_sel(f: float, tol: float, df: float, kmin: int, kmax: int) -> np.ndarray | None:
    """Bins of a line searched at ``f`` +- ``tol``; None when not observable."""
    if not (math.isfinite(f) and f > 0):
        return None
    lo = math.ceil(f * (1.0 - tol) / df - 0.5)
    hi = math.floor(f * (1.0 + tol) / df + 0.5)
    if hi > kmax:
        return None
    k = np.arange(max(lo, kmin), hi + 1)
    return k if k.size else None


def vibration(
    x: np.ndarray,
    rate: float,
    shaft_hz: float,
    tol: float,
    orders: np.ndarray | None,
    env_band_hz: tuple[float, float] | None = None,
    env_max_hz: float | None = None,
) -> tuple[np.ndarray, bool]:
    """Every vibration feature of one window (``orders``: envelope line orders or None)."""
    n_env = 0 if orders is None else len(orders)
    nf = 8 + N_BANDS + 1 + 3 + n_env
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return np.full(nf, np.nan), False
    n = x.size
    out: list[float] = []
    rms = math.sqrt(np.mean(x**2))
    peak = float(np.max(np.abs(x)))
    mabs = float(np.mean(np.abs(x)))
    mean = float(np.mean(x))
    var = float(np.var(x))
    constant = not (var > 1e-14 * mean * mean and var > 0)
    out += [rms, peak, float(np.ptp(x)), peak / rms if rms > 0 else 0.0]
    out += [0.0 if constant else float(scipy.stats.kurtosis(x, fisher=True, bias=True)) + 3.0]
    out += [0.0 if constant else float(scipy.stats.skew(x, bias=True))]
    out += [rms / mabs if mabs > 0 else 0.0, peak / mabs if mabs > 0 else 0.0]

    w = scipy.signal.get_window("hann", n)  # periodic Hann
    xw = np.fft.rfft(x * w)
    p = np.abs(xw) ** 2
    nb = p.size
    c = np.full(nb, 2.0)
    c[0] = 1.0
    if n % 2 == 0:
        c[-1] = 1.0
    df = rate / n
    edges = [(i * nb) // N_BANDS for i in range(N_BANDS + 1)]
    for b in range(N_BANDS):
        sl = slice(edges[b], edges[b + 1])
        out.append(math.sqrt(np.sum(c[sl] * p[sl]) / (n * np.sum(w**2))))
    tot = np.sum(c * p)
    out.append(float(np.sum(np.arange(nb) * df * c * p) / tot) if tot > 0 else 0.0)
    amp = 2.0 * np.abs(xw) / np.sum(w)
    for h in (1, 2, 3):
        sel = _line_sel(h * shaft_hz, tol, df, 1, nb - 1)
        out.append(np.nan if sel is None else float(np.max(amp[sel])))

    if orders is not None:
        lo_hz, hi_hz = env_band_hz or (rate / 8.0, rate / 2.5)
        k0 = max(1, round(lo_hz / df))
        k1 = min(n // 2, round(hi_hz / df))
        spec = np.fft.rfft(x)
        band = np.zeros_like(spec)
        band[k0:k1] = spec[k0:k1]
        xb = np.fft.irfft(band, n)
        env2 = np.abs(scipy.signal.hilbert(xb)) ** 2  # squared envelope
        es = np.abs(np.fft.rfft((env2 - env2.mean()) * w))
        top = rate / 16.0 if env_max_hz is None else env_max_hz
        kmax = max(1, min(math.floor(top / df), n // 2 - 1, n - (k1 - k0) - 1))
        for o in orders:
            f = o * shaft_hz
            sel = _line_sel(f, tol, df, 1, kmax)
            if sel is None:
                out.append(np.nan)
                continue
            a = float(np.max(es[sel]))
            kc = math.floor(f / df + 0.5)
            floor = float(np.median(es[max(1, kc - HALF) : min(kmax, kc + HALF) + 1]))
            out.append(a / floor if floor > 0 else 0.0)
    return np.array(out), True


def current(
    x: np.ndarray, rate: float, shaft_hz: float, line_hz: float, poles: int, tol: float
) -> tuple[np.ndarray, bool]:
    """Every current feature of one window, ``x`` shape ``(n,)`` or ``(n, 3)``."""
    x = np.asarray(x, dtype=np.float64)
    x2 = x[:, None] if x.ndim == 1 else x
    nph = x2.shape[1]
    nf = 3 if nph == 1 else 6
    if not np.all(np.isfinite(x)):
        return np.full(nf, np.nan), False
    n = x2.shape[0]
    rms = np.sqrt(np.mean(x2**2, axis=0))
    out = list(rms)
    if nph == 3:
        m = rms.mean()
        out.append(float(np.max(np.abs(rms - m)) / m) if m > 0 else 0.0)
    w = scipy.signal.get_window("hann", n)
    p = np.sum(np.abs(np.fft.rfft(x2 * w[:, None], axis=0)) ** 2, axis=1)
    nb = p.size
    df = rate / n
    sel = _line_sel(line_hz, 0.05, df, 1, nb - 1)
    if sel is None:
        return np.array([*out, np.nan, np.nan]), True
    k1 = int(sel[np.argmax(p[sel])])

    def lobe(k: int) -> float:
        return float(np.sum(p[max(0, k - 1) : k + 2]))

    p1 = lobe(k1)
    harm = 0.0
    for h in range(2, 16):
        a = math.floor(h * (k1 - 0.5)) - 1
        b = math.ceil(h * (k1 + 0.5)) + 1
        if b > nb - 1:
            break
        harm += lobe(a + int(np.argmax(p[a : b + 1])))
    out.append(math.sqrt(harm / p1) if p1 > 0 else 0.0)
    f1 = k1 * df
    sync = 2.0 * f1 / poles
    s = (sync - shaft_hz) / sync if math.isfinite(shaft_hz) else math.nan
    if 0 < s < 0.5:
        d = 2 * s * f1
        dlo = max(3, math.ceil(d * (1 - tol) / df - 0.5))
        dhi_raw = math.floor(d * (1 + tol) / df + 0.5)
        dhi = -1 if dhi_raw > k1 else dhi_raw
    else:
        dlo = max(3, math.ceil(2 * 0.005 * f1 / df - 0.5))
        dhi = min(k1, math.floor(2 * 0.06 * f1 / df + 0.5))
    dhi = min(dhi, k1, nb - 1 - k1)
    if dlo > dhi:
        out.append(np.nan)
    else:
        offs = np.arange(dlo, dhi + 1)
        side = max(np.max(p[k1 - offs]), np.max(p[k1 + offs]))
        out.append(math.sqrt(side / p[k1]) if p[k1] > 0 else 0.0)
    return np.array(out), True


def scalar(x: np.ndarray, rate: float) -> tuple[np.ndarray, bool]:
    """Level, least-squares slope per second, rate of change per second, min, max."""
    x = np.asarray(x, dtype=np.float64)
    if not np.all(np.isfinite(x)):
        return np.full(5, np.nan), False
    n = x.size
    if n > 1:
        t = np.arange(n) / rate
        slope = float(np.polyfit(t, x, 1)[0])
        roc = (x[-1] - x[0]) / ((n - 1) / rate)
    else:
        slope = roc = 0.0
    return np.array([x.mean(), slope, roc, x.min(), x.max()]), True
