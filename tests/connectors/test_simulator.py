"""The ``simulator`` source: determinism, continuity, pacing, options, and every fault kind."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

import numpy as np
import pytest
from scipy import signal

from machinewatch.connectors.base import Rejected
from machinewatch.connectors.sources import physics as ph
from machinewatch.connectors.sources.pacing import Pacer
from machinewatch.connectors.sources.simulator import SimulatorSource, schedule
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.types import Chunk

SHAFT_HZ = 24.5  # 4 poles at 50 Hz: slip 0.02, so broken-bar sidebands sit at 48 and 52 Hz
VIB_HZ = 25600.0
CUR_HZ = 5000.0

ASSET = f"""
[assets.m1]
primary_stream = "vib"
[assets.m1.machine]
shaft_hz = {SHAFT_HZ}
line_hz = 50.0
poles = 4
[assets.m1.machine.bearing]
balls = 9
ball_diameter_mm = 7.94
pitch_diameter_mm = 39.04
[assets.m1.streams.vib]
kind = "vibration"
rate_hz = {VIB_HZ}
window_samples = 4096
[assets.m1.streams.cur]
kind = "current"
rate_hz = {CUR_HZ}
channels = 3
window_samples = 4096
[assets.m1.streams.temp]
kind = "temperature"
rate_hz = 2.0
window_samples = 10
[assets.m1.streams.spd]
kind = "speed"
rate_hz = 10.0
"""


def make_config(source: str) -> Config:
    return load_config_text(ASSET + source)


def sim_text(extra: str = "", *, duration: float = 2.0, seed: int = 7, faults: str = "") -> str:
    return f"""
