"""``machinewatch plugins [--check] [--config C]``: registered plug-ins, and the contract check."""

from __future__ import annotations

import argparse
import json

from machinewatch.engine.config import load_config
from machinewatch.engine.plugins import check_config, check_plugin, list_plugins
from machinewatch.engine.registry import GROUPS

NAME = "plugins"
HELP = "list the registered sources, sinks, actuators and models (and check their contract)"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("names", nargs="*", metavar="NAME", help="only plug-ins of these names (default: all)")
    p.add_argument("--check", action="store_true", help="run the plug-in contract check on each one")
    p.add_argument(
        "--config",
        metavar="CONFIG",
        help="also construct the config's sources, sinks and actuators (no network allowed)",
    )
    p.add_argument("--group", choices=GROUPS, action="append", help="only this group (repeatable)")
    p.add_argument("--json", action="store_true", help="machine-readable output")


def main(args: argparse.Namespace) -> int:
    infos = [i for i in list_plugins(tuple(args.group or GROUPS)) if not args.names or i.name in args.names]
    rows = []
    for info in infos:
        row: dict[str, object] = dict(info.as_dict())
        if args.check:
            row["problems"] = check_plugin(info.group, info.name)
        rows.append(row)
    config_problems = check_config(load_config(args.config)) if args.config else {}
    failed = sum(bool(r.get("problems")) for r in rows) + len(config_problems)
    if args.json:
        print(json.dumps({"plugins": rows, "config": config_problems, "failed": failed}, indent=2))
        return 1 if failed else 0
    for group in args.group or GROUPS:
        members = [r for r in rows if r["group"] == group]
        if args.names and not members:
            continue
        print(f"{group} ({len(members)})")
        width = max((len(str(r["name"])) for r in members), default=0)
        for r in members:
            dist = r["distribution"] or "added at run time"
            verdict = ""
            if args.check:
                verdict = "  FAIL" if r["problems"] else "  ok"
            print(f"  {r['name']:<{width}}  {r['target']}  [{dist}]{verdict}")
            for prob in r.get("problems") or []:  # type: ignore[attr-defined]
                print(f"      - {prob}")
    for where, probs in config_problems.items():
        print(f"config {where}: FAIL")
        for prob in probs:
            print(f"      - {prob}")
    if args.config and not config_problems:
        print(f"config {args.config}: every connector constructs without touching the network")
    if args.check or args.config:
        print(f"{failed} failed" if failed else "all passed")
    return 1 if failed else 0
