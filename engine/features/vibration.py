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

__all__ = ["HAVE_NUMBA_FFT", "VibrationExtractor", "vibration_names"]

import math
import threading
from typing import Any

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.features.base import F64, BoolArray, FeatureExtractor
from machinewatch.engine.features.bearing import envelope_names, envelope_orders
from machinewatch.engine.features.spectrum import _line_bins, _median_abs
from machinewatch.engine.numba_opts import NJIT, NJIT_REDUCE

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
    x: np.ndarray, keys: np.ndarray, mask: int, shift: int
) -> tuple[float, float, float, float, float, float]:
    """One pass: ``sum x``, ``sum x^2``, ``sum |x|``, ``sum (x - x)`` (NaN iff a NaN/inf is
    present), and min and max of ``x`` (meaningful only when that check passed).

    Min and max go through integer keys (``keys`` is ``x`` viewed as same-width ints):
    ``b ^ ((b >> shift) & mask)`` orders the bit patterns of finite floats like the floats, and
    an integer min/max vectorises with the sums where a float one (NaN rules) keeps the whole
    loop scalar (~5x slower here).
    """
    s1 = 0.0
    s2 = 0.0
    sa = 0.0
    bad = 0.0
    k0 = keys[0] ^ ((keys[0] >> shift) & mask)
    kmn = k0
    kmx = k0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        s1 += v
        s2 += v * v
        sa += abs(v)
        bad += v - v
        k = keys[j]
        k = k ^ ((k >> shift) & mask)
        kmn = min(kmn, k)
        kmx = max(kmx, k)
    t = np.empty(2, keys.dtype)
    t[0] = kmn ^ ((kmn >> shift) & mask)
    t[1] = kmx ^ ((kmx >> shift) & mask)
    f = t.view(x.dtype)
    return s1, s2, sa, bad, np.float64(f[0]), np.float64(f[1])


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
def _time_features(x: np.ndarray, keys: np.ndarray, mask: int, shift: int, out: np.ndarray) -> bool:
    """Time-domain features of one window into ``out[:8]``; False (and NaN) on NaN/inf."""
    n = x.shape[0]
    s1, s2, sa, bad, mn, mx = _sums(x, keys, mask, shift)
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
def _time_batch(
    x: np.ndarray, keys: np.ndarray, mask: int, shift: int, out: np.ndarray, ok: np.ndarray
) -> None:
    for i in range(x.shape[0]):
        ok[i] = _time_features(x[i], keys[i], mask, shift, out[i])


def _int_keys(x: npt.NDArray[np.floating]) -> tuple[np.ndarray, np.integer[Any], np.integer[Any]]:
    """``x`` viewed as same-width signed ints, with the key mask and sign shift."""
    it = np.int32 if x.dtype == np.float32 else np.int64
    info = np.iinfo(it)
    return x.view(it), it(info.max), it(info.bits - 1)


@njit(**NJIT_REDUCE)
def _hann_power(v: np.ndarray, p: np.ndarray, n: int) -> None:
    """``p[k] = |Xw[k]|^2`` of the Hann-windowed spectrum from the raw rFFT.

    ``v`` is the rFFT viewed as interleaved real/imaginary floats (``2 (n // 2 + 1)``): plain
    strided float loads vectorise where complex ones did not. The arithmetic stays in the
    spectrum's precision (float32 for float32 windows: 2.5x faster, ~1e-7 relative error).
    """
    nb = v.shape[0] // 2
    h = v.dtype.type(0.5)
    q = v.dtype.type(0.25)
    for k in range(1, nb - 1):
        re = h * v[2 * k] - q * (v[2 * k - 2] + v[2 * k + 2])
        im = h * v[2 * k + 1] - q * (v[2 * k - 1] + v[2 * k + 3])
        p[k] = re * re + im * im
    # the ends wrap: X[-1] = conj(X[1]) and X[nb] = conj(X[n - nb])
    re = h * v[0] - h * v[2]
    p[0] = re * re  # X[0] is real; the imaginary parts of X[1] and conj(X[1]) cancel
    k = nb - 1
    if k > 0:
        j = n - nb
        re = h * v[2 * k] - q * (v[2 * k - 2] + v[2 * j])
        im = h * v[2 * k + 1] - q * (v[2 * k - 1] - v[2 * j + 1])
        p[k] = re * re + im * im


