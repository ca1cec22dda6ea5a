"""Hot-path benchmark: vibration features, engine (numba + batched FFTs) vs plain numpy/scipy.

Both sides compute the full vibration feature set (time-domain statistics, 8 band RMS,
spectral centroid, 1x-3x amplitudes, 6 squared-envelope bearing lines) of the same synthetic
4096-sample windows at 25.6 kHz with the CWRU drive-end bearing geometry. The baseline is the
reference implementation the tests check the engine against (``tests/engine/naive.py``: one
window at a time, ``scipy.signal.hilbert``, ``scipy.stats``, ``np.median``).

Everything runs on one thread: the thread-count variables are pinned to 1 before numpy or
numba is imported. Run::

    .venv/bin/python bench/hotpath.py            # human-readable
    .venv/bin/python bench/hotpath.py --json     # {"engine_windows_per_s", ...}
"""

from __future__ import annotations

import os

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft as sfft  # noqa: E402

from machinewatch.engine import features  # noqa: E402
from machinewatch.engine.config import BearingGeometry, MachineConfig, StreamConfig  # noqa: E402
from machinewatch.engine.features import vibration  # noqa: E402
from machinewatch.engine.features.bearing import envelope_orders  # noqa: E402

RATE = 25600.0
N = 4096
SHAFT = 29.95  # CWRU 1797 rpm
BEARING = BearingGeometry(9, 0.3126, 1.537)


