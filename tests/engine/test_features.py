"""Feature kernels vs the slow references in ``naive.py``, degenerate windows, fault signals."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machinewatch.engine import features as F
from machinewatch.engine.config import BearingGeometry, MachineConfig, StreamConfig
from machinewatch.engine.features import current as cur_mod
from machinewatch.engine.features import vibration as vib_mod
from machinewatch.engine.features.bearing import envelope_orders
from machinewatch.engine.features.spectrum import hann_bin, line_bins, median_abs

_spec = importlib.util.spec_from_file_location("features_naive", Path(__file__).with_name("naive.py"))
assert _spec is not None and _spec.loader is not None
naive = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(naive)

CWRU = BearingGeometry(9, 0.3126, 1.537)
SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def vib_stream(n: int = 4096, rate: float = 25600.0) -> StreamConfig:
    return StreamConfig("vib", "vibration", rate, n, n)


def machine(shaft: float | None = 25.0, bearing: BearingGeometry | None = CWRU, **kw: float) -> MachineConfig:
    return MachineConfig(shaft_hz=shaft, bearing=bearing, **kw)  # type: ignore[arg-type]


def run(ex: F.FeatureExtractor, x: np.ndarray, shaft: float | None) -> tuple[np.ndarray, bool]:
    out = np.empty(len(ex.names))
    ok = ex.compute(x, shaft, out)
    return out, ok


def by_name(ex: F.FeatureExtractor, vals: np.ndarray) -> dict[str, float]:
    return dict(zip(ex.names, vals.tolist(), strict=True))


def assert_features(
    names: tuple[str, ...], got: np.ndarray, ref: np.ndarray, scale: float, rtol: float
) -> None:
    """Compare feature by feature with a message naming the feature."""
    assert got.shape == ref.shape
    for name, g, r in zip(names, got, ref, strict=True):
        if np.isnan(r):
            assert np.isnan(g), f"{name}: engine {g}, reference NaN"
            continue
        amp_like = name in ("rms", "peak", "p2p", "x1", "x2", "x3") or name.startswith("band")
        atol = 1e-5 * scale if amp_like else 1e-6
        if name == "centroid":
            atol = 1e-3
        assert g == pytest.approx(r, rel=rtol, abs=atol), f"{name}: engine {g}, reference {r}"


# ---------------------------------------------------------------------------------- contract


def test_public_names_and_contract() -> None:
    assert {"feature_names", "make_extractor", "warmup", "FeatureExtractor"} <= set(F.__all__)
    m = machine()
    for stream in (
        vib_stream(),
        StreamConfig("i", "current", 5000.0, 5000, 5000, channels=3),
        StreamConfig("i1", "current", 5000.0, 5000, 5000),
        StreamConfig("t", "temperature", 1.0, 60, 10),
        StreamConfig("s", "speed", 1.0, 1, 1),
        StreamConfig("x", "scalar", 10.0, 20, 20),
    ):
        ex = F.make_extractor(stream, m)
        assert ex.names == F.feature_names(stream, m)
        assert len(set(ex.names)) == len(ex.names)
    names = F.feature_names(vib_stream(), m)
    for must in (
        "rms",
        "kurtosis",
        "band0",
        "band7",
        "centroid",
        "x1",
        "x3",
        "env_bpfo",
        "env_bpfi",
        "env_bsf2",
        "env_ftf",
    ):
        assert must in names
    assert not any(n.startswith("env_") for n in F.feature_names(vib_stream(), machine(bearing=None)))
    assert F.feature_names(StreamConfig("s", "speed", 1.0, 1, 1), m)[0] == "level"
    with pytest.raises(ValueError, match="kind"):
        F.make_extractor(StreamConfig("q", "bogus", 1.0, 4, 4), m)


def test_bad_shapes_raise_clear_errors() -> None:
    ex = F.make_extractor(vib_stream(256), machine())
    with pytest.raises(ValueError, match=r"shape \(n, 256\)"):
        ex.compute_batch(np.zeros((2, 255)), None, np.empty((2, len(ex.names))))
    with pytest.raises(ValueError, match="out must"):
        ex.compute_batch(np.zeros((2, 256)), None, np.empty((3, len(ex.names))))
    with pytest.raises(ValueError, match="shaft_hz"):
        ex.compute_batch(np.zeros((2, 256)), np.zeros(3), np.empty((2, len(ex.names))))


def test_bearing_orders_match_cwru_published_multiples() -> None:
    o = CWRU.orders()
    assert o["bpfi"] == pytest.approx(5.4152, abs=1e-3)
    assert o["bpfo"] == pytest.approx(3.5848, abs=1e-3)
    assert o["ftf"] == pytest.approx(0.39828, abs=1e-4)
    assert o["bsf"] == pytest.approx(2.357, abs=1e-3)
    e = envelope_orders(CWRU)
    assert e.tolist() == pytest.approx(
        [o["bpfo"], 2 * o["bpfo"], o["bpfi"], 2 * o["bpfi"], 2 * o["bsf"], o["ftf"]]
    )


def test_spectrum_helpers_against_numpy() -> None:
    rng = np.random.default_rng(3)
    for n in (64, 65):
        x = rng.standard_normal(n)
        ref = np.fft.rfft(x * (0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / n)))
        spec = np.fft.rfft(x)
        for k in range(n // 2 + 1):
            assert hann_bin(spec, k, n) == pytest.approx(ref[k], abs=1e-12)
    assert line_bins(25.0, 0.03, 6.25, 1, 2048) == (4, 4)
    assert line_bins(float("nan"), 0.03, 6.25, 1, 2048)[0] > line_bins(float("nan"), 0.03, 6.25, 1, 2048)[1]
    a = rng.standard_normal(40)
    assert median_abs(a, 3, 30) == pytest.approx(np.median(a[3:31]))
    assert median_abs(a, 3, 29) == pytest.approx(np.median(a[3:30]))


# ---------------------------------------------------------------------------- vibration vs naive


@st.composite
def vib_case(draw: st.DrawFn) -> tuple[np.ndarray, float, float, str]:
    n = draw(st.sampled_from([64, 65, 100, 256, 511, 1024]))
    rate = draw(st.sampled_from([1000.0, 12000.0, 25600.0]))
    shaft = draw(st.floats(0.5, rate / 40))
    seed = draw(st.integers(0, 2**32 - 1))
    kind = draw(st.sampled_from(["noise", "impulses", "tones", "skewed"]))
    scale = draw(st.sampled_from([1e-3, 1.0, 250.0]))
    offset = draw(st.sampled_from([0.0, 0.3]))
    dtype = draw(st.sampled_from(["float32", "float64"]))
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    if kind == "noise":
        x = rng.standard_normal(n)
    elif kind == "impulses":
        x = 0.1 * rng.standard_normal(n)
        x[rng.integers(0, n, 5)] += rng.uniform(2, 10, 5)
    elif kind == "tones":
        x = np.sin(2 * np.pi * shaft * t) + 0.5 * np.sin(2 * np.pi * 3.1 * shaft * t + 1.0)
        x += 0.05 * rng.standard_normal(n)
    else:
        x = rng.exponential(1.0, n)
    x = (scale * (x + offset)).astype(dtype)
    return x, rate, shaft, kind


@SETTINGS
@given(vib_case())
def test_vibration_matches_naive(case: tuple[np.ndarray, float, float, str]) -> None:
    x, rate, shaft, _ = case
    m = machine(shaft)
    ex = F.make_extractor(vib_stream(x.size, rate), m)
    got, ok = run(ex, x, shaft)
    ref, ref_ok = naive.vibration(x, rate, shaft, m.slip_tolerance, envelope_orders(CWRU))
    assert ok and ref_ok
    rtol = 2e-3 if x.dtype == np.float32 else 1e-6
    assert_features(ex.names, got, ref, float(np.max(np.abs(x))), rtol)


def test_vibration_parseval_bands_and_centroid() -> None:
    """Band RMS add up to the signal's mean square; the centroid of a tone is its frequency."""
    rng = np.random.default_rng(0)
    ex = F.make_extractor(vib_stream(4096), machine())
    v = by_name(ex, run(ex, rng.standard_normal(4096), 25.0)[0])
    total = sum(v[f"band{i}"] ** 2 for i in range(8))
    assert total == pytest.approx(v["rms"] ** 2, rel=0.02)
    t = np.arange(4096) / 25600.0
    v = by_name(ex, run(ex, np.sin(2 * np.pi * 2000.0 * t), 25.0)[0])
    assert v["centroid"] == pytest.approx(2000.0, rel=1e-3)
    assert v["band1"] == pytest.approx(1 / math.sqrt(2), rel=1e-3)  # 2 kHz lies in band 1 (1.6-3.2 kHz)


