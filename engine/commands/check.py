"""``machinewatch check CONFIG``: validate a config and print the resolved plan."""

from __future__ import annotations

import argparse

from machinewatch.engine.config import Config, load_config
from machinewatch.engine.features import feature_names

NAME = "check"
HELP = "validate a config and print the resolved plan without running"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config file")


def plan(cfg: Config) -> str:
    """A readable plan: assets, streams, windows and feature counts, connectors."""
    lines = [f"config {cfg.path}: ok", f"state_dir {cfg.engine.state_dir}"]
    total = 0
    for a in cfg.assets.values():
        m = a.machine
        speed = f"{m.shaft_hz:.2f} Hz" if m.shaft_hz else f"from stream {m.speed_stream!r}"
        lines.append(
            f"asset {a.site}/{a.name}: primary {a.primary_stream}, shaft {speed}, model {a.model.kind} "
            f"(learn {a.model.learn_windows} windows), alarm on-delay {a.alarm.on_delay_windows}"
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
    lines.append(f"{len(cfg.assets)} assets, {sum(len(a.streams) for a in cfg.assets.values())} streams, "
                 f"{total} features")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    print(plan(load_config(args.config)))
    return 0
