"""One TOML file -> typed, validated, immutable config objects.

Every problem in a file is collected (not just the first) and reported by dotted key path,
for example ``assets.pump1.streams.vib.rate_hz: must be > 0``. Secrets are never inline: an
option that holds a secret is given as ``<name>_env`` (an environment variable) or
``<name>_file`` (a file whose first line is the secret), and :func:`resolve_secret` reads it.

Example
-------
>>> cfg = load_config_text('''
... [assets.pump1]
... primary_stream = "vib"
... [assets.pump1.streams.vib]
... kind = "vibration"
... rate_hz = 25600
... window_samples = 4096
... ''')
>>> cfg.assets["pump1"].streams["vib"].hop_samples
4096
"""

from __future__ import annotations

__all__ = [
    "STREAM_KINDS",
    "AlarmConfig",
    "AssetConfig",
    "BearingGeometry",
    "Config",
    "EngineConfig",
    "MachineConfig",
    "ModelConfig",
    "PluginConfig",
    "StreamConfig",
    "load_config",
    "load_config_text",
    "resolve_secret",
]

import math
import os
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from machinewatch.engine.errors import ConfigError, ConfigProblem

STREAM_KINDS = ("vibration", "current", "temperature", "speed", "scalar")
_NAME_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,63}$")
#: option names that must never hold a secret inline
_SECRET_NAMES = ("password", "token", "secret", "api_key", "private_key", "key_password")
T = TypeVar("T")
#: fewest learning windows a model may be fitted on (``learn_windows``, or ``learn_s`` resolved)
MIN_LEARN_WINDOWS = 10


@dataclass(frozen=True, slots=True)
class BearingGeometry:
    """Rolling-element bearing geometry; fault frequencies are multiples of shaft speed."""

    balls: int
    ball_diameter_mm: float
    pitch_diameter_mm: float
    contact_angle_deg: float = 0.0

    def orders(self) -> dict[str, float]:
        """Fault orders (multiples of shaft frequency): ``bpfo``, ``bpfi``, ``bsf``, ``ftf``.

        >>> g = BearingGeometry(9, 7.94, 39.04, 0.0)
        >>> round(g.orders()["bpfo"], 2)
        3.58
        """
        r = self.ball_diameter_mm / self.pitch_diameter_mm * math.cos(math.radians(self.contact_angle_deg))
        n = self.balls
        return {
            "bpfo": n / 2.0 * (1.0 - r),
            "bpfi": n / 2.0 * (1.0 + r),
            "bsf": self.pitch_diameter_mm / (2.0 * self.ball_diameter_mm) * (1.0 - r * r),
            "ftf": 0.5 * (1.0 - r),
        }


