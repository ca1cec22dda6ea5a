"""``modbus``: sensor readings polled from a PLC's holding or input registers over Modbus TCP (pymodbus).

Options
-------
::

    [sources.plc]
    kind = "modbus"
    host = "192.168.1.20"
    # port = 502
    # unit_id = 1                  # default Modbus unit (slave) id of every register map
    # interval_s = 1.0             # default poll interval; without it: 1 / the stream's rate_hz
    # timeout_s = 1.0              # one request; a poll without an answer is a poll_timeout
    # max_timeouts = 3             # this many timeouts in a row: drop the connection, reconnect
    # byte_order = "big"           # default byte order inside a register ("little" = bytes swapped)
    # word_order = "big"           # default register order of 32/64-bit values ("little" = low word first)
    # max_registers_per_read = 125 # one request reads at most this many registers (Modbus allows 125)
    # max_gap_registers = 8        # read across up to this many unmapped registers to save a request
    # reconnect_min_s = 0.2        # capped, jittered exponential backoff between connection attempts
    # reconnect_max_s = 5.0

    [[sources.plc.registers]]
    stream = "pump1/temp"          # "<asset>/<stream>", a stream of the config
    address = 100                  # protocol address (0-based), as in the PLC's Modbus map
    type = "float32"               # int16 uint16 int32 uint32 float32 float64
    # table = "holding"            # or "input"
    # count = 2                    # registers; derived from type x the stream's channels
    # scale = 1.0                  # value = raw * scale + offset
    # offset = 0.0
    # unit = "degC"                # must agree with the stream's units when both are given
    # unit_id, interval_s, byte_order, word_order: per-map overrides of the source defaults

Each poll of a register map becomes one :class:`~machinewatch.engine.types.Chunk` of one frame
(a stream with ``channels = 3`` reads three consecutive values), stamped with the wall time the
request was sent, the stream's configured ``rate_hz`` and a sequence number that counts poll
ticks, so a missed tick is a gap the engine never stitches across. Adjacent maps of the same unit,
table and interval are read with one request (bounded by ``max_registers_per_read`` and
``max_gap_registers``); when a combined read hits an illegal address, it is split into one read
per map.

A failed poll never stops the source: every stream of the failed read gets a
:class:`~machinewatch.connectors.base.StreamDown` (reasons ``poll_timeout``, ``poll_error``,
``modbus_exception``, ``disconnected``) and the engine marks it STALE until its next chunk. A
value that decodes to NaN or infinity is :class:`~machinewatch.connectors.base.Rejected`
(``non_finite``).
"""

from __future__ import annotations

__all__ = [
    "REGISTER_TYPES",
    "ModbusSource",
    "PollSchedule",
    "ReadBlock",
    "RegisterMap",
    "decode_registers",
    "plan_reads",
]

import asyncio
import logging
import math
import struct
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from pymodbus.client import AsyncModbusTcpClient
from pymodbus.exceptions import ConnectionException, ModbusException, ModbusIOException

from machinewatch.connectors.base import Rejected, Source, StreamDown
from machinewatch.connectors.mqttcommon import Backoff
from machinewatch.engine.config import Config, _Checker
from machinewatch.engine.errors import ConfigError, ConfigProblem
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.types import Chunk

log = logging.getLogger(__name__)

