"""Fleets: which assets of a config this gateway runs (pure, no I/O).

Several engines ("gateways") may share one broker, one database and one config file. Each asset
is run by exactly one of them:

- an asset with ``gateway = "<id>"`` in its table is run only by the gateway whose
  ``engine.gateway_id`` is ``<id>`` (a shard never takes it);
- an asset without ``gateway`` is run by shard ``i`` of ``n`` when the engine is started with
  ``--shard i/n`` (1-based: ``1/3``, ``2/3``, ``3/3``) and :func:`shard_of` gives ``i``;
- an asset without ``gateway`` is run by every engine started *without* ``--shard`` (the
  single-gateway case, or one config file per gateway).

:func:`shard_of` is rendezvous (highest-random-weight) hashing over SHA-256 of the asset name:
the same on every machine and Python version (never :func:`hash`, which is salted per process),
independent of the other assets (adding or removing one moves no other), and going from ``n``
to ``n + 1`` shards moves only the assets the new shard takes (about ``1/(n+1)`` of them), so
few gateways lose their learned models when the fleet grows. The split is even on average,
not exactly: with few assets a shard may own more or fewer than ``len/n``.

:func:`filter_config` applies this at start-up, before anything is built: the engine, its
sources and its actuators only ever see the owned assets.

>>> from machinewatch.engine.config import load_config_text
>>> cfg = load_config_text('''
... [engine]
... gateway_id = "gw1"
... [assets.a.streams.t]
... kind = "scalar"
... rate_hz = 1
... [assets.b]
... gateway = "gw2"
... [assets.b.streams.t]
... kind = "scalar"
... rate_hz = 1
... [sources.x]
... kind = "mqtt"
... url = "mqtt://127.0.0.1:1883"
... ''')
>>> owned_assets(cfg, "gw1"), owned_assets(cfg, "gw2")
(['a'], ['a', 'b'])
>>> [owned_assets(cfg, "gw9", parse_shard(f"{i}/2")) for i in (1, 2)]
[[], ['a']]
"""

from __future__ import annotations

__all__ = [
    "Shard",
    "add_fleet_arguments",
    "apply_fleet_arguments",
    "default_gateway_id",
    "filter_config",
    "fleet_warnings",
    "in_fleet",
    "mqtt_client_id",
    "owned_assets",
    "parse_shard",
    "sanitize_gateway_id",
    "shard_of",
]

import argparse
import dataclasses
import hashlib
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from machinewatch.engine.config import Config
from machinewatch.engine.errors import ConfigError, ConfigProblem

_BAD = re.compile(r"[^A-Za-z0-9_.-]")
_SHARD = re.compile(r"^\s*(\d+)\s*/\s*(\d+)\s*$")
#: more shards than this is a typo, not a fleet
MAX_SHARDS = 4096


@dataclass(frozen=True, slots=True)
class Shard:
    """Shard ``index`` (1-based) of ``count``."""

    index: int
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def sanitize_gateway_id(name: str) -> str:
    """A valid gateway id from any string (a host name): bad characters become ``-``, 64 at most.

    >>> sanitize_gateway_id("edge gw#7.plant.local")
    'edge-gw-7.plant.local'
    >>> sanitize_gateway_id("-x"), sanitize_gateway_id("")
    ('x', 'gateway')
    """
    out = _BAD.sub("-", name).lstrip(".-")[:64]
    return out or "gateway"


def default_gateway_id() -> str:
    """The host name, sanitised (:func:`sanitize_gateway_id`): the default ``engine.gateway_id``.

    Containers get a new host name on every start: set ``engine.gateway_id`` there, or the broker
    keeps one persistent session per old name.
    """
    return sanitize_gateway_id(socket.gethostname())


def parse_shard(text: str, path: str = "--shard") -> Shard:
    """``"i/n"`` with ``1 <= i <= n`` -> :class:`Shard`; raises :class:`ConfigError`.

    >>> parse_shard("2/3")
    Shard(index=2, count=3)
    >>> try:
    ...     parse_shard("0/3")
    ... except ConfigError as exc:
    ...     print(exc.problems[0])
    --shard: must be i/n with 1 <= i <= n (1-based), got '0/3'
    """
    m = _SHARD.match(text)
    if m is not None:
        i, n = int(m.group(1)), int(m.group(2))
        if 1 <= i <= n <= MAX_SHARDS:
            return Shard(i, n)
    why = f"must be i/n with 1 <= i <= n (1-based), got {text!r}"
    if m is not None and int(m.group(2)) > MAX_SHARDS:
        why = f"at most {MAX_SHARDS} shards, got {text!r}"
    raise ConfigError([ConfigProblem(path, why)])


