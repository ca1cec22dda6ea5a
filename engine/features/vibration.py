"""Vibration features: one rFFT per window feeds every spectral feature.

Per window of ``N`` samples at ``rate`` Hz (``df = rate / N``):

- time domain, on the raw samples (accelerometers are AC-coupled; a DC offset is part of the
  signal): ``rms``, ``peak = max |x|``, ``p2p = max - min``, ``crest = peak / rms``,
  ``kurtosis`` (Pearson, a Gaussian gives 3; biased moments like ``scipy.stats.kurtosis(x,
  fisher=False)``), ``skewness`` (biased), ``shape_factor = rms / mean|x|``,
  ``impulse_factor = peak / mean|x|``. Degenerate windows: every ratio whose denominator is 0
  is 0 (an all-zero window gives all zeros); a constant window (variance <= 1e-14 mean^2)
  has kurtosis 0 and skewness 0, a value no real signal has (Pearson kurtosis >= 1).
- ``band0..band7``: RMS in 8 equal bands of the one-sided Hann spectrum (band ``i`` holds bins
  ``[i K // 8, (i + 1) K // 8)``, ``K = N // 2 + 1``), scaled so that for broadband signals
  ``sum(band_i^2) ~ mean(x^2)`` (Parseval with the Hann power gain 3/8).
- ``centroid``: power-weighted mean frequency of the one-sided Hann spectrum, Hz (0 if silent).
- ``x1, x2, x3``: peak amplitude (units of the signal) of the Hann spectrum at 1, 2, 3 x shaft
  speed, max over the line's bins (``+- machine.slip_tolerance``, see :mod:`.spectrum`).
- with a bearing geometry: squared-envelope-spectrum lines (see :mod:`.bearing`). The raw band
  ``[rate/8, rate/2.5)`` is taken from the same rFFT, shifted to baseband and inverse
  transformed at a shorter length ``M`` (its analytic signal, decimated), squared in magnitude
  and rFFT'd; its mean is removed and a Hann window applied (3-tap rule again) so that neither
  the envelope's DC nor an off-bin line leaks into the floor. ``M > B + kmax`` keeps the
  envelope spectrum up to ``kmax`` (``rate/16``) free of aliasing, so it equals that of the
  full-length Hilbert envelope. Each feature is the max amplitude in the line's band divided by
  the median amplitude of the bins within +-16 of it: a scale-free line-to-floor ratio (0 when
  that floor is 0).

Speed-dependent features (``x*``, ``env_*``) are NaN when the shaft speed is unknown (NaN,
<= 0) or their line lies beyond the usable spectrum. A window holding NaN/inf gives a NaN row
and ``ok = False``.
"""

from __future__ import annotations

__all__ = [
    "FFT_BACKENDS",
    "HAVE_NUMBA_FFT",
    "VibrationExtractor",
    "fft_backend",
    "measure_fft_backends",
    "vibration_names",
]

import functools
import logging
import math
import os
import threading
import time
from collections.abc import Hashable
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.features.base import F64, BoolArray, FeatureExtractor, bit_views, float_extremes
from machinewatch.engine.features.bearing import envelope_names, envelope_orders
from machinewatch.engine.features.spectrum import _line_bins, _median_abs
from machinewatch.engine.numba_opts import NJIT, NJIT_REDUCE

log = logging.getLogger(__name__)

TIME_NAMES = ("rms", "peak", "p2p", "crest", "kurtosis", "skewness", "shape_factor", "impulse_factor")
N_BANDS = 8
#: default envelope band as fractions of the sample rate, and top of the envelope spectrum
ENV_BAND = (1.0 / 8.0, 1.0 / 2.5)
ENV_MAX = 1.0 / 16.0
#: half width (bins) of the neighbourhood whose median is an envelope line's floor
FLOOR_HALF_WIDTH = 16
#: Hann power gain mean(w^2) and coherent gain mean(w)
HANN_POWER = 3.0 / 8.0
HANN_GAIN = 0.5


def vibration_names(machine: MachineConfig) -> tuple[str, ...]:
    """Feature names of a vibration stream of ``machine``."""
    bands = tuple(f"band{i}" for i in range(N_BANDS))
    return (*TIME_NAMES, *bands, "centroid", "x1", "x2", "x3", *envelope_names(machine.bearing))


