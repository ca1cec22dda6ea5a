"""``simulator``: physically plausible rotating machines, with scheduled faults.

Every stream of the simulated assets is generated from the asset's machine model
(:class:`~machinewatch.engine.config.MachineConfig`: shaft speed, bearing geometry, line
frequency, poles) and the stream's kind, rate and channels. The signal models are in
:mod:`machinewatch.connectors.sources.physics`; this module owns the per-stream state, the fault
schedule and the pacing.

Healthy signals
---------------
- ``vibration`` (g): small 1x/2x/3x running-speed components, broadband noise and the response of
  a random structural resonance (2-5 kHz), with the shaft speed wandering by ~0.2 %.
- ``current`` (A, 1 or 3 phases): the line-frequency sinusoid with 5th/7th harmonics, noise and
  a load that follows the speed wander.
- ``temperature`` (°C): a level of 40-55 °C drifting with load, small noise.
- ``speed`` (Hz): the shaft speed with measurement noise.
- ``scalar``: a load-like value about 1.0.

Options
-------
::

    [sources.sim]
    kind = "simulator"
    seed = 0                # int: same seed, same samples
    speedup = 1.0           # simulated s per wall s; 0 or "max" = as fast as possible
    # duration_s = 600.0    # simulated seconds, then the source ends (default: run forever)
    # assets = ["pump1"]    # default: every asset of the config
    chunk_samples = 1024    # frames per chunk of vibration and current streams
                            # (temperature, speed and scalar streams send one reading per chunk)
    # start_ns = 0          # time of the first sample (default: now)

    [[sources.sim.faults]]
    asset = "pump1"
    kind = "outer_race"     # see FAULT_KINDS
    start_s = 120.0         # simulated seconds after the start
    ramp_s = 60.0           # severity rises linearly from 0 over this time
    severity = 1.0          # final severity (0..1, more is allowed)
    # stream = "vib"        # only this stream (default: every stream the fault affects)
    # duration_s = 30.0     # the fault ends after this (required for dropout)
    # level = 0.5           # clipping: clip at +-level (default: from the signal and severity)
    # phase = 0             # phase_imbalance: the phase whose amplitude drops (0, 1, 2)
    # probability = 0.001   # spikes: chance per sample at severity 1

Faults
------
Machine faults: ``outer_race`` (impacts at BPFO ringing the resonance), ``inner_race`` (at BPFI,
modulated by shaft rotation), ``ball`` (at 2 x BSF, modulated by FTF), ``imbalance`` (1x),
``misalignment`` (2x and some 1x), ``looseness`` (many harmonics and 0.5x), ``broken_rotor_bar``
(current sidebands at ``line_hz * (1 +- 2 s)``), ``phase_imbalance`` (one phase's amplitude drops
by 30 % x severity), ``overheating`` (+30 °C x severity). Sensor faults, on any stream:
``dropout`` (no chunks in ``[start_s, start_s + duration_s)``; ``seq`` keeps counting, so the
consumer sees a sequence and a time gap), ``flatline`` (the value freezes), ``clipping`` and
``spikes``. Without a bearing geometry the asset uses the SKF 6205's fault orders.

Speed
-----
Waveforms are synthesised about 0.2 s at a time (numpy plus two small numba kernels) and handed
out chunk by chunk; at 1024-sample chunks numpy's per-call overhead would otherwise dominate. One
core makes roughly 5-7 M samples/s (three 25.6 kHz machines with current and temperature, with or
without faults), so a 2-core gateway runs the demo at 20-60x real time with room for the engine.
"""

from __future__ import annotations

__all__ = ["FAULT_KINDS", "FaultSpec", "SimulatorSource", "Slot", "schedule"]

import asyncio
import heapq
import logging
import math
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from machinewatch.connectors.base import Rejected, Source
from machinewatch.connectors.sources import physics as ph
from machinewatch.connectors.sources.pacing import Pacer, check_pacing_options, pacing_options
from machinewatch.engine.config import AssetConfig, Config, StreamConfig, _Checker
from machinewatch.engine.errors import ConfigError, ConfigProblem
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

