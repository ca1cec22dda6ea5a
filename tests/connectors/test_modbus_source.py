"""Modbus TCP source: the register decoder against ``struct`` for every type and order (hypothesis),
read planning, config problems by key path, and the source against pymodbus's own server on
loopback (values, a stopped and restarted PLC, exception answers, a silent device), plus the engine
run from a config alone."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import sqlite3
import struct
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from servers import free_port

from machinewatch.connectors.base import Rejected, StreamDown
from machinewatch.connectors.sources.modbus import (
    REGISTER_TYPES,
    ModbusSource,
    RegisterMap,
    decode_registers,
    plan_reads,
)
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.types import Chunk

# -- decoding: against struct, independently formulated per order ------------------------------------

_CODES = {t: c for t, (c, _) in REGISTER_TYPES.items()}


def _words(b: bytes) -> list[int]:
    return [int.from_bytes(b[i : i + 2], "big") for i in range(0, len(b), 2)]


def encode(value: float, dtype: str, byte_order: str, word_order: str) -> list[int]:
    """What a device sends, built from struct's big- and little-endian packings:
    big/big = ABCD, word little = CDAB, byte little = BADC, both little = DCBA."""
    code = _CODES[dtype]
    be, le = struct.pack(">" + code, value), struct.pack("<" + code, value)
    if byte_order == "big":
        w = _words(be)
        return w if word_order == "big" else w[::-1]
    w = _words(le)  # little-endian bytes read as big-endian words: each word byte-swapped ...
    return w if word_order == "little" else w[::-1]  # ... and low word first


def _value(dtype: str) -> st.SearchStrategy[Any]:
    if dtype.startswith("float"):
        return st.floats(width=32 if dtype == "float32" else 64, allow_nan=False)
    bits = 16 if dtype.endswith("16") else 32
    if dtype.startswith("u"):
        return st.integers(0, 2**bits - 1)
    return st.integers(-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)


@st.composite
def _case(draw: st.DrawFn) -> tuple[str, str, str, list[Any]]:
    dtype = draw(st.sampled_from(sorted(REGISTER_TYPES)))
    bo = draw(st.sampled_from(["big", "little"]))
    wo = draw(st.sampled_from(["big", "little"]))
    return dtype, bo, wo, draw(st.lists(_value(dtype), min_size=1, max_size=4))


@given(_case())
def test_decode_matches_struct_for_every_type_and_order(case: tuple[str, str, str, list[Any]]) -> None:
    dtype, bo, wo, values = case
    regs = [w for v in values for w in encode(v, dtype, bo, wo)]
    assert len(regs) == len(values) * REGISTER_TYPES[dtype][1]
    got = decode_registers(regs, dtype, bo, wo)
    assert [struct.pack(">" + _CODES[dtype], g) for g in got] == [
        struct.pack(">" + _CODES[dtype], v) for v in values
    ]


@pytest.mark.parametrize("dtype", ["int32", "uint32", "float32", "float64"])
@pytest.mark.parametrize("word_order", ["big", "little"])
def test_decode_agrees_with_pymodbus(dtype: str, word_order: str) -> None:
    from pymodbus.client import ModbusTcpClient

    v = -12345.5 if dtype.startswith("float") else (123456789 if dtype != "int32" else -123456789)
    regs = encode(v, dtype, "big", word_order)
    theirs = ModbusTcpClient.convert_from_registers(
        regs, getattr(ModbusTcpClient.DATATYPE, dtype.upper()), word_order=word_order
    )
    assert decode_registers(regs, dtype, "big", word_order) == (theirs,)


def test_decode_nan_and_bad_input() -> None:
    assert math.isnan(decode_registers([0x7FC0, 0], "float32")[0])
    assert decode_registers([0, 0x7F80], "float32", word_order="little") == (math.inf,)
    with pytest.raises(ValueError, match="whole float32"):
        decode_registers([1, 2, 3], "float32")
    with pytest.raises(ValueError, match="16-bit"):
        decode_registers([70000], "uint16")


# -- read planning ------------------------------------------------------------------------------------


def _m(
    sid: str, addr: int, count: int = 2, unit: int = 1, table: str = "holding", iv: float = 1.0
) -> RegisterMap:
    return RegisterMap(
        sid, unit, table, addr, count, "float32" if count % 2 == 0 else "uint16", interval_s=iv
    )


def test_plan_groups_adjacent_maps_within_bounds() -> None:
    maps = [
        _m("a/0", 0),
        _m("a/1", 2),
        _m("a/2", 12),  # gap of 8 after a/1: still one read
        _m("a/3", 23),  # gap of 9: a new read
        _m("a/4", 0, unit=2),  # another unit
        _m("a/5", 4, table="input"),  # another table
        _m("a/6", 25, iv=0.5),  # another interval
    ]
    blocks = plan_reads(maps, max_registers=125, max_gap=8)
    got = sorted((b.unit_id, b.table, b.address, b.count, tuple(m.stream_id for m in b.maps)) for b in blocks)
    assert got == [
        (1, "holding", 0, 14, ("a/0", "a/1", "a/2")),
        (1, "holding", 23, 2, ("a/3",)),
        (1, "holding", 25, 2, ("a/6",)),
        (1, "input", 4, 2, ("a/5",)),
        (2, "holding", 0, 2, ("a/4",)),
    ]
    # bounded: no read longer than max_registers, every map in exactly one read
    many = [_m(f"a/{i}", 2 * i) for i in range(200)]
    blocks = plan_reads(many, max_registers=16, max_gap=8)
    assert all(b.count <= 16 for b in blocks) and len(blocks) == 25
    assert sorted(m.stream_id for b in blocks for m in b.maps) == sorted(m.stream_id for m in many)
    assert len(plan_reads(many[:3], max_gap=-1)) == 3  # one read per map


# -- config problems by key path ------------------------------------------------------------------------

ASSETS = """
[engine]
state_dir = "{state}"
[assets.p1.streams.temp]
kind = "temperature"
rate_hz = 20
window_samples = 10
units = "degC"
[assets.p1.streams.amps]
kind = "current"
rate_hz = 20
window_samples = 10
channels = 3
units = "A"
[assets.p1.streams.speed]
kind = "speed"
rate_hz = 20
[assets.p2.streams.level]
kind = "scalar"
rate_hz = 20
"""


def _config(source: str, state: Path | str = "/tmp/unused", extra: str = "") -> Config:
    return load_config_text(ASSETS.format(state=state) + "[sources.plc]\n" + source + extra)


def _problems(source: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as exc:
        _config(source)
    return {p.path: p.reason for p in exc.value.problems}


def test_option_problems_by_key_path() -> None:
    probs = _problems("""kind = "modbus"