#: register type -> (struct code, registers per value)
REGISTER_TYPES: dict[str, tuple[str, int]] = {
    "int16": ("h", 1),
    "uint16": ("H", 1),
    "int32": ("i", 2),
    "uint32": ("I", 2),
    "float32": ("f", 2),
    "float64": ("d", 4),
}
_TABLES = ("holding", "input")
_ORDERS = ("big", "little")
#: the most registers one read (function code 3 or 4) may ask for
MAX_READ = 125
_KEYS = {
    "host",
    "port",
    "unit_id",
    "interval_s",
    "timeout_s",
    "max_timeouts",
    "byte_order",
    "word_order",
    "max_registers_per_read",
    "max_gap_registers",
    "reconnect_min_s",
    "reconnect_max_s",
    "registers",
}
_MAP_KEYS = {
    "stream",
    "unit_id",
    "table",
    "address",
    "count",
    "type",
    "byte_order",
    "word_order",
    "scale",
    "offset",
    "unit",
    "interval_s",
}
_EXCEPTION_NAMES = {
    1: "illegal function",
    2: "illegal data address",
    3: "illegal data value",
    4: "server device failure",
    5: "acknowledge",
    6: "server device busy",
    8: "memory parity error",
    10: "gateway path unavailable",
    11: "gateway target device failed to respond",
}


# -- pure parts: decoding, planning, scheduling --------------------------------------------------


def decode_registers(
    registers: Sequence[int], dtype: str, byte_order: str = "big", word_order: str = "big"
) -> tuple[float, ...]:
    """Register words -> the values they hold (pure).

    ``byte_order`` is the order of the two bytes inside each register (Modbus sends the high byte
    first: ``"big"``); ``word_order`` the order of the registers of a 32- or 64-bit value
    (``"big"``: the first register holds the most significant word). The four orders of a 32-bit
    value ``ABCD`` are big/big ``AB CD``, word little ``CD AB``, byte little ``BA DC`` and both
    little ``DC BA``. Raises ``ValueError`` when the count does not fit the type or a word is not
    16-bit.

    >>> decode_registers([0x4049, 0x0FDB], "float32")
    (3.1415927410125732,)
    >>> decode_registers([0x0FDB, 0x4049], "float32", word_order="little")
    (3.1415927410125732,)
    >>> decode_registers([0xFFFF, 7], "int16")
    (-1, 7)
    """
    code, words = REGISTER_TYPES[dtype]
    if not registers or len(registers) % words:
        raise ValueError(f"{len(registers)} registers do not hold whole {dtype} values")
    endian: Literal["big", "little"] = "big" if byte_order == "big" else "little"
    raw = bytearray()
    for i in range(0, len(registers), words):
        value = registers[i : i + words]
        for w in value if word_order == "big" else reversed(value):
            if not 0 <= w <= 0xFFFF:
                raise ValueError(f"register value {w} is not a 16-bit word")
            raw += w.to_bytes(2, endian)
    return struct.unpack(f">{len(registers) // words}{code}", raw)


@dataclass(frozen=True, slots=True)
class RegisterMap:
    """Where one stream's value lives in the PLC and how to turn it into engineering units."""

    stream_id: str
    unit_id: int
    table: str
    address: int
    count: int
    dtype: str
    byte_order: str = "big"
    word_order: str = "big"
    scale: float = 1.0
    offset: float = 0.0
    interval_s: float = 1.0
    rate_hz: float = 1.0

    @property
    def end(self) -> int:
        """One past the last register."""
        return self.address + self.count


@dataclass(frozen=True, slots=True)
class ReadBlock:
    """One read request: ``count`` registers from ``address`` covering one or more maps."""

    unit_id: int
    table: str
    address: int
    count: int
    interval_s: float
    maps: tuple[RegisterMap, ...]

    def describe(self) -> str:
        """For logs and StreamDown details: ``holding 100-103 unit 1``."""
        return f"{self.table} {self.address}-{self.address + self.count - 1} unit {self.unit_id}"


