"""Signal models of rotating machines, as pure vectorised numpy functions.

Everything here takes time arrays (seconds since the start of a simulation, float64) and
parameters, and returns samples; nothing keeps state except what a caller passes in and gets back
(the resonator's filter state). :mod:`machinewatch.connectors.sources.simulator` owns the pacing
and the per-stream state and calls these.

Conventions
-----------
- Shaft rotation is given by a :class:`SpeedProfile`: a nominal speed with a slow, smooth random
  variation (about 0.2 %), whose integral (the shaft angle in revolutions) is known in closed
  form, so a signal is continuous across chunks of any size and does not depend on chunking.
- Phases are reduced to one revolution in float64 before the sine is taken in float32: float32
  sines are several times faster (SIMD) and an argument below a few hundred radians keeps them
  accurate to ~1e-5.
- Bearing defects are impulse trains at the defect's order of shaft speed, each impulse ringing
  down a structural resonance. Only the ringing of the latest impulse is summed; the resonance
  decays in a few milliseconds, well within one defect period, so the sum would add nothing.
- Amplitudes are in the units of the stream: vibration in g, current in A, temperature in °C,
  speed in Hz.

Example
-------
>>> import numpy as np
>>> prof = speed_profile(25.0, 0.0, np.random.default_rng(0))
>>> t = np.arange(4) / 100.0
>>> shaft_cycles(t, prof).round(3).tolist()
[0.0, 0.25, 0.5, 0.75]
"""

from __future__ import annotations

__all__ = [
    "DEFAULT_BEARING_ORDERS",
    "Resonator",
    "SpeedProfile",
    "add_spikes",
    "bearing_impulses",
    "chunk_cycles",
    "clip_values",
    "current_waveform",
    "harmonic_sum",
    "hash_uniform",
    "load_factor",
    "motor_slip",
    "resonator",
    "resonator_noise",
    "severity_ramp",
    "shaft_cycles",
    "shaft_speed",
    "slow_series",
    "speed_profile",
    "temperature_level",
]

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.numba_opts import NJIT

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: bearing fault orders used when an asset has no bearing geometry (SKF 6205, as in CWRU)
DEFAULT_BEARING_ORDERS: dict[str, float] = {
    "bpfo": 3.5848,
    "bpfi": 5.4152,
    "bsf": 2.357,
    "ftf": 0.39828,
}

_TWO_PI = 2.0 * math.pi


def _frac(x: F64) -> F64:
    """``x mod 1`` (``np.remainder`` is several times slower for float64)."""
    return x - np.floor(x)


@dataclass(frozen=True, slots=True)
class SpeedProfile:
    """Shaft speed ``f(t) = f0 * (1 + sum_k a_k sin(2 pi nu_k t + phi_k))`` in Hz.

    The variation terms are slow (``nu_k`` well below 1 Hz) and small (``sum a_k`` a few
    thousandths), the way a motor under a slightly fluctuating load wanders.
    """

    f0_hz: float
    amps: tuple[float, ...] = ()
    freqs_hz: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()


def speed_profile(f0_hz: float, jitter: float, rng: np.random.Generator, terms: int = 3) -> SpeedProfile:
    """A random slow speed variation of relative size ``jitter`` (standard deviation).

    Parameters
    ----------
    f0_hz
        Nominal shaft speed.
    jitter
        Relative standard deviation of the speed, e.g. ``0.002`` for 0.2 %.
    rng
        Source of the random frequencies (0.02-0.5 Hz) and phases.
    terms
        Number of sinusoidal terms.
    """
    if jitter <= 0.0:
        return SpeedProfile(f0_hz)
    # each term a*sin has variance a^2/2; share the variance equally between the terms
    a = jitter * math.sqrt(2.0 / terms)
    freqs = tuple(float(v) for v in rng.uniform(0.02, 0.5, terms))
    phases = tuple(float(v) for v in rng.uniform(0.0, _TWO_PI, terms))
    return SpeedProfile(f0_hz, (a,) * terms, freqs, phases)