[sources.sim]
kind = "simulator"
seed = {seed}
speedup = "max"
duration_s = {duration}
start_ns = 1_000_000_000
{extra}
{faults}
"""


def fault(kind: str, **kw: Any) -> str:
    body = "".join(f"{k} = {v!r}\n".replace("'", '"') for k, v in kw.items())
    return f'[[sources.sim.faults]]\nasset = "m1"\nkind = "{kind}"\n{body}'


def make_source(text: str, **kw: Any) -> SimulatorSource:
    cfg = make_config(text)
    return SimulatorSource("sim", cfg.sources["sim"].options, cfg, **kw)


async def collect(src: SimulatorSource) -> list[Chunk]:
    out: list[Chunk] = []
    async for item in src.chunks():
        assert not isinstance(item, Rejected)
        out.append(item)
    return out


def by_stream(chunks: list[Chunk]) -> dict[str, list[Chunk]]:
    d: dict[str, list[Chunk]] = defaultdict(list)
    for c in chunks:
        d[c.stream_id].append(c)
    return d


def signal_of(chunks: list[Chunk], stream: str, channels: int = 1) -> np.ndarray:
    vals = np.concatenate([c.values for c in chunks if c.stream_id == stream])
    return vals.reshape(-1, channels) if channels > 1 else vals


async def run(faults: str = "", duration: float = 2.0, seed: int = 7) -> list[Chunk]:
    return await collect(make_source(sim_text(duration=duration, seed=seed, faults=faults)))


def amplitude_at(x: np.ndarray, rate: float, f: float, tol: float = 0.02) -> float:
    """Peak single-sided amplitude of ``x`` within ``f * (1 +- tol)`` (Hann window)."""
    w = np.hanning(x.size)
    spec = np.abs(np.fft.rfft((x - x.mean()) * w)) * 2.0 / w.sum()
    freqs = np.fft.rfftfreq(x.size, 1.0 / rate)
    half = max(f * tol, freqs[1])  # at least one bin either side
    band = (freqs >= f - half) & (freqs <= f + half)
    return float(spec[band].max())


def envelope(x: np.ndarray, rate: float, lo: float = 1500.0) -> np.ndarray:
    """Envelope of ``x`` high-passed above ``lo`` (where the bearing resonance rings)."""
    sos = signal.butter(4, lo, "highpass", fs=rate, output="sos")
    return np.abs(signal.hilbert(signal.sosfiltfilt(sos, x)))


ORDERS = {"bpfo": 3.5848, "bpfi": 5.4152, "bsf": 2.357, "ftf": 0.39828}


@pytest.fixture(scope="module")
def healthy() -> list[Chunk]:
    import asyncio

    return asyncio.run(run())


# ------------------------------------------------------------------ determinism and continuity


async def test_same_seed_gives_the_same_bytes_and_another_seed_does_not() -> None:
    a, b, c = await run(), await run(), await run(seed=8)
    assert [x.stream_id for x in a] == [x.stream_id for x in b]
    assert b"".join(x.values.tobytes() for x in a) == b"".join(x.values.tobytes() for x in b)
    assert [(x.t0_ns, x.seq) for x in a] == [(x.t0_ns, x.seq) for x in b]
    va, vc = signal_of(a, "m1/vib"), signal_of(c, "m1/vib")
    assert va.shape == vc.shape and not np.array_equal(va, vc)


def test_chunks_are_continuous_in_seq_and_time(healthy: list[Chunk]) -> None:
    streams = by_stream(healthy)
    assert set(streams) == {"m1/vib", "m1/cur", "m1/temp", "m1/spd"}
    expected_frames = {"m1/vib": VIB_HZ * 2, "m1/cur": CUR_HZ * 2, "m1/temp": 4, "m1/spd": 20}
    channels = {"m1/cur": 3}
    for sid, chunks in streams.items():
        ch = channels.get(sid, 1)
        assert [c.seq for c in chunks] == list(range(len(chunks)))
        assert chunks[0].t0_ns == 1_000_000_000
        for prev, nxt in itertools.pairwise(chunks):
            frames = prev.values.size // ch
            assert abs(nxt.t0_ns - (prev.t0_ns + frames * 1e9 / prev.rate_hz)) <= 1
        assert sum(c.values.size for c in chunks) == expected_frames[sid] * ch
        assert all(c.values.dtype == np.float32 and c.values.ndim == 1 for c in chunks)
    # vibration and current go out in chunks of chunk_samples frames, scalars one reading each
    assert streams["m1/vib"][0].values.size == 1024
    assert streams["m1/cur"][0].values.size == 1024 * 3
    assert streams["m1/temp"][0].values.size == 1


def test_chunks_come_in_time_order_across_streams(healthy: list[Chunk]) -> None:
    channels = {"m1/cur": 3}
    ends = [c.t0_ns + c.values.size // channels.get(c.stream_id, 1) * 1e9 / c.rate_hz for c in healthy]
    assert all(b >= a - 1 for a, b in itertools.pairwise(ends))


def test_healthy_signals_are_plausible(healthy: list[Chunk]) -> None:
    vib = signal_of(healthy, "m1/vib")
    rms = [float(np.sqrt(np.mean(w**2))) for w in vib[: 12 * 4096].reshape(12, 4096)]
    assert 0.02 < min(rms) and max(rms) < 0.2
    assert max(rms) / min(rms) > 1.001  # windows vary ...
    assert max(rms) / min(rms) < 1.3  # ... but not wildly
    k = float(np.mean((vib - vib.mean()) ** 4) / np.var(vib) ** 2)
    assert 2.5 < k < 3.5  # healthy vibration is close to Gaussian
    cur = signal_of(healthy, "m1/cur", 3)
    assert amplitude_at(cur[:, 0], CUR_HZ, 50.0) > 10.0
    assert amplitude_at(cur[:, 0], CUR_HZ, 250.0) > 0.01 * amplitude_at(cur[:, 0], CUR_HZ, 50.0)
    temp = signal_of(healthy, "m1/temp")
    assert np.all((temp > 35.0) & (temp < 62.0))
    spd = signal_of(healthy, "m1/spd")
    assert np.all(np.abs(spd / SHAFT_HZ - 1.0) < 0.01)
    assert np.std(spd) > 0.0


# ------------------------------------------------------------------ faults


@pytest.mark.parametrize(
    ("kind", "order"),
    [("outer_race", ORDERS["bpfo"]), ("inner_race", ORDERS["bpfi"]), ("ball", 2 * ORDERS["bsf"])],
)
async def test_bearing_faults_raise_the_envelope_line_at_their_order(
    kind: str, order: float, healthy: list[Chunk]
) -> None:
    sick = await run(fault(kind, severity=0.5))
    f = order * SHAFT_HZ * 0.995  # rolling elements slip up to 1 %
    e_sick = envelope(signal_of(sick, "m1/vib"), VIB_HZ)
    e_ok = envelope(signal_of(healthy, "m1/vib"), VIB_HZ)
    a_sick = amplitude_at(e_sick, VIB_HZ, f)
    a_ok = amplitude_at(e_ok, VIB_HZ, f)
    assert a_sick > 10 * a_ok
    # and the defect frequency is the strongest envelope line of the three bearing orders
    others = {2 * ORDERS["bsf"], ORDERS["bpfo"], ORDERS["bpfi"]} - {order}
    assert all(a_sick > amplitude_at(e_sick, VIB_HZ, o * SHAFT_HZ * 0.995) for o in others)


async def test_inner_race_is_modulated_by_shaft_rotation() -> None:
    sick = await run(fault("inner_race", severity=0.5))
    env = envelope(signal_of(sick, "m1/vib"), VIB_HZ)
    f = ORDERS["bpfi"] * SHAFT_HZ * 0.995
    side = amplitude_at(env, VIB_HZ, f + SHAFT_HZ, tol=0.01)
    far = amplitude_at(env, VIB_HZ, f + 0.5 * SHAFT_HZ, tol=0.01)
    assert side > 3 * far  # sidebands at BPFI +- 1x


@pytest.mark.parametrize(
    ("kind", "harmonic", "ratio"),
    [("imbalance", 1, 4.0), ("misalignment", 2, 5.0), ("looseness", 5, 5.0)],
)
async def test_shaft_faults_raise_their_running_speed_harmonic(
    kind: str, harmonic: int, ratio: float, healthy: list[Chunk]
) -> None:
    sick = await run(fault(kind))
    a_sick = amplitude_at(signal_of(sick, "m1/vib"), VIB_HZ, harmonic * SHAFT_HZ, tol=0.01)
    a_ok = amplitude_at(signal_of(healthy, "m1/vib"), VIB_HZ, harmonic * SHAFT_HZ, tol=0.01)
    assert a_sick > ratio * a_ok


async def test_looseness_raises_many_harmonics(healthy: list[Chunk]) -> None:
    sick = signal_of(await run(fault("looseness")), "m1/vib")
    ok = signal_of(healthy, "m1/vib")
    up = [
        amplitude_at(sick, VIB_HZ, k * SHAFT_HZ, 0.01) > 3 * amplitude_at(ok, VIB_HZ, k * SHAFT_HZ, 0.01)
        for k in range(3, 11)
    ]
    assert all(up)


async def test_fault_severity_ramps_in_after_start() -> None:
    sick = signal_of(await run(fault("imbalance", start_s=1.0, ramp_s=2.0), duration=3.0), "m1/vib")
    n = int(VIB_HZ)
    before, mid, end = sick[:n], sick[int(1.9 * n) : int(2.4 * n)], sick[int(2.5 * n) :]
    a = [amplitude_at(x, VIB_HZ, SHAFT_HZ, 0.02) for x in (before, mid, end)]
    assert a[0] < 0.1 and a[0] * 2 < a[1] < a[2]


async def test_broken_rotor_bar_puts_sidebands_at_line_times_one_plus_minus_2s(
    healthy: list[Chunk],
) -> None:
    slip = ph.motor_slip(SHAFT_HZ, 50.0, 4)
    assert slip == pytest.approx(0.02)
    sick = signal_of(await run(fault("broken_rotor_bar")), "m1/cur", 3)[:, 0]
    ok = signal_of(healthy, "m1/cur", 3)[:, 0]
    for f in (50.0 * (1 - 2 * slip), 50.0 * (1 + 2 * slip)):
        assert amplitude_at(sick, CUR_HZ, f, 0.003) > 10 * amplitude_at(ok, CUR_HZ, f, 0.003)
    # the fundamental is unchanged
    assert amplitude_at(sick, CUR_HZ, 50.0, 0.003) == pytest.approx(
        amplitude_at(ok, CUR_HZ, 50.0, 0.003), rel=0.05
    )


async def test_phase_imbalance_lowers_one_phase(healthy: list[Chunk]) -> None:
    sick = signal_of(await run(fault("phase_imbalance", phase=1)), "m1/cur", 3)
    ok = signal_of(healthy, "m1/cur", 3)
    rms_sick = np.sqrt(np.mean(sick**2, axis=0))
    rms_ok = np.sqrt(np.mean(ok**2, axis=0))
    assert rms_ok.max() / rms_ok.min() < 1.01
    assert rms_sick[1] / rms_sick[0] == pytest.approx(0.7, abs=0.02)
    assert rms_sick[2] / rms_sick[0] == pytest.approx(1.0, abs=0.01)


async def test_overheating_ramps_temperature_up() -> None:
    ok = signal_of(await run(duration=60.0), "m1/temp")
    sick = signal_of(await run(fault("overheating", start_s=10.0, ramp_s=40.0), duration=60.0), "m1/temp")
    assert np.allclose(sick[:20], ok[:20])  # nothing before the start
    assert sick[-10:].mean() - ok[-10:].mean() == pytest.approx(30.0, abs=1.0)
    assert np.all(np.diff(sick[30:100] - ok[30:100]) > 0)  # still rising in the ramp


async def test_dropout_leaves_a_seq_and_time_gap() -> None:
    chunks = by_stream(await run(fault("dropout", stream="vib", start_s=0.5, duration_s=0.5)))
    vib = chunks["m1/vib"]
    gaps = [(a, b) for a, b in itertools.pairwise(vib) if b.seq != a.seq + 1]
    assert len(gaps) == 1
    a, b = gaps[0]
    assert (b.t0_ns - a.t0_ns) / 1e9 >= 0.5
    assert b.seq - a.seq == round((b.t0_ns - a.t0_ns) / 1e9 * VIB_HZ / 1024)
    # other streams keep sending
    cur = chunks["m1/cur"]
    assert [c.seq for c in cur] == list(range(len(cur)))


async def test_flatline_freezes_the_value() -> None:
    x = signal_of(await run(fault("flatline", stream="vib", start_s=1.0)), "m1/vib")
    n = int(VIB_HZ)
    assert np.ptp(x[:n]) > 0.1
    assert np.ptp(x[n:]) == 0.0


async def test_clipping_bounds_the_values(healthy: list[Chunk]) -> None:
    x = signal_of(await run(fault("clipping", stream="vib", level=0.05)), "m1/vib")
    assert np.abs(signal_of(healthy, "m1/vib")).max() > 0.1
    assert np.abs(x).max() <= 0.05 + 1e-7
    assert np.mean(np.abs(x) >= 0.05 - 1e-7) > 0.1


async def test_clipping_without_level_follows_severity() -> None:
    x = signal_of(await run(fault("clipping", stream="vib", start_s=1.0)), "m1/vib")
    n = int(VIB_HZ)
    top = np.abs(x[n:]).max()
    assert np.mean(np.abs(x[n:]) >= top - 1e-6) > 0.01  # a flat top: many samples at the rail
    assert np.abs(x[:n]).max() > top


async def test_spikes_are_single_large_samples(healthy: list[Chunk]) -> None:
    ok = signal_of(healthy, "m1/vib")
    x = signal_of(await run(fault("spikes", stream="vib")), "m1/vib")
    big = np.abs(x) > 10 * ok.std()
    assert not np.any(np.abs(ok) > 10 * ok.std())
    assert 10 < big.sum() < 0.01 * x.size
    idx = np.flatnonzero(big)
    assert np.all(np.diff(idx) > 1) or np.mean(np.diff(idx) > 1) > 0.9  # isolated samples


async def test_sensor_fault_on_one_stream_leaves_the_others(healthy: list[Chunk]) -> None:
    sick = await run(fault("flatline", stream="temp"))
    assert np.array_equal(signal_of(sick, "m1/vib"), signal_of(healthy, "m1/vib"))
    assert np.ptp(signal_of(sick, "m1/temp")) == 0.0


# ------------------------------------------------------------------ pacing


def test_schedule_orders_chunks_by_completion_and_truncates_at_duration() -> None:
    slots = list(schedule([1000.0, 10.0], [100, 1], 0, duration_s=0.25))
    ends = [s.t_end_ns for s in slots]
    assert ends == sorted(ends)
    a = [s for s in slots if s.stream == 0]
    b = [s for s in slots if s.stream == 1]
    assert [s.n for s in a] == [100, 100, 50]
    assert [s.t0_ns for s in b] == [0, 100_000_000, 200_000_000]
    assert sum(s.n for s in b) == 3
    assert [s.seq for s in a] == [0, 1, 2]
    # at equal completion times the lower stream index goes first
    tie = [s for s in slots if s.t_end_ns == 100_000_000]
    assert [s.stream for s in tie] == [0, 1]


def test_pacer_due_times() -> None:
    assert Pacer(20.0).due_s(10.0) == pytest.approx(0.5)
    assert Pacer(None).due_s(1e9) == 0.0


async def test_simulator_keeps_pace_with_speedup() -> None:
    clock = [0.0]
    sleeps: list[float] = []

    async def fake_sleep(s: float) -> None:
        sleeps.append(s)
        clock[0] += s

    text = sim_text(duration=4.0).replace('speedup = "max"', "speedup = 20.0")
    src = make_source(text, clock=lambda: clock[0], sleep=fake_sleep)
    chunks = await collect(src)
    # generation takes no fake time, so the waits add up to the simulated span / speedup
    assert sum(sleeps) == pytest.approx(4.0 / 20.0, abs=1e-9)
    assert all(s > 0 for s in sleeps)
    last_end = (
        max(
            c.t0_ns + (c.values.size // (3 if c.stream_id == "m1/cur" else 1)) * 1e9 / c.rate_hz
            for c in chunks
        )
        - 1e9
    )
    assert clock[0] == pytest.approx(last_end / 1e9 / 20.0, abs=1e-6)


async def test_speedup_max_never_sleeps() -> None:
    calls: list[float] = []

    async def fake_sleep(s: float) -> None:
        calls.append(s)

    src = make_source(sim_text(duration=0.5), clock=lambda: 0.0, sleep=fake_sleep)
    assert len(await collect(src)) > 10
    assert calls == []


# ------------------------------------------------------------------ options


def problems_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        make_source(text)
    return {p.path: p.reason for p in exc.value.problems}


def test_validate_options_reports_every_problem_by_key_path() -> None:
    text = """