def plan_reads(
    maps: Sequence[RegisterMap], max_registers: int = MAX_READ, max_gap: int = 8
) -> list[ReadBlock]:
    """Group maps into as few reads as the bounds allow (pure).

    Maps share a read when they have the same unit, table and interval, the read stays within
    ``max_registers`` registers and at most ``max_gap`` unmapped registers lie between neighbours.

    >>> m = [RegisterMap(f"a/s{i}", 1, "holding", a, 2, "float32") for i, a in enumerate((0, 2, 20))]
    >>> [(b.address, b.count, len(b.maps)) for b in plan_reads(m, max_gap=8)]
    [(0, 4, 2), (20, 2, 1)]
    """
    groups: dict[tuple[int, str, float], list[RegisterMap]] = {}
    for m in maps:
        groups.setdefault((m.unit_id, m.table, m.interval_s), []).append(m)
    blocks: list[ReadBlock] = []
    for (unit, table, interval), ms in groups.items():
        ms.sort(key=lambda m: m.address)
        cur: list[RegisterMap] = []
        for m in ms:
            if cur and (m.address - cur[-1].end > max_gap or m.end - cur[0].address > max_registers):
                blocks.append(_block(unit, table, interval, cur))
                cur = []
            cur.append(m)
        blocks.append(_block(unit, table, interval, cur))
    return blocks


def _block(unit: int, table: str, interval: float, maps: list[RegisterMap]) -> ReadBlock:
    start = maps[0].address
    end = max(m.end for m in maps)
    return ReadBlock(unit, table, start, end - start, interval, tuple(maps))


class PollSchedule:
    """Fixed-rate poll ticks per read on a monotonic clock (pure).

    Tick ``k`` of a read is due at ``start + k * interval_s``; a read that is polled late (an
    outage, a slow PLC) skips the ticks it missed, so tick numbers stay on the clock and a missed
    tick shows as a sequence gap.

    >>> s = PollSchedule([1.0, 0.5], start=10.0)
    >>> s.next()
    (0, 10.0, 0)
    >>> s.done(0); s.done(1); s.next()
    (1, 10.5, 1)
    >>> s.done(1); s.next(now=13.2)  # an outage: read 0 missed ticks 1 and 2
    (0, 13.0, 3)
    >>> s.done(0); s.next(now=13.2)  # read 1 missed ticks 2-5
    (1, 13.0, 6)
    """

    def __init__(self, intervals: Sequence[float], start: float) -> None:
        self.start = start
        self.intervals = list(intervals)
        self.ticks = [0] * len(self.intervals)

    def due(self, i: int) -> float:
        """When read ``i`` is due next."""
        return self.start + self.ticks[i] * self.intervals[i]

    def next(self, now: float | None = None) -> tuple[int, float, int]:
        """``(read index, due time, tick)`` of the read due first; with ``now``, skips missed ticks."""
        i = min(range(len(self.ticks)), key=self.due)
        if now is not None:
            behind = math.floor((now - self.start) / self.intervals[i])
            if behind > self.ticks[i]:
                self.ticks[i] = behind
        return i, self.due(i), self.ticks[i]

    def done(self, i: int) -> None:
        """Read ``i`` was polled at its tick: the next one is due one interval later."""
        self.ticks[i] += 1

    def split(self, i: int, n: int) -> None:
        """Read ``i`` became ``n`` reads (appended in its place at the end, same tick)."""
        interval, tick = self.intervals.pop(i), self.ticks.pop(i)
        self.intervals += [interval] * n
        self.ticks += [tick] * n


# -- options --------------------------------------------------------------------------------------


def _order(v: str) -> str | None:
    return None if v in _ORDERS else f"must be 'big' or 'little'; got {v!r}"