def _weight(asset: str, index: int) -> int:
    digest = hashlib.sha256(f"{asset}\x00{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def shard_of(asset: str, count: int) -> int:
    """The shard (1-based) that runs ``asset`` among ``count`` (rendezvous hashing, SHA-256).

    >>> shard_of("pump1", 1)
    1
    >>> [shard_of("pump1", n) for n in (2, 3, 4)] == [shard_of("pump1", n) for n in (2, 3, 4)]
    True
    """
    if count < 1:
        raise ValueError(f"count must be >= 1, got {count}")
    # max weight wins; ties (never seen with 64-bit weights) go to the lower index
    return max(range(1, count + 1), key=lambda i: (_weight(asset, i), -i))


def owned_assets(config: Config, gateway_id: str, shard: Shard | None = None) -> list[str]:
    """The assets of ``config`` that gateway ``gateway_id`` (as shard ``shard``) runs, in file order."""
    out = []
    for a in config.assets.values():
        if a.gateway is not None:
            mine = a.gateway == gateway_id
        elif shard is not None:
            mine = shard_of(a.name, shard.count) == shard.index
        else:
            mine = True
        if mine:
            out.append(a.name)
    return out


def in_fleet(config: Config) -> bool:
    """Whether this config runs as part of a fleet (some asset assigned or left to another gateway)."""
    return bool(config.unowned_assets) or any(a.gateway is not None for a in config.assets.values())


def filter_config(config: Config, shard: Shard | None = None, gateway_id: str | None = None) -> Config:
    """The config this gateway runs: owned assets only, and the actuators they use.

    ``gateway_id`` overrides ``engine.gateway_id`` (the ``--gateway`` option). Actuators named
    only by assets of other gateways are left out, so this engine never connects to them nor
    sends them to their safe state at stop. Raises :class:`ConfigError` when nothing is owned.
    """
    engine = config.engine
    if gateway_id is not None:
        from machinewatch.engine.config import _name

        why = _name(gateway_id)
        if why:
            raise ConfigError([ConfigProblem("--gateway", why)])
        engine = dataclasses.replace(engine, gateway_id=gateway_id)
    gw = engine.gateway_id
    owned = owned_assets(config, gw, shard)
    if not owned:
        where = f" as shard {shard}" if shard is not None else ""
        raise ConfigError(
            [
                ConfigProblem(
                    "assets",
                    f"gateway {gw!r}{where} owns none of the {len(config.assets)} assets "
                    "(see README, 'Fleets: scaling out')",
                )
            ]
        )
    keep = set(owned)
    assets = {n: a for n, a in config.assets.items() if n in keep}
    used = {act for a in assets.values() for act in a.alarm.actuators}
    used_elsewhere = {act for a in config.assets.values() if a.name not in keep for act in a.alarm.actuators}
    actuators = {n: p for n, p in config.actuators.items() if n in used or n not in used_elsewhere}
    unowned = tuple(n for n in config.assets if n not in keep)
    return dataclasses.replace(
        config, engine=engine, assets=assets, actuators=actuators, unowned_assets=unowned
    )


def fleet_warnings(config: Config, shard: Shard | None) -> list[str]:
    """Assignments that validate but may run an asset twice or never."""
    assigned = [a.name for a in config.assets.values() if a.gateway is not None]
    free = [a.name for a in config.assets.values() if a.gateway is None]
    if assigned and free and shard is None:
        names = ", ".join(free[:5]) + (", ..." if len(free) > 5 else "")
        return [
            f"{len(free)} asset(s) without 'gateway' ({names}) "
            "run on every gateway that uses this file without --shard: assign them, or start every "
            "gateway with --shard i/n"
        ]
    return []


def mqtt_client_id(options: Mapping[str, Any], config: Config, default: str) -> str:
    """An MQTT client id unique per gateway (two clients with one id disconnect each other).

    ``default`` (used when ``client_id`` is not set) gets ``-<gateway_id>`` appended. An explicit
    ``client_id`` may hold ``<site>`` and ``<gateway>``; in a fleet (:func:`in_fleet`) the
    gateway id is appended when it does not appear in it.

    >>> from machinewatch.engine.config import load_config_text
    >>> cfg = load_config_text('''
    ... [engine]
    ... gateway_id = "gw1"
    ... [assets.a.streams.t]
    ... kind = "scalar"
    ... rate_hz = 1
    ... [sources.x]
    ... kind = "mqtt"
    ... url = "mqtt://127.0.0.1:1883"
    ... ''')
    >>> mqtt_client_id({}, cfg, "machinewatch-site1"), mqtt_client_id({"client_id": "mw-<gateway>"}, cfg, "x")
    ('machinewatch-site1-gw1', 'mw-gw1')
    >>> mqtt_client_id({"client_id": "fixed"}, cfg, "x")
    'fixed'
    """
    gw = config.engine.gateway_id
    explicit = options.get("client_id")
    if explicit is None:
        return f"{default}-{gw}"
    cid = str(explicit).replace("<site>", config.engine.site).replace("<gateway>", gw)
    if in_fleet(config) and gw not in cid:
        cid = f"{cid}-{gw}"
    return cid


def add_fleet_arguments(p: argparse.ArgumentParser) -> None:
    """``--shard I/N`` and ``--gateway ID`` (for ``run`` and ``check``)."""
    p.add_argument(
        "--shard",
        default=None,
        metavar="I/N",
        help="run shard I of N (1-based) of the assets without 'gateway' (rendezvous hashing of asset names)",
    )
    p.add_argument(
        "--gateway", default=None, metavar="ID", help="this gateway's id (overrides engine.gateway_id)"
    )


def apply_fleet_arguments(config: Config, args: argparse.Namespace) -> tuple[Config, Shard | None]:
    """The config this gateway runs (:func:`filter_config`) and its shard, from the options."""
    text = getattr(args, "shard", None)
    shard = parse_shard(text) if text is not None else None
    return filter_config(config, shard, getattr(args, "gateway", None)), shard