@njit(**NJIT_REDUCE)
def _sums(
    x: np.ndarray, keys: np.ndarray, ukeys: np.ndarray
) -> tuple[float, float, float, float, float, float]:
    """``sum x``, ``sum x^2``, ``sum |x|``, ``sum (x - x)`` (NaN iff a NaN/inf is
    present), and min and max of ``x`` (meaningful only when that check passed), through the
    extremes of ``x``'s bit patterns (``keys``, ``ukeys``: :func:`.base.bit_views`)."""
    # two loops, not one: the float64 sums (4 lanes) and the 32-bit integer extremes (8 lanes)
    # vectorise well apart; fused they took ~1.5 us per 4096 float32 values here, apart ~0.8
    s1 = 0.0
    s2 = 0.0
    sa = 0.0
    bad = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        s1 += v
        s2 += v * v
        sa += abs(v)
        bad += v - v
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
    mn, mx = float_extremes(smin, smax, umin, umax, keys, x)
    return s1, s2, sa, bad, mn, mx


@njit(**NJIT_REDUCE)
def _central(x: np.ndarray, mean: float) -> tuple[float, float, float]:
    """Sums of the 2nd, 3rd and 4th powers of ``x - mean``."""
    c2 = 0.0
    c3 = 0.0
    c4 = 0.0
    for j in range(x.shape[0]):
        d = np.float64(x[j]) - mean
        d2 = d * d
        c2 += d2
        c3 += d2 * d
        c4 += d2 * d2
    return c2, c3, c4


@njit(**NJIT)
def _time_features(x: np.ndarray, keys: np.ndarray, ukeys: np.ndarray, out: np.ndarray) -> bool:
    """Time-domain features of one window into ``out[:8]``; False (and NaN) on NaN/inf."""
    n = x.shape[0]
    s1, s2, sa, bad, mn, mx = _sums(x, keys, ukeys)
    if bad != 0.0 or not math.isfinite(s2):  # NaN/inf input (or an overflowing square)
        out[:8] = np.nan
        return False
    mean = s1 / n
    rms = math.sqrt(s2 / n)
    mabs = sa / n
    peak = max(abs(mn), abs(mx))
    c2, c3, c4 = _central(x, mean)
    m2 = c2 / n
    out[0] = rms
    out[1] = peak
    out[2] = mx - mn
    out[3] = peak / rms if rms > 0.0 else 0.0
    if m2 > 1e-14 * mean * mean and m2 > 0.0:
        out[4] = (c4 / n) / (m2 * m2)
        out[5] = (c3 / n) / (m2 * math.sqrt(m2))
    else:  # constant window: no shape to speak of
        out[4] = 0.0
        out[5] = 0.0
    out[6] = rms / mabs if mabs > 0.0 else 0.0
    out[7] = peak / mabs if mabs > 0.0 else 0.0
    return True


@njit(**NJIT)
def _time_batch(x: np.ndarray, keys: np.ndarray, ukeys: np.ndarray, out: np.ndarray, ok: np.ndarray) -> None:
    for i in range(x.shape[0]):
        ok[i] = _time_features(x[i], keys[i], ukeys[i], out[i])


@njit(**NJIT)
def _hann_power_at(v: np.ndarray, k: int, n: int) -> float:
    """``|Xw[k]|^2`` of the Hann-windowed spectrum at one bin, from the raw rFFT ``v``.

    ``v`` is the rFFT viewed as interleaved real/imaginary floats (``2 (n // 2 + 1)``); the
    Hann window is applied in the frequency domain, ``Xw[k] = X[k] / 2 - (X[k-1] + X[k+1]) / 4``,
    in the spectrum's precision (float32 for float32 windows).
    """
    nb = v.shape[0] // 2
    h = v.dtype.type(0.5)
    q = v.dtype.type(0.25)
    if k == 0:  # X[0] is real; the imaginary parts of X[1] and X[-1] = conj(X[1]) cancel
        re = h * v[0] - h * v[2]
        return float(re * re)
    if k == nb - 1:  # X[nb] wraps to conj(X[n - nb])
        j = n - nb
        re = h * v[2 * k] - q * (v[2 * k - 2] + v[2 * j])
        im = h * v[2 * k + 1] - q * (v[2 * k - 1] - v[2 * j + 1])
        return float(re * re + im * im)
    re = h * v[2 * k] - q * (v[2 * k - 2] + v[2 * k + 2])
    im = h * v[2 * k + 1] - q * (v[2 * k - 1] + v[2 * k + 3])
    return float(re * re + im * im)