def test_x1_of_a_pure_sine_at_shaft_speed() -> None:
    ex = F.make_extractor(vib_stream(4096), machine(25.0))
    t = np.arange(4096) / 25600.0
    v = by_name(ex, run(ex, 2.5 * np.sin(2 * np.pi * 25.0 * t), 25.0)[0])  # bin-centred
    assert v["x1"] == pytest.approx(2.5, rel=1e-6)
    assert v["x2"] < 1e-6 and v["x3"] < 1e-6
    v = by_name(ex, run(ex, 2.5 * np.sin(2 * np.pi * 27.4 * t), 27.4)[0])  # between bins
    assert 2.5 * 0.84 < v["x1"] <= 2.5 * 1.001  # Hann scalloping loss <= 1.42 dB
    v = by_name(ex, run(ex, 2.5 * np.sin(2 * np.pi * 50.0 * t), 25.0)[0])
    assert v["x2"] == pytest.approx(2.5, rel=1e-6) and v["x1"] < 1e-6


def bearing_signal(
    order: float, shaft: float, fault: bool, seed: int, n: int = 4096, rate: float = 25600.0
) -> np.ndarray:
    """Noise, a 1x component and (fault) impacts at ``order x shaft`` ringing a 5 kHz resonance."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    x = 0.5 * rng.standard_normal(n) + 0.3 * np.sin(2 * np.pi * shaft * t)
    if fault:
        period = 1.0 / (order * shaft)
        ring = np.exp(-np.arange(64) / rate / 4e-4) * np.sin(2 * np.pi * 5000.0 * np.arange(64) / rate)
        t0 = rng.uniform(0, period)
        while t0 < t[-1]:
            i = int(t0 * rate + rng.normal(0, 2))  # slight jitter, as real slip gives
            seg = x[i : i + 64]
            seg += 4.0 * ring[: seg.size]
            t0 += period
    return x.astype(np.float32)


def test_outer_race_fault_lights_env_bpfo() -> None:
    ex = F.make_extractor(vib_stream(), machine())
    o = CWRU.orders()
    healthy = [by_name(ex, run(ex, bearing_signal(0, 25.0, False, s), 25.0)[0]) for s in range(4)]
    faulty = [by_name(ex, run(ex, bearing_signal(o["bpfo"], 25.0, True, s), 25.0)[0]) for s in range(4)]
    for h, f in zip(healthy, faulty, strict=True):
        assert f["env_bpfo"] > 5 * h["env_bpfo"]
        assert f["env_bpfo"] > 3 * f["env_bpfi"]
        assert f["env_bpfo_h2"] > 3 * h["env_bpfo_h2"]
        assert f["kurtosis"] > h["kurtosis"]


def test_inner_race_fault_lights_env_bpfi() -> None:
    ex = F.make_extractor(vib_stream(), machine())
    o = CWRU.orders()
    healthy = [by_name(ex, run(ex, bearing_signal(0, 25.0, False, s), 25.0)[0]) for s in range(4)]
    faulty = [by_name(ex, run(ex, bearing_signal(o["bpfi"], 25.0, True, s), 25.0)[0]) for s in range(4)]
    for h, f in zip(healthy, faulty, strict=True):
        assert f["env_bpfi"] > 5 * h["env_bpfi"]
        assert f["env_bpfi"] > 3 * f["env_bpfo"]


def test_envelope_equals_full_length_hilbert_at_float64() -> None:
    """The decimated analytic signal gives the full-length Hilbert envelope's lines exactly."""
    x = bearing_signal(CWRU.orders()["bpfo"], 25.0, True, 7).astype(np.float64)
    m = machine()
    ex = F.make_extractor(vib_stream(), m)
    got, _ = run(ex, x, 25.0)
    ref, _ = naive.vibration(x, 25600.0, 25.0, m.slip_tolerance, envelope_orders(CWRU))
    env = [i for i, nm in enumerate(ex.names) if nm.startswith("env_")]
    np.testing.assert_allclose(got[env], ref[env], rtol=1e-9)