@njit(**NJIT_REDUCE)
def _range_sums(p: np.ndarray, lo: int, hi: int) -> tuple[float, float]:
    """``sum p[k]`` and ``sum k p[k]`` over ``lo <= k < hi``."""
    s = 0.0
    sk = 0.0
    for k in range(lo, hi):
        pk = np.float64(p[k])
        s += pk
        sk += k * pk
    return s, sk


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
    p = np.empty(nb, dtype=xs.dtype)
    band_scale = 1.0 / (n * n * 0.375)  # Parseval / Hann power gain (3/8)
    amp_scale = 2.0 / (n * 0.5)  # one-sided peak amplitude / Hann coherent gain (1/2)
    last_single = n % 2 == 0  # Nyquist bin counted once
    for i in range(xs.shape[0]):
        o = out[i]
        if not ok[i]:
            o[col : col + nbands + 4] = np.nan
            continue
        _hann_power(xs[i], p, n)
        tot = 0.0
        totk = 0.0
        for b in range(nbands):
            lo = edges[b]
            hi = edges[b + 1]
            s, sk = _range_sums(p, lo, hi)
            s *= 2.0
            sk *= 2.0
            if lo == 0 and hi > 0:
                s -= p[0]
            if last_single and hi == nb and lo < nb:
                s -= p[nb - 1]
                sk -= (nb - 1) * p[nb - 1]
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
                best = max(best, np.float64(p[k]))
            o[col + nbands + 1 + h] = math.sqrt(best) * amp_scale


@njit(**NJIT)
def _fill_band(xs: np.ndarray, k0: int, band: int, z: np.ndarray) -> None:
    """``z[i] = xs[i, k0:k0 + band]`` followed by zeros (the band shifted to baseband)."""
    for i in range(z.shape[0]):
        for j in range(band):
            z[i, j] = xs[i, k0 + j]
        for j in range(band, z.shape[1]):
            z[i, j] = 0.0


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
    mag = np.empty(kmax + 1, dtype=es.dtype)  # the spectrum's precision, like _hann_power
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


@njit(**NJIT)
def _fused_chunk(
    x: np.ndarray,
    keys: np.ndarray,
    mask: int,
    shift: int,
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
    _time_batch(x, keys, mask, shift, out, ok)
    _r2c(x, xs, axes, True, 1.0, 1)
    _spec_batch(xs.view(x.dtype), ok, shaft, n, df, tol, edges, out, col_spec)
    if orders.shape[0] == 0:
        return
    _fill_band(xs, k0, band, z)
    _c2c(z, z, axes, False, 1.0 / z.shape[1], 1)  # the decimated analytic signal, in place
    _abs2(z, e)
    _r2c(e, es, axes, True, 1.0, 1)
    _env_batch(es.view(x.dtype), ok, shaft, orders, tol, df, kmax, half, out, col_env)


@njit(**NJIT)
def _fused_batch(
    x: np.ndarray,
    keys: np.ndarray,
    mask: int,
    shift: int,
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
            mask,
            shift,
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
        #: run each sub-batch as one compiled call (rocket-fft present); else Python drives scipy
        self.fused = HAVE_NUMBA_FFT
        #: windows per internal sub-batch (about 1 MiB of complex spectrum)
        self.chunk = max(8, (1 << 20) // (8 * n))

    def _scratch(self, n: int, cdtype: np.dtype[Any], rdtype: np.dtype[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Per-thread envelope buffers ``(n, m)`` (views of the largest batch seen so far).

        Fresh multi-megabyte arrays per batch cost page faults (~10 % of the batch time);
        thread-local buffers keep the extractor safe to share between threads.
        """
        cached = getattr(self._local, "buffers", None)
        if cached is None or cached[0] < n or cached[1].dtype != cdtype or cached[2].dtype != rdtype:
            cap = max(n, cached[0] if cached is not None else 0)
            cached = (cap, np.empty((cap, self.m), dtype=cdtype), np.empty((cap, self.m), dtype=rdtype))
            self._local.buffers = cached
        return cached[1][:n], cached[2][:n]

    def _fused_scratch(self, dtype: np.dtype[Any]) -> tuple[np.ndarray, ...]:
        """Per-thread buffers of one sub-batch for :func:`_fused_batch`.

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
        if self.fused:
            self._fused(x, shaft_hz, out, ok)
            return
        step = self.chunk
        for i in range(0, x.shape[0], step):
            j = min(i + step, x.shape[0])
            self._chunk(x[i:j], shaft_hz[i:j], out[i:j], ok[i:j])

    def _fused(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        if not x.flags.writeable:  # one compiled variant per dtype (each costs ~10 s to compile)
            x = x.copy()
        keys, mask, shift = _int_keys(x)
        xs, z, e, es = self._fused_scratch(x.dtype)
        _fused_batch(
            x,
            keys,
            mask,
            shift,
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
        import scipy.fft as sfft  # the fallback only (rocket-fft missing)

        keys, mask, shift = _int_keys(x)
        _time_batch(x, keys, mask, shift, out, ok)
        xs = sfft.rfft(x, axis=1, workers=1)
        _spec_batch(_floats(xs), ok, shaft_hz, self.n, self.df, self.tol, self.edges, out, len(TIME_NAMES))
        if self.orders.shape[0] == 0:
            return
        z, e = self._scratch(x.shape[0], xs.dtype, x.dtype)
        _fill_band(xs, self.k0, self.band, z)
        z = sfft.ifft(z, axis=1, workers=1, overwrite_x=True)  # in place
        _abs2(z, e)
        es = sfft.rfft(e, axis=1, workers=1)
        col = len(TIME_NAMES) + N_BANDS + 4
        _env_batch(_floats(es), ok, shaft_hz, self.orders, self.tol, self.df, self.kmax, self.half, out, col)