#: fault kind -> the stream kind it acts on (``None``: a sensor fault, any stream)
FAULT_KINDS: dict[str, str | None] = {
    "outer_race": "vibration",
    "inner_race": "vibration",
    "ball": "vibration",
    "imbalance": "vibration",
    "misalignment": "vibration",
    "looseness": "vibration",
    "broken_rotor_bar": "current",
    "phase_imbalance": "current",
    "overheating": "temperature",
    "dropout": None,
    "flatline": None,
    "clipping": None,
    "spikes": None,
}
_WAVEFORM_KINDS = ("vibration", "current")
_OPTION_KEYS = {"seed", "speedup", "duration_s", "assets", "chunk_samples", "start_ns", "faults"}
_FAULT_KEYS = {
    "asset",
    "kind",
    "start_s",
    "ramp_s",
    "severity",
    "stream",
    "duration_s",
    "level",
    "phase",
    "probability",
}
_VIB_NOISE_G = 0.02  # broadband noise, g RMS
_VIB_RES_G = 0.03  # structural resonance response, g RMS
_BEARING_PEAK_G = 1.5  # impact peak at severity 1
_SPEED_JITTER = 0.002
_BLOCK_S = 0.2  # seconds of waveform synthesised per call (chunk_cycles is exact to ~1e-5 rev)
_LOOSE_AMPS = tuple(0.12 / math.sqrt(k) for k in range(1, 11))
_LOOSE_PHASES = tuple((0.7 * k) % (2.0 * math.pi) for k in range(1, 11))


@dataclass(frozen=True, slots=True)
class FaultSpec:
    """One scheduled fault (one ``[[sources.<name>.faults]]`` table)."""

    asset: str
    kind: str
    start_s: float = 0.0
    ramp_s: float = 0.0
    severity: float = 1.0
    stream: str | None = None
    duration_s: float | None = None
    level: float | None = None
    phase: int = 0
    probability: float | None = None

    @property
    def end_s(self) -> float:
        """End of the fault in simulated seconds (``inf`` when it lasts)."""
        return math.inf if self.duration_s is None else self.start_s + self.duration_s

    def severity_at(self, t: F64) -> F64:
        """Severity at simulated times ``t``."""
        return ph.severity_ramp(t, self.start_s, self.ramp_s, self.severity, self.duration_s)

    def overlaps(self, t_first: float, t_last: float) -> bool:
        """Whether the fault is active anywhere in ``[t_first, t_last]``."""
        return t_last >= self.start_s and t_first < self.end_s and self.severity > 0.0

    def applies_to(self, asset: str, stream: StreamConfig) -> bool:
        """Whether this fault acts on ``stream`` of ``asset``."""
        if asset != self.asset or (self.stream is not None and self.stream != stream.name):
            return False
        target = FAULT_KINDS[self.kind]
        return target is None or target == stream.kind


@dataclass(frozen=True, slots=True)
class Slot:
    """One chunk to produce: stream index, sequence number, frames ``[k0, k0 + n)``, times."""

    stream: int
    seq: int
    k0: int
    n: int
    t0_ns: int
    t_end_ns: int  # time just after the last frame: when the chunk is complete


def schedule(
    rates_hz: Sequence[float],
    frames: Sequence[int],
    start_ns: int,
    duration_s: float | None = None,
) -> Iterator[Slot]:
    """Chunks of every stream, in the order they complete (``t_end_ns``, then stream index).

    Stream ``i`` sends chunks of ``frames[i]`` frames at ``rates_hz[i]``; frame ``k`` is at
    ``start_ns + k / rate``. With ``duration_s`` only frames before it are produced (the last
    chunk of a stream may be short) and the iterator ends.
    """
    heap: list[tuple[int, int, int, int]] = []  # (t_end_ns, stream, seq, k0)

    def push(i: int, seq: int, k0: int) -> None:
        n = frames[i]
        if duration_s is not None:
            limit = math.ceil(duration_s * rates_hz[i] - 1e-9)
            n = min(n, limit - k0)
            if n <= 0:
                return
        heapq.heappush(heap, (start_ns + round((k0 + n) * 1e9 / rates_hz[i]), i, seq, k0))

    for i in range(len(rates_hz)):
        push(i, 0, 0)
    while heap:
        t_end, i, seq, k0 = heapq.heappop(heap)
        n = frames[i]
        if duration_s is not None:
            n = min(n, math.ceil(duration_s * rates_hz[i] - 1e-9) - k0)
        yield Slot(i, seq, k0, n, start_ns + round(k0 * 1e9 / rates_hz[i]), t_end)
        push(i, seq + 1, k0 + n)


