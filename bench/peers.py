"""Peer comparison: the engine vs the tools a user would otherwise pick, in one run, same data.

Features (4096-sample float32 vibration windows at 25.6 kHz, CWRU bearing geometry):

- ``engine``: ``VibrationExtractor.compute_batch`` (numba + batched FFTs with the backend the
  engine measures fastest at warm-up: Intel MKL with the ``mkl`` extra, or DUCC0 compiled into
  numba), 26 features;
- ``numpy/scipy``: the per-window reference the tests check the engine against
  (``tests/engine/naive.py``: ``scipy.signal.hilbert``, ``scipy.stats``, ``np.median``);
- ``tsfresh``: ``extract_features`` with ``MinimalFCParameters`` (10 features), serial, 128
  windows per call (its per-window cost falls with the batch: ``features_vs_tsfresh``) and one
  window per call (``features_vs_tsfresh_per_call``, the way TSFEL is called);
- ``TSFEL``: the ``statistical`` and ``spectral`` domains, one window per call;
- ``floor``: the transforms the feature set cannot avoid, batched, with the fastest FFT found
  here (scipy.fft, numpy.fft, scipy.fft compiled into numba by rocket-fft, and Intel MKL and
  pyFFTW when installed are all timed per transform): the spectrum's rFFT of the
  window, the envelope's inverse FFT and its rFFT, plus one read of the data. The engine's time
  over this is how close the full feature set is to the machine's limit.

Models (the engine's feature vectors of healthy windows; fitted on 1,000 rows):

- the default model (Mahalanobis, int8): ``score_row`` (score + contributions, one kernel call)
  vs scikit-learn's ``LedoitWolf.mahalanobis`` on the same standardised row (score only);
- the isolation forest: the engine's int8 trees vs ``IsolationForest.score_samples`` vs
  onnxruntime running the same forest converted with skl2onnx;
- river's ``HalfSpaceTrees``: ``score_one`` + ``learn_one`` per row;
- one row at a time (median per row) and batches of 1,000.

Each figure is the median of ``--repeat`` timed runs; engine and floor alternate in the same
loop so machine load hits both alike. Thread counts are pinned to 1 before numpy is imported
and reported. A peer that is not installed is skipped with the reason. Run::

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python bench/peers.py          # table
    .venv/bin/python bench/peers.py --json   # one JSON object
"""

from __future__ import annotations

import os

THREAD_VARS = ("NUMBA_NUM_THREADS", "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")
for _var in THREAD_VARS:
    os.environ[_var] = "1"

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from collections.abc import Callable  # noqa: E402
from pathlib import Path  # noqa: E402
from types import ModuleType  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
import scipy.fft as sfft  # noqa: E402

from machinewatch.engine import features  # noqa: E402
from machinewatch.engine.config import MachineConfig, StreamConfig  # noqa: E402
from machinewatch.engine.features import vibration  # noqa: E402
from machinewatch.engine.features.bearing import envelope_orders  # noqa: E402

HERE = Path(__file__).resolve().parent


def _load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise SystemExit(f"cannot load {path}")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


hotpath = _load(HERE / "hotpath.py", "bench_hotpath")
RATE, N, SHAFT, BEARING = hotpath.RATE, hotpath.N, hotpath.SHAFT, hotpath.BEARING


def median_time(fn: Callable[[], object], repeat: int) -> float:
    """Median wall time of ``repeat`` calls (after one untimed call)."""
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def per_call_us(fn: Callable[[], object], calls: int, repeat: int) -> float:
    """Median over ``repeat`` runs of the mean time of ``calls`` consecutive calls, in us."""

    def run() -> None:
        for _ in range(calls):
            fn()

    return 1e6 * median_time(run, repeat) / calls


