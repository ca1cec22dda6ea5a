"""The plug-in's own tests: the parser, the source against a file, and machinewatch's contract check."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mw_example_sensor import LineSensorSource, parse_line

from machinewatch.connectors.base import Rejected, StreamDown
from machinewatch.engine.config import load_config_text
from machinewatch.engine.errors import ConfigError, PayloadError
from machinewatch.engine.plugins import check_class, check_construct
from machinewatch.engine.types import Chunk

CONFIG = """
[assets.oven1.streams.temp]
kind = "temperature"
rate_hz = 2
window_samples = 10
[assets.oven1.streams.door]
kind = "scalar"
rate_hz = 2
window_samples = 10
[sources.s]
kind = "replay"  # a config needs a source; the tests construct the plug-in directly
path = "unused.csv"
stream = "oven1/temp"
"""


def test_parse_line() -> None:
    assert parse_line(" temp=41.2, door=1 ") == {"temp": "41.2", "door": "1"}
    with pytest.raises(PayloadError, match="bad_line"):
        parse_line("temp 41.2")


async def test_chunks_rejects_and_stream_down(tmp_path: Path) -> None:
    log = tmp_path / "oven.log"
    log.write_text("temp=40.5 door=0 fan=3\n\n# comment\ntemp=oops door=1\ntemp=ERR\nhello\ntemp=41")
    cfg = load_config_text(CONFIG)
    opts = {"path": str(log), "streams": {"temp": "oven1/temp", "door": "oven1/door"}, "start_ns": 10**18}
    items = []
    async with LineSensorSource("s", opts, cfg) as src:
        items = [item async for item in src.chunks()]
    chunks = [i for i in items if isinstance(i, Chunk)]
    assert [(c.stream_id, c.seq, c.t0_ns, float(c.values[0])) for c in chunks] == [
        ("oven1/temp", 0, 10**18, 40.5),
        ("oven1/door", 0, 10**18, 0.0),
        ("oven1/door", 1, 10**18 + 500_000_000, 1.0),
        ("oven1/temp", 4, 10**18 + 2_000_000_000, 41.0),  # seq 2 (ERR) and 3 (bad line) are holes
    ]
    assert all(c.values.dtype == np.float32 and c.rate_hz == 2.0 for c in chunks)
    assert [(r.where, r.reason) for r in items if isinstance(r, Rejected)] == [
        ("oven1/temp", "bad_value"),
        (str(log), "bad_line"),
    ]
    assert [(d.stream_id, d.reason) for d in items if isinstance(d, StreamDown)] == [
        ("oven1/temp", "sensor_error")
    ]


def test_constructor_checks_the_config_and_opens_nothing(tmp_path: Path) -> None:
    cfg = load_config_text(CONFIG)
    with pytest.raises(ConfigError, match=r"sources.s.streams.x: names no stream"):
        LineSensorSource("s", {"path": "missing.log", "streams": {"x": "oven9/temp"}}, cfg)
    # a missing file is found when the engine opens the source, not at construction
    opts = {"path": str(tmp_path / "missing.log"), "streams": {"temp": "oven1/temp"}}
    assert check_construct("sources", LineSensorSource, "s", opts, cfg) == []


def test_machinewatch_contract() -> None:
    assert check_class("sources", "example-lines", LineSensorSource) == []