hots = "x"
port = 0
[[sources.plc.registers]]
stream = "p1temp"
address = 0
type = "float32"
[[sources.plc.registers]]
stream = "p1/amps"
address = 70000
type = "int16"
[[sources.plc.registers]]
stream = "p1/speed"
address = 10
type = "float16"
[[sources.plc.registers]]
stream = "p2/level"
address = 20
type = "float32"
count = 3
table = "coils"
byte_order = "middle"
[[sources.plc.registers]]
address = 30
type = "uint16"
scale = 0
""")
    p = "sources.plc"
    assert "unknown key" in probs[f"{p}.hots"]
    assert probs[f"{p}.host"] == "is required"
    assert probs[f"{p}.port"] == "must be 1-65535"
    assert "'<asset>/<stream>'" in probs[f"{p}.registers[0].stream"]
    assert probs[f"{p}.registers[1].address"] == "must be 0-65535"
    assert "float16" in probs[f"{p}.registers[2].type"]
    assert "do not hold whole float32 values" in probs[f"{p}.registers[3].count"]
    assert "holding" in probs[f"{p}.registers[3].table"]
    assert "big" in probs[f"{p}.registers[3].byte_order"]
    assert probs[f"{p}.registers[4].stream"] == "is required"
    assert probs[f"{p}.registers[4].scale"] == "must not be 0"
    assert _problems('kind = "modbus"\nhost = "h"') == {
        f"{p}.registers": "is required: a list of register maps ([[sources.NAME.registers]])"
    }


def test_overlapping_and_duplicate_maps() -> None:
    probs = _problems("""kind = "modbus"