def shaft_speed(t: F64, prof: SpeedProfile) -> F64:
    """Instantaneous shaft speed in Hz at times ``t`` (s)."""
    rel = np.ones_like(t)
    for a, nu, ph in zip(prof.amps, prof.freqs_hz, prof.phases, strict=True):
        rel += a * np.sin(_TWO_PI * nu * t + ph)
    return prof.f0_hz * rel


def slow_series(t: F64, fn: Callable[[F64], F64]) -> F64:
    """``fn(t)`` for a ``fn`` that varies on a scale of seconds: exact at the first and last
    sample, linear in between (one evaluation per chunk instead of one per sample)."""
    if t.size <= 2:
        return fn(t)
    ends = fn(np.array([t[0], t[-1]]))
    e0, e1 = float(ends[0]), float(ends[1])
    span = float(t[-1] - t[0])
    out: F64 = e0 + (e1 - e0) * ((t - t[0]) / span)
    return out


def shaft_cycles(t: F64, prof: SpeedProfile) -> F64:
    """Shaft angle in revolutions at times ``t`` (s): the integral of :func:`shaft_speed` from 0.

    Exact for the whole array; cost is one cosine per variation term and sample, so callers on a
    hot path evaluate it at chunk ends and interpolate (see :func:`chunk_cycles`).
    """
    out = t.astype(np.float64, copy=True)
    for a, nu, ph in zip(prof.amps, prof.freqs_hz, prof.phases, strict=True):
        w = _TWO_PI * nu
        out += a * (math.cos(ph) - np.cos(w * t + ph)) / w
    return prof.f0_hz * out


def chunk_cycles(t: F64, prof: SpeedProfile) -> tuple[float, F64]:
    """Shaft angle over one chunk as ``(whole, frac)``: revolutions = ``whole + frac``.

    ``whole`` is the integer part at the chunk's first sample and ``frac`` a small float64 array
    starting in [0, 1), so that ``2 pi k frac`` stays a small argument for float32 sines. The angle
    is exact at the first and last sample and quadratic in between (the speed varies on a scale of
    seconds; the error over a chunk of 0.1 s is below 1e-5 revolutions).
    """
    if t.size == 0:
        return 0.0, np.zeros(0)
    ends = shaft_cycles(np.array([t[0], 0.5 * (t[0] + t[-1]), t[-1]]), prof)
    whole = math.floor(ends[0])
    c0 = ends[0] - whole
    span = t[-1] - t[0]
    if not prof.amps or span <= 0.0 or span > 0.25:
        if span > 0.25:
            return float(whole), shaft_cycles(t, prof) - whole
        return float(whole), c0 + prof.f0_hz * (t - t[0])
    # quadratic through the three exact points, in x = (t - t0)/span in [0, 1]
    x = (t - t[0]) / span
    d1 = ends[1] - ends[0]
    d2 = ends[2] - ends[0]
    b2 = 2.0 * d2 - 4.0 * d1
    b1 = d2 - b2
    return float(whole), c0 + x * (b1 + b2 * x)


@njit(**NJIT)
def _harmonics_add(
    s1: F32, c1: F32, sin_coef: F64, cos_coef: F64, gain: F64, out: F32
) -> None:  # pragma: no cover - compiled
    n = s1.shape[0]
    nh = sin_coef.shape[0]
    g_step = 1 if gain.shape[0] == n else 0
    for i in range(n):
        s = np.float64(s1[i])
        c = np.float64(c1[i])
        sp, cp = 0.0, 1.0
        sk, ck = s, c
        acc = 0.0
        for k in range(nh):
            if k > 0:
                sn = 2.0 * c * sk - sp
                cn = 2.0 * c * ck - cp
                sp, cp, sk, ck = sk, ck, sn, cn
            acc += sin_coef[k] * sk + cos_coef[k] * ck
        out[i] += np.float32(acc * gain[i * g_step])