@dataclass(frozen=True, slots=True)
class MachineConfig:
    """What the kernels need to know of the machine.

    Either ``shaft_hz`` (fixed speed) or ``speed_stream`` (a ``speed`` stream of the same
    asset, in Hz) gives the running speed; ``line_hz`` and ``poles`` serve the motor-current
    features (slip, broken-rotor-bar sidebands).
    """

    shaft_hz: float | None = None
    speed_stream: str | None = None
    bearing: BearingGeometry | None = None
    line_hz: float = 50.0
    poles: int = 4
    slip_tolerance: float = 0.03


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One sensor stream of an asset."""

    name: str
    kind: str
    rate_hz: float
    window_samples: int
    hop_samples: int
    units: str = ""
    channels: int = 1
    #: a jump in time larger than this many sample periods (beyond the expected) is a gap
    gap_tolerance_samples: int = 2
    #: data quality: a reading at or beyond +-clip_level is clipping (0 = off)
    clip_level: float = 0.0
    #: data quality: a window whose peak-to-peak is below this is a flat line
    flatline_p2p: float = 1e-9
    #: data quality: STALE when no data came for this long (wall time)
    stale_after_s: float = 10.0


@dataclass(frozen=True, slots=True)
class ModelConfig:
    """Anomaly model and its learning phase."""

    kind: str = "mahalanobis"
    #: asset vectors collected before fitting (resolved from ``learn_s`` when that is given)
    learn_windows: int = 200
    threshold_quantile: float = 0.995
    threshold_margin: float = 1.25
    path: Path | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    #: score with the int8 form of the model (threshold calibrated on int8 scores)
    quantized: bool = True
    #: the features the model sees: fnmatch patterns over ``"<stream>.<feature>"`` names
    #: (e.g. ``["*.level"]``); empty = every feature of every stream
    features: tuple[str, ...] = ()
    #: blocks of the learning windows for the threshold's out-of-fold scores (blocked
    #: cross-fitting, see :func:`machinewatch.engine.scoring.out_of_fold_scores`); 1 = the
    #: single held-out last third
    threshold_folds: int = 3
    #: the learning phase as seconds of data instead of a window count: the asset's
    #: ``learn_windows`` is then ``ceil(learn_s * rate_hz / hop_samples)`` of its primary stream
    #: (the stream whose windows make the asset's vectors); ``None`` = ``learn_windows`` as given
    learn_s: float | None = None
    #: the int8 form must decide like the float form on at least this fraction of the healthy
    #: learning windows; below it the asset scores with the float form (see
    #: :func:`machinewatch.engine.scoring.fit_baseline`)
    min_agreement: float = 0.99


@dataclass(frozen=True, slots=True)
class AlarmConfig:
    """Alarm decisions (the full ISA-18.2 machine lives in :mod:`machinewatch.engine.alarm`)."""

    on_delay_windows: int = 3
    off_delay_windows: int = 5
    #: clear only below ``threshold * clear_ratio`` (deadband)
    clear_ratio: float = 0.8
    warning_ratio: float = 0.8
    latching: bool = False
    actuators: tuple[str, ...] = ()
    #: an acknowledged alarm still active after this long annunciates again (0 = never)
    realarm_s: float = 0.0
    #: the longest an operator may shelve an alarm for
    max_shelve_s: float = 8 * 3600.0
    #: a data-quality alarm on any stream of the asset (STALE, FLATLINE, CLIPPING, NAN) sends its
    #: actuators to their configured safe state until the data is good again
    safe_state_on_quality: bool = False


@dataclass(frozen=True, slots=True)
class AssetConfig:
    """An asset (a motor, a pump) and its streams."""

    name: str
    site: str
    description: str
    primary_stream: str
    streams: Mapping[str, StreamConfig]
    machine: MachineConfig
    model: ModelConfig
    alarm: AlarmConfig
    #: the gateway that runs this asset in a fleet (``None``: any gateway, or the shard decides;
    #: see :mod:`machinewatch.engine.fleet`)
    gateway: str | None = None

    def stream_id(self, stream: str) -> str:
        """The engine-wide id of one of this asset's streams: ``"<asset>/<stream>"``."""
        return f"{self.name}/{stream}"


@dataclass(frozen=True, slots=True)
class PluginConfig:
    """A source, sink or actuator instance: its name, plug-in kind and free options."""

    name: str
    kind: str
    options: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class EngineConfig:
    """Engine-wide settings."""

    site: str = "site1"
    state_dir: Path = Path("./machinewatch-state")
    summary_interval_s: float = 10.0
    queue_chunks: int = 4096
    queue_windows: int = 1024
    log_level: str = "INFO"
    http_port: int = 0  # 0 = health endpoint off
    http_host: str = "127.0.0.1"
    #: bound of the store-and-forward spool (``<state_dir>/spool.db``); oldest dropped beyond it
    spool_max_bytes: int = 64 * 1024 * 1024
    #: how often engine self-metrics go to the sinks as ``machinewatch_health`` points
    health_interval_s: float = 30.0
    #: this engine's name in a fleet (``gateway`` tag, status topics, MQTT client ids);
    #: default: the host name, sanitised (see :func:`machinewatch.engine.fleet.default_gateway_id`)
    gateway_id: str = field(default_factory=lambda: _default_gateway_id())
    #: fit learned models in a child process (scikit-learn never loads into the engine; the
    #: loop runs on while fitting); false fits in the engine process, blocking the loop meanwhile
    fit_in_subprocess: bool = True