@dataclass(slots=True)
class _AssetModel:
    """Random but fixed (per seed) parameters of one simulated machine."""

    name: str
    speed: ph.SpeedProfile
    orders: dict[str, float]
    slip: float
    line_hz: float
    current_peak_a: float
    base_temp_c: float


@dataclass(slots=True)
class _StreamGen:
    """State of one simulated stream: its random generator, filter state and fault state."""

    asset: _AssetModel
    cfg: StreamConfig
    stream_id: str
    rng: np.random.Generator
    seed: int
    faults: list[FaultSpec]
    nominal: float  # typical peak of the healthy signal (for default clip level and spikes)
    res: ph.Resonator | None = None
    zi: F64 | None = None
    amps: tuple[float, ...] = ()
    phases: tuple[float, ...] = ()
    flat: dict[int, F32] = field(default_factory=dict)
    buf: F32 | None = None  # frames generated ahead, shape (m, channels)
    buf_k0: int = 0

    def take(self, k0: int, n: int, block: int) -> F32:
        """Frames ``[k0, k0 + n)``, generated ``block`` frames at a time.

        Numpy's per-call overhead dominates at 1024 samples, so waveforms are synthesised a few
        chunks ahead and handed out in slices (chunks of a stream are asked for in order).
        """
        if self.buf is None or k0 < self.buf_k0 or k0 + n > self.buf_k0 + self.buf.shape[0]:
            m = max(n, block)
            t = (k0 + np.arange(m, dtype=np.float64)) / self.cfg.rate_hz
            self.buf = self.sensor_faults(t, self.frames(t))
            self.buf_k0 = k0
        i = k0 - self.buf_k0
        return self.buf[i : i + n]

    def frames(self, t: F64) -> F32:
        """Healthy signal plus machine faults, shape ``(len(t), channels)``."""
        kind = self.cfg.kind
        if kind == "vibration":
            return self._vibration(t)[:, None]
        if kind == "current":
            return self._current(t)
        load = ph.load_factor(t, self.asset.speed)
        if kind == "temperature":
            rise = np.zeros_like(t)
            for f in self.faults:
                if f.kind == "overheating" and f.overlaps(t[0], t[-1]):
                    rise += 30.0 * f.severity_at(t)
            x = ph.temperature_level(t, self.asset.base_temp_c, load, rise)
            x = x + 0.05 * self.rng.standard_normal(t.size)
        elif kind == "speed":
            x = ph.shaft_speed(t, self.asset.speed)
            x = x + 5e-4 * self.asset.speed.f0_hz * self.rng.standard_normal(t.size)
        else:
            x = load + 0.01 * self.rng.standard_normal(t.size)
        return x.astype(np.float32)[:, None]

    def _vibration(self, t: F64) -> F32:
        assert self.res is not None
        prof = self.asset.speed
        whole, frac = ph.chunk_cycles(t, prof)
        white = self.rng.standard_normal(t.size, dtype=np.float32)
        resp, self.zi = ph.resonator_noise(white, self.res, self.zi)
        x = ph.harmonic_sum(frac, self.amps, self.phases)
        x += np.float32(_VIB_NOISE_G) * white
        x += np.float32(_VIB_RES_G) * resp
        active = [f for f in self.faults if FAULT_KINDS[f.kind] == "vibration" and f.overlaps(t[0], t[-1])]
        if not active:
            return x
        f_inst = ph.slow_series(t, lambda u: ph.shaft_speed(u, prof))
        decay = 1.0 / (self.res.zeta * 2.0 * math.pi * self.res.freq_hz)
        for i, f in enumerate(active):
            sev = f.severity_at(t)
            if f.kind in ("outer_race", "inner_race", "ball"):
                mod: F64 | None = None
                if f.kind == "outer_race":
                    order = self.asset.orders["bpfo"]
                elif f.kind == "inner_race":
                    order = self.asset.orders["bpfi"]
                    # the defect passes through the load zone once per revolution
                    mod = 0.5 * (1.0 + np.cos(2.0 * math.pi * frac))
                else:
                    order = 2.0 * self.asset.orders["bsf"]
                    ftf = self.asset.orders["ftf"]
                    cage = math.fmod(whole * ftf, 1.0) + ftf * frac
                    mod = 0.5 * (1.0 + np.cos(2.0 * math.pi * cage))
                ph.bearing_impulses(
                    whole,
                    frac,
                    f_inst,
                    order,
                    self.res.freq_hz,
                    decay,
                    _BEARING_PEAK_G * sev,
                    self.seed + 7919 * i,
                    mod,
                    out=x,
                )
            elif f.kind == "imbalance":
                ph.harmonic_sum(frac, (0.4,), self.phases[:1], gain=sev, out=x)
            elif f.kind == "misalignment":
                ph.harmonic_sum(frac, (0.1, 0.3), self.phases[:2], gain=sev, out=x)
            elif f.kind == "looseness":
                ph.harmonic_sum(frac, _LOOSE_AMPS, _LOOSE_PHASES, gain=sev, out=x)
                # 0.5x (a loose part lifts every other revolution): continuous over 2 revolutions
                half = (math.fmod(whole, 2.0) + frac) * 0.5
                ph.harmonic_sum(half, (0.08,), (0.3,), gain=sev, out=x)
        return x

    def _current(self, t: F64) -> F32:
        ch = self.cfg.channels
        gain = np.ones((t.size, ch))
        sideband = np.full(t.size, 0.002)  # a healthy cage is never perfectly symmetric
        for f in self.faults:
            if FAULT_KINDS[f.kind] != "current" or not f.overlaps(t[0], t[-1]):
                continue
            sev = f.severity_at(t)
            if f.kind == "broken_rotor_bar":
                sideband = sideband + 0.06 * sev
            else:
                gain[:, min(f.phase, ch - 1)] *= 1.0 - 0.3 * np.minimum(sev, 3.0)
        load = ph.load_factor(t, self.asset.speed)
        x = ph.current_waveform(
            t,
            self.asset.line_hz,
            self.asset.current_peak_a,
            ch,
            phase_gain=gain,
            sideband_index=sideband,
            sideband_hz=2.0 * self.asset.slip * self.asset.line_hz,
            load=load,
        )
        noise = self.rng.standard_normal(x.shape, dtype=np.float32)
        x += np.float32(0.005 * self.asset.current_peak_a) * noise
        return x

    def sensor_faults(self, t: F64, x: F32) -> F32:
        """Apply spikes, clipping and flat line (in that order) to frames ``x``."""
        for idx, f in enumerate(self.faults):
            if FAULT_KINDS[f.kind] is not None or f.kind == "dropout":
                continue
            if not f.overlaps(t[0], t[-1]):
                continue
            sev = f.severity_at(t)
            on = sev > 0.0
            if f.kind == "spikes":
                waveform = self.cfg.rate_hz >= 100.0
                p = f.probability if f.probability is not None else (1e-3 if waveform else 0.05)
                prob = np.repeat(p * sev, x.shape[1])
                x = ph.add_spikes(x.reshape(-1), prob, 5.0 * self.nominal, self.rng).reshape(x.shape)
            elif f.kind == "clipping":
                full_scale = f.level if f.level is not None else self.cfg.clip_level
                if full_scale > 0.0:
                    # a known full scale (the fault's level, else the stream's clip_level): the
                    # fault drives the signal into it (a saturating charge amplifier, a loose
                    # sensor hammering) and it clips there, as a real ADC does
                    lvl = np.full(t.size, full_scale)
                    gain = 1.0 + np.where(on, 2.0 * full_scale / max(self.nominal, 1e-12) * sev, 0.0)
                    x = (x * gain[:, None]).astype(np.float32)
                else:
                    lvl = self.nominal * (1.0 - 0.5 * np.minimum(sev, 1.0))
                lvl = np.where(on, lvl, np.inf)[:, None]
                x = np.clip(x, -lvl, lvl).astype(np.float32)
            elif f.kind == "flatline":
                if idx not in self.flat:
                    first = int(np.argmax(on))
                    self.flat[idx] = x[first].copy()
                x = np.where(on[:, None], self.flat[idx][None, :], x).astype(np.float32)
        return x

    def dropped(self, t_first: float) -> bool:
        """Whether a chunk starting at ``t_first`` is lost to a dropout."""
        return any(f.kind == "dropout" and f.start_s <= t_first < f.end_s for f in self.faults)