def harmonic_sum(
    frac_cycles: F64,
    amps: Sequence[float],
    phases: Sequence[float],
    gain: F64 | float = 1.0,
    out: F32 | None = None,
) -> F32:
    """``gain * sum_k amps[k] * sin(2 pi (k+1) c + phases[k])`` for harmonics 1..len(amps).

    One float32 sine and cosine of the reduced angle per sample, then the Chebyshev recurrence
    ``s[k+1] = 2 cos(theta) s[k] - s[k-1]`` for the higher harmonics. ``gain`` is a scalar or
    one value per sample (a severity ramp). The result is added to ``out`` when given.
    """
    frac = np.ascontiguousarray(frac_cycles, np.float64)
    if out is None:
        out = np.zeros(frac.shape, np.float32)
    g = np.ascontiguousarray(np.atleast_1d(np.asarray(gain, np.float64)))
    if g.shape[0] not in (1, frac.shape[0]):
        raise ValueError("gain must be a scalar or one value per sample")
    a = np.asarray(amps, np.float64)
    p = np.asarray(phases, np.float64)
    # the fundamental's sine and cosine in float32 (SIMD, several times faster than float64)
    theta = (_frac(frac) * _TWO_PI).astype(np.float32)
    # a sin(k theta + phi) = a cos(phi) sin(k theta) + a sin(phi) cos(k theta)
    _harmonics_add(np.sin(theta), np.cos(theta), a * np.cos(p), a * np.sin(p), g, out)
    return out


@dataclass(frozen=True, slots=True)
class Resonator:
    """A second-order structural resonance as an IIR filter, normalised to unit noise gain."""

    freq_hz: float
    zeta: float
    b: F64
    a: F64


def resonator(freq_hz: float, zeta: float, rate_hz: float) -> Resonator:
    """Resonance at ``freq_hz`` with damping ``zeta``, for white noise in, unit-RMS response out.

    The frequency is limited to 0.4 x ``rate_hz`` so that it stays below Nyquist.
    """
    f = min(freq_hz, 0.4 * rate_hz)
    wn = _TWO_PI * f / rate_hz
    r = math.exp(-zeta * wn)
    wd = wn * math.sqrt(max(1.0 - zeta * zeta, 1e-6))
    a1, a2 = -2.0 * r * math.cos(wd), r * r
    # noise gain of 1/(1 + a1 z^-1 + a2 z^-2): the sum of its squared impulse response, closed form
    power = (1.0 + a2) / ((1.0 - a2) * ((1.0 + a2) ** 2 - a1 * a1))
    return Resonator(f, zeta, np.array([1.0 / math.sqrt(power)]), np.array([1.0, a1, a2]))


def resonator_noise(white: F32, res: Resonator, zi: F64 | None = None) -> tuple[F32, F64]:
    """Filter ``white`` through ``res``; returns the response and the state for the next chunk.

    The state has :func:`scipy.signal.lfilter`'s meaning (transposed direct form II), so the
    response is the same as ``lfilter(res.b, res.a, white, zi=zi)`` (checked in the tests); a
    compiled loop instead of scipy.signal keeps scipy.signal's ~1.3 s import and ~50 MB out of
    the engine.
    """
    state = np.zeros(2) if zi is None else np.array(zi, np.float64)
    y = np.empty(white.shape[0], np.float32)
    _allpole2(np.asarray(white, np.float64), float(res.b[0]), float(res.a[1]), float(res.a[2]), state, y)
    return y, state


@njit(**NJIT)
def _allpole2(
    x: F64, g: float, a1: float, a2: float, z: F64, out: npt.NDArray[np.float32]
) -> None:  # pragma: no cover - compiled
    z0, z1 = z[0], z[1]
    for i in range(x.shape[0]):
        y = g * x[i] + z0
        z0 = z1 - a1 * y
        z1 = -a2 * y
        out[i] = y
    z[0], z[1] = z0, z1


def hash_uniform(idx: I64, seed: int) -> F64:
    """A deterministic pseudo-random number in [0, 1) for each integer of ``idx`` (splitmix64)."""
    with np.errstate(over="ignore"):
        z = idx.astype(np.uint64) + np.uint64((seed * 0x9E3779B97F4A7C15) & 0xFFFFFFFFFFFFFFFF)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * (1.0 / (1 << 53))