@dataclass(frozen=True, slots=True)
class Config:
    """A whole validated config."""

    engine: EngineConfig
    assets: Mapping[str, AssetConfig]
    sources: Mapping[str, PluginConfig]
    sinks: Mapping[str, PluginConfig]
    actuators: Mapping[str, PluginConfig]
    path: Path | None = None
    #: assets of the file that another gateway runs (set by :func:`machinewatch.engine.fleet.filter_config`)
    unowned_assets: tuple[str, ...] = ()

    def stream(self, stream_id: str) -> tuple[AssetConfig, StreamConfig]:
        """Asset and stream config of ``"<asset>/<stream>"``; raises ``KeyError``."""
        asset, _, stream = stream_id.partition("/")
        a = self.assets[asset]
        return a, a.streams[stream]

    def elsewhere(self, stream_id: str) -> bool:
        """Whether ``"<asset>/<stream>"`` belongs to an asset another gateway of the fleet runs:
        sources skip such mappings (a shared plant-wide file names every gateway's streams)."""
        return stream_id.partition("/")[0] in self.unowned_assets


class _Checker:
    """Reads typed values out of nested dicts and collects every problem with its path."""

    def __init__(self) -> None:
        self.problems: list[ConfigProblem] = []

    def bad(self, path: str, reason: str) -> None:
        self.problems.append(ConfigProblem(path, reason))

    def table(self, parent: Mapping[str, Any], key: str, path: str) -> dict[str, Any]:
        val = parent.get(key, {})
        if not isinstance(val, dict):
            self.bad(_join(path, key), f"must be a table, got {type(val).__name__}")
            return {}
        return val

    def get(
        self,
        tbl: Mapping[str, Any],
        key: str,
        path: str,
        kind: type[T] | tuple[type, ...],
        default: T | None = None,
        *,
        required: bool = False,
        check: Callable[[Any], str | None] | None = None,
    ) -> T | None:
        full = _join(path, key)
        if key not in tbl:
            if required:
                self.bad(full, "is required")
            return default
        val = tbl[key]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if float in kinds and isinstance(val, int) and not isinstance(val, bool):
            val = float(val)
        if isinstance(val, bool) and bool not in kinds:
            self.bad(full, f"must be {_kind_name(kinds)}, got a boolean")
            return default
        if not isinstance(val, kinds):
            self.bad(full, f"must be {_kind_name(kinds)}, got {type(val).__name__} {val!r}")
            return default
        if isinstance(val, float) and not math.isfinite(val):
            self.bad(full, "must be a finite number")
            return default
        if check is not None:
            reason = check(val)
            if reason:
                self.bad(full, reason)
                return default
        return val  # type: ignore[return-value]

    def unknown(self, tbl: Mapping[str, Any], known: set[str], path: str) -> None:
        for key in tbl:
            if key not in known:
                hint = _close_match(key, known)
                self.bad(_join(path, key), "unknown key" + (f" (did you mean {hint!r}?)" if hint else ""))


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind_name(kinds: tuple[type, ...]) -> str:
    names = {int: "an integer", float: "a number", str: "a string", bool: "a boolean", list: "a list"}
    return " or ".join(names.get(k, k.__name__) for k in kinds)


def _close_match(key: str, known: set[str]) -> str | None:
    import difflib

    hits = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    return hits[0] if hits else None


def _positive(v: float) -> str | None:
    return None if v > 0 else "must be > 0"


def _non_negative(v: float) -> str | None:
    return None if v >= 0 else "must be >= 0"


def _name(v: str) -> str | None:
    return None if _NAME_RE.match(v) else "must be 1-64 letters, digits, '_', '-' or '.'"


def _in(choices: tuple[str, ...]) -> Callable[[str], str | None]:
    def check(v: str) -> str | None:
        return None if v in choices else f"must be one of {', '.join(choices)}; got {v!r}"

    return check


def _default_gateway_id() -> str:
    from machinewatch.engine.fleet import default_gateway_id

    return default_gateway_id()


def _ratio(v: float) -> str | None:
    return None if 0 < v <= 1 else "must be in (0, 1]"