def _stable_key(*names: str) -> list[int]:
    return [zlib.crc32(n.encode()) for n in names]


def _nominal_shaft(asset: AssetConfig) -> float:
    m = asset.machine
    if m.shaft_hz is not None:
        return m.shaft_hz
    return 2.0 * m.line_hz / m.poles * 0.98  # an induction motor at about 2 % slip


def _asset_model(asset: AssetConfig, seed: int) -> _AssetModel:
    rng = np.random.default_rng(np.random.SeedSequence([seed, *_stable_key(asset.name)]))
    f0 = _nominal_shaft(asset)
    m = asset.machine
    orders = m.bearing.orders() if m.bearing is not None else dict(ph.DEFAULT_BEARING_ORDERS)
    # rolling elements slip: observed defect lines sit up to ~1-2 % below the kinematic ones
    slip_factor = float(rng.uniform(0.99, 1.0))
    orders = {k: (v * slip_factor if k != "ftf" else v) for k, v in orders.items()}
    return _AssetModel(
        name=asset.name,
        speed=ph.speed_profile(f0, _SPEED_JITTER, rng),
        orders=orders,
        slip=ph.motor_slip(f0, m.line_hz, m.poles),
        line_hz=m.line_hz,
        current_peak_a=float(rng.uniform(8.0, 16.0)) * math.sqrt(2.0),
        base_temp_c=float(rng.uniform(40.0, 55.0)),
    )