def test_unknown_speed_gives_nan_speed_features_only() -> None:
    ex = F.make_extractor(vib_stream(1024), machine(None))
    x = np.random.default_rng(1).standard_normal(1024)
    out, ok = run(ex, x, None)
    assert ok
    v = by_name(ex, out)
    for name, val in v.items():
        speed_dep = name.startswith(("x", "env_"))
        assert math.isnan(val) == speed_dep, name


# ----------------------------------------------------------------------------- degenerate input


def extractors() -> list[tuple[F.FeatureExtractor, tuple[int, ...]]]:
    m = machine()
    return [
        (F.make_extractor(vib_stream(64, 25600.0), m), (64,)),
        (F.make_extractor(vib_stream(4096), m), (4096,)),
        (F.make_extractor(StreamConfig("i", "current", 2000.0, 400, 400, channels=3), m), (400, 3)),
        (F.make_extractor(StreamConfig("i", "current", 2000.0, 4, 4), m), (4,)),
        (F.make_extractor(StreamConfig("t", "temperature", 1.0, 30, 30), m), (30,)),
        (F.make_extractor(StreamConfig("s", "speed", 1.0, 1, 1), m), (1,)),
    ]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
@pytest.mark.parametrize("ix", range(6))
def test_nan_and_inf_windows_flag_and_give_nan(bad: float, ix: int, dtype: type) -> None:
    ex, shape = extractors()[ix]
    rng = np.random.default_rng(ix)
    batch = rng.standard_normal((3, *shape)).astype(dtype)
    batch[1].flat[shape[0] // 2] = bad
    out = np.zeros((3, len(ex.names)))
    ok = ex.compute_batch(batch, np.full(3, 25.0), out)
    assert ok.tolist() == [True, False, True]
    assert np.all(np.isnan(out[1]))
    for i in (0, 2):  # neighbours in the batch are untouched by the bad row
        row, row_ok = run(ex, batch[i], 25.0)
        assert row_ok
        np.testing.assert_array_equal(out[i], row)
    single, single_ok = run(ex, batch[1], 25.0)
    assert not single_ok and np.all(np.isnan(single))


@pytest.mark.parametrize("ix", range(6))
@pytest.mark.parametrize("value", [0.0, 1.5, -3e3])
def test_constant_and_zero_windows_are_defined(ix: int, value: float) -> None:
    ex, shape = extractors()[ix]
    for dtype in (np.float32, np.float64):
        out, ok = run(ex, np.full(shape, value, dtype=dtype), 25.0)
        assert ok
        v = by_name(ex, out)
        # lines beyond the spectrum are NaN by definition: 50 Hz with 4 samples at 2 kHz
        unobservable = {"thd", "brb_sideband"} if shape == (4,) else set()
        speed_nan = {k for k in v if k.startswith(("x", "env_", "brb")) and math.isnan(v[k])}
        assert unobservable <= {k for k in v if math.isnan(v[k])}
        speed_nan |= unobservable
        finite = {k: x for k, x in v.items() if k not in speed_nan}
        assert all(math.isfinite(x) for x in finite.values()), v
        if "kurtosis" in v:
            assert v["kurtosis"] == 0.0 and v["skewness"] == 0.0
            assert v["p2p"] == 0.0
            assert v["rms"] == pytest.approx(abs(value))
            assert v["crest"] == pytest.approx(1.0 if value else 0.0)
        if value == 0.0:
            assert all(x == 0.0 for x in finite.values()), v
        if "slope" in v:
            assert v["slope"] == 0.0 and v["roc"] == 0.0 and v["level"] == pytest.approx(value)


def test_minimum_length_vibration_window() -> None:
    ex = F.make_extractor(vib_stream(8, 1000.0), machine(20.0))
    x = np.random.default_rng(2).standard_normal(8)
    out, ok = run(ex, x, 20.0)
    ref, _ = naive.vibration(x, 1000.0, 20.0, 0.03, envelope_orders(CWRU))
    assert ok
    assert_features(ex.names, out, ref, 1.0, 1e-9)


# -------------------------------------------------------------------------------- current


def motor_current(
    n: int,
    rate: float,
    phases: int,
    slip: float,
    brb: float,
    seed: int,
    amps: tuple[float, ...] = (1.0, 1.0, 1.0),
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / rate
    cols = []
    for p in range(phases):
        ph = -2 * np.pi * p / 3
        a = amps[p] * np.sin(2 * np.pi * 50.0 * t + ph)
        a += 0.05 * np.sin(2 * np.pi * 250.0 * t + 5 * ph) + 0.03 * np.sin(2 * np.pi * 350.0 * t + 7 * ph)
        for side in (1 - 2 * slip, 1 + 2 * slip):
            a += brb * np.sin(2 * np.pi * 50.0 * side * t + ph)
        a += 1e-4 * rng.standard_normal(n)
        cols.append(a)
    x = np.stack(cols, axis=1)
    return x[:, 0] if phases == 1 else x


@pytest.mark.parametrize("phases", [1, 3])
def test_current_thd_brb_and_imbalance(phases: int) -> None:
    rate, n = 2000.0, 20000  # 10 s: 0.1 Hz bins
    m = MachineConfig(shaft_hz=None, line_hz=50.0, poles=4)
    ex = F.make_extractor(StreamConfig("i", "current", rate, n, n, channels=phases), m)
    slip = 0.03
    shaft = 25.0 * (1 - slip)
    amps = (1.0, 1.0, 0.9)
    healthy = by_name(ex, run(ex, motor_current(n, rate, phases, slip, 0.0, 1, amps), shaft)[0])
    broken = by_name(ex, run(ex, motor_current(n, rate, phases, slip, 0.02, 1, amps), shaft)[0])
    unknown = by_name(ex, run(ex, motor_current(n, rate, phases, slip, 0.02, 1, amps), None)[0])
    # THD of the phase-summed spectrum: equal harmonics over unequal fundamentals
    fund = sum(a * a for a in amps[:phases])
    assert healthy["thd"] == pytest.approx(math.hypot(0.05, 0.03) * math.sqrt(phases / fund), rel=0.02)
    assert healthy["brb_sideband"] < 2e-3
    assert broken["brb_sideband"] == pytest.approx(0.02, rel=0.05)
    assert unknown["brb_sideband"] == pytest.approx(0.02, rel=0.05)
    if phases == 3:
        rms = np.array(amps) / math.sqrt(2)
        assert broken["rms_c"] == pytest.approx(rms[2], rel=0.01)
        assert healthy["imbalance"] == pytest.approx(np.max(np.abs(rms - rms.mean())) / rms.mean(), rel=0.02)
    else:
        assert healthy["rms"] == pytest.approx(1 / math.sqrt(2), rel=0.01)


@settings(max_examples=20, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    phases=st.sampled_from([1, 3]),
    n=st.sampled_from([64, 333, 2000]),
    shaft=st.one_of(st.just(float("nan")), st.floats(20.0, 26.0)),
    noise=st.sampled_from([0.0, 0.3]),
)
def test_current_matches_naive(seed: int, phases: int, n: int, shaft: float, noise: float) -> None:
    rate = 2000.0
    m = MachineConfig(line_hz=50.0, poles=4)
    x = motor_current(n, rate, phases, 0.04, 0.05, seed)
    x = x + noise * np.random.default_rng(seed).standard_normal(x.shape)
    ex = F.make_extractor(StreamConfig("i", "current", rate, n, n, channels=phases), m)
    got, ok = run(ex, x, shaft)
    ref, ref_ok = naive.current(x, rate, shaft, 50.0, 4, m.slip_tolerance)
    assert ok and ref_ok
    assert_features(ex.names, got, ref, 1.0, 1e-7)


# --------------------------------------------------------------------------------- scalar


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 300),
    rate=st.sampled_from([0.1, 1.0, 50.0]),
    seed=st.integers(0, 2**31),
    trend=st.floats(-5, 5),
    dtype=st.sampled_from(["float32", "float64"]),
)
def test_scalar_matches_naive(n: int, rate: float, seed: int, trend: float, dtype: str) -> None:
    x = (20.0 + trend * np.arange(n) / rate + np.random.default_rng(seed).standard_normal(n)).astype(dtype)
    ex = F.make_extractor(StreamConfig("t", "temperature", rate, n, n), MachineConfig())
    got, ok = run(ex, x, None)
    ref, ref_ok = naive.scalar(x, rate)
    assert ok and ref_ok
    np.testing.assert_allclose(got, ref, rtol=1e-6, atol=1e-6 * (1 + abs(trend)))