def _parse_engine(c: _Checker, raw: Mapping[str, Any], base: Path) -> EngineConfig:
    t = c.table(raw, "engine", "")
    p = "engine"
    d = EngineConfig()
    c.unknown(t, set(EngineConfig.__slots__), p)
    state = c.get(t, "state_dir", p, str, str(d.state_dir))
    sd = Path(state or str(d.state_dir))
    if not sd.is_absolute():
        sd = (base / sd).resolve()
    host = c.get(t, "http_host", p, str, d.http_host) or d.http_host
    return EngineConfig(
        site=c.get(t, "site", p, str, d.site, check=_name) or d.site,
        state_dir=sd,
        summary_interval_s=c.get(t, "summary_interval_s", p, float, d.summary_interval_s, check=_positive)
        or d.summary_interval_s,
        queue_chunks=c.get(t, "queue_chunks", p, int, d.queue_chunks, check=_positive) or d.queue_chunks,
        queue_windows=c.get(t, "queue_windows", p, int, d.queue_windows, check=_positive) or d.queue_windows,
        log_level=c.get(t, "log_level", p, str, d.log_level, check=_in(("DEBUG", "INFO", "WARNING", "ERROR")))
        or d.log_level,
        http_port=c.get(
            t, "http_port", p, int, d.http_port, check=lambda v: None if 0 <= v < 65536 else "must be 0-65535"
        )
        or 0,
        http_host=host,
        spool_max_bytes=c.get(
            t,
            "spool_max_bytes",
            p,
            int,
            d.spool_max_bytes,
            check=lambda v: None if v >= 65536 else "must be >= 65536",
        )
        or d.spool_max_bytes,
        health_interval_s=c.get(t, "health_interval_s", p, float, d.health_interval_s, check=_positive)
        or d.health_interval_s,
        gateway_id=c.get(t, "gateway_id", p, str, d.gateway_id, check=_name) or d.gateway_id,
        fit_in_subprocess=bool(c.get(t, "fit_in_subprocess", p, bool, d.fit_in_subprocess)),
    )


def _parse_bearing(c: _Checker, t: Mapping[str, Any], p: str) -> BearingGeometry | None:
    if not t:
        return None
    known = {
        "balls",
        "ball_diameter_mm",
        "pitch_diameter_mm",
        "contact_angle_deg",
        "ball_diameter_in",
        "pitch_diameter_in",
        "name",
    }
    c.unknown(t, known, p)
    balls = c.get(t, "balls", p, int, None, required=True, check=lambda v: None if v >= 3 else "must be >= 3")
    unit = 25.4 if ("ball_diameter_in" in t or "pitch_diameter_in" in t) else 1.0
    suffix = "in" if unit != 1.0 else "mm"
    bd = c.get(t, f"ball_diameter_{suffix}", p, float, None, required=True, check=_positive)
    pd = c.get(t, f"pitch_diameter_{suffix}", p, float, None, required=True, check=_positive)
    ca = c.get(
        t, "contact_angle_deg", p, float, 0.0, check=lambda v: None if 0 <= v < 90 else "must be in [0, 90)"
    )
    if balls is None or bd is None or pd is None:
        return None
    if bd >= pd:
        c.bad(_join(p, f"ball_diameter_{suffix}"), "must be smaller than the pitch diameter")
        return None
    return BearingGeometry(balls, bd * unit, pd * unit, ca or 0.0)


def _parse_machine(
    c: _Checker, t: Mapping[str, Any], p: str, streams: Mapping[str, StreamConfig]
) -> MachineConfig:
    known = {"shaft_hz", "shaft_rpm", "speed_stream", "bearing", "line_hz", "poles", "slip_tolerance"}
    c.unknown(t, known, p)
    shaft = c.get(t, "shaft_hz", p, float, None, check=_positive)
    rpm = c.get(t, "shaft_rpm", p, float, None, check=_positive)
    if rpm is not None:
        if shaft is not None:
            c.bad(_join(p, "shaft_rpm"), "give shaft_hz or shaft_rpm, not both")
        shaft = rpm / 60.0
    speed_stream = c.get(t, "speed_stream", p, str, None)
    if speed_stream is not None:
        s = streams.get(speed_stream)
        if s is None:
            c.bad(_join(p, "speed_stream"), f"names no stream of this asset ({speed_stream!r})")
        elif s.kind != "speed":
            c.bad(_join(p, "speed_stream"), f"stream {speed_stream!r} has kind {s.kind!r}, not 'speed'")
    bearing = _parse_bearing(c, c.table(t, "bearing", p), _join(p, "bearing"))
    line = c.get(t, "line_hz", p, float, 50.0, check=_positive) or 50.0
    poles = c.get(
        t, "poles", p, int, 4, check=lambda v: None if v >= 2 and v % 2 == 0 else "must be even, >= 2"
    )
    slip = c.get(
        t, "slip_tolerance", p, float, 0.03, check=lambda v: None if 0 <= v < 0.5 else "must be in [0, 0.5)"
    )
    return MachineConfig(shaft, speed_stream, bearing, line, poles or 4, 0.03 if slip is None else slip)