def _stream_gen(
    model: _AssetModel, asset: AssetConfig, s: StreamConfig, seed: int, faults: list[FaultSpec]
) -> _StreamGen:
    ss = np.random.SeedSequence([seed, *_stable_key(asset.name, s.name)])
    rng = np.random.default_rng(ss)
    mine = [f for f in faults if f.applies_to(asset.name, s)]
    gen = _StreamGen(model, s, asset.stream_id(s.name), rng, int(ss.generate_state(1)[0]), mine, 1.0)
    if s.kind == "vibration":
        gen.res = ph.resonator(float(rng.uniform(2000.0, 5000.0)), float(rng.uniform(0.03, 0.08)), s.rate_hz)
        gen.amps = (
            float(rng.uniform(0.03, 0.06)),
            float(rng.uniform(0.01, 0.02)),
            float(rng.uniform(0.003, 0.008)),
        )
        gen.phases = tuple(float(v) for v in rng.uniform(0.0, 2.0 * math.pi, 3))
        rms = math.sqrt(sum(a * a / 2 for a in gen.amps) + _VIB_NOISE_G**2 + _VIB_RES_G**2)
        gen.nominal = 3.0 * rms
    elif s.kind == "current":
        gen.nominal = model.current_peak_a
    elif s.kind == "temperature":
        gen.nominal = model.base_temp_c
    elif s.kind == "speed":
        gen.nominal = model.speed.f0_hz
    return gen