def _validate_map(c: _Checker, m: Mapping[str, Any], p: str, max_read: int) -> None:
    c.unknown(m, _MAP_KEYS, p)
    sid = c.get(m, "stream", p, str, None, required=True)
    if sid is not None and (sid.count("/") != 1 or not all(sid.split("/"))):
        c.bad(f"{p}.stream", f"must be '<asset>/<stream>'; got {sid!r}")
    c.get(m, "unit_id", p, int, None, check=lambda v: None if 0 <= v <= 255 else "must be 0-255")
    c.get(
        m,
        "table",
        p,
        str,
        None,
        check=lambda v: None if v in _TABLES else f"must be 'holding' or 'input'; got {v!r}",
    )
    addr = c.get(
        m,
        "address",
        p,
        int,
        None,
        required=True,
        check=lambda v: None if 0 <= v <= 65535 else "must be 0-65535",
    )
    dtype = c.get(
        m,
        "type",
        p,
        str,
        None,
        required=True,
        check=lambda v: (
            None if v in REGISTER_TYPES else f"must be one of {', '.join(REGISTER_TYPES)}; got {v!r}"
        ),
    )
    count = c.get(
        m,
        "count",
        p,
        int,
        None,
        check=lambda v: None if 1 <= v <= max_read else f"must be 1-{max_read} (max_registers_per_read)",
    )
    if count is not None and dtype is not None and count % REGISTER_TYPES[dtype][1]:
        c.bad(
            f"{p}.count",
            f"{count} registers do not hold whole {dtype} values ({REGISTER_TYPES[dtype][1]} each)",
        )
    if addr is not None and addr + (count or REGISTER_TYPES.get(dtype or "", ("", 1))[1]) > 65536:
        c.bad(f"{p}.address", "the map runs past register 65535")
    c.get(m, "byte_order", p, str, None, check=_order)
    c.get(m, "word_order", p, str, None, check=_order)
    c.get(m, "scale", p, float, None, check=lambda v: None if v != 0 else "must not be 0")
    c.get(m, "offset", p, float, None)
    c.get(m, "unit", p, str, None)
    c.get(m, "interval_s", p, float, None, check=lambda v: None if v >= 0.01 else "must be >= 0.01")


