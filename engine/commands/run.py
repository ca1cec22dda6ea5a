"""``machinewatch run CONFIG``: run the engine until its sources end or SIGINT/SIGTERM."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging

from machinewatch.engine.config import load_config
from machinewatch.engine.fleet import add_fleet_arguments, apply_fleet_arguments
from machinewatch.engine.pipeline import Engine

NAME = "run"
HELP = "run the engine on a config"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config file")
    add_fleet_arguments(p)


def main(args: argparse.Namespace) -> int:
    cfg, shard = apply_fleet_arguments(load_config(args.config), args)
    logging.getLogger().setLevel((getattr(args, "verbose", False) and logging.DEBUG) or cfg.engine.log_level)
    if cfg.unowned_assets or shard is not None:
        log.info(
            "gateway %s%s runs %d of %d assets: %s",
            cfg.engine.gateway_id,
            f" (shard {shard})" if shard is not None else "",
            len(cfg.assets),
            len(cfg.assets) + len(cfg.unowned_assets),
            ", ".join(cfg.assets),
        )
    report = asyncio.run(Engine(cfg).run())
    log.info(
        "stopped after %.1f s (warm-up %.2f s): %s",
        report.wall_s,
        report.warmup_s,
        json.dumps(report.counters, sort_keys=True),
    )
    return 0