def _fault_specs(options: Mapping[str, Any]) -> list[FaultSpec]:
    out = []
    for f in options.get("faults", []) or []:
        out.append(
            FaultSpec(
                asset=str(f["asset"]),
                kind=str(f["kind"]),
                start_s=float(f.get("start_s", 0.0)),
                ramp_s=float(f.get("ramp_s", 0.0)),
                severity=float(f.get("severity", 1.0)),
                stream=f.get("stream"),
                duration_s=float(f["duration_s"]) if "duration_s" in f else None,
                level=float(f["level"]) if "level" in f else None,
                phase=int(f.get("phase", 0)),
                probability=float(f["probability"]) if "probability" in f else None,
            )
        )
    return out


def _fault_kind(v: str) -> str | None:
    return None if v in FAULT_KINDS else f"must be one of {', '.join(FAULT_KINDS)}; got {v!r}"


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


class SimulatorSource(Source):
    """Simulated rotating machines for the assets of a config (see the module docstring).

    Parameters
    ----------
    name, options, config
        The source's name, its option table (without ``kind``) and the whole config.
    clock, sleep
        Wall clock and sleep used for pacing (injectable for tests).

    Raises
    ------
    ConfigError
        When the options are invalid or name assets, streams or phases the config lacks.
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        *,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
    ) -> None:
        super().__init__(name, options, config)
        path = f"sources.{name}"
        problems = self.validate_options(options, path) + self._check_against(config, path)
        if problems:
            raise ConfigError(problems)
        opts = self.options
        self.seed = int(opts.get("seed", 0))
        self.speedup, self.chunk_samples, self.start_ns = pacing_options(opts)
        self.duration_s: float | None = (
            float(opts["duration_s"]) if opts.get("duration_s") is not None else None
        )
        self.asset_names: list[str] = list(opts.get("assets") or config.assets)
        self.faults = _fault_specs(opts)
        self._clock = clock
        self._sleep = sleep
        self.streams: list[tuple[AssetConfig, StreamConfig]] = [
            (config.assets[a], s) for a in self.asset_names for s in config.assets[a].streams.values()
        ]

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        """Every problem with the option table, by key path (no config needed)."""
        c = _Checker()
        c.unknown(options, _OPTION_KEYS, path)
        c.get(options, "seed", path, int, 0, check=_non_negative)
        c.get(options, "duration_s", path, float, None, check=_positive)
        check_pacing_options(c, options, path)
        assets = c.get(options, "assets", path, list, None)
        for i, a in enumerate(assets or []):
            if not isinstance(a, str):
                c.bad(f"{path}.assets[{i}]", "must be an asset name (string)")
        faults = c.get(options, "faults", path, list, None) or []
        for i, f in enumerate(faults):
            fp = f"{path}.faults[{i}]"
            if not isinstance(f, dict):
                c.bad(fp, "must be a table")
                continue
            c.unknown(f, _FAULT_KEYS, fp)
            c.get(f, "asset", fp, str, None, required=True)
            kind = c.get(f, "kind", fp, str, None, required=True, check=_fault_kind)
            c.get(f, "start_s", fp, float, 0.0, check=_non_negative)
            c.get(f, "ramp_s", fp, float, 0.0, check=_non_negative)
            c.get(f, "severity", fp, float, 1.0, check=_non_negative)
            c.get(f, "stream", fp, str, None)
            c.get(f, "duration_s", fp, float, None, check=_positive)
            c.get(f, "level", fp, float, None, check=_positive)
            c.get(f, "phase", fp, int, 0, check=lambda v: None if 0 <= v <= 2 else "must be 0, 1 or 2")
            c.get(
                f, "probability", fp, float, None, check=lambda v: None if 0 < v <= 1 else "must be in (0, 1]"
            )
            if kind == "dropout" and "duration_s" not in f:
                c.bad(f"{fp}.duration_s", "is required for a dropout")
        return c.problems

    def _check_against(self, config: Config, path: str) -> list[ConfigProblem]:
        """Problems only the whole config shows: unknown assets, streams, phases."""
        probs: list[ConfigProblem] = []
        assets = self.options.get("assets")
        chosen = set(config.assets)
        if isinstance(assets, list):
            chosen = set()
            for i, a in enumerate(assets):
                if isinstance(a, str) and a not in config.assets:
                    probs.append(ConfigProblem(f"{path}.assets[{i}]", f"names no asset ({a!r})"))
                elif isinstance(a, str):
                    chosen.add(a)
        faults = self.options.get("faults")
        for i, f in enumerate(faults if isinstance(faults, list) else []):
            if not isinstance(f, dict) or not isinstance(f.get("asset"), str):
                continue
            fp = f"{path}.faults[{i}]"
            a = config.assets.get(f["asset"])
            if a is None or f["asset"] not in chosen:
                why = "names no asset" if a is None else "names an asset this source does not simulate"
                probs.append(ConfigProblem(f"{fp}.asset", f"{why} ({f['asset']!r})"))
                continue
            target = FAULT_KINDS.get(str(f.get("kind")), "?")
            stream = f.get("stream")
            if isinstance(stream, str):
                s = a.streams.get(stream)
                if s is None:
                    probs.append(ConfigProblem(f"{fp}.stream", f"names no stream of {a.name} ({stream!r})"))
                    continue
                if target not in (None, "?") and s.kind != target:
                    probs.append(
                        ConfigProblem(
                            f"{fp}.stream",
                            f"a {f.get('kind')} fault acts on a {target} stream, {stream!r} is {s.kind}",
                        )
                    )
                streams = [s]
            else:
                streams = list(a.streams.values())
                if target not in (None, "?") and not any(s.kind == target for s in streams):
                    probs.append(
                        ConfigProblem(
                            f"{fp}.kind", f"{a.name} has no {target} stream for a {f.get('kind')} fault"
                        )
                    )
            phase = f.get("phase")
            if f.get("kind") == "phase_imbalance" and isinstance(phase, int):
                if all(s.channels <= phase for s in streams if s.kind == "current"):
                    probs.append(ConfigProblem(f"{fp}.phase", "the current stream has fewer phases"))
        return probs

    def _frames_per_chunk(self, s: StreamConfig) -> int:
        return self.chunk_samples if s.kind in _WAVEFORM_KINDS else 1

    def slots(self, start_ns: int) -> Iterator[Slot]:
        """The chunk schedule (pure): which chunk of which stream, in time order."""
        return schedule(
            [s.rate_hz for _, s in self.streams],
            [self._frames_per_chunk(s) for _, s in self.streams],
            start_ns,
            self.duration_s,
        )

    def _generators(self) -> list[_StreamGen]:
        models = {a: _asset_model(self.config.assets[a], self.seed) for a in self.asset_names}
        return [_stream_gen(models[a.name], a, s, self.seed, self.faults) for a, s in self.streams]

    def generate(self, gen: _StreamGen, slot: Slot) -> F32:
        """Interleaved samples of one chunk (advances the stream's state)."""
        n = slot.n
        block = n
        if gen.cfg.kind in _WAVEFORM_KINDS:
            # about 0.2 s of signal per synthesis call, in whole chunks
            block = n * max(1, min(8, int(_BLOCK_S * gen.cfg.rate_hz) // max(n, 1)))
        x = gen.take(slot.k0, n, block)
        return np.ascontiguousarray(x, dtype=np.float32).reshape(-1)

    async def chunks(self) -> AsyncIterator[Chunk | Rejected]:
        """Chunks of every simulated stream in time order, paced by ``speedup``."""
        start_ns = self.start_ns if self.start_ns is not None else time.time_ns()
        gens = self._generators()
        pacer = Pacer(self.speedup, self._clock, self._sleep)
        pacer.start()
        for slot in self.slots(start_ns):
            await pacer.wait((slot.t_end_ns - start_ns) / 1e9)
            gen = gens[slot.stream]
            values = self.generate(gen, slot)
            if gen.dropped(slot.k0 / gen.cfg.rate_hz):
                continue
            yield Chunk(gen.stream_id, slot.t0_ns, gen.cfg.rate_hz, slot.seq, values)