def _parse_stream(c: _Checker, name: str, t: Mapping[str, Any], p: str) -> StreamConfig | None:
    c.unknown(t, set(StreamConfig.__slots__) - {"name"}, p)
    kind = c.get(t, "kind", p, str, None, required=True, check=_in(STREAM_KINDS))
    rate = c.get(t, "rate_hz", p, float, None, required=True, check=_positive)
    default_win = 1 if kind in ("speed", "scalar") else None
    win = c.get(
        t,
        "window_samples",
        p,
        int,
        default_win,
        required=default_win is None,
        check=lambda v: None if v >= 1 else "must be >= 1",
    )
    hop = c.get(t, "hop_samples", p, int, win, check=lambda v: None if v >= 1 else "must be >= 1")
    channels = c.get(t, "channels", p, int, 1, check=lambda v: None if 1 <= v <= 16 else "must be 1-16") or 1
    if kind == "vibration" and win is not None and win < 64:
        c.bad(_join(p, "window_samples"), "a vibration window needs >= 64 samples")
    if kind == "current" and channels not in (1, 3):
        c.bad(_join(p, "channels"), "a current stream has 1 or 3 phases")
    if kind in ("vibration", "temperature", "speed", "scalar") and channels != 1:
        c.bad(_join(p, "channels"), f"a {kind} stream has one channel")
    if win is not None and hop is not None and hop > win * 16:
        c.bad(_join(p, "hop_samples"), "must be <= 16 x window_samples")
    if win is not None and win > 1 << 20:
        c.bad(_join(p, "window_samples"), "must be <= 1048576")
    d = StreamConfig("", "", 1.0, 1, 1)
    units = c.get(t, "units", p, str, "") or ""
    gap = c.get(t, "gap_tolerance_samples", p, int, d.gap_tolerance_samples, check=_non_negative)
    clip = c.get(t, "clip_level", p, float, 0.0, check=_non_negative)
    # a negative flatline_p2p turns the check off (a window's peak-to-peak is never below 0): for
    # coarse PLC values that may legitimately hold still for a whole window
    flat = c.get(t, "flatline_p2p", p, float, d.flatline_p2p)
    stale = c.get(t, "stale_after_s", p, float, d.stale_after_s, check=_positive)
    if kind is None or rate is None or win is None or hop is None:
        return None
    return StreamConfig(
        name,
        kind,
        rate,
        win,
        hop,
        units,
        channels,
        d.gap_tolerance_samples if gap is None else gap,
        clip or 0.0,
        d.flatline_p2p if flat is None else flat,
        stale or d.stale_after_s,
    )