@njit(**NJIT)
def _impulses_add(
    base_frac: float,
    base_whole: int,
    frac: F64,
    shaft_hz: F64,
    order: float,
    res_hz: float,
    decay_s: float,
    amplitude: F64,
    seed: int,
    modulation: F64,
    out: F32,
) -> None:  # pragma: no cover - compiled
    n = frac.shape[0]
    f_step = 1 if shaft_hz.shape[0] == n else 0
    a_step = 1 if amplitude.shape[0] == n else 0
    m_step = 1 if modulation.shape[0] == n else 0
    for i in range(n):
        amp = amplitude[i * a_step]
        if amp == 0.0:
            continue
        psi = base_frac + order * frac[i]
        k = np.floor(psi)
        tau = (psi - k) / (order * shaft_hz[i * f_step])
        scatter = 0.6 + 0.4 * _splitmix_unit(np.int64(k) + base_whole, seed)
        ring = res_hz * tau
        ring -= np.floor(ring)
        env = np.exp(-tau / decay_s) * scatter * amp * modulation[i * m_step]
        out[i] += np.float32(env * np.sin(2.0 * np.pi * ring))


@njit(**NJIT)
def _splitmix_unit(i: int, seed: int) -> float:  # pragma: no cover - compiled
    z = np.uint64(i) + np.uint64(seed) * np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
    return float(z >> np.uint64(11)) * (1.0 / 9007199254740992.0)


def bearing_impulses(
    cycles_whole: float,
    frac_cycles: F64,
    shaft_hz: F64 | float,
    order: float,
    res_hz: float,
    decay_s: float,
    amplitude: F64 | float,
    seed: int,
    modulation: F64 | None = None,
    out: F32 | None = None,
) -> F32:
    """A train of impulses at ``order`` x shaft speed, each ringing a resonance down.

    Parameters
    ----------
    cycles_whole, frac_cycles
        Shaft angle in revolutions, as from :func:`chunk_cycles`.
    shaft_hz
        Instantaneous shaft speed (scalar or per sample).
    order
        Defect frequency as a multiple of shaft speed (BPFO, BPFI, 2 x BSF ...).
    res_hz, decay_s
        Resonance excited by each impact and its decay time constant.
    amplitude
        Peak acceleration of an impact (scalar or per sample: a severity ramp).
    seed
        Makes the impact-to-impact amplitude scatter (60-100 %) reproducible.
    modulation
        Optional per-sample gain (>= 0), e.g. the load zone passing an inner-race defect.
    out
        When given, the impulses are added to it (and it is returned).
    """
    frac = np.ascontiguousarray(frac_cycles, np.float64)
    if out is None:
        out = np.zeros(frac.shape, np.float32)
    # fault angle in impacts; split so the fractional part keeps float64 precision
    base = cycles_whole * order
    base_whole = math.floor(base)

    def vec(v: F64 | float | None) -> F64:
        return np.ascontiguousarray(np.atleast_1d(np.asarray(1.0 if v is None else v, np.float64)))

    _impulses_add(
        base - base_whole,
        int(base_whole),
        frac,
        vec(shaft_hz),
        float(order),
        float(res_hz),
        float(decay_s),
        vec(amplitude),
        int(seed) & 0x7FFFFFFFFFFFFFFF,
        vec(modulation),
        out,
    )
    return out


def severity_ramp(
    t: F64, start_s: float, ramp_s: float, severity: float, duration_s: float | None = None
) -> F64:
    """Fault severity over time: 0 before ``start_s``, rising linearly over ``ramp_s`` to
    ``severity``, back to 0 after ``start_s + duration_s`` when a duration is given."""
    if ramp_s > 0.0:
        s = np.clip((t - start_s) / ramp_s, 0.0, 1.0) * severity
    else:
        s = np.where(t >= start_s, severity, 0.0)
    if duration_s is not None:
        s = np.where(t < start_s + duration_s, s, 0.0)
    return np.asarray(s, np.float64)