host = "127.0.0.1"
[[sources.plc.registers]]
stream = "p1/temp"
address = 0
type = "float32"
[[sources.plc.registers]]
stream = "p1/speed"
address = 1
type = "uint16"
[[sources.plc.registers]]
stream = "p1/temp"
address = 1
type = "uint16"
table = "input"
[[sources.plc.registers]]
stream = "p2/level"
address = 1
type = "uint16"
unit_id = 2
""")
    assert probs == {
        "sources.plc.registers[1].address": "holding registers 1-1 of unit 1 overlap registers[0] (0-1)",
        "sources.plc.registers[2].stream": "'p1/temp' is already mapped by registers[0]",
    }


def test_problems_against_the_config() -> None:
    probs = _problems("""kind = "modbus"
host = "127.0.0.1"
interval_s = 0.05
[[sources.plc.registers]]
stream = "p1/nosuch"
address = 0
type = "float32"
[[sources.plc.registers]]
stream = "p1/amps"
address = 2
type = "int16"
count = 2
unit = "mA"
[[sources.plc.registers]]
stream = "p1/speed"
address = 10
type = "uint16"
interval_s = 1.0
""")
    assert probs == {
        "sources.plc.registers[0].stream": "names no stream of the config ('p1/nosuch')",
        "sources.plc.registers[1].count": "2 registers hold 2 int16 value(s); p1/amps has 3 channel(s)",
        "sources.plc.registers[1].unit": "'mA' disagrees with assets.p1.streams.amps.units ('A')",
        "sources.plc.registers[2].interval_s": (
            "polls p1/speed every 1 s, but its rate_hz = 20 (a sample every 0.05 s): make them agree"
        ),
    }


# -- against pymodbus's own server ---------------------------------------------------------------------


@contextlib.asynccontextmanager
async def plc(port: int, hr: Sequence[int], ir: Sequence[int] = (0,)) -> AsyncIterator[None]:
    """pymodbus's TCP server on loopback with unit 1 (the pattern of tests/connectors/test_actuators.py)."""
    from pymodbus.datastore import ModbusDeviceContext, ModbusSequentialDataBlock, ModbusServerContext
    from pymodbus.server import ModbusTcpServer

    # pymodbus >= 3.10 data blocks start at address 1 (protocol address 0 = block address 1)
    dev = ModbusDeviceContext(
        hr=ModbusSequentialDataBlock(1, list(hr)), ir=ModbusSequentialDataBlock(1, list(ir))
    )
    server = ModbusTcpServer(ModbusServerContext(devices={1: dev}, single=False), address=("127.0.0.1", port))
    task = asyncio.create_task(server.serve_forever())
    try:
        async with asyncio.timeout(5):
            while not server.is_active():
                await asyncio.sleep(0.01)
        yield
    finally:
        await server.shutdown()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task


async def write_holding(port: int, address: int, words: list[int]) -> None:
    from pymodbus.client import AsyncModbusTcpClient

    c = AsyncModbusTcpClient("127.0.0.1", port=port)
    await c.connect()
    try:
        assert not (await c.write_registers(address, words, device_id=1)).isError()
    finally:
        c.close()


Item = Chunk | Rejected | StreamDown


