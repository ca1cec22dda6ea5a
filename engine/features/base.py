"""The extractor base class: argument checks and the one-window path, shared by every kind."""

from __future__ import annotations

__all__ = ["FeatureExtractor", "as_windows", "bit_views", "float_extremes", "shaft_array", "stack_windows"]

from abc import ABC, abstractmethod
from collections.abc import Hashable

import numpy as np
import numpy.typing as npt
from numba import njit

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.numba_opts import NJIT

F64 = npt.NDArray[np.float64]
BoolArray = npt.NDArray[np.bool_]


def bit_views(x: npt.NDArray[np.floating]) -> tuple[np.ndarray, np.ndarray]:
    """``x`` viewed as same-width signed and unsigned ints (see :func:`float_extremes`)."""
    if x.dtype == np.float32:
        return x.view(np.int32), x.view(np.uint32)
    return x.view(np.int64), x.view(np.uint64)


@njit(**NJIT)
def float_extremes(
    smin: int, smax: int, umin: int, umax: int, keys: np.ndarray, x: np.ndarray
) -> tuple[float, float]:
    """Min and max of finite floats ``x`` from the extremes of their bit patterns as signed
    (``smin``, ``smax``) and unsigned (``umin``, ``umax``) ints; ``keys`` is ``x``'s signed view.

    Non-negative floats order like their bits, negative ones in reverse and below them, so the
    max is the largest signed pattern if any is non-negative (else the smallest), and the min
    the largest unsigned pattern if any is negative (else the smallest). A plain integer
    min/max vectorises with the sums of the same loop, where a float one (NaN rules) keeps it
    scalar and key arithmetic widened it: 0.5 us per 4096 float32 values here, against 1.3 us
    for transformed keys and ~6 us for float compares. Meaningless if a NaN/inf is present.
    """
    b = np.empty(2, keys.dtype)
    b[0] = umax if smin < 0 else umin  # the same bits, read as signed
    b[1] = smax if smax >= 0 else smin
    t = b.view(x.dtype)
    return np.float64(t[0]), np.float64(t[1])


@njit(**{**NJIT, "nogil": False})
def _copy_flat(dst: np.ndarray, src: np.ndarray) -> None:
    for j in range(src.shape[0]):
        dst[j] = src[j]


def stack_windows(values: list[np.ndarray]) -> np.ndarray:
    """``np.stack(values)`` of same-shape float windows, without giving up the GIL per window.

    numpy releases the GIL for every copy of more than a few hundred elements; in the feature
    worker thread each release costs a reacquisition, which waits up to the interpreter's switch
    interval (5 ms) while the event loop runs Python: a 256-window stack took ~30 ms instead of
    1 ms under load (the GIL convoy). A small compiled copy keeps the GIL instead.
    """
    first = values[0]
    if first.dtype not in (np.float32, np.float64) or any(
        v.shape != first.shape or v.dtype != first.dtype for v in values
    ):
        return np.stack(values)
    out = np.empty((len(values), *first.shape), dtype=first.dtype)
    flat = out.reshape(len(values), -1)
    for i, v in enumerate(values):
        _copy_flat(flat[i], np.ascontiguousarray(v).reshape(-1))
    return out


def as_windows(windows: npt.ArrayLike, window_samples: int, channels: int) -> npt.NDArray[np.floating]:
    """A C-contiguous float32/float64 view (or copy) of a batch of windows, shape checked.

    float32 and float64 pass through unchanged (read-only arrays stay read-only: the kernels
    are compiled for those too); any other dtype is converted to float64.
    """
    a = np.asarray(windows)
    if a.dtype != np.float32 and a.dtype != np.float64:
        a = a.astype(np.float64)
    want = (window_samples,) if channels == 1 else (window_samples, channels)
    if a.ndim != 1 + len(want) or a.shape[1:] != want:
        raise ValueError(f"windows must have shape (n, {', '.join(map(str, want))}), got {a.shape}")
    return np.ascontiguousarray(a)


def shaft_array(shaft_hz: npt.ArrayLike | float | None, n: int, default: float | None) -> F64:
    """Per-window shaft speed in Hz, shape ``(n,)``; ``None`` means the machine's fixed speed.

    Unknown speed is NaN (speed-dependent features then come out NaN, see each kind).
    """
    if shaft_hz is None:
        return np.full(n, np.nan if default is None else float(default))
    s = np.asarray(shaft_hz, dtype=np.float64)
    if s.ndim == 0:
        return np.full(n, float(s))
    if s.shape != (n,):
        raise ValueError(f"shaft_hz must be a scalar or have shape ({n},), got {s.shape}")
    return np.ascontiguousarray(s)


class FeatureExtractor(ABC):
    """Features of one stream kind, for one stream's config.

    An extractor holds only its config and constants: it is safe to share between threads.
    """

    #: the fixed, named order of the features (without the stream prefix)
    names: tuple[str, ...]

    def __init__(self, stream: StreamConfig, machine: MachineConfig) -> None:
        self.stream = stream
        self.machine = machine

    @property
    def n_features(self) -> int:
        """``len(names)``."""
        return len(self.names)

    def batch_key(self) -> Hashable:
        """Extractors with equal keys compute alike (shaft speed is per window): windows of their
        streams may share one :meth:`compute_batch` call. Default: this extractor only."""
        return ("extractor", id(self))

    def compute(self, values: npt.ArrayLike, shaft_hz: float | None, out: F64) -> bool:
        """Features of one window into ``out`` (``len(names)`` float64); False on NaN/inf.

        ``shaft_hz=None`` uses the machine's fixed speed (NaN when it has none).
        """
        if out.shape != (self.n_features,):
            raise ValueError(f"out must have shape ({self.n_features},), got {out.shape}")
        v = np.asarray(values)
        ok = self.compute_batch(v[np.newaxis], None if shaft_hz is None else [shaft_hz], out[np.newaxis])
        return bool(ok[0])

    def compute_batch(self, windows: npt.ArrayLike, shaft_hz: npt.ArrayLike | None, out: F64) -> BoolArray:
        """Features of ``n`` windows into ``out`` (shape ``(n, len(names))``, float64).

        Returns ``ok`` (bool, shape ``(n,)``): False where a window held NaN/inf; that row of
        ``out`` is then NaN.
        """
        x = as_windows(windows, self.stream.window_samples, self.stream.channels)
        n = x.shape[0]
        if (
            out.shape != (n, self.n_features)
            or out.dtype != np.float64
            or not out.flags.c_contiguous
            or not out.flags.writeable
        ):
            raise ValueError(
                f"out must be a writable C-contiguous float64 array of shape ({n}, {self.n_features}),"
                f" got {out.dtype} {out.shape}"
            )
        ok = np.ones(n, dtype=np.bool_)
        if n:
            self._batch(x, shaft_array(shaft_hz, n, self.machine.shaft_hz), out, ok)
        return ok

    @abstractmethod
    def _batch(self, x: npt.NDArray[np.floating], shaft_hz: F64, out: F64, ok: BoolArray) -> None:
        """Fill ``out`` and ``ok`` for a checked, non-empty batch."""