# ------------------------------------------------------------------ batch, read-only, warm-up


@pytest.mark.parametrize("ix", range(6))
def test_compute_batch_equals_compute_row_by_row(ix: int) -> None:
    ex, shape = extractors()[ix]
    rng = np.random.default_rng(10 + ix)
    batch = rng.standard_normal((5, *shape)).astype(np.float32)
    shafts = np.array([20.0, 25.0, np.nan, 30.0, 12.5])
    out = np.empty((5, len(ex.names)))
    ok = ex.compute_batch(batch, shafts, out)
    assert ok.all()
    for i in range(5):
        row, _ = run(ex, batch[i], float(shafts[i]))
        np.testing.assert_array_equal(out[i], row)


@pytest.mark.parametrize("ix", range(6))
def test_read_only_input_is_warmed_up_and_works(ix: int) -> None:
    ex, shape = extractors()[ix]
    F.warmup(ex.stream, ex.machine)
    kernels = [
        vib_mod._time_batch,
        vib_mod._spec_batch,
        vib_mod._env_batch,
        cur_mod._rms_batch,
        cur_mod._spec_batch,
    ]
    before = [len(k.signatures) for k in kernels]
    x = np.random.default_rng(ix).standard_normal((2, *shape)).astype(np.float32)
    ro = np.frombuffer(x.tobytes(), dtype=np.float32).reshape(x.shape)
    assert not ro.flags.writeable
    a = np.empty((2, len(ex.names)))
    b = np.empty((2, len(ex.names)))
    ex.compute_batch(x, 25.0, a)
    ex.compute_batch(ro, 25.0, b)
    np.testing.assert_array_equal(a, b)
    assert [len(k.signatures) for k in kernels] == before, "a kernel compiled after warm-up"