def _overlaps(options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
    """Streams mapped twice and register ranges that overlap (options already valid)."""
    probs: list[ConfigProblem] = []
    seen: dict[str, int] = {}
    ranges: list[tuple[int, str, int, int]] = []
    for i, m in enumerate(options["registers"]):
        p = f"{path}.registers[{i}]"
        if m["stream"] in seen:
            probs.append(
                ConfigProblem(
                    f"{p}.stream", f"{m['stream']!r} is already mapped by registers[{seen[m['stream']]}]"
                )
            )
        seen.setdefault(m["stream"], i)
        unit = int(m.get("unit_id", options.get("unit_id", 1)))
        table = str(m.get("table", "holding"))
        start = int(m["address"])
        end = start + int(m.get("count", REGISTER_TYPES[m["type"]][1]))
        for j, (u, t, s, e) in enumerate(ranges):
            if u == unit and t == table and start < e and s < end:
                why = (
                    f"{table} registers {start}-{end - 1} of unit {unit} overlap registers[{j}] ({s}-{e - 1})"
                )
                probs.append(ConfigProblem(f"{p}.address", why))
        ranges.append((unit, table, start, end))
    return probs


# -- the source -------------------------------------------------------------------------------------


class _ExceptionResponse(Exception):
    """The device answered with a Modbus exception code."""

    def __init__(self, code: int) -> None:
        self.code = code
        super().__init__(f"exception code {code} ({_EXCEPTION_NAMES.get(code, 'unknown')})")


class ModbusSource(Source):
    """Poll register maps on a schedule and yield chunks (see the module docstring).

    Parameters
    ----------
    name, options, config
        As for every connector.
    client_factory
        Makes the ``AsyncModbusTcpClient``-like client (tests may pass a fake).

    Raises
    ------
    ConfigError
        When the options are invalid or disagree with the config (unknown streams, units).
    """

    def __init__(
        self,
        name: str,
        options: Mapping[str, Any],
        config: Config,
        client_factory: Callable[..., Any] = AsyncModbusTcpClient,
    ) -> None:
        super().__init__(name, options, config)
        path = f"sources.{name}"
        problems = self.validate_options(options, path) or self.validate_config(options, path, config)
        if problems:
            raise ConfigError(problems)
        o = self.options
        self.host = str(o["host"])
        self.port = int(o.get("port", 502))
        self.timeout_s = float(o.get("timeout_s", 1.0))
        self.max_timeouts = int(o.get("max_timeouts", 3))
        self.max_read = int(o.get("max_registers_per_read", MAX_READ))
        self.maps = self.register_maps(o, config)
        self.blocks = plan_reads(self.maps, self.max_read, int(o.get("max_gap_registers", 8)))
        self.backoff = Backoff(float(o.get("reconnect_min_s", 0.2)), float(o.get("reconnect_max_s", 5.0)))
        self.client_factory = client_factory
        self.connects = 0
        self.connect_failures = 0
        self.polls = 0
        self._client: Any = None
        self._rl = RateLimitedLog(log)

    @staticmethod
    def register_maps(options: Mapping[str, Any], config: Config) -> list[RegisterMap]:
        """The validated options' register maps, with every default filled in."""
        out = []
        for m in options["registers"]:
            if config.elsewhere(str(m["stream"])):
                continue
            _, s = config.stream(m["stream"])
            dtype = str(m["type"])
            interval = m.get("interval_s", options.get("interval_s", 1.0 / s.rate_hz))
            out.append(
                RegisterMap(
                    stream_id=str(m["stream"]),
                    unit_id=int(m.get("unit_id", options.get("unit_id", 1))),
                    table=str(m.get("table", "holding")),
                    address=int(m["address"]),
                    count=int(m.get("count", REGISTER_TYPES[dtype][1] * s.channels)),
                    dtype=dtype,
                    byte_order=str(m.get("byte_order", options.get("byte_order", "big"))),
                    word_order=str(m.get("word_order", options.get("word_order", "big"))),
                    scale=float(m.get("scale", 1.0)),
                    offset=float(m.get("offset", 0.0)),
                    interval_s=float(interval),
                    rate_hz=s.rate_hz,
                )
            )
        return out

    @classmethod
    def validate_options(cls, options: Mapping[str, Any], path: str) -> list[ConfigProblem]:
        c = _Checker()
        c.unknown(options, _KEYS, path)
        host = c.get(options, "host", path, str, None, required=True)
        if host == "":
            c.bad(f"{path}.host", "must not be empty")
        c.get(
            options, "port", path, int, None, check=lambda v: None if 1 <= v <= 65535 else "must be 1-65535"
        )
        c.get(options, "unit_id", path, int, None, check=lambda v: None if 0 <= v <= 255 else "must be 0-255")
        c.get(
            options, "interval_s", path, float, None, check=lambda v: None if v >= 0.01 else "must be >= 0.01"
        )
        for k in ("timeout_s", "reconnect_min_s", "reconnect_max_s"):
            c.get(options, k, path, float, None, check=lambda v: None if v > 0 else "must be > 0")
        c.get(options, "max_timeouts", path, int, None, check=lambda v: None if v >= 1 else "must be >= 1")
        c.get(options, "byte_order", path, str, None, check=_order)
        c.get(options, "word_order", path, str, None, check=_order)
        max_read = c.get(
            options,
            "max_registers_per_read",
            path,
            int,
            MAX_READ,
            check=lambda v: None if 1 <= v <= MAX_READ else f"must be 1-{MAX_READ}",
        )
        c.get(
            options, "max_gap_registers", path, int, None, check=lambda v: None if v >= 0 else "must be >= 0"
        )
        regs = options.get("registers")
        if not isinstance(regs, list) or not regs:
            c.bad(f"{path}.registers", "is required: a list of register maps ([[sources.NAME.registers]])")
            return c.problems
        for i, m in enumerate(regs):
            p = f"{path}.registers[{i}]"
            if not isinstance(m, dict):
                c.bad(p, "must be a table")
                continue
            _validate_map(c, m, p, max_read or MAX_READ)
        if not c.problems:
            c.problems += _overlaps(options, path)
        return c.problems

    @classmethod
    def validate_config(cls, options: Mapping[str, Any], path: str, config: Config) -> list[ConfigProblem]:
        """Streams that do not exist, register counts that do not fit the stream's channels,
        units that disagree, poll intervals that do not match the stream's rate."""
        probs: list[ConfigProblem] = []
        for i, m in enumerate(options["registers"]):
            p = f"{path}.registers[{i}]"
            if config.elsewhere(str(m["stream"])):
                continue  # another gateway of the fleet runs that asset
            try:
                a, s = config.stream(m["stream"])
            except KeyError:
                probs.append(ConfigProblem(f"{p}.stream", f"names no stream of the config ({m['stream']!r})"))
                continue
            words = REGISTER_TYPES[m["type"]][1]
            sid = a.stream_id(s.name)
            if "count" in m and m["count"] // words != s.channels:
                n = m["count"] // words
                why = (
                    f"{m['count']} registers hold {n} {m['type']} value(s); {sid} has {s.channels} channel(s)"
                )
                probs.append(ConfigProblem(f"{p}.count", why))
            unit = m.get("unit")
            if unit is not None and s.units and unit != s.units:
                where = f"assets.{a.name}.streams.{s.name}.units"
                probs.append(ConfigProblem(f"{p}.unit", f"{unit!r} disagrees with {where} ({s.units!r})"))
            key = f"{p}.interval_s" if "interval_s" in m else f"{path}.interval_s"
            interval = float(m.get("interval_s", options.get("interval_s", 1.0 / s.rate_hz)))
            if abs(interval * s.rate_hz - 1.0) > 0.01:
                why = (
                    f"polls {sid} every {interval:g} s, but its rate_hz = {s.rate_hz:g} "
                    f"(a sample every {1.0 / s.rate_hz:g} s): make them agree"
                )
                probs.append(ConfigProblem(key, why))
        return probs

    # -- connection ---------------------------------------------------------------------------------

    async def _connect(self) -> str | None:
        """Open a connection; ``None`` on success, else why not."""
        self._close()
        self._client = self.client_factory(
            self.host, port=self.port, timeout=self.timeout_s, retries=0, reconnect_delay=0
        )
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                ok = await self._client.connect()
        except (TimeoutError, OSError, ModbusException) as exc:
            ok, why = False, f"{type(exc).__name__} {exc}"
        else:
            why = "connection refused or unreachable"
        if not ok:
            self._close()
            self.connect_failures += 1
            return f"cannot connect to {self.host}:{self.port}: {why}"
        self.connects += 1
        log.info(
            "modbus source %s: connected to %s:%d (%d reads)",
            self.name,
            self.host,
            self.port,
            len(self.blocks),
        )
        return None

    def _close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    async def _read(self, block: ReadBlock) -> list[int]:
        c = self._client
        fn = c.read_holding_registers if block.table == "holding" else c.read_input_registers
        # pymodbus times the request out itself (ModbusIOException "No response ..."); this is the backstop
        async with asyncio.timeout(self.timeout_s * 1.5 + 0.1):
            rr = await fn(block.address, count=block.count, device_id=block.unit_id)
        if rr.isError():
            raise _ExceptionResponse(int(getattr(rr, "exception_code", 0)))
        regs: list[int] = list(rr.registers)
        if len(regs) < block.count:
            raise ModbusException(f"{len(regs)} registers in the answer, asked for {block.count}")
        return regs

    # -- decoding -----------------------------------------------------------------------------------

    def decode(
        self, block: ReadBlock, registers: Sequence[int], t0_ns: int, seq: int
    ) -> list[Chunk | Rejected]:
        """One read's registers -> one chunk (or a rejection) per map (pure)."""
        out: list[Chunk | Rejected] = []
        for m in block.maps:
            i = m.address - block.address
            raw = decode_registers(registers[i : i + m.count], m.dtype, m.byte_order, m.word_order)
            with np.errstate(over="ignore", invalid="ignore"):
                values = (np.asarray(raw, np.float64) * m.scale + m.offset).astype(np.float32)
            if not np.isfinite(values).all():
                where = f"{m.dtype} at {m.table} {m.address} unit {m.unit_id}"
                out.append(Rejected(m.stream_id, "non_finite", f"{where} -> {values.tolist()}"))
                continue
            out.append(Chunk(m.stream_id, t0_ns, m.rate_hz, seq, values))
        return out

    # -- the poll loop -----------------------------------------------------------------------------

    def _down(self, streams: Sequence[str], reason: str, detail: str) -> list[StreamDown]:
        self._rl.warning(
            f"modbus:{self.name}:{reason}", "modbus source %s: %s: %s", self.name, reason, detail
        )
        return [StreamDown(s, reason, detail) for s in streams]

    async def chunks(self) -> AsyncIterator[Chunk | Rejected | StreamDown]:
        """Connect, poll every read on its schedule, decode; reconnect with backoff, forever."""
        if not self.maps:
            await self.idle("every register map names an asset another gateway runs")
            return
        everyone = [m.stream_id for m in self.maps]
        blocks = list(self.blocks)
        sched = PollSchedule([b.interval_s for b in blocks], time.monotonic())
        reported_down = False
        timeouts = 0
        while True:
            if self._client is None:
                why = await self._connect()
                if why is not None:
                    if not reported_down:
                        for item in self._down(everyone, "disconnected", why):
                            yield item
                        reported_down = True
                    await asyncio.sleep(self.backoff.next())
                    continue
                reported_down = False
                timeouts = 0
            i, due, tick = sched.next(time.monotonic())
            wait = due - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
            block = blocks[i]
            streams = [m.stream_id for m in block.maps]
            t0 = time.time_ns()
            self.polls += 1
            try:
                regs = await self._read(block)
            except _ExceptionResponse as exc:
                if exc.code == 2 and len(block.maps) > 1:
                    # the combined read spans registers the device does not have: read each map alone
                    log.warning(
                        "modbus source %s: %s answered %s; reading its maps one by one",
                        self.name,
                        block.describe(),
                        exc,
                    )
                    parts = plan_reads(block.maps, self.max_read, max_gap=-1)
                    blocks.pop(i)
                    blocks += parts
                    sched.split(i, len(parts))
                    continue
                sched.done(i)
                for item in self._down(streams, "modbus_exception", f"{block.describe()}: {exc}"):
                    yield item
                continue
            except (TimeoutError, ModbusIOException) as exc:
                sched.done(i)
                if isinstance(exc, ModbusIOException) and "No response" not in str(exc):
                    # a garbled or mismatched answer (transaction or unit id): the link may be fine
                    for item in self._down(streams, "poll_error", f"{block.describe()}: {exc}"):
                        yield item
                    continue
                timeouts += 1
                detail = f"{block.describe()}: no answer in {self.timeout_s:g} s"
                for item in self._down(streams, "poll_timeout", detail):
                    yield item
                if timeouts >= self.max_timeouts:
                    # a half-open connection or a wedged device: start a fresh connection
                    self._close()
                continue
            except (ConnectionException, OSError) as exc:
                sched.done(i)
                self._close()
                for item in self._down(everyone, "disconnected", f"{self.host}:{self.port}: {exc}"):
                    yield item
                reported_down = True
                await asyncio.sleep(self.backoff.next())
                continue
            except ModbusException as exc:
                sched.done(i)
                for item in self._down(streams, "poll_error", f"{block.describe()}: {exc}"):
                    yield item
                continue
            sched.done(i)
            timeouts = 0
            self.backoff.reset()
            for out in self.decode(block, regs, t0, tick):
                yield out

    async def __aexit__(self, *exc: object) -> None:
        self._close()
