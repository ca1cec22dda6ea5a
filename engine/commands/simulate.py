"""``machinewatch simulate --broker URL [--config CONFIG]``: publish simulated machines over MQTT.

The streams come from the ``simulator`` source (:mod:`machinewatch.connectors.sources.simulator`)
of the config (its faults included; the demo config by default) and go out as binary waveform
frames (:func:`machinewatch.engine.codecs.encode_frame`) on ``machinewatch/<site>/<asset>/<stream>``,
so a real engine with an ``mqtt`` source can be tried end to end.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from importlib import resources
from pathlib import Path
from typing import Any

from machinewatch.engine.codecs import encode_frame
from machinewatch.engine.config import Config, PluginConfig, load_config

NAME = "simulate"
HELP = "publish simulated machine streams to an MQTT broker"
log = logging.getLogger(__name__)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--broker", required=True, help="mqtt://host:port")
    p.add_argument(
        "--config", default=None, help="config whose assets and simulator faults to use (default: demo)"
    )
    p.add_argument("--speedup", default=None, help="simulated s per wall s ('max' = as fast as possible)")
    p.add_argument("--duration", type=float, default=None, help="simulated seconds, then stop")
    p.add_argument("--qos", type=int, choices=(0, 1), default=1)
    p.add_argument("--topic-template", default="machinewatch/<site>/<asset>/<stream>")
    p.add_argument("--start-ns", type=int, default=None, help="time of the first sample (default: now)")
    p.add_argument("--client-id", default=None)


def _sim_options(cfg: Config, args: argparse.Namespace) -> dict[str, Any]:
    sim = next((p for p in cfg.sources.values() if p.kind == "simulator"), None)
    opts: dict[str, Any] = dict(sim.options) if sim else {}
    if args.speedup is not None:
        opts["speedup"] = args.speedup if args.speedup == "max" else float(args.speedup)
    if args.duration is not None:
        opts["duration_s"] = args.duration
    if args.start_ns is not None:
        opts["start_ns"] = args.start_ns
    return opts


async def publish(cfg: Config, args: argparse.Namespace) -> int:
    """Run the simulator and publish every chunk; return the number of messages sent."""
    import aiomqtt

    from machinewatch.connectors.mqttcommon import client_kwargs
    from machinewatch.connectors.sources.simulator import SimulatorSource
    from machinewatch.engine.types import Chunk

    opts = _sim_options(cfg, args)
    src = SimulatorSource("simulate", opts, cfg)
    kw = client_kwargs({"url": args.broker}, "--broker")
    if args.client_id:
        kw["identifier"] = args.client_id
    topics = {
        a.stream_id(s): args.topic_template.replace("<site>", a.site)
        .replace("<asset>", a.name)
        .replace("<stream>", s)
        for a in cfg.assets.values()
        for s in a.streams
    }
    channels = {a.stream_id(s.name): s.channels for a in cfg.assets.values() for s in a.streams.values()}
    sent = 0
    t0 = time.monotonic()
    async with aiomqtt.Client(**kw, max_inflight_messages=1000) as client:
        async for c in src.chunks():
            if not isinstance(c, Chunk):
                continue
            frame = encode_frame(c.values, c.t0_ns, c.seq, c.rate_hz, channels[c.stream_id])
            await client.publish(topics[c.stream_id], frame, qos=args.qos)
            sent += 1
    log.info("published %d messages in %.1f s", sent, time.monotonic() - t0)
    return sent


def main(args: argparse.Namespace) -> int:
    path = args.config or str(resources.files("machinewatch.engine") / "default_configs" / "demo.toml")
    cfg = load_config(Path(path))
    if not any(isinstance(p, PluginConfig) and p.kind == "simulator" for p in cfg.sources.values()):
        log.info("no simulator source in %s: simulating every asset without faults", path)
    try:
        asyncio.run(publish(cfg, args))
    except KeyboardInterrupt:
        pass
    return 0