def fastest_fft(x: np.ndarray, z: np.ndarray, e: np.ndarray, repeat: int) -> dict[str, Callable[[], object]]:
    """Per transform, the faster of scipy.fft (workers=1) and numpy.fft on these very arrays."""
    cands: dict[str, dict[str, Callable[[], object]]] = {
        "rfft_window": {
            "scipy": lambda: sfft.rfft(x, axis=1, workers=1),
            "numpy": lambda: np.fft.rfft(x, axis=1),
        },
        "ifft_envelope": {
            "scipy": lambda: sfft.ifft(z, axis=1, workers=1),
            "numpy": lambda: np.fft.ifft(z, axis=1),
        },
        "rfft_envelope": {
            "scipy": lambda: sfft.rfft(e, axis=1, workers=1),
            "numpy": lambda: np.fft.rfft(e, axis=1),
        },
    }
    try:  # scipy.fft compiled into numba (rocket-fft): what the engine's fused kernel calls
        import rocket_fft  # noqa: F401
        from numba import njit

        @njit(nogil=True)
        def _r(a: np.ndarray) -> np.ndarray:
            return sfft.rfft(a, axis=1, workers=1)

        @njit(nogil=True)
        def _i(a: np.ndarray) -> np.ndarray:
            return sfft.ifft(a, axis=1, workers=1)

        cands["rfft_window"]["numba"] = lambda: _r(x)
        cands["ifft_envelope"]["numba"] = lambda: _i(z)
        cands["rfft_envelope"]["numba"] = lambda: _r(e)
    except ImportError:
        pass
    mkl = vibration._load_mkl()  # Intel MKL (the optional ``mkl`` extra): the engine's when measured faster
    if mkl is not None:
        cands["rfft_window"]["mkl"] = lambda: mkl.rfft(x, axis=1)
        cands["ifft_envelope"]["mkl"] = lambda: mkl.ifft(z, axis=1)
        cands["rfft_envelope"]["mkl"] = lambda: mkl.rfft(e, axis=1)
    try:  # optional, used only if present and faster
        import pyfftw.interfaces.scipy_fft as wfft  # type: ignore[import-not-found]

        cands["rfft_window"]["pyfftw"] = lambda: wfft.rfft(x, axis=1, workers=1)
        cands["ifft_envelope"]["pyfftw"] = lambda: wfft.ifft(z, axis=1, workers=1)
        cands["rfft_envelope"]["pyfftw"] = lambda: wfft.rfft(e, axis=1, workers=1)
    except ImportError:
        pass
    best: dict[str, Callable[[], object]] = {}
    for name, opts in cands.items():
        timed = {lib: median_time(fn, repeat) for lib, fn in opts.items()}
        lib = min(timed, key=lambda k: timed[k])
        best[f"{name}:{lib}"] = opts[lib]
    return best