def _parse_model(c: _Checker, t: Mapping[str, Any], p: str, base: Path, dflt: ModelConfig) -> ModelConfig:
    known = {
        "kind",
        "learn_windows",
        "threshold_quantile",
        "threshold_margin",
        "path",
        "options",
        "quantized",
        "features",
        "threshold_folds",
        "learn_s",
        "min_agreement",
    }
    c.unknown(t, known, p)
    path = c.get(t, "path", p, str, None)
    opts = c.table(t, "options", p)
    learn_s = c.get(t, "learn_s", p, float, None, check=_positive)
    if "learn_s" in t and "learn_windows" in t:
        c.bad(_join(p, "learn_s"), "give learn_windows or learn_s, not both")
    elif "learn_windows" not in t and "learn_s" not in t:
        learn_s = dflt.learn_s  # a window count given here overrides an inherited duration
    min_agreement = c.get(
        t,
        "min_agreement",
        p,
        float,
        dflt.min_agreement,
        check=lambda v: None if 0 <= v <= 1 else "must be in [0, 1]",
    )
    return ModelConfig(
        kind=c.get(t, "kind", p, str, dflt.kind) or dflt.kind,
        learn_windows=c.get(
            t,
            "learn_windows",
            p,
            int,
            dflt.learn_windows,
            check=lambda v: None if v >= MIN_LEARN_WINDOWS else f"must be >= {MIN_LEARN_WINDOWS}",
        )
        or dflt.learn_windows,
        threshold_quantile=c.get(
            t,
            "threshold_quantile",
            p,
            float,
            dflt.threshold_quantile,
            check=lambda v: None if 0.5 <= v < 1 else "must be in [0.5, 1)",
        )
        or dflt.threshold_quantile,
        threshold_margin=c.get(
            t,
            "threshold_margin",
            p,
            float,
            dflt.threshold_margin,
            check=lambda v: None if v >= 1 else "must be >= 1",
        )
        or dflt.threshold_margin,
        path=(Path(path) if Path(path).is_absolute() else (base / path).resolve()) if path else dflt.path,
        options=opts or dict(dflt.options),
        quantized=bool(c.get(t, "quantized", p, bool, dflt.quantized)),
        features=_parse_patterns(c, t, "features", p, dflt.features),
        threshold_folds=c.get(
            t,
            "threshold_folds",
            p,
            int,
            dflt.threshold_folds,
            check=lambda v: None if 1 <= v <= 10 else "must be in [1, 10]",
        )
        or dflt.threshold_folds,
        learn_s=learn_s,
        min_agreement=dflt.min_agreement if min_agreement is None else min_agreement,
    )


def _resolve_learn_s(
    c: _Checker, model: ModelConfig, primary: StreamConfig | None, p: str, own: bool
) -> ModelConfig:
    """``model`` with ``learn_windows`` counted from ``learn_s`` on the asset's primary stream.

    One asset vector is made each time the primary stream closes a window, i.e. every
    ``hop_samples / rate_hz`` seconds. ``own``: ``learn_s`` was given in the asset's own table
    (else it comes from ``[model]``), which decides the key path of a problem.
    """
    if model.learn_s is None or primary is None:
        return model
    n = math.ceil(model.learn_s * primary.rate_hz / primary.hop_samples - 1e-9)
    if n < MIN_LEARN_WINDOWS:
        key = _join(p, "model.learn_s") if own else "model.learn_s"
        c.bad(
            key,
            f"{model.learn_s:g} s is {n} window(s) of {p}.streams.{primary.name} (hop "
            f"{primary.hop_samples} at {primary.rate_hz:g} Hz); learning needs >= {MIN_LEARN_WINDOWS}",
        )
        return model
    return replace(model, learn_windows=n)


def _parse_patterns(
    c: _Checker, t: Mapping[str, Any], key: str, p: str, dflt: tuple[str, ...]
) -> tuple[str, ...]:
    raw = c.get(t, key, p, list, list(dflt)) or []
    for i, v in enumerate(raw):
        if not isinstance(v, str) or not v:
            c.bad(f"{_join(p, key)}[{i}]", "must be a feature name pattern (non-empty string)")
    return tuple(v for v in raw if isinstance(v, str) and v)


def _parse_alarm(c: _Checker, t: Mapping[str, Any], p: str, dflt: AlarmConfig) -> AlarmConfig:
    c.unknown(t, set(AlarmConfig.__slots__), p)
    acts = c.get(t, "actuators", p, list, list(dflt.actuators)) or []
    for i, a in enumerate(acts):
        if not isinstance(a, str):
            c.bad(f"{_join(p, 'actuators')}[{i}]", "must be an actuator name (string)")
    pos_int = lambda v: None if v >= 1 else "must be >= 1"  # noqa: E731
    return AlarmConfig(
        on_delay_windows=c.get(t, "on_delay_windows", p, int, dflt.on_delay_windows, check=pos_int)
        or dflt.on_delay_windows,
        off_delay_windows=c.get(t, "off_delay_windows", p, int, dflt.off_delay_windows, check=pos_int)
        or dflt.off_delay_windows,
        clear_ratio=c.get(t, "clear_ratio", p, float, dflt.clear_ratio, check=_ratio) or dflt.clear_ratio,
        warning_ratio=c.get(t, "warning_ratio", p, float, dflt.warning_ratio, check=_ratio)
        or dflt.warning_ratio,
        latching=bool(c.get(t, "latching", p, bool, dflt.latching)),
        actuators=tuple(a for a in acts if isinstance(a, str)),
        realarm_s=c.get(t, "realarm_s", p, float, dflt.realarm_s, check=_non_negative) or 0.0,
        max_shelve_s=c.get(t, "max_shelve_s", p, float, dflt.max_shelve_s, check=_positive)
        or dflt.max_shelve_s,
        safe_state_on_quality=bool(c.get(t, "safe_state_on_quality", p, bool, dflt.safe_state_on_quality)),
    )


