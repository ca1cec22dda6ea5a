"""Motor-current features (1 or 3 phases).

- ``rms`` (1 phase) or ``rms_a, rms_b, rms_c`` and ``imbalance`` (NEMA: the largest deviation
  of a phase RMS from the mean RMS, over the mean; 0 when the mean is 0).
- The spectral features read the Hann power spectrum summed over the phases (one rFFT per
  phase, Hann applied in the frequency domain, see :mod:`.spectrum`):

  - the fundamental is the strongest bin within ``machine.line_hz`` +- 5 %; its power is the sum
    over its bin and the two neighbours (the Hann main lobe, insensitive to where the line falls
    between bins);
  - ``thd``: sqrt(sum of the powers of harmonics 2..15) / sqrt(fundamental power); harmonic
    ``h`` is the strongest bin in ``[h (k1 - 1/2) - 1, h (k1 + 1/2) + 1]`` (its 3-bin power),
    harmonics beyond the spectrum are left out;
  - ``brb_sideband``: broken-rotor-bar sidebands at ``f1 (1 +- 2 s)``, the larger of the two,
    as an amplitude ratio to the fundamental (peak bins). With a known shaft speed the slip is
    ``s = (sync - shaft) / sync``, ``sync = 2 f1 / poles``, and the sideband offset ``2 s f1``
    is searched within +- ``machine.slip_tolerance``; with an unknown speed (or a slip outside
    (0, 0.5)) offsets for slips of 0.5-6 % are searched. Offsets closer than 3 bins to the
    fundamental are never used (the Hann main lobe): NaN when no offset is left, which says
    the window is too short to resolve the sidebands (they need ``df << 2 s f1``).

A silent window gives thd 0 and brb_sideband 0; NaN/inf gives a NaN row and ``ok = False``.
"""

from __future__ import annotations

__all__ = ["CurrentExtractor", "current_names"]

import math

import numpy as np
import numpy.typing as npt
import scipy.fft as sfft
from numba import njit

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.features.base import F64, BoolArray, FeatureExtractor
from machinewatch.engine.features.spectrum import _line_bins
from machinewatch.engine.numba_opts import NJIT, NJIT_REDUCE

#: search band of the fundamental around ``line_hz`` (relative)
LINE_TOLERANCE = 0.05
MAX_HARMONIC = 15
#: slip range searched when the shaft speed is unknown
SLIP_RANGE = (0.005, 0.06)
#: sideband offsets closer than this many bins to the fundamental are inside its Hann main lobe
MIN_OFFSET_BINS = 3


def current_names(stream: StreamConfig) -> tuple[str, ...]:
    """Feature names of a current stream (1 or 3 phases)."""
    if stream.channels == 3:
        return ("rms_a", "rms_b", "rms_c", "imbalance", "thd", "brb_sideband")
    return ("rms", "thd", "brb_sideband")


@njit(**NJIT_REDUCE)
def _sq_sum(x: np.ndarray) -> tuple[float, float]:
    """``sum x^2`` and ``sum (x - x)`` (NaN iff a NaN/inf is present) of a 1-D array."""
    s = 0.0
    bad = 0.0
    for j in range(x.shape[0]):
        v = np.float64(x[j])
        s += v * v
        bad += v - v
    return s, bad


@njit(**NJIT)
def _rms_batch(x: np.ndarray, out: np.ndarray, ok: np.ndarray) -> None:
    """Per-phase RMS (``x`` shape ``(n, phases, samples)``) and imbalance (3 phases)."""
    nw, nph, ns = x.shape
    for i in range(nw):
        total = 0.0
        good = True
        for c in range(nph):
            s, bad = _sq_sum(x[i, c])
            if bad != 0.0 or not math.isfinite(s):
                good = False
                break
            out[i, c] = math.sqrt(s / ns)
            total += out[i, c]
        ok[i] = good
        if not good:
            out[i, :] = np.nan
            continue
        if nph > 1:
            mean = total / nph
            dev = 0.0
            for c in range(nph):
                dev = max(dev, abs(out[i, c] - mean))
            out[i, nph] = dev / mean if mean > 0.0 else 0.0


