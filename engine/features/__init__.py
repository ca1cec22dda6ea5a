"""Feature extraction: numba kernels per stream kind behind typed wrappers.

Contract (used by the pipeline, the benchmarks and the evaluation):

- ``feature_names(stream, machine) -> tuple[str, ...]``: the fixed, named order of the
  features of one stream (names without the stream prefix, e.g. ``"rms"``, ``"env_bpfo"``).
- ``make_extractor(stream, machine) -> FeatureExtractor`` with
  ``names``, ``compute(values, shaft_hz, out) -> bool`` (one window; ``values`` shape
  ``(window_samples,)`` or ``(window_samples, channels)``; writes ``len(names)`` float64 into
  ``out``; returns False when the window held NaN/inf, in which case ``out`` is NaN) and
  ``compute_batch(windows, shaft_hz, out) -> ok`` (``windows`` shape ``(n, window_samples)`` or
  ``(n, window_samples, channels)``, ``shaft_hz`` shape ``(n,)``, ``out`` shape ``(n, n_features)``,
  ``ok`` a bool array ``(n,)``).
- ``warmup(stream, machine)`` compiles every kernel a stream needs on a dummy window (including
  read-only input arrays), so no sensor sample ever waits for the compiler.

Kinds and where their definitions live (each module's docstring states every feature, its
units and its value on degenerate windows):

- :mod:`.vibration` (``kind = "vibration"``): time-domain statistics, 8 band RMS, spectral
  centroid, 1x/2x/3x amplitudes and, with a bearing geometry, squared-envelope-spectrum lines at
  BPFO, BPFI (and their 2nd harmonics), 2 x BSF and FTF (:mod:`.bearing`); one rFFT per
  window feeds all of them (:mod:`.spectrum` holds the shared conventions);
- :mod:`.current` (``kind = "current"``, 1 or 3 phases): RMS per phase, imbalance, THD,
  broken-rotor-bar sideband ratio;
- :mod:`.scalar` (``temperature``, ``speed``, ``scalar``): level, slope, rate of change, min, max.

Speed-dependent features are NaN when the shaft speed is unknown (``shaft_hz`` NaN or None
with no fixed ``machine.shaft_hz``); that alone does not make ``compute`` return False.
Extractors are safe to share between threads (``compute_batch`` may run in a worker thread;
the kernels release the GIL).
"""

from __future__ import annotations

__all__ = [
    "CurrentExtractor",
    "FeatureExtractor",
    "ScalarExtractor",
    "VibrationExtractor",
    "feature_names",
    "fft_backend",
    "make_extractor",
    "measure_fft_backends",
    "stack_windows",
    "warmup",
]

from typing import Any

import numpy as np

from machinewatch.engine.config import MachineConfig, StreamConfig
from machinewatch.engine.features.base import FeatureExtractor, stack_windows
from machinewatch.engine.features.current import CurrentExtractor, current_names
from machinewatch.engine.features.scalar import SCALAR_NAMES, ScalarExtractor
from machinewatch.engine.features.vibration import (
    MKL_MIN_BATCH,
    VibrationExtractor,
    fft_backend,
    measure_fft_backends,
    vibration_names,
)


def feature_names(stream: StreamConfig, machine: MachineConfig) -> tuple[str, ...]:
    """The fixed, named feature order of ``stream`` (names without the stream prefix).

    >>> from machinewatch.engine.config import StreamConfig, MachineConfig
    >>> feature_names(StreamConfig("t", "temperature", 1.0, 60, 10), MachineConfig())
    ('level', 'slope', 'roc', 'min', 'max')
    """
    if stream.kind == "vibration":
        return vibration_names(machine)
    if stream.kind == "current":
        return current_names(stream)
    if stream.kind in ("temperature", "speed", "scalar"):
        return SCALAR_NAMES
    raise ValueError(f"no features for stream kind {stream.kind!r}")


def make_extractor(stream: StreamConfig, machine: MachineConfig) -> FeatureExtractor:
    """The feature extractor of ``stream`` (its ``names`` equal :func:`feature_names`)."""
    if stream.kind == "vibration":
        return VibrationExtractor(stream, machine)
    if stream.kind == "current":
        return CurrentExtractor(stream, machine)
    if stream.kind in ("temperature", "speed", "scalar"):
        return ScalarExtractor(stream, machine)
    raise ValueError(f"no features for stream kind {stream.kind!r}")


def warmup(
    stream: StreamConfig, machine: MachineConfig, dtypes: tuple[type[np.floating[Any]], ...] = (np.float32,)
) -> None:
    """Compile every kernel ``stream`` needs for windows of ``dtypes``, writable and read-only.

    Runs one dummy batch of each through :meth:`FeatureExtractor.compute_batch` and
    :meth:`FeatureExtractor.compute` (numba's disk cache makes a second start fast). The engine's
    buffers hold float32, the default; another dtype compiles on first use (the fused vibration
    kernel takes ~10 s per dtype on a cold cache, then loads from numba's disk cache).
    """
    ex = make_extractor(stream, machine)
    shape = (stream.window_samples,) if stream.channels == 1 else (stream.window_samples, stream.channels)
    rng = np.random.default_rng(0)
    rows = MKL_MIN_BATCH  # small and large batches take different paths with the MKL backend
    base = rng.standard_normal((rows, *shape))
    shaft = np.full(rows, machine.shaft_hz or 25.0)
    out = np.empty((rows, len(ex.names)))
    for dtype in dtypes:
        x = base.astype(dtype)
        ro = np.frombuffer(x.tobytes(), dtype=dtype).reshape(x.shape)  # read-only
        for arr in (x, ro):
            ex.compute_batch(arr, shaft, out)
            ex.compute_batch(arr[:2], shaft[:2], out[:2])
            ex.compute(arr[0], float(shaft[0]), out[0])
            stack_windows([arr[0], arr[1]])