def load_naive() -> ModuleType:
    """The per-window numpy/scipy reference from ``tests/engine/naive.py``."""
    path = Path(__file__).resolve().parent.parent / "tests" / "engine" / "naive.py"
    spec = importlib.util.spec_from_file_location("bench_naive", path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load the baseline from {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def synthetic_windows(n: int, seed: int = 0) -> np.ndarray:
    """``n`` float32 windows: noise, 1x, and for half of them outer-race impacts on a resonance."""
    rng = np.random.default_rng(seed)
    t = np.arange(N) / RATE
    ring = np.exp(-np.arange(64) / RATE / 4e-4) * np.sin(2 * np.pi * 5000.0 * np.arange(64) / RATE)
    bpfo = BEARING.orders()["bpfo"] * SHAFT
    x = 0.5 * rng.standard_normal((n, N)) + 0.3 * np.sin(2 * np.pi * SHAFT * t)
    for i in range(0, n, 2):
        for t0 in np.arange(rng.uniform(0, 1 / bpfo), t[-1], 1 / bpfo):
            j = int(t0 * RATE)
            seg = x[i, j : j + 64]
            seg += 3.0 * ring[: seg.size]
    return x.astype(np.float32)


def installed_backends() -> list[str]:
    """The FFT backends installed here, fastest first (see ``features.vibration.fft_backend``)."""
    have = {"mkl": vibration._load_mkl() is not None, "ducc0": vibration.HAVE_NUMBA_FFT, "scipy": True}
    return [b for b in vibration.FFT_BACKENDS if have[b]]


def best_time(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` calls (the least disturbed by other processes)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="windows per compute_batch call")
    ap.add_argument("--baseline-windows", type=int, default=64, help="windows the baseline runs")
    ap.add_argument("--repeat", type=int, default=15, help="timed repetitions (best is kept)")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)

    stream = StreamConfig("vib", "vibration", RATE, N, N)
    machine = MachineConfig(shaft_hz=SHAFT, bearing=BEARING)
    features.warmup(stream, machine)
    measured = features.measure_fft_backends(stream, machine)  # the engine's own choice at warm-up
    ex = features.make_extractor(stream, machine)
    assert isinstance(ex, features.VibrationExtractor)
    naive = load_naive()
    orders = envelope_orders(BEARING)

    x = synthetic_windows(args.batch)
    shaft = np.full(args.batch, SHAFT)
    out = np.empty((args.batch, len(ex.names)))

    # every installed FFT backend in the same run (the engine uses the one measured fastest)
    t_by_backend: dict[str, float] = {}
    for backend in installed_backends():
        other = features.make_extractor(stream, machine)
        assert isinstance(other, features.VibrationExtractor)
        other.use_backend(backend)
        t_by_backend[backend] = best_time(lambda e=other: e.compute_batch(x, shaft, out), args.repeat)  # type: ignore[misc]
    t_batch = best_time(lambda: ex.compute_batch(x, shaft, out), args.repeat)
    t_by_backend[ex.backend] = min(t_batch, t_by_backend.get(ex.backend, t_batch))

    # the engine's three FFTs alone (scipy): the floor the numba kernels add to
    z = np.zeros((args.batch, ex.m), dtype=np.complex64)
    e = np.ones((args.batch, ex.m), dtype=np.float32)

    def ffts() -> None:
        sfft.rfft(x, axis=1, workers=1)
        sfft.ifft(z, axis=1, workers=1)
        sfft.rfft(e, axis=1, workers=1)

    t_fft = best_time(ffts, args.repeat)
    row = np.empty(len(ex.names))

    def per_window() -> None:
        for i in range(args.batch):
            ex.compute(x[i], SHAFT, row)

    t_single = best_time(per_window, max(1, args.repeat // 2))
    nb = min(args.baseline_windows, args.batch)

    def baseline() -> list[np.ndarray]:
        return [naive.vibration(x[i], RATE, SHAFT, machine.slip_tolerance, orders)[0] for i in range(nb)]

    t_base = best_time(baseline, max(1, args.repeat // 3))

    # the two sides must agree, or the ratio means nothing
    ref = np.array(baseline())
    got = out[:nb]
    scale = np.maximum(np.abs(ref), 1e-3 * np.max(np.abs(ref), axis=0))
    worst = float(np.nanmax(np.abs(got - ref) / scale))
    if worst > 5e-3:
        raise SystemExit(f"engine and baseline disagree (max relative difference {worst:.2e})")

    engine_wps = args.batch / t_batch
    single_wps = args.batch / t_single
    base_wps = nb / t_base
    result = {
        "engine_windows_per_s": round(engine_wps, 1),
        "engine_single_windows_per_s": round(single_wps, 1),
        "baseline_windows_per_s": round(base_wps, 1),
        "ratio": round(engine_wps / base_wps, 2),
        "threads": {v: os.environ[v] for v in THREAD_VARS},
        "fft_backend": ex.backend,
        "fft_backend_measured_us_per_window": {b: round(t, 2) for b, t in measured.items()},
        "engine_windows_per_s_by_backend": {b: round(args.batch / t, 1) for b, t in t_by_backend.items()},
        "batch": args.batch,
        "features": len(ex.names),
        "fft_only_us_per_window": round(1e6 * t_fft / args.batch, 2),
        "max_relative_difference": worst,
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"vibration features ({len(ex.names)}), {N}-sample windows at {RATE:g} Hz, one thread")
    print(
        f"  engine compute_batch ({args.batch}/call): {engine_wps:10.0f} windows/s "
        f"({1e6 / engine_wps:.1f} us/window, FFT backend {ex.backend})"
    )
    for b, t in t_by_backend.items():
        label = f"with the {b} backend:"
        print(f"    {label:34} {args.batch / t:10.0f} windows/s ({1e6 * t / args.batch:.1f} us/window)")
    print(
        f"  engine compute (one window/call):   {single_wps:10.0f} windows/s "
        f"({1e6 / single_wps:.1f} us/window)"
    )
    print(
        f"  numpy/scipy per window (baseline):  {base_wps:10.0f} windows/s ({1e6 / base_wps:.1f} us/window)"
    )
    print(
        f"  of which the 3 scipy FFTs alone:    {1e6 * t_fft / args.batch:10.1f} us/window "
        f"(rfft {N}, ifft {ex.m}, rfft {ex.m})"
    )
    print(
        f"  ratio (batch / baseline): {engine_wps / base_wps:.1f}x; "
        f"engine vs baseline max relative difference {worst:.1e}"
    )
    print("  threads: " + ", ".join(f"{k}={v}" for k, v in result["threads"].items()))  # type: ignore[union-attr]
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
