"""``machinewatch ack CONFIG ASSET``: acknowledge (or shelve) an asset's alarm in a running engine.

The command reaches the engine through a command file in ``<state_dir>/commands/`` (picked up
within a second, no network needed); ``--mqtt`` publishes it on the engine's ack/shelve topic of
the config's MQTT source instead (for an operator station that does not share the disk).
"""

from __future__ import annotations

import argparse
import asyncio
import getpass
import json

from machinewatch.engine.config import load_config
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.status import CommandDir, status_prefix

NAME = "ack"
HELP = "acknowledge, shelve or unshelve an asset's alarm in a running engine"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", help="TOML config file of the running engine")
    p.add_argument("asset", help="asset whose alarm to acknowledge")
    p.add_argument("--by", default=None, help="who acknowledges (default: the user name)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--shelve", type=float, metavar="SECONDS", help="shelve the alarm for SECONDS instead")
    g.add_argument("--unshelve", action="store_true", help="end shelving now")
    p.add_argument("--mqtt", action="store_true", help="send through the MQTT broker, not the state dir")


async def _publish(
    options: dict[str, object], site: str, path: str, kind: str, body: dict[str, object]
) -> None:
    import aiomqtt

    from machinewatch.connectors.mqttcommon import client_kwargs

    async with aiomqtt.Client(**client_kwargs(options, path)) as c:
        await c.publish(f"{status_prefix(site)}/{kind}", json.dumps(body).encode(), qos=1)


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    if args.asset not in cfg.assets:
        raise ConfigError(f"no asset {args.asset!r} in {args.config}")
    by = args.by or getpass.getuser()
    if args.unshelve:
        cmd = {"cmd": "unshelve", "asset": args.asset, "by": by}
    elif args.shelve is not None:
        cmd = {"cmd": "shelve", "asset": args.asset, "by": by, "duration_s": args.shelve}
    else:
        cmd = {"cmd": "ack", "asset": args.asset, "by": by}
    if args.mqtt:
        src = next((p for p in cfg.sources.values() if p.kind == "mqtt"), None)
        if src is None:
            raise ConfigError("--mqtt needs an mqtt source in the config")
        kind = "ack" if cmd["cmd"] == "ack" else "shelve"
        body = {k: v for k, v in cmd.items() if k != "cmd"}
        if cmd["cmd"] == "unshelve":
            body["duration_s"] = 0
        asyncio.run(_publish(dict(src.options), cfg.engine.site, f"sources.{src.name}", kind, body))
        print(f"{cmd['cmd']} {args.asset}: published")
    else:
        f = CommandDir(cfg.engine.state_dir).put(cmd)
        print(f"{cmd['cmd']} {args.asset}: queued ({f})")
    return 0