def bench_features(args: argparse.Namespace, res: dict[str, Any]) -> None:
    stream = StreamConfig("vib", "vibration", RATE, N, N)
    machine = MachineConfig(shaft_hz=SHAFT, bearing=BEARING)
    features.warmup(stream, machine)
    features.measure_fft_backends(stream, machine)  # the engine's own choice at warm-up
    ex = features.make_extractor(stream, machine)
    assert isinstance(ex, features.VibrationExtractor)
    b = args.batch
    x = hotpath.synthetic_windows(b)
    shaft = np.full(b, SHAFT)
    out = np.empty((b, len(ex.names)))

    # the floor: the same transforms at the same sizes and dtypes as the engine's, batched
    z = np.ascontiguousarray(sfft.ifft(np.ones((b, ex.m), dtype=np.complex64), axis=1))
    e = np.abs(z) ** 2
    best = fastest_fft(x, z, e, max(3, args.repeat // 2))

    def floor() -> None:
        float(np.sum(x))  # one read of the data
        for fn in best.values():
            fn()

    def engine() -> None:
        ex.compute_batch(x, shaft, out)

    engine()
    floor()
    te, tf = [], []
    for _ in range(args.repeat):  # alternate, so load changes hit both alike
        t0 = time.perf_counter()
        engine()
        t1 = time.perf_counter()
        floor()
        t2 = time.perf_counter()
        te.append(t1 - t0)
        tf.append(t2 - t1)
    t_engine = statistics.median(te) / b
    t_floor = statistics.median(tf) / b
    rows: dict[str, dict[str, Any]] = {
        "engine": {"us_per_window": 1e6 * t_engine, "features": len(ex.names), "fft_backend": ex.backend},
        "floor": {"us_per_window": 1e6 * t_floor, "transforms": list(best)},
    }

    naive = hotpath.load_naive()
    orders = envelope_orders(BEARING)
    nb = min(args.baseline_windows, b)

    def baseline() -> None:
        for i in range(nb):
            naive.vibration(x[i], RATE, SHAFT, machine.slip_tolerance, orders)

    rows["numpy/scipy"] = {
        "us_per_window": 1e6 * median_time(baseline, max(3, args.repeat // 4)) / nb,
        "features": len(ex.names),
    }

    try:
        import pandas as pd
        from tsfresh import extract_features
        from tsfresh.feature_extraction import MinimalFCParameters

        nt = min(args.tsfresh_windows, b)  # tsfresh's per-window cost falls with batch size
        frame = pd.DataFrame(
            {"id": np.repeat(np.arange(nt), N), "time": np.tile(np.arange(N), nt), "value": x[:nt].ravel()}
        )
        holder: dict[str, Any] = {}

        def tsfresh_run() -> None:
            holder["f"] = extract_features(
                frame,
                column_id="id",
                column_sort="time",
                default_fc_parameters=MinimalFCParameters(),
                n_jobs=0,
                disable_progressbar=True,
            )

        t = median_time(tsfresh_run, max(3, args.repeat // 4)) / nt
        rows["tsfresh minimal"] = {"us_per_window": 1e6 * t, "features": int(holder["f"].shape[1])}

        # the same, one window per call (how a stream application meets it: a window at a time,
        # like TSFEL below); the batched row above is the one the headline ratio uses
        one = [frame[frame["id"] == i] for i in range(min(args.peer_windows, nt))]

        def tsfresh_per_call() -> None:
            for f in one:
                holder["f1"] = extract_features(
                    f,
                    column_id="id",
                    column_sort="time",
                    default_fc_parameters=MinimalFCParameters(),
                    n_jobs=0,
                    disable_progressbar=True,
                )

        t = median_time(tsfresh_per_call, 3) / len(one)
        rows["tsfresh minimal, one window per call"] = {
            "us_per_window": 1e6 * t,
            "features": int(holder["f1"].shape[1]),
        }
    except ImportError as exc:
        rows["tsfresh minimal"] = {"skipped": f"not installed: {exc}"}

    try:
        import tsfel

        cfg = {**tsfel.get_features_by_domain("statistical"), **tsfel.get_features_by_domain("spectral")}
        nf = min(args.peer_windows, b)
        holder = {}

        def tsfel_run() -> None:
            for i in range(nf):
                holder["f"] = tsfel.time_series_features_extractor(cfg, x[i], fs=RATE, verbose=0)

        t = median_time(tsfel_run, 3) / nf
        rows["TSFEL stat+spectral"] = {"us_per_window": 1e6 * t, "features": int(holder["f"].shape[1])}
    except ImportError as exc:
        rows["TSFEL stat+spectral"] = {"skipped": f"not installed: {exc}"}

    for r in rows.values():
        if "us_per_window" in r:
            r["windows_per_s"] = 1e6 / r["us_per_window"]
            r["engine_speedup"] = r["us_per_window"] / rows["engine"]["us_per_window"]
    res["features"] = rows
    ew = rows["engine"]["windows_per_s"]

    def ratio(name: str) -> float | None:
        r = rows[name]
        return round(ew / r["windows_per_s"], 3) if "windows_per_s" in r else None

    res["features_vs_numpy"] = ratio("numpy/scipy")
    res["features_vs_tsfresh"] = ratio("tsfresh minimal")
    if "tsfresh minimal, one window per call" in rows:
        res["features_vs_tsfresh_per_call"] = ratio("tsfresh minimal, one window per call")
    res["features_vs_tsfel"] = ratio("TSFEL stat+spectral")
    res["features_vs_floor"] = ratio("floor")
    res["engine_windows_per_s"] = round(ew, 1)
    res["floor_windows_per_s"] = round(rows["floor"]["windows_per_s"], 1)


def healthy_vectors(n: int, seed: int = 1) -> np.ndarray:
    """Engine feature vectors of ``n`` healthy windows (load and noise vary a little)."""
    stream = StreamConfig("vib", "vibration", RATE, N, N)
    machine = MachineConfig(shaft_hz=SHAFT, bearing=BEARING)
    ex = features.make_extractor(stream, machine)
    rng = np.random.default_rng(seed)
    t = np.arange(N) / RATE
    out = np.empty((n, len(ex.names)))
    for i in range(0, n, 256):
        j = min(n, i + 256)
        k = j - i
        amp = rng.uniform(0.8, 1.2, (k, 1))
        noise = rng.uniform(0.4, 0.6, (k, 1))
        x = noise * rng.standard_normal((k, N)) + amp * 0.3 * np.sin(2 * np.pi * SHAFT * t)
        ex.compute_batch(x.astype(np.float32), np.full(k, SHAFT), out[i:j])
    return out


def bench_models(args: argparse.Namespace, res: dict[str, Any]) -> None:
    from sklearn.covariance import LedoitWolf
    from sklearn.ensemble import IsolationForest

    from machinewatch.models.iforest import IsolationForestModel
    from machinewatch.models.mahalanobis import MahalanobisModel

    x = healthy_vectors(2000)
    train, test = x[:1000], x[1000:]
    rows_n = args.model_rows
    rows: dict[str, dict[str, Any]] = {}
    rep = args.repeat

    def single(fn: Callable[[np.ndarray], object]) -> float:
        def run() -> None:
            for i in range(rows_n):
                fn(test[i])

        return 1e6 * median_time(run, rep) / rows_n

    def batch(fn: Callable[[np.ndarray], object]) -> float:
        return 1e6 * median_time(lambda: fn(test), max(3, rep // 2)) / len(test)

    # --- the default model: Mahalanobis (int8 in the engine)
    maha = MahalanobisModel().fit(train)
    q = maha.quantize()
    c = np.empty(x.shape[1])
    rows["engine mahalanobis int8"] = {
        "single_row_us": single(lambda r: q.score_row(r, c)),
        "batch_us_per_row": batch(lambda m: (q.score(m), q.contributions(m))),
        "note": "score + per-feature contributions",
    }
    rows["engine mahalanobis float"] = {
        "single_row_us": single(lambda r: maha.score_row(r, c)),
        "batch_us_per_row": batch(lambda m: (maha.score(m), maha.contributions(m))),
        "note": "score + per-feature contributions",
    }
    center, scale = maha.center_, maha.scale_
    lw = LedoitWolf().fit((train - center) / scale)
    rows["sklearn LedoitWolf.mahalanobis"] = {
        "single_row_us": single(lambda r: lw.mahalanobis(((r - center) / scale)[None])),
        "batch_us_per_row": batch(lambda m: lw.mahalanobis((m - center) / scale)),
        "note": "same standardised rows and shrunk covariance, score only",
    }

    # --- isolation forest: engine int8 vs sklearn vs onnxruntime
    ifm = IsolationForestModel(n_estimators=100, max_samples=256, seed=0).fit(train)
    qif = ifm.quantize()
    rows["engine iforest int8"] = {
        "single_row_us": single(lambda r: qif.score_row(r, c)),
        "batch_us_per_row": batch(lambda m: (qif.score(m), qif.contributions(m))),
        "note": "100 trees, score + contributions",
    }
    z_train = (train - ifm.center_) / ifm.scale_
    z_test = (test - ifm.center_) / ifm.scale_
    skl = IsolationForest(n_estimators=100, max_samples=256, random_state=0).fit(z_train)
    rows["sklearn IsolationForest"] = {
        "single_row_us": single(lambda r: skl.score_samples(r[None])),
        "batch_us_per_row": 1e6 * median_time(lambda: skl.score_samples(z_test), 3) / len(test),
        "note": "score_samples, 100 trees",
    }
    try:
        import onnxruntime as ort
        from skl2onnx import to_onnx

        onx = to_onnx(skl, z_train[:1].astype(np.float32), target_opset={"": 17, "ai.onnx.ml": 3})
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(onx.SerializeToString(), so, providers=["CPUExecutionProvider"])
        iname = sess.get_inputs()[0].name
        zt32 = z_test.astype(np.float32)
        rows["onnxruntime IsolationForest"] = {
            "single_row_us": single(lambda r: sess.run(None, {iname: r[None].astype(np.float32)})),
            "batch_us_per_row": batch(lambda m: sess.run(None, {iname: zt32})),
            "note": "skl2onnx conversion of the same sklearn forest, 1 thread",
        }
    except ImportError as exc:
        rows["onnxruntime IsolationForest"] = {"skipped": f"not installed: {exc}"}

    try:
        from river.anomaly import HalfSpaceTrees

        names = [f"f{i}" for i in range(x.shape[1])]
        lo, hi = train.min(axis=0), train.max(axis=0)
        span = np.where(hi > lo, hi - lo, 1.0)
        dicts = [dict(zip(names, ((r - lo) / span).tolist(), strict=True)) for r in test]
        hst = HalfSpaceTrees(n_trees=25, height=8, window_size=250, seed=0)
        for r in train[:500]:
            hst.learn_one(dict(zip(names, ((r - lo) / span).tolist(), strict=True)))
        it = iter(range(10**9))

        def one(_: np.ndarray) -> None:
            d = dicts[next(it) % len(dicts)]
            hst.score_one(d)
            hst.learn_one(d)

        rows["river HalfSpaceTrees"] = {
            "single_row_us": single(one),
            "note": "score_one + learn_one, 25 trees of height 8 (river's defaults), dict input",
        }
    except ImportError as exc:
        rows["river HalfSpaceTrees"] = {"skipped": f"not installed: {exc}"}

    res["models"] = rows
    eng = rows["engine mahalanobis int8"]["single_row_us"]
    res["model_single_row_us"] = round(eng, 3)
    res["model_vs_sklearn_single"] = round(rows["sklearn LedoitWolf.mahalanobis"]["single_row_us"] / eng, 2)
    res["model_vs_sklearn_batch"] = round(
        rows["sklearn LedoitWolf.mahalanobis"]["batch_us_per_row"]
        / rows["engine mahalanobis int8"]["batch_us_per_row"],
        2,
    )
    ei = rows["engine iforest int8"]["single_row_us"]
    res["iforest_single_row_us"] = round(ei, 3)
    res["iforest_vs_sklearn_single"] = round(rows["sklearn IsolationForest"]["single_row_us"] / ei, 2)
    if "single_row_us" in rows["onnxruntime IsolationForest"]:
        res["iforest_vs_onnxruntime_single"] = round(
            rows["onnxruntime IsolationForest"]["single_row_us"] / ei, 2
        )
    if "single_row_us" in rows["river HalfSpaceTrees"]:
        res["model_vs_river_single"] = round(rows["river HalfSpaceTrees"]["single_row_us"] / eng, 2)


def print_table(res: dict[str, Any]) -> None:
    la, lb = res["load_average"][0], res["load_average_end"][0]
    print(
        f"load average {la:.2f} at the start, {lb:.2f} at the end; {res['cpus']} cpus; "
        f"medians of {res['repeat']} runs"
    )
    if "features" in res:
        print_features(res)
    if "models" in res:
        print_models(res)
    keys = [k for k in res if k.startswith(("features_vs", "model_", "iforest_"))]
    print("ratios (engine over peer): " + ", ".join(f"{k}={res[k]}" for k in keys))
    print("threads: " + ", ".join(f"{k}={v}" for k, v in res["threads"].items()))


def print_features(res: dict[str, Any]) -> None:
    print(f"features: {N}-sample float32 windows at {RATE:g} Hz, one thread")
    print(f"  {'implementation':37s} {'us/window':>12s} {'windows/s':>12s} {'engine is':>10s}  features")
    for name, r in res["features"].items():
        if "skipped" in r:
            print(f"  {name:37s} skipped: {r['skipped']}")
            continue
        extra = r.get("features", ", ".join(r.get("transforms", [])))
        print(
            f"  {name:37s} {r['us_per_window']:12.1f} {r['windows_per_s']:12.0f} "
            f"{r['engine_speedup']:9.2f}x  {extra}"
        )


def print_models(res: dict[str, Any]) -> None:
    print("models: one row of the engine's feature vector (median us per row)")
    print(f"  {'implementation':32s} {'single row':>11s} {'batch 1000':>11s}  note")
    for name, r in res["models"].items():
        if "skipped" in r:
            print(f"  {name:32s} skipped: {r['skipped']}")
            continue
        b = r.get("batch_us_per_row")
        bs = f"{b:11.2f}" if b is not None else f"{'-':>11s}"
        print(f"  {name:32s} {r['single_row_us']:11.2f} {bs}  {r['note']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=256, help="windows per engine compute_batch call")
    ap.add_argument("--baseline-windows", type=int, default=32, help="windows the numpy/scipy baseline runs")
    ap.add_argument("--peer-windows", type=int, default=4, help="windows per TSFEL run")
    ap.add_argument("--tsfresh-windows", type=int, default=128, help="windows per tsfresh call")
    ap.add_argument("--model-rows", type=int, default=200, help="rows per single-row timing run")
    ap.add_argument("--repeat", type=int, default=15, help="timed repetitions (the median is kept)")
    ap.add_argument("--skip-models", action="store_true")
    ap.add_argument("--skip-features", action="store_true")
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    args = ap.parse_args(argv)
    warnings.filterwarnings("ignore")
    res: dict[str, Any] = {
        "threads": {v: os.environ[v] for v in THREAD_VARS},
        "repeat": args.repeat,
        "load_average": [round(v, 2) for v in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    if not args.skip_features:
        bench_features(args, res)
    if not args.skip_models:
        bench_models(args, res)
    res["load_average_end"] = [round(v, 2) for v in os.getloadavg()]
    if args.json:
        print(json.dumps(res, default=float))
    else:
        print_table(res)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