def test_non_float_input_is_converted() -> None:
    ex = F.make_extractor(StreamConfig("t", "temperature", 1.0, 4, 4), MachineConfig())
    out, ok = run(ex, np.array([1, 2, 3, 4], dtype=np.int16), None)
    assert ok and out.tolist() == pytest.approx([2.5, 1.0, 1.0, 1.0, 4.0])


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.floats(0, 1e6, allow_nan=False), min_size=1, max_size=80),
    st.integers(0, 79),
    st.integers(0, 79),
)
def test_median_kernel_matches_numpy(vals: list[float], lo: int, span: int) -> None:
    a = np.array(vals)
    lo = min(lo, a.size - 1)
    hi = min(lo + span, a.size - 1)
    assert median_abs(a, lo, hi) == np.median(a[lo : hi + 1])


def test_extractor_is_safe_to_share_between_threads() -> None:
    """Per-thread scratch: concurrent batches of different sizes give the serial results."""
    from concurrent.futures import ThreadPoolExecutor

    ex = F.make_extractor(vib_stream(1024), machine())
    rng = np.random.default_rng(5)
    batches = [rng.standard_normal((k, 1024)).astype(np.float32) for k in (7, 3, 7, 5, 2, 6)]
    serial = []
    for b in batches:
        o = np.empty((b.shape[0], len(ex.names)))
        ex.compute_batch(b, 25.0, o)
        serial.append(o)

    def work(b: np.ndarray) -> np.ndarray:
        o = np.empty((b.shape[0], len(ex.names)))
        for _ in range(20):
            ex.compute_batch(b, 25.0, o)
        return o

    with ThreadPoolExecutor(2) as pool:
        for got, want in zip(pool.map(work, batches), serial, strict=True):
            np.testing.assert_array_equal(got, want)