def load_factor(t: F64, prof: SpeedProfile) -> F64:
    """Relative motor load (about 1 +- 5 %) that follows the same slow wander as the speed.

    More load means a little less speed (slip grows), more current and more heat. The wander is
    slow, so it is evaluated at the ends of ``t`` and interpolated linearly in between.
    """
    rel = slow_series(t, lambda u: shaft_speed(u, prof)) / prof.f0_hz - 1.0
    # the speed wander is ~0.2 %; the load behind it is ~25 x larger in relative terms
    return 1.0 - 25.0 * rel


def motor_slip(shaft_hz: float, line_hz: float, poles: int) -> float:
    """Induction-motor slip ``1 - f_shaft / f_sync``; 0.02 when the speed does not fit the
    line frequency and pole count (an asset configured without a motor model)."""
    sync = 2.0 * line_hz / poles
    s = 1.0 - shaft_hz / sync
    return s if 0.002 <= s <= 0.1 else 0.02


def current_waveform(
    t: F64,
    line_hz: float,
    amplitude: float,
    channels: int,
    harmonics: Sequence[tuple[int, float]] = ((5, 0.03), (7, 0.02)),
    phase_gain: F64 | None = None,
    sideband_index: F64 | float = 0.0,
    sideband_hz: float = 1.0,
    load: F64 | None = None,
) -> F32:
    """Motor phase currents, shape ``(len(t), channels)`` (1 or 3 phases, 120° apart).

    Parameters
    ----------
    t
        Times (s).
    line_hz, amplitude
        Supply frequency and peak current of the fundamental.
    harmonics
        ``(order, relative amplitude)`` pairs; 5th and 7th from the drive's rectifier by default.
    phase_gain
        Per-phase gain, shape ``(len(t), channels)`` or ``(channels,)`` (phase imbalance).
    sideband_index
        Amplitude-modulation index at ``sideband_hz``: a broken rotor bar modulates the current
        at twice the slip frequency, which puts sidebands at ``line_hz * (1 +- 2 s)``, each of
        half the index relative to the fundamental.
    load
        Relative load per sample (scales the amplitude).
    """
    base = _frac(line_hz * t)
    gain = np.float32(amplitude) * (
        1.0 + np.asarray(sideband_index) * np.cos(_frac(sideband_hz * t) * _TWO_PI)
    )
    if load is not None:
        gain = gain * load
    gain32 = np.asarray(gain, np.float32)
    out = np.empty((t.size, channels), np.float32)
    for p in range(channels):
        shift = p / 3.0
        arg = (_frac(base - shift) * _TWO_PI).astype(np.float32)
        wave = np.sin(arg)
        for order, rel in harmonics:
            harg = (_frac(order * (base - shift)) * _TWO_PI).astype(np.float32)
            wave += np.float32(rel) * np.sin(harg)
        col = wave * gain32
        if phase_gain is not None:
            pg = phase_gain[..., p]
            col = col * np.asarray(pg, np.float32)
        out[:, p] = col
    return out


def temperature_level(t: F64, base_c: float, load: F64, rise_c: F64 | float = 0.0) -> F64:
    """Winding/bearing temperature: ``base_c`` plus ~3 °C per 5 % load, plus a fault rise."""
    return base_c + 60.0 * (load - 1.0) + rise_c


def clip_values(x: F32, level: float) -> F32:
    """A sensor or ADC saturating at +-``level``."""
    return np.clip(x, -level, level).astype(np.float32, copy=False)


def add_spikes(x: F32, prob: F64 | float, height: float, rng: np.random.Generator) -> F32:
    """Replace random single samples (probability ``prob`` each) by +-``height`` x (1..3)."""
    hit = rng.random(x.size) < prob
    if not hit.any():
        return x
    out = x.copy()
    n = int(hit.sum())
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    out[hit] = (sign * height * rng.uniform(1.0, 3.0, n)).astype(np.float32)
    return out