[sources.sim]
kind = "simulator"
speedup = -1
seed = "x"
chunk_samples = 0
duration_s = 0
sped = 3
[[sources.sim.faults]]
asset = "m1"
kind = "bogus"
[[sources.sim.faults]]
asset = "m1"
kind = "dropout"
severity = -1
"""
    probs = problems_of(text)
    assert "must be > 0" in probs["sources.sim.speedup"]
    assert "integer" in probs["sources.sim.seed"]
    assert "sources.sim.chunk_samples" in probs
    assert probs["sources.sim.duration_s"] == "must be > 0"
    assert "unknown key" in probs["sources.sim.sped"]
    assert "must be one of" in probs["sources.sim.faults[0].kind"]
    assert "required" in probs["sources.sim.faults[1].duration_s"]
    assert "sources.sim.faults[1].severity" in probs


def test_speedup_accepts_max_and_zero() -> None:
    for v in ('"max"', "0", "0.5", "60"):
        src = make_source(sim_text().replace('speedup = "max"', f"speedup = {v}"))
        assert src.speedup == (None if v in ('"max"', "0") else float(v))
    assert "sources.sim.speedup" in problems_of(sim_text().replace('"max"', '"fast"'))


def test_constructor_checks_assets_streams_and_fault_targets() -> None:
    text = sim_text(
        'assets = ["m1", "nope"]',
        faults=(
            '[[sources.sim.faults]]\nasset = "ghost"\nkind = "imbalance"\n'
            + fault("imbalance", stream="cur")
            + fault("flatline", stream="missing")
        ),
    )
    probs = problems_of(text)
    assert "names no asset" in probs["sources.sim.assets[1]"]
    assert "names no asset" in probs["sources.sim.faults[0].asset"]
    assert "vibration stream" in probs["sources.sim.faults[1].stream"]
    assert "names no stream" in probs["sources.sim.faults[2].stream"]


def test_fault_kind_needs_a_stream_it_can_act_on() -> None:
    cfg_text = """