@njit(**NJIT)
def _hann_power_sum(xs: np.ndarray, p: np.ndarray, n: int) -> None:
    """``p[k] = sum over phases |Xw[k]|^2``; ``xs`` shape ``(phases, n // 2 + 1)``."""
    nb = xs.shape[1]
    p[:] = 0.0
    for c in range(xs.shape[0]):
        row = xs[c]
        for k in range(nb):
            a = row[1].conjugate() if k == 0 else row[k - 1]
            b = row[k + 1] if k + 1 < nb else row[n - k - 1].conjugate()
            w = 0.5 * row[k] - 0.25 * (a + b)
            p[k] += np.float64(w.real) ** 2 + np.float64(w.imag) ** 2


@njit(**NJIT)
def _argmax(p: np.ndarray, lo: int, hi: int) -> int:
    best = lo
    for k in range(lo + 1, hi + 1):
        if p[k] > p[best]:
            best = k
    return best


@njit(**NJIT)
def _lobe(p: np.ndarray, k: int) -> float:
    """Power of the 3 bins around ``k`` (clipped to the spectrum)."""
    s = 0.0
    for j in range(max(0, k - 1), min(p.shape[0], k + 2)):
        s += p[j]
    return s


@njit(**NJIT)
def _spec_batch(
    xs: np.ndarray,
    ok: np.ndarray,
    shaft: np.ndarray,
    n: int,
    df: float,
    line_hz: float,
    poles: int,
    tol: float,
    out: np.ndarray,
    col: int,
) -> None:
    """THD and broken-rotor-bar sideband of every ok row into ``out[:, col:col + 2]``."""
    nb = xs.shape[2]
    p = np.empty(nb)
    for i in range(xs.shape[0]):
        if not ok[i]:
            continue
        _hann_power_sum(xs[i], p, n)
        lo, hi = _line_bins(line_hz, LINE_TOLERANCE, df, 1, nb - 1)
        if lo > hi:
            out[i, col] = np.nan
            out[i, col + 1] = np.nan
            continue
        k1 = _argmax(p, lo, hi)
        p1 = _lobe(p, k1)
        # THD
        harm = 0.0
        for h in range(2, MAX_HARMONIC + 1):
            a = math.floor(h * (k1 - 0.5)) - 1
            b = math.ceil(h * (k1 + 0.5)) + 1
            if b > nb - 1:
                break
            harm += _lobe(p, _argmax(p, a, b))
        out[i, col] = math.sqrt(harm / p1) if p1 > 0.0 else 0.0
        # broken rotor bar sidebands
        f1 = k1 * df
        sync = 2.0 * f1 / poles
        s = (sync - shaft[i]) / sync if math.isfinite(shaft[i]) else np.nan
        if s > 0.0 and s < 0.5:
            dlo, dhi = _line_bins(2.0 * s * f1, tol, df, MIN_OFFSET_BINS, k1)
        else:
            dlo = max(MIN_OFFSET_BINS, math.ceil(2.0 * SLIP_RANGE[0] * f1 / df - 0.5))
            dhi = min(k1, math.floor(2.0 * SLIP_RANGE[1] * f1 / df + 0.5))
        dhi = min(dhi, k1, nb - 1 - k1)
        if dlo > dhi:
            out[i, col + 1] = np.nan
            continue
        side = 0.0
        for d in range(dlo, dhi + 1):
            side = max(side, p[k1 - d], p[k1 + d])
        out[i, col + 1] = math.sqrt(side / p[k1]) if p[k1] > 0.0 else 0.0


class CurrentExtractor(FeatureExtractor):
    """Motor-current features of one stream (see the module docstring)."""

    def __init__(self, stream: StreamConfig, machine: MachineConfig) -> None:
        super().__init__(stream, machine)
        if stream.channels not in (1, 3):
            raise ValueError(f"a current stream has 1 or 3 phases, got {stream.channels}")
        if stream.window_samples < 4:
            raise ValueError(f"a current window needs >= 4 samples, got {stream.window_samples}")
        self.names = current_names(stream)
        self.n = stream.window_samples
        self.df = float(stream.rate_hz) / self.n

    def _batch(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        # (n, samples) or (n, samples, phases) -> (n, phases, samples), contiguous per phase
        xp = x[:, np.newaxis, :] if x.ndim == 2 else np.ascontiguousarray(x.transpose(0, 2, 1))
        _rms_batch(xp, out, ok)
        xs = sfft.rfft(xp, axis=2, workers=1)
        m = self.machine
        col = len(self.names) - 2
        _spec_batch(xs, ok, shaft_hz, self.n, self.df, m.line_hz, m.poles, m.slip_tolerance, out, col)
