"""``machinewatch check CONFIG``: validate a config and print the resolved plan."""

from __future__ import annotations

import argparse

from machinewatch.engine.config import AssetConfig, Config, load_config
from machinewatch.engine.features import feature_names
from machinewatch.engine.fleet import Shard, add_fleet_arguments, apply_fleet_arguments, fleet_warnings

NAME = "check"
HELP = "validate a config and print the resolved plan without running"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config file")
    add_fleet_arguments(p)


#: fewer learning windows than this leave fewer than 50 held-out windows for the threshold
MIN_SOUND_LEARN = 150
#: the rotor-bar sidebands must sit this many FFT bins away from the fundamental
_MIN_OFFSET_BINS = 3


def warnings(cfg: Config) -> list[str]:
    """Settings that validate but will not work well, with what to do instead."""
    out = []
    for a in cfg.assets.values():
        n = a.model.learn_windows
        if n < MIN_SOUND_LEARN:
            out.append(
                f"assets.{a.name}.model.{_learn_setting(a)}: the threshold is calibrated on only "
                f"{n - (2 * n) // 3} held-out windows; {MIN_SOUND_LEARN} or more is recommended, "
                "covering the machine's normal range of load and temperature"
            )
        m = a.machine
        for s in a.streams.values():
            if s.kind != "current" or not m.shaft_hz:
                continue
            sync = 2.0 * m.line_hz / m.poles
            slip = (sync - m.shaft_hz) / sync
            if not 0.0 < slip < 0.5:
                continue
            need_s = _MIN_OFFSET_BINS / (2.0 * slip * m.line_hz)
            if s.window_samples / s.rate_hz < need_s:
                out.append(
                    f"assets.{a.name}.streams.{s.name}.window_samples = {s.window_samples} "
                    f"({s.window_samples / s.rate_hz:.3g} s): at {slip:.1%} slip the rotor-bar sidebands "
                    f"need a window of at least {need_s:.3g} s; brb_sideband will be NaN and the asset "
                    "will not score"
                )
    return out


def _learn_setting(a: AssetConfig) -> str:
    """The learning phase's setting: ``learn_windows = 200`` or ``learn_s = 60 (240 windows)``."""
    m = a.model
    if m.learn_s is None:
        return f"learn_windows = {m.learn_windows}"
    return f"learn_s = {m.learn_s:g} ({m.learn_windows} windows)"


def _learn_plan(a: AssetConfig) -> str:
    """The learning phase in the plan, resolved: ``200 windows`` or ``60 s = 240 windows of ...``."""
    m = a.model
    if m.learn_s is None:
        return f"{m.learn_windows} windows"
    return f"{m.learn_s:g} s = {m.learn_windows} windows of stream {a.primary_stream!r}"


def plan(cfg: Config) -> str:
    """A readable plan: assets, streams, windows and feature counts, connectors, warnings."""
    lines = [f"config {cfg.path}: ok", f"state_dir {cfg.engine.state_dir}"]
    total = 0
    for a in cfg.assets.values():
        m = a.machine
        speed = f"{m.shaft_hz:.2f} Hz" if m.shaft_hz else f"from stream {m.speed_stream!r}"
        lines.append(
            f"asset {a.site}/{a.name}: primary {a.primary_stream}, shaft {speed}, model {a.model.kind} "
            f"(learn {_learn_plan(a)}), alarm on-delay {a.alarm.on_delay_windows}"
        )
        if m.bearing:
            orders = ", ".join(f"{k} {v:.3f}x" for k, v in m.bearing.orders().items())
            lines.append(f"  bearing {m.bearing.balls} balls: {orders}")
        n_asset = 0
        for s in a.streams.values():
            n = len(feature_names(s, m))
            n_asset += n
            lines.append(
                f"  stream {s.name}: {s.kind}, {s.rate_hz:g} Hz x {s.channels} ch, window {s.window_samples} "
                f"({s.window_samples / s.rate_hz:.3g} s), hop {s.hop_samples}, {n} features"
            )
        lines.append(f"  {n_asset} features per asset vector")
        total += n_asset
    for group in ("sources", "sinks", "actuators"):
        for name, pcfg in getattr(cfg, group).items():
            lines.append(f"{group[:-1]} {name}: {pcfg.kind}")
    lines.append(
        f"{len(cfg.assets)} assets, {sum(len(a.streams) for a in cfg.assets.values())} streams, "
        f"{total} features"
    )
    lines += [f"warning: {w}" for w in warnings(cfg)]
    return "\n".join(lines)


def fleet_plan(full: Config, cfg: Config, shard: Shard | None) -> list[str]:
    """Which assets this gateway owns (and which it leaves to others), with fleet warnings."""
    where = f" shard {shard}" if shard is not None else ""
    lines = [
        f"gateway {cfg.engine.gateway_id}{where}: owns {len(cfg.assets)} of {len(full.assets)} assets: "
        + ", ".join(cfg.assets)
    ]
    if cfg.unowned_assets:
        lines.append("  left to other gateways: " + ", ".join(cfg.unowned_assets))
    return lines + [f"warning: {w}" for w in fleet_warnings(full, shard)]


def main(args: argparse.Namespace) -> int:
    full = load_config(args.config)
    cfg, shard = apply_fleet_arguments(full, args)
    print(plan(cfg))
    print("\n".join(fleet_plan(full, cfg, shard)))
    return 0