def _parse_asset(
    c: _Checker, name: str, t: Mapping[str, Any], base: Path, site: str, mdl: ModelConfig, alm: AlarmConfig
) -> AssetConfig | None:
    p = f"assets.{name}"
    known = {"site", "description", "primary_stream", "streams", "machine", "model", "alarm", "gateway"}
    c.unknown(t, known, p)
    if _name(name):
        c.bad(p, "asset name " + (_name(name) or ""))
    streams_raw = c.table(t, "streams", p)
    if not streams_raw:
        c.bad(_join(p, "streams"), "an asset needs at least one stream")
    streams: dict[str, StreamConfig] = {}
    for sname, sraw in streams_raw.items():
        sp = f"{p}.streams.{sname}"
        if _name(sname):
            c.bad(sp, "stream name " + (_name(sname) or ""))
        if not isinstance(sraw, dict):
            c.bad(sp, "must be a table")
            continue
        s = _parse_stream(c, sname, sraw, sp)
        if s is not None:
            streams[sname] = s
    primary = c.get(t, "primary_stream", p, str, None)
    if primary is None and streams_raw:
        primary = next(iter(streams_raw))
    elif primary is not None and primary not in streams_raw:
        c.bad(_join(p, "primary_stream"), f"names no stream of this asset ({primary!r})")
    machine = _parse_machine(c, c.table(t, "machine", p), _join(p, "machine"), streams)
    model_raw = c.table(t, "model", p)
    model = _parse_model(c, model_raw, _join(p, "model"), base, mdl)
    model = _resolve_learn_s(c, model, streams.get(primary or ""), p, "learn_s" in model_raw)
    needs_speed = machine.bearing is not None or any(s.kind == "vibration" for s in streams.values())
    if needs_speed and machine.shaft_hz is None and machine.speed_stream is None:
        c.bad(_join(p, "machine"), "a vibration stream needs shaft_hz, shaft_rpm or speed_stream")
    return AssetConfig(
        name=name,
        site=c.get(t, "site", p, str, site, check=_name) or site,
        description=c.get(t, "description", p, str, "") or "",
        primary_stream=primary or "",
        streams=streams,
        machine=machine,
        model=model,
        alarm=_parse_alarm(c, c.table(t, "alarm", p), _join(p, "alarm"), alm),
        gateway=c.get(t, "gateway", p, str, None, check=_name),
    )


def _check_no_inline_secret(c: _Checker, opts: Mapping[str, Any], p: str) -> None:
    for key, val in opts.items():
        if isinstance(val, dict):
            _check_no_inline_secret(c, val, _join(p, key))
        elif key in _SECRET_NAMES:
            c.bad(
                _join(p, key),
                f'secrets are never inline: use {key}_env = "ENV_VAR" or {key}_file = "/path"',
            )


def _parse_plugins(c: _Checker, raw: Mapping[str, Any], section: str) -> dict[str, PluginConfig]:
    from machinewatch.engine.registry import registry

    out: dict[str, PluginConfig] = {}
    for name, t in c.table(raw, section, "").items():
        p = f"{section}.{name}"
        if not isinstance(t, dict):
            c.bad(p, "must be a table")
            continue
        kind = c.get(t, "kind", p, str, None, required=True)
        opts = {k: v for k, v in t.items() if k != "kind"}
        _check_no_inline_secret(c, opts, p)
        if kind is None:
            continue
        try:
            cls = registry.get(section, kind)
        except Exception as exc:  # unknown plug-in: reported as a config problem
            c.bad(_join(p, "kind"), str(exc))
            continue
        validate = getattr(cls, "validate_options", None)
        if validate is not None:
            for prob in validate(opts, p):
                c.problems.append(prob)
        out[name] = PluginConfig(name, kind, opts)
    return out