[assets.fan]
[assets.fan.machine]
shaft_hz = 20.0
[assets.fan.streams.vib]
kind = "vibration"
rate_hz = 10000
window_samples = 1024
[sources.sim]
kind = "simulator"
[[sources.sim.faults]]
asset = "fan"
kind = "broken_rotor_bar"
"""
    cfg = load_config_text(cfg_text)
    with pytest.raises(ConfigError) as exc:
        SimulatorSource("sim", cfg.sources["sim"].options, cfg)
    assert [p.path for p in exc.value.problems] == ["sources.sim.faults[0].kind"]
    assert "no current stream" in exc.value.problems[0].reason


def test_asset_subset_and_default_machine_speed() -> None:
    cfg_text = (
        ASSET
        + """
[assets.fan]
[assets.fan.machine]
speed_stream = "spd"
line_hz = 60.0
poles = 2
[assets.fan.streams.vib]
kind = "vibration"
rate_hz = 10000
window_samples = 1024
[assets.fan.streams.spd]
kind = "speed"
rate_hz = 5
"""
        + sim_text('assets = ["fan"]', duration=1.0)
    )
    cfg = load_config_text(cfg_text)
    src = SimulatorSource("sim", cfg.sources["sim"].options, cfg)
    assert {a.name for a, _ in src.streams} == {"fan"}
    import asyncio

    chunks = asyncio.run(collect(src))
    spd = signal_of(chunks, "fan/spd")
    assert np.all(np.abs(spd / (60.0 * 0.98) - 1.0) < 0.01)  # sync speed at ~2 % slip


# ------------------------------------------------------------------ physics


def test_shaft_cycles_integrates_shaft_speed() -> None:
    prof = ph.speed_profile(25.0, 0.002, np.random.default_rng(1))
    t = np.linspace(0.0, 20.0, 200_001)
    numeric = np.concatenate(
        [[0.0], np.cumsum((ph.shaft_speed(t[1:], prof) + ph.shaft_speed(t[:-1], prof)) / 2 * np.diff(t))]
    )
    assert np.allclose(ph.shaft_cycles(t, prof), numeric, atol=1e-6)
    speed = ph.shaft_speed(t, prof)
    assert 0.0005 < np.std(speed / 25.0) < 0.004


def test_chunk_cycles_matches_the_exact_angle() -> None:
    prof = ph.speed_profile(30.0, 0.002, np.random.default_rng(2))
    t = 1234.5 + np.arange(2048) / 25600.0
    whole, frac = ph.chunk_cycles(t, prof)
    assert 0.0 <= frac[0] < 1.0
    assert np.allclose(whole + frac, ph.shaft_cycles(t, prof), atol=1e-5, rtol=0)


def test_harmonic_sum_matches_numpy_reference() -> None:
    c = np.random.default_rng(3).uniform(0, 50, 3000)
    amps, phases = [0.3, 0.0, 0.1, 0.05], [0.2, 1.0, -2.0, 3.0]
    ref = sum(a * np.sin(2 * np.pi * k * c + p) for k, (a, p) in enumerate(zip(amps, phases, strict=True), 1))
    gain = np.linspace(0, 2, c.size)
    assert np.allclose(ph.harmonic_sum(c, amps, phases), ref, atol=1e-5)
    assert np.allclose(ph.harmonic_sum(c, amps, phases, gain=gain), ref * gain, atol=1e-5)


def test_bearing_impulses_are_periodic_and_decay() -> None:
    rate, f = 20000.0, 25.0
    t = np.arange(int(rate)) / rate
    x = ph.bearing_impulses(0.0, f * t, f, 4.0, 3000.0, 0.001, 1.0, seed=1)
    # impacts every 1 / (4 * 25) s = 10 ms, each ringing down within a few ms
    per = int(rate / 100)
    frames = np.abs(x[: 100 * per].reshape(100, per))
    peaks = frames[:, :20].max(axis=1)
    assert np.all(frames[:, -40:].max(axis=1) < 0.02)
    # impact-to-impact scatter of 60-100 %, less a little decay before the first ring peak
    assert 0.45 < peaks.min() and peaks.max() <= 1.0 and np.ptp(peaks) > 0.2


def test_resonator_has_unit_noise_gain() -> None:
    res = ph.resonator(3000.0, 0.05, 25600.0)
    w = np.random.default_rng(4).standard_normal(200_000).astype(np.float32)
    y, zi = ph.resonator_noise(w, res)
    assert np.std(y[5000:]) == pytest.approx(1.0, rel=0.05)
    # continuing with the returned state equals filtering in one go
    y1, z1 = ph.resonator_noise(w[:1000], res)
    y2, _ = ph.resonator_noise(w[1000:2000], res, z1)
    assert np.allclose(np.r_[y1, y2], y[:2000], atol=1e-5)
    assert math.isfinite(float(zi[0]))


@pytest.mark.parametrize(("freq", "zeta"), [(3000.0, 0.05), (2000.0, 0.03), (12000.0, 0.08), (50.0, 0.02)])
def test_resonator_matches_scipy_lfilter(freq: float, zeta: float) -> None:
    from scipy import signal

    res = ph.resonator(freq, zeta, 25600.0)
    # the closed-form gain equals the summed squared impulse response
    a = res.a
    h = signal.lfilter([1.0], a, np.r_[1.0, np.zeros(400_000)])
    assert res.b[0] == pytest.approx(1.0 / math.sqrt(float(np.sum(h * h))), rel=1e-6)
    w = np.random.default_rng(5).standard_normal(5000).astype(np.float32)
    zi = np.array([0.3, -0.2])
    y, zf = ph.resonator_noise(w, res, zi)
    y_ref, zf_ref = signal.lfilter(res.b, res.a, w.astype(np.float64), zi=zi)
    assert np.allclose(y, y_ref, rtol=1e-5, atol=1e-5 * float(np.abs(y_ref).max()))
    assert np.allclose(zf, zf_ref, rtol=1e-9, atol=1e-9 * float(np.abs(zf_ref).max()))


def test_severity_ramp() -> None:
    t = np.array([0.0, 1.0, 2.0, 3.0, 4.0, 10.0])
    assert ph.severity_ramp(t, 1.0, 2.0, 0.8).tolist() == pytest.approx([0, 0, 0.4, 0.8, 0.8, 0.8])
    assert ph.severity_ramp(t, 1.0, 0.0, 1.0, duration_s=3.0).tolist() == [0, 1, 1, 1, 0, 0]