class Collector:
    """Runs a source's ``chunks()`` in a task; the test waits for conditions on what arrived."""

    def __init__(self, src: ModbusSource) -> None:
        self.items: list[Item] = []
        self.task = asyncio.create_task(self._run(src))

    async def _run(self, src: ModbusSource) -> None:
        async for item in src.chunks():
            self.items.append(item)

    async def until(self, pred: Callable[[list[Item]], bool], timeout: float = 5.0) -> list[Item]:
        async with asyncio.timeout(timeout):
            while not pred(self.items):
                assert not self.task.done(), self.task
                await asyncio.sleep(0.01)
        return self.items

    def chunks(self, sid: str, start: int = 0) -> list[Chunk]:
        return [c for c in self.items[start:] if isinstance(c, Chunk) and c.stream_id == sid]

    def downs(self, start: int = 0) -> list[StreamDown]:
        return [d for d in self.items[start:] if isinstance(d, StreamDown)]

    async def close(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


STREAMS = ("p1/temp", "p1/amps", "p1/speed", "p2/level")
MAPS = """
[[sources.plc.registers]]
stream = "p1/temp"
address = 0
type = "float32"
unit = "degC"
scale = 2.0
offset = -1.0
[[sources.plc.registers]]
stream = "p1/amps"
address = 2
type = "int16"
scale = 0.1
[[sources.plc.registers]]
stream = "p2/level"
address = 6
type = "float32"
byte_order = "little"
word_order = "little"
[[sources.plc.registers]]
stream = "p1/speed"
table = "input"
address = 10
type = "uint32"
word_order = "little"
scale = 0.001
offset = -1
"""
HR = [
    *encode(21.5, "float32", "big", "big"),
    123,
    65536 - 45,
    0,
    0,
    *encode(-3.25, "float32", "little", "little"),
]
IR = [0] * 10 + encode(1_500_000, "uint32", "big", "little")


def _source(port: int, extra: str = "", maps: str = MAPS) -> ModbusSource:
    timeout = "" if "timeout_s" in extra else "timeout_s = 0.5\n"
    opts = f'kind = "modbus"\nhost = "127.0.0.1"\nport = {port}\n{timeout}{extra}\n'
    cfg = _config(opts, extra=maps)
    return ModbusSource("plc", cfg.sources["plc"].options, cfg)


def _all_streams(col: Collector, n: int = 3, start: int = 0) -> Callable[[list[Item]], bool]:
    return lambda _: all(len(col.chunks(s, start)) >= n for s in STREAMS)


async def test_values_with_scale_offset_and_orders_arrive_as_chunks() -> None:
    port = free_port()
    src = _source(port)
    assert len(src.blocks) == 2  # holding 0-7 in one read (one unmapped register between), input 10-11
    async with plc(port, HR, IR), src:
        col = Collector(src)
        try:
            await col.until(_all_streams(col))
            want = {
                "p1/temp": [42.0],
                "p1/amps": [12.3, -4.5, 0.0],
                "p2/level": [-3.25],
                "p1/speed": [1499.0],
            }
            for sid, values in want.items():
                chunks = col.chunks(sid)
                assert all(c.values.dtype == np.float32 and c.rate_hz == 20.0 for c in chunks)
                np.testing.assert_allclose(chunks[0].values, values, rtol=1e-6)
                seqs = [c.seq for c in chunks]
                assert seqs == sorted(set(seqs))  # one per poll tick, increasing
                t0s = [c.t0_ns for c in chunks]
                assert all(0.02e9 < b - a < 0.5e9 for a, b in itertools.pairwise(t0s))
            assert not col.downs()
            assert src.polls <= 2 * max(len(col.chunks(s)) for s in STREAMS) + 2  # two reads per tick
            # the PLC's temperature turns NaN: rejected, counted by the engine, never a chunk
            await write_holding(port, 0, [0x7FC0, 0])
            await col.until(lambda items: any(isinstance(i, Rejected) for i in items))
            bad = next(i for i in col.items if isinstance(i, Rejected))
            assert (bad.where, bad.reason) == ("p1/temp", "non_finite")
        finally:
            await col.close()


async def test_stopped_plc_gives_stream_down_then_data_resumes() -> None:
    port = free_port()
    src = _source(port, "reconnect_min_s = 0.05\nreconnect_max_s = 0.2")
    async with src:
        col = Collector(src)
        try:
            async with plc(port, HR, IR):
                await col.until(_all_streams(col, 2))
            mark = len(col.items)
            await col.until(lambda _: {d.stream_id for d in col.downs(mark)} == set(STREAMS))
            assert {d.reason for d in col.downs(mark)} == {"disconnected"}
            failures = src.connect_failures
            await col.until(lambda _: src.connect_failures >= failures + 3)  # retrying, quietly
            assert len(col.downs(mark)) == len(STREAMS)  # one StreamDown per stream per outage
            mark = len(col.items)
            async with plc(port, HR, IR):
                await col.until(_all_streams(col, 2, mark))
            assert src.connects == 2
        finally:
            await col.close()


async def test_exception_answer_is_stream_down_and_a_combined_read_is_split() -> None:
    port = free_port()
    maps = """
[[sources.plc.registers]]
stream = "p1/speed"
address = 14
type = "uint16"
[[sources.plc.registers]]
stream = "p2/level"
address = 20
type = "uint16"
"""
    src = _source(port, maps=maps)
    assert len(src.blocks) == 1  # 14-20 in one read: register 20 does not exist
    async with plc(port, list(range(16))), src:
        col = Collector(src)
        try:
            await col.until(lambda _: len(col.chunks("p1/speed")) >= 2 and len(col.downs()) >= 2)
            assert col.chunks("p1/speed")[0].values.tolist() == [14.0]
            downs = col.downs()
            assert {d.stream_id for d in downs} == {"p2/level"}
            assert downs[0].reason == "modbus_exception"
            assert "holding 20-20 unit 1" in downs[0].detail and "illegal data address" in downs[0].detail
        finally:
            await col.close()


async def test_silent_device_times_out_and_reconnects() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(Exception):
            while await reader.read(1024):
                pass
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    maps = '[[sources.plc.registers]]\nstream = "p1/temp"\naddress = 0\ntype = "float32"'
    src = _source(port, "timeout_s = 0.1\nmax_timeouts = 2", maps=maps)
    try:
        async with src:
            col = Collector(src)
            try:
                await col.until(lambda _: src.connects >= 2 and len(col.downs()) >= 2)
                d = col.downs()[0]
                assert (d.stream_id, d.reason) == ("p1/temp", "poll_timeout")
                assert "no answer in 0.1 s" in d.detail
            finally:
                await col.close()
    finally:
        server.close()
        await server.wait_closed()


# -- the engine from config alone ------------------------------------------------------------------------


def test_engine_runs_a_modbus_source_from_config(tmp_path: Path) -> None:
    from machinewatch.connectors.sinks.local import read_summaries
    from machinewatch.engine.pipeline import Engine

    port = free_port()
    text = f"""
[engine]
state_dir = "{tmp_path}"
summary_interval_s = 0.5
[model]
learn_windows = 10
[assets.oven.streams.temp]
kind = "temperature"
rate_hz = 20
window_samples = 10
units = "degC"
[sources.plc]
kind = "modbus"
host = "127.0.0.1"
port = {port}
[[sources.plc.registers]]
stream = "oven/temp"
address = 0
type = "int16"
scale = 0.1
unit = "degC"
[sinks.local]
kind = "local"
"""
    cfg = load_config_text(text)

    async def main() -> dict[str, int]:
        async with plc(port, [200, 0]):
            engine = Engine(cfg, install_signals=False)
            task = asyncio.create_task(engine.run())
            i = 0
            # the plant: the oven's temperature wanders between 20.0 and 20.9 degC
            while engine.counters["chunks_in"] < 60 and not task.done():
                i += 1
                await write_holding(port, 0, [200 + i % 10])
                await asyncio.sleep(0.05)
            engine.stop()
            report = await asyncio.wait_for(task, 30)
            return report.counters

    c = asyncio.run(main())
    assert c["chunks_in"] >= 60
    assert c.get("buffer_windows", 0) >= 5
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    temp = read_summaries(db, "oven", stream="temp")
    assert sum(s["windows"] for s in temp) >= 5
    assert all(19.99 <= s["level_min"] <= s["level_max"] <= 20.91 for s in temp if s["windows"])


async def test_short_or_garbled_answers_are_poll_errors() -> None:
    """A recording fake client (no server can be made to send these on purpose)."""
    from pymodbus.exceptions import ModbusIOException

    class Answer:
        def __init__(self, registers: list[int]) -> None:
            self.registers = registers

        def isError(self) -> bool:  # pymodbus's name
            return False

    class Fake:
        connected = True
        answers: ClassVar[list[Any]] = [
            Answer([1]),
            ModbusIOException("request uses transaction id=3 but received 2"),
        ]

        def __init__(self, host: str, **kw: Any) -> None:
            self.calls = 0

        async def connect(self) -> bool:
            return True

        async def read_holding_registers(self, address: int, count: int, device_id: int) -> Any:
            a = Fake.answers[min(self.calls, len(Fake.answers) - 1)]
            self.calls += 1
            if isinstance(a, Exception):
                raise a
            return a

        def close(self) -> None:
            pass

    maps = '[[sources.plc.registers]]\nstream = "p1/temp"\naddress = 0\ntype = "float32"'
    cfg = _config('kind = "modbus"\nhost = "127.0.0.1"\n', extra=maps)
    src = ModbusSource("plc", cfg.sources["plc"].options, cfg, client_factory=Fake)
    async with src:
        col = Collector(src)
        try:
            await col.until(lambda _: len(col.downs()) >= 2)
        finally:
            await col.close()
    first, second = col.downs()[:2]
    assert (first.reason, second.reason) == ("poll_error", "poll_error")
    assert "1 registers in the answer, asked for 2" in first.detail
    assert "transaction id" in second.detail
    assert src.connects == 1  # a garbled answer is not a reason to reconnect


# -- fleets ---------------------------------------------------------------------------------------------

FLEET_MAPS = """
[[sources.plc.registers]]
stream = "p1/temp"
address = 0
type = "float32"
[[sources.plc.registers]]
stream = "p2/level"
address = 4
type = "int16"
[assets.p1]
gateway = "gwA"
[assets.p2]
gateway = "gwB"
"""


def test_a_shared_fleet_file_maps_only_this_gateways_registers() -> None:
    """A plant-wide file names both gateways' registers: each gateway polls only its own assets'
    (before, the other gateway's map was "names no stream" and the engine would not start)."""
    from machinewatch.engine.fleet import filter_config

    cfg = _config('kind = "modbus"\nhost = "127.0.0.1"\ninterval_s = 0.05\n', extra=FLEET_MAPS)
    for gw, mine in (("gwA", ["p1/temp"]), ("gwB", ["p2/level"])):
        own = filter_config(cfg, gateway_id=gw)
        src = ModbusSource("plc", own.sources["plc"].options, own)
        assert [m.stream_id for m in src.maps] == mine
        assert [m.stream_id for b in src.blocks for m in b.maps] == mine


async def test_a_source_with_nothing_owned_idles_without_connecting() -> None:
    from machinewatch.engine.fleet import filter_config

    maps = FLEET_MAPS.split("[[sources.plc.registers]]", 2)
    maps = "[[sources.plc.registers]]" + maps[2]  # the p2 map and the assignments only
    cfg = _config('kind = "modbus"\nhost = "127.0.0.1"\nport = 1\ninterval_s = 0.05\n', extra=maps)
    own = filter_config(cfg, gateway_id="gwA")
    src = ModbusSource("plc", own.sources["plc"].options, own)
    assert src.maps == []
    it = aiter(src.chunks())
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(it), 0.3)
    assert src.connects == 0 and src.connect_failures == 0, "never tried the PLC"