@njit(**NJIT_REDUCE)
def _hann_band_sums(v: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """``sum p[k]`` and ``sum k p[k]`` of the Hann-windowed power ``p`` (see
    :func:`_hann_power_at`) over the interior bins ``lo <= k < hi`` (``1 <= lo``,
    ``hi <= nb - 1``), without storing ``p``.

    The windowed real and imaginary parts are the same 3-tap filter over the interleaved floats
    (neighbours two floats apart), so one contiguous loop over floats ``2 lo .. 2 hi`` squares
    both: it vectorises with plain loads, where a loop over bins needs strided ones. Slices
    indexed from 0 matter as much: a possibly negative index makes numba emit Python's
    wrap-around for each load, which kept the loop scalar (the band sums alone: ~3 us per
    2049-bin spectrum, 0.55 us over slices). The sums stay in the spectrum's precision like the
    power: float64 accumulators cost a conversion per float and were slower than the bin-wise
    loop; in float32 the whole spectral stage went from 1.83-2.18 to 1.42-1.67 us per window (A/B
    in one process), ~1e-7 relative difference. ``j >> 1`` (int32) converts to float in vector
    registers (int64 does not before AVX-512).
    """
    if hi <= lo:
        return 0.0, 0.0
    a = v[2 * lo - 2 : 2 * hi - 2]
    c = v[2 * lo : 2 * hi]
    d = v[2 * lo + 2 : 2 * hi + 2]
    h = v.dtype.type(0.5)
    q = v.dtype.type(0.25)
    s = v.dtype.type(0.0)
    sj = v.dtype.type(0.0)
    for j in range(c.shape[0]):
        w = h * c[j] - q * (a[j] + d[j])
        ww = w * w
        s += ww
        sj += v.dtype.type(np.int32(j) >> 1) * ww
    return float(s), float(sj) + lo * float(s)


@njit(**NJIT)
def _spec_batch(
    xs: np.ndarray,
    ok: np.ndarray,
    shaft: np.ndarray,
    n: int,
    df: float,
    tol: float,
    edges: np.ndarray,
    out: np.ndarray,
    col: int,
) -> None:
    """Band RMS, centroid and 1x-3x amplitudes of every ok row into ``out[:, col:]``."""
    nb = xs.shape[1] // 2  # xs: rFFT rows as interleaved real/imaginary floats
    nbands = edges.shape[0] - 1
    band_scale = 1.0 / (n * n * 0.375)  # Parseval / Hann power gain (3/8)
    amp_scale = 2.0 / (n * 0.5)  # one-sided peak amplitude / Hann coherent gain (1/2)
    last = 1.0 if n % 2 == 0 else 2.0  # a one-sided spectrum counts every bin twice but the DC
    # and (n even) the Nyquist bin
    for i in range(xs.shape[0]):
        o = out[i]
        if not ok[i]:
            o[col : col + nbands + 4] = np.nan
            continue
        v = xs[i]
        p0 = _hann_power_at(v, 0, n)
        pl = _hann_power_at(v, nb - 1, n)
        tot = 0.0
        totk = 0.0
        for b in range(nbands):
            lo = edges[b]
            hi = edges[b + 1]
            s, sk = _hann_band_sums(v, max(lo, 1), min(hi, nb - 1))
            s *= 2.0
            sk *= 2.0
            if lo == 0 and hi > 0:
                s += p0
            if hi == nb and lo < nb:
                s += last * pl
                sk += last * (nb - 1) * pl
            o[col + b] = math.sqrt(max(s, 0.0) * band_scale)
            tot += s
            totk += sk
        o[col + nbands] = totk / tot * df if tot > 0.0 else 0.0
        for h in range(3):
            lo, hi = _line_bins((h + 1) * shaft[i], tol, df, 1, nb - 1)
            if lo > hi:
                o[col + nbands + 1 + h] = np.nan
                continue
            best = 0.0
            for k in range(lo, hi + 1):
                best = max(best, _hann_power_at(v, k, n))
            o[col + nbands + 1 + h] = math.sqrt(best) * amp_scale


@njit(**NJIT)
def _fill_band(xs: np.ndarray, k0: int, band: int, z: np.ndarray) -> None:
    """``z[i] = xs[i, k0:k0 + band]`` followed by zeros (the band shifted to baseband)."""
    for i in range(z.shape[0]):  # slice copies: ~0.8 vs ~1.35 us per 1440-point row (elementwise)
        z[i, :band] = xs[i, k0 : k0 + band]
        z[i, band:] = 0.0


@njit(**NJIT)
def _abs2(z: np.ndarray, e: np.ndarray) -> None:
    """``e = |z|^2`` elementwise (2-D)."""
    for i in range(z.shape[0]):
        for j in range(z.shape[1]):
            v = z[i, j]
            e[i, j] = v.real * v.real + v.imag * v.imag


@njit(**NJIT)
def _env_batch(
    es: np.ndarray,
    ok: np.ndarray,
    shaft: np.ndarray,
    orders: np.ndarray,
    tol: float,
    df: float,
    kmax: int,
    half: int,
    out: np.ndarray,
    col: int,
) -> None:
    """Envelope line-to-floor ratios of every ok row into ``out[:, col:]``."""
    mag = np.empty(kmax + 1, dtype=es.dtype)  # the spectrum's precision, like _hann_power_at
    buf = np.empty(2 * half + 1, dtype=es.dtype)
    h = es.dtype.type(0.5)
    q = es.dtype.type(0.25)
    for i in range(es.shape[0]):
        o = out[i]
        if not ok[i]:
            o[col : col + orders.shape[0]] = np.nan
            continue
        row = es[i]  # interleaved real/imaginary floats
        # Hann in the frequency domain, the envelope's mean (bin 0) removed first, so
        # neither the DC nor an off-bin line leaks into the floor around a line
        mag[0] = 0.0
        re = h * row[2] - q * row[4]
        im = h * row[3] - q * row[5]
        mag[1] = np.sqrt(re * re + im * im)
        for k in range(2, kmax + 1):
            re = h * row[2 * k] - q * (row[2 * k - 2] + row[2 * k + 2])
            im = h * row[2 * k + 1] - q * (row[2 * k - 1] + row[2 * k + 3])
            mag[k] = np.sqrt(re * re + im * im)
        for m in range(orders.shape[0]):
            f = orders[m] * shaft[i]
            lo, hi = _line_bins(f, tol, df, 1, kmax)
            if lo > hi:
                o[col + m] = np.nan
                continue
            amp = 0.0
            for k in range(lo, hi + 1):
                amp = max(amp, np.float64(mag[k]))
            kc = math.floor(f / df + 0.5)
            floor = _median_abs(mag, max(1, kc - half), min(kmax, kc + half), buf)
            o[col + m] = amp / floor if floor > 0.0 else 0.0


try:  # DUCC0's transforms compiled into numba (rocket-fft): the whole chunk in one nogil call
    from rocket_fft.lowlevel import c2c as _c2c
    from rocket_fft.lowlevel import r2c as _r2c

    HAVE_NUMBA_FFT = True
except ImportError:  # pragma: no cover - rocket-fft is a dependency; scipy path as fallback
    HAVE_NUMBA_FFT = False

#: FFT backends: Intel MKL through ``mkl_fft`` (the optional ``mkl`` extra, x86-64; ~3.5x
#: faster batched transforms than DUCC0 on an AVX-512 Xeon, but the whole batch only ~10 %
#: *slower* than fused DUCC0 on an AMD EPYC VM), DUCC0 compiled into one fused numba call
#: (rocket-fft, a dependency), scipy.fft driven from Python (fallback). Which of the first two
#: is faster depends on the CPU, so the engine measures them at warm-up
#: (:func:`measure_fft_backends`).
FFT_BACKENDS = ("mkl", "ducc0", "scipy")
#: environment variable that forces a backend (one of :data:`FFT_BACKENDS`)
FFT_ENV = "MACHINEWATCH_FFT"
#: smaller batches go through the fused DUCC0 call even with MKL: ``mkl_fft`` sets up its
#: transforms on every call (~60 us each), which only a batch amortises (at 4096 samples, per
#: window: 1 window 201 vs 67 us, 8: 38 vs 24 us, 16: 23 vs 24 us, 64: 20 vs 26 us)
MKL_MIN_BATCH = 16


@functools.cache
def _intel_cpu() -> bool:
    """Whether this is an Intel CPU (``/proc/cpuinfo``), the only one MKL is considered on.

    On the AMD EPYC we measured, MKL lost to DUCC0 (28.6-33.9 vs 22.8-26.7 us per window) and
    loading it cost ~21 MB of resident memory (64 channels: 217.5 vs 196.2 MB), so without an
    Intel CPU it is not even loaded unless forced.
    """
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith("vendor_id"):
                    return "GenuineIntel" in line
    except OSError:
        pass
    return False


def _load_mkl() -> Any:
    """``mkl_fft`` with MKL pinned to one thread (unless ``MKL_NUM_THREADS`` says otherwise),
    or None when it is not installed.

    One thread: the hot path owns one core and the event loop the other; MKL's default thread
    pool would fight both.
    """
    os.environ.setdefault("MKL_NUM_THREADS", "1")
    try:
        import mkl_fft  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return None
    return mkl_fft


#: the backend :func:`measure_fft_backends` found fastest in this process (None: not measured)
_measured: str | None = None


def fft_backend() -> str:
    """The FFT backend vibration features use here: ``$MACHINEWATCH_FFT`` if set, else the one
    measured fastest at warm-up, else MKL when installed on an Intel CPU, else DUCC0. An unknown or missing
    forced backend is a clear error."""
    forced = os.environ.get(FFT_ENV, "").strip().lower()
    if forced:
        if forced not in FFT_BACKENDS:
            raise ValueError(f"{FFT_ENV}={forced!r}: expected one of {', '.join(FFT_BACKENDS)}")
        if forced == "mkl" and _load_mkl() is None:
            raise ValueError(f"{FFT_ENV}=mkl but mkl_fft is not installed (pip install 'machinewatch[mkl]')")
        if forced == "ducc0" and not HAVE_NUMBA_FFT:
            raise ValueError(f"{FFT_ENV}=ducc0 but rocket-fft is not installed")
        return forced
    if _measured is not None:
        return _measured
    if _intel_cpu() and _load_mkl() is not None:
        return "mkl"
    return "ducc0" if HAVE_NUMBA_FFT else "scipy"


def measure_fft_backends(
    stream: StreamConfig, machine: MachineConfig, rows: int = 64, rounds: int = 3
) -> dict[str, float]:
    """Time a batch of ``rows`` windows of ``stream`` with MKL and with DUCC0 (alternated, best
    of ``rounds``; ~15 ms at 4096 samples) and make the faster the default of :func:`fft_backend`
    for this process. Returns us per window by backend; ``{}`` (nothing measured) when a backend
    is forced, fewer than two are installed, or the CPU is not an Intel one (:func:`_intel_cpu`).
    Call it after :func:`~.warmup` compiled the kernels, or the first round times the compiler."""
    global _measured
    if os.environ.get(FFT_ENV, "").strip() or not HAVE_NUMBA_FFT:
        return {}
    if not _intel_cpu() or _load_mkl() is None:
        return {}
    x = np.random.default_rng(0).standard_normal((rows, stream.window_samples)).astype(np.float32)
    shaft = np.full(rows, machine.shaft_hz or 25.0)
    extractors = {b: VibrationExtractor(stream, machine) for b in ("mkl", "ducc0")}
    out = np.empty((rows, len(extractors["mkl"].names)))
    best: dict[str, float] = {}
    for b, ex in extractors.items():
        ex.use_backend(b)
        ex.compute_batch(x, shaft, out)  # buffers and MKL descriptors made before timing
    for _ in range(rounds):
        for b, ex in extractors.items():
            t0 = time.perf_counter()
            ex.compute_batch(x, shaft, out)
            best[b] = min(best.get(b, math.inf), (time.perf_counter() - t0) / rows * 1e6)
    _measured = min(best, key=best.__getitem__)
    log.info(
        "FFT backend %s (measured, us per window: %s)",
        _measured,
        ", ".join(f"{b} {t:.1f}" for b, t in best.items()),
    )
    return best


@njit(**NJIT)
def _fused_chunk(
    x: np.ndarray,
    keys: np.ndarray,
    ukeys: np.ndarray,
    shaft: np.ndarray,
    n: int,
    df: float,
    tol: float,
    edges: np.ndarray,
    orders: np.ndarray,
    k0: int,
    band: int,
    kmax: int,
    half: int,
    axes: np.ndarray,
    xs: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    es: np.ndarray,
    out: np.ndarray,
    ok: np.ndarray,
    col_spec: int,
    col_env: int,
) -> None:
    """Every stage of :meth:`VibrationExtractor._chunk` in one call, on caller-provided buffers.

    The same definitions as the scipy-driven path; the transforms are DUCC0's (pocketfft's
    successor) and the spectra agree to rounding.
    """
    _time_batch(x, keys, ukeys, out, ok)
    _r2c(x, xs, axes, True, 1.0, 1)
    _spec_batch(xs.view(x.dtype), ok, shaft, n, df, tol, edges, out, col_spec)
    if orders.shape[0] == 0:
        return
    m = z.shape[1]
    if k0 + m <= xs.shape[1]:
        # the band is read in place: the bins after it, no longer needed, are zeroed instead of
        # copying the band out (~0.5 us per window)
        xs[:, k0 + band : k0 + m] = 0.0
        _c2c(xs[:, k0 : k0 + m], z, axes, False, 1.0 / m, 1)  # the decimated analytic signal
    else:
        _fill_band(xs, k0, band, z)
        _c2c(z, z, axes, False, 1.0 / m, 1)
    _abs2(z, e)
    _r2c(e, es, axes, True, 1.0, 1)
    _env_batch(es.view(x.dtype), ok, shaft, orders, tol, df, kmax, half, out, col_env)


@njit(**NJIT)
def _fused_batch(
    x: np.ndarray,
    keys: np.ndarray,
    ukeys: np.ndarray,
    shaft: np.ndarray,
    n: int,
    df: float,
    tol: float,
    edges: np.ndarray,
    orders: np.ndarray,
    k0: int,
    band: int,
    kmax: int,
    half: int,
    xs: np.ndarray,
    z: np.ndarray,
    e: np.ndarray,
    es: np.ndarray,
    out: np.ndarray,
    ok: np.ndarray,
    col_spec: int,
    col_env: int,
    chunk: int,
) -> None:
    """:func:`_fused_chunk` over sub-batches of ``chunk`` windows, in one call: the GIL is
    released once per batch (each reacquisition can wait a whole switch interval while the
    event loop runs Python). The buffers hold ``chunk`` rows; nothing is allocated per chunk."""
    axes = np.ones(1, dtype=np.int64)
    for i in range(0, x.shape[0], chunk):
        j = min(i + chunk, x.shape[0])
        c = j - i
        _fused_chunk(
            x[i:j],
            keys[i:j],
            ukeys[i:j],
            shaft[i:j],
            n,
            df,
            tol,
            edges,
            orders,
            k0,
            band,
            kmax,
            half,
            axes,
            xs[:c],
            z[:c],
            e[:c],
            es[:c],
            out[i:j],
            ok[i:j],
            col_spec,
            col_env,
        )


def _smooth_even(need: int) -> int:
    """The smallest ``2 * 2^a 3^b 5^c >= need``."""
    best = 2
    while best < need:
        best *= 2
    p5 = 1
    while 2 * p5 < 2 * best:
        p35 = p5
        while 2 * p35 < 2 * best:
            m = 2 * p35
            while m < need:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def _floats(z: np.ndarray) -> np.ndarray:
    """A C-contiguous complex 2-D array viewed as interleaved real/imaginary floats."""
    z = np.ascontiguousarray(z)
    return z.view(np.float32 if z.dtype == np.complex64 else np.float64)


class VibrationExtractor(FeatureExtractor):
    """Vibration features of one stream (see the module docstring for each definition).

    Parameters
    ----------
    stream, machine:
        The stream (``kind = "vibration"``, one channel) and its machine.
    env_band_hz:
        ``(low, high)`` Hz of the envelope's band-pass; default ``(rate/8, rate/2.5)``.
    env_max_hz:
        Top of the envelope spectrum searched for bearing lines; default ``rate/16``.
    """

    def __init__(
        self,
        stream: StreamConfig,
        machine: MachineConfig,
        *,
        env_band_hz: tuple[float, float] | None = None,
        env_max_hz: float | None = None,
    ) -> None:
        super().__init__(stream, machine)
        if stream.channels != 1:
            raise ValueError(f"a vibration stream has one channel, got {stream.channels}")
        n = stream.window_samples
        if n < 8:
            raise ValueError(f"a vibration window needs >= 8 samples, got {n}")
        self.names = vibration_names(machine)
        self.n = n
        self.rate = float(stream.rate_hz)
        self.df = self.rate / n
        self.nb = n // 2 + 1
        self.tol = float(machine.slip_tolerance)
        self.edges = np.array([(i * self.nb) // N_BANDS for i in range(N_BANDS + 1)], dtype=np.int64)
        self.orders = envelope_orders(machine.bearing) if machine.bearing is not None else np.zeros(0)
        lo_hz, hi_hz = env_band_hz or (self.rate * ENV_BAND[0], self.rate * ENV_BAND[1])
        self.k0 = max(1, round(lo_hz / self.df))
        self.k1 = min(n // 2, round(hi_hz / self.df))  # no Nyquist bin: it has no analytic pair
        self.band = self.k1 - self.k0
        if self.band < 1:
            raise ValueError(f"envelope band {lo_hz}-{hi_hz} Hz holds no bin at {self.df} Hz/bin")
        top = self.rate * ENV_MAX if env_max_hz is None else float(env_max_hz)
        #: last envelope-spectrum bin searched (alias-free in the full-length envelope too)
        self.kmax = max(1, min(math.floor(top / self.df), n // 2 - 1, n - self.band - 1))
        need = max(self.band + self.kmax + 1, 2 * self.kmax + 2)
        #: length of the decimated analytic signal: even (its squared magnitude is transformed
        #: as ``m / 2`` complex points) and 5-smooth, the lengths DUCC0 transforms fastest
        #: (1440 rather than 1536 for 4096-sample windows: ~10 % less); any length >= ``need``
        #: gives the same envelope lines, the spectrum being alias-free up to ``kmax``
        self.m = _smooth_even(need)
        self.half = FLOOR_HALF_WIDTH
        self._local = threading.local()
        #: the FFT backend (:func:`fft_backend`): ``ducc0`` runs each batch as one compiled
        #: call; ``mkl`` and ``scipy`` are driven from Python, one sub-batch at a time
        self.backend = ""
        #: windows per internal sub-batch (about 1 MiB of complex spectrum; 2 MiB with MKL,
        #: whose batched transforms were fastest there: 47,000 vs 43,700 windows/s at 1 MiB)
        self.chunk = 8
        self.use_backend(fft_backend())

    def use_backend(self, name: str) -> None:
        """Compute with FFT backend ``name`` (one of :data:`FFT_BACKENDS`) from now on."""
        self.backend = name
        self.chunk = max(8, (1 << (21 if name == "mkl" else 20)) // (8 * self.n))

    def batch_key(self) -> Hashable:
        """Every constant the kernels read (see :meth:`.FeatureExtractor.batch_key`): streams of
        the same rate and window on machines of the same bearing share one batched call."""
        return (
            "vibration", self.names, self.n, self.rate, self.tol, self.edges.tobytes(), self.orders.tobytes(),
            self.k0, self.band, self.kmax, self.m, self.half, self.backend,
        )  # fmt: skip

    def _scratch(self, dtype: np.dtype[Any]) -> tuple[np.ndarray, ...]:
        """Per-thread buffers of one sub-batch (spectra, analytic signals, envelopes, theirs).

        Allocated once per thread and dtype: fresh multi-megabyte arrays per batch cost page
        faults, and thread-local ones keep the extractor safe to share between threads.
        """
        key = f"fused_{dtype.str}_{self.chunk}"
        cached: tuple[np.ndarray, ...] | None = getattr(self._local, key, None)
        if cached is None:
            c = self.chunk
            cdt = np.complex64 if dtype == np.float32 else np.complex128
            cached = (
                np.empty((c, self.nb), dtype=cdt),  # their rFFTs
                np.empty((c, self.m), dtype=cdt),  # decimated analytic signals
                np.empty((c, self.m), dtype=dtype),  # squared envelopes
                np.empty((c, self.m // 2 + 1), dtype=cdt),  # envelope spectra
            )
            setattr(self._local, key, cached)
        return cached

    def _batch(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        # sub-batches of ~1 MiB of spectrum: bounded memory on a small gateway whatever the batch
        # size (a 1024-window batch would otherwise hold ~35 MB of spectra), and the stages'
        # data stays closer to the cache; the speed was within noise from 32 to 256 windows
        if not x.flags.writeable:  # one compiled variant per dtype (each costs ~10 s to compile)
            x = x.copy()
        small = x.shape[0] < MKL_MIN_BATCH and HAVE_NUMBA_FFT
        if self.backend == "ducc0" or (self.backend == "mkl" and small):
            self._fused(x, shaft_hz, out, ok)
            return
        step = self.chunk
        for i in range(0, x.shape[0], step):
            j = min(i + step, x.shape[0])
            self._chunk(x[i:j], shaft_hz[i:j], out[i:j], ok[i:j])

    def _fused(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        keys, ukeys = bit_views(x)
        xs, z, e, es = self._scratch(x.dtype)
        _fused_batch(
            x,
            keys,
            ukeys,
            shaft_hz,
            self.n,
            self.df,
            self.tol,
            self.edges,
            self.orders,
            self.k0,
            self.band,
            self.kmax,
            self.half,
            xs,
            z,
            e,
            es,
            out,
            ok,
            len(TIME_NAMES),
            len(TIME_NAMES) + N_BANDS + 4,
            self.chunk,
        )

    def _chunk(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        """One sub-batch, the transforms called from Python (MKL into this thread's buffers, or
        scipy), the rest in three compiled calls that release the GIL like the transforms."""
        c = x.shape[0]
        keys, ukeys = bit_views(x)
        xs, z, e, es = (b[:c] for b in self._scratch(x.dtype))
        rfft, ifft = _python_ffts(self.backend)
        xs = rfft(x, xs)
        col = len(TIME_NAMES) + N_BANDS + 4
        _time_spec_fill(
            x, keys, ukeys, shaft_hz, self.n, self.df, self.tol, self.edges, self.k0, self.band,
            _floats(xs), xs, z, out, ok, len(TIME_NAMES), self.orders.shape[0] > 0,
        )  # fmt: skip
        if self.orders.shape[0] == 0:
            return
        z = ifft(z, z)  # in place (MKL); scipy returns a new array
        _abs2(z, e)
        es = rfft(e, es)
        _env_batch(_floats(es), ok, shaft_hz, self.orders, self.tol, self.df, self.kmax, self.half, out, col)


@njit(**NJIT)
def _time_spec_fill(
    x: np.ndarray,
    keys: np.ndarray,
    ukeys: np.ndarray,
    shaft: np.ndarray,
    n: int,
    df: float,
    tol: float,
    edges: np.ndarray,
    k0: int,
    band: int,
    xf: np.ndarray,
    xs: np.ndarray,
    z: np.ndarray,
    out: np.ndarray,
    ok: np.ndarray,
    col_spec: int,
    envelope: bool,
) -> None:
    """The compiled stages between the window's rFFT and the envelope's inverse transform."""
    _time_batch(x, keys, ukeys, out, ok)
    _spec_batch(xf, ok, shaft, n, df, tol, edges, out, col_spec)
    if envelope:
        _fill_band(xs, k0, band, z)


FFT = Any  # (input, preallocated output) -> the transform (the output array, or a new one)


def _python_ffts(backend: str) -> tuple[FFT, FFT]:
    """Batched row transforms ``(rfft, ifft)`` of a Python-driven backend."""
    if backend == "mkl":
        mkl = _load_mkl()
        return (
            lambda a, o: mkl.rfft(a, axis=1, out=o),
            lambda a, o: mkl.ifft(a, axis=1, out=o),
        )
    import scipy.fft as sfft  # the fallback (neither MKL nor rocket-fft installed)

    return (
        lambda a, o: sfft.rfft(a, axis=1, workers=1),
        lambda a, o: sfft.ifft(a, axis=1, workers=1, overwrite_x=True),
    )