def test_out_must_be_writable_c_contiguous_float64() -> None:
    ex = F.make_extractor(StreamConfig("t", "temperature", 1.0, 4, 4), MachineConfig())
    x = np.zeros((2, 4))
    read_only = np.frombuffer(bytes(80)).reshape(2, 5)
    for bad in (np.empty((5, 2)).T, np.empty((2, 5), dtype=np.float32), read_only):
        with pytest.raises(ValueError, match="C-contiguous float64"):
            ex.compute_batch(x, None, bad)


def test_vibration_sub_batches_equal_one_batch() -> None:
    ex = F.make_extractor(vib_stream(256), machine())
    assert isinstance(ex, F.VibrationExtractor)
    x = np.random.default_rng(8).standard_normal((9, 256)).astype(np.float32)
    x[4, 7] = np.nan
    whole = np.empty((9, len(ex.names)))
    ok_whole = ex.compute_batch(x, 25.0, whole)
    ex.chunk = 2  # chunk boundaries inside the batch, the NaN row in the middle of one
    parts = np.empty((9, len(ex.names)))
    ok_parts = ex.compute_batch(x, 25.0, parts)
    np.testing.assert_array_equal(ok_parts, ok_whole)
    np.testing.assert_array_equal(parts, whole)
    assert ok_parts.tolist() == [True] * 4 + [False] + [True] * 4