def load_config_text(text: str, base: Path | None = None, source: str = "<text>") -> Config:
    """Parse and validate TOML text; raise :class:`ConfigError` listing every problem.

    Relative paths in the config (``state_dir``, model paths) resolve against ``base``, the
    current directory by default, as for any command-line tool.
    """
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([ConfigProblem("", f"not valid TOML: {exc}")], source) from exc
    return _validate(raw, base or Path.cwd(), source)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML config file; raise :class:`ConfigError` listing every problem."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([ConfigProblem("", f"cannot read {p}: {exc}")], str(p)) from exc
    cfg = load_config_text(text, Path.cwd(), str(p))
    return Config(cfg.engine, cfg.assets, cfg.sources, cfg.sinks, cfg.actuators, p.resolve())


def _validate(raw: Mapping[str, Any], base: Path, source: str) -> Config:
    c = _Checker()
    c.unknown(raw, {"engine", "model", "alarm", "assets", "sources", "sinks", "actuators"}, "")
    engine = _parse_engine(c, raw, base)
    mdl = _parse_model(c, c.table(raw, "model", ""), "model", base, ModelConfig())
    alm = _parse_alarm(c, c.table(raw, "alarm", ""), "alarm", AlarmConfig())
    assets: dict[str, AssetConfig] = {}
    assets_raw = c.table(raw, "assets", "")
    if not assets_raw:
        c.bad("assets", "at least one asset is required")
    for name, t in assets_raw.items():
        if not isinstance(t, dict):
            c.bad(f"assets.{name}", "must be a table")
            continue
        a = _parse_asset(c, name, t, base, engine.site, mdl, alm)
        if a is not None:
            assets[name] = a
    sources = _parse_plugins(c, raw, "sources")
    sinks = _parse_plugins(c, raw, "sinks")
    actuators = _parse_plugins(c, raw, "actuators")
    if assets_raw and not sources:
        c.bad("sources", "at least one source is required")
    for a in assets.values():
        for i, act in enumerate(a.alarm.actuators):
            if act not in actuators:
                c.bad(f"assets.{a.name}.alarm.actuators[{i}]", f"names no actuator ({act!r})")
    if c.problems:
        raise ConfigError(c.problems, source)
    cfg = Config(engine, assets, sources, sinks, actuators)
    problems = _plugin_config_problems(cfg)
    if problems:
        raise ConfigError(problems, source)
    return cfg


def _plugin_config_problems(cfg: Config) -> list[ConfigProblem]:
    """What plug-ins see only against the whole (otherwise valid) config: streams a register map
    names that do not exist, units that disagree. A plug-in class may define the classmethod
    ``validate_config(options, path, config) -> list[ConfigProblem]`` for that."""
    from machinewatch.engine.registry import registry

    out: list[ConfigProblem] = []
    for section in ("sources", "sinks", "actuators"):
        for name, p in getattr(cfg, section).items():
            check = getattr(registry.get(section, p.kind), "validate_config", None)
            if check is not None:
                out += check(p.options, f"{section}.{name}", cfg)
    return out


def resolve_secret(options: Mapping[str, Any], name: str, path: str = "") -> str | None:
    """Read secret ``name`` from ``<name>_env`` or ``<name>_file``; ``None`` when neither is set.

    Raises :class:`ConfigError` when the variable is unset or the file unreadable.
    """
    env = options.get(f"{name}_env")
    file = options.get(f"{name}_file")
    key = _join(path, f"{name}_env" if env else f"{name}_file")
    if env:
        val = os.environ.get(str(env))
        if val is None:
            raise ConfigError([ConfigProblem(key, f"environment variable {env!r} is not set")])
        return val
    if file:
        try:
            return Path(str(file)).read_text(encoding="utf-8").splitlines()[0].strip()
        except (OSError, IndexError) as exc:
            raise ConfigError([ConfigProblem(key, f"cannot read secret file {file!r}: {exc}")]) from exc
    return None
