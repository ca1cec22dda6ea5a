"""Sparkplug B: the wire decoder against the ``protobuf`` package's own encoder (every datatype,
hypothesis), fuzzing; the source's session rules; real Mosquitto; the engine from config alone.

The reference encoder is independent of ``engine/sparkplug.py``: message classes are built at run
time by the protobuf runtime from a ``FileDescriptorProto`` written below after Eclipse Tahu's
``sparkplug_b.proto`` (proto2, package ``org.eclipse.tahu.protobuf``), so no ``protoc`` is needed.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import math
import sqlite3
import struct
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machinewatch.connectors.base import Rejected, StreamDown
from machinewatch.connectors.sinks.local import read_alarms
from machinewatch.connectors.sources.sparkplug import SparkplugSource
from machinewatch.engine.config import Config, load_config_text
from machinewatch.engine.errors import ConfigError, PayloadError
from machinewatch.engine.pipeline import Engine
from machinewatch.engine.sparkplug import (
    REASONS,
    Payload,
    decode_payload,
    encode_payload,
    metric_number,
    number_metric,
    parse_topic,
)
from machinewatch.engine.types import Chunk

# --------------------------------------------------------------------------- reference encoder

_F = descriptor_pb2.FieldDescriptorProto
_PKG = "org.eclipse.tahu.protobuf"


def _add(
    msg: Any, name: str, number: int, ftype: int, *, repeated: bool = False, ref: str = "", oneof: int = -1
) -> None:
    f = msg.field.add(name=name, number=number, type=ftype)
    f.label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
    if ref:
        f.type_name = f".{_PKG}.Payload.{ref}"
    if oneof >= 0:
        f.oneof_index = oneof


def _tahu_payload_class() -> Any:
    fd = descriptor_pb2.FileDescriptorProto(name="mw_test_sparkplug_b.proto", package=_PKG, syntax="proto2")
    payload = fd.message_type.add(name="Payload")
    meta = payload.nested_type.add(name="MetaData")
    for name, num, ft in (
        ("is_multi_part", 1, _F.TYPE_BOOL),
        ("content_type", 2, _F.TYPE_STRING),
        ("size", 3, _F.TYPE_UINT64),
        ("seq", 4, _F.TYPE_UINT64),
        ("description", 8, _F.TYPE_STRING),
    ):
        _add(meta, name, num, ft)
    pset = payload.nested_type.add(name="PropertySet")
    _add(pset, "keys", 1, _F.TYPE_STRING, repeated=True)
    ds = payload.nested_type.add(name="DataSet")
    _add(ds, "num_of_columns", 1, _F.TYPE_UINT64)
    _add(ds, "columns", 2, _F.TYPE_STRING, repeated=True)
    _add(ds, "types", 3, _F.TYPE_UINT32, repeated=True)
    tpl = payload.nested_type.add(name="Template")
    _add(tpl, "version", 1, _F.TYPE_STRING)
    _add(tpl, "metrics", 2, _F.TYPE_MESSAGE, repeated=True, ref="Metric")  # metrics inside a metric
    m = payload.nested_type.add(name="Metric")
    m.oneof_decl.add(name="value")
    for name, num, ft in (
        ("name", 1, _F.TYPE_STRING),
        ("alias", 2, _F.TYPE_UINT64),
        ("timestamp", 3, _F.TYPE_UINT64),
        ("datatype", 4, _F.TYPE_UINT32),
        ("is_historical", 5, _F.TYPE_BOOL),
        ("is_transient", 6, _F.TYPE_BOOL),
        ("is_null", 7, _F.TYPE_BOOL),
    ):
        _add(m, name, num, ft)
    _add(m, "metadata", 8, _F.TYPE_MESSAGE, ref="MetaData")
    _add(m, "properties", 9, _F.TYPE_MESSAGE, ref="PropertySet")
    for name, num, ft in (
        ("int_value", 10, _F.TYPE_UINT32),
        ("long_value", 11, _F.TYPE_UINT64),
        ("float_value", 12, _F.TYPE_FLOAT),
        ("double_value", 13, _F.TYPE_DOUBLE),
        ("boolean_value", 14, _F.TYPE_BOOL),
        ("string_value", 15, _F.TYPE_STRING),
        ("bytes_value", 16, _F.TYPE_BYTES),
    ):
        _add(m, name, num, ft, oneof=0)
    _add(m, "dataset_value", 17, _F.TYPE_MESSAGE, ref="DataSet", oneof=0)
    _add(m, "template_value", 18, _F.TYPE_MESSAGE, ref="Template", oneof=0)
    for name, num, ft in (
        ("timestamp", 1, _F.TYPE_UINT64),
        ("seq", 3, _F.TYPE_UINT64),
        ("uuid", 4, _F.TYPE_STRING),
        ("body", 5, _F.TYPE_BYTES),
    ):
        _add(payload, name, num, ft)
    _add(payload, "metrics", 2, _F.TYPE_MESSAGE, repeated=True, ref="Metric")
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fd)
    return message_factory.GetMessageClass(pool.FindMessageTypeByName(f"{_PKG}.Payload"))


PB = _tahu_payload_class()
_VALUE_FIELDS = {
    "int_value": 10,
    "long_value": 11,
    "float_value": 12,
    "double_value": 13,
    "boolean_value": 14,
    "string_value": 15,
    "bytes_value": 16,
    "dataset_value": 17,
    "template_value": 18,
}


def _opt(msg: Any, name: str) -> Any:
    return getattr(msg, name) if msg.HasField(name) else None


def _same_float(a: float, b: float) -> bool:
    return (math.isnan(a) and math.isnan(b)) or struct.pack("<d", a) == struct.pack("<d", b)


def assert_same(pb: Any, p: Payload) -> None:
    """Every field the decoder reads equals what the protobuf runtime reads."""
    assert (p.timestamp_ms, p.seq, p.uuid, p.body) == (
        _opt(pb, "timestamp"),
        _opt(pb, "seq"),
        _opt(pb, "uuid"),
        _opt(pb, "body"),
    )
    assert len(p.metrics) == len(pb.metrics)
    for mine, ref in zip(p.metrics, pb.metrics, strict=True):
        assert mine.name == _opt(ref, "name")
        assert mine.alias == _opt(ref, "alias")
        assert mine.timestamp_ms == _opt(ref, "timestamp")
        assert mine.datatype == ref.datatype
        flags = (mine.is_historical, mine.is_transient, mine.is_null)
        assert flags == (ref.is_historical, ref.is_transient, ref.is_null)
        which = ref.WhichOneof("value")
        assert mine.value_field == (_VALUE_FIELDS[which] if which else 0)
        if which in ("float_value", "double_value"):
            assert isinstance(mine.value, float) and _same_float(mine.value, getattr(ref, which))
        elif which in ("dataset_value", "template_value") or which is None:
            assert mine.value is None
        else:
            assert mine.value == getattr(ref, which) and type(mine.value) is type(getattr(ref, which))


# --------------------------------------------------------------------------- decoder vs protobuf

T_MS = 1_700_000_000_000
#: (datatype, value, how Tahu-style encoders put it: field name and raw value)
CASES: list[tuple[int, float, str, int | float | bool]] = [
    (1, -23, "int_value", 233),  # Int8, masked to 8 bits
    (1, -23, "int_value", 0xFFFFFFE9),  # Int8, sign-extended to 32 bits (Tahu Java)
    (1, 127, "int_value", 127),
    (1, -128, "int_value", 0x80),
    (2, -87, "int_value", 0xFFFFFFA9),  # Int16 sign-extended
    (2, 32767, "int_value", 32767),
    (3, -2_000_000_000, "int_value", (-2_000_000_000) & 0xFFFFFFFF),
    (3, 2_147_483_647, "int_value", 2_147_483_647),
    (4, -(2**63), "long_value", 2**63),
    (4, -5, "long_value", 2**64 - 5),
    (5, 255, "int_value", 255),
    (6, 65535, "int_value", 65535),
    (7, 4_294_967_295, "int_value", 4_294_967_295),
    (7, 4_000_000_000, "long_value", 4_000_000_000),  # UInt32 in long_value, as Tahu encodes it
    (8, 2**64 - 1, "long_value", 2**64 - 1),
    (9, 21.5, "float_value", 21.5),
    (9, -1e-3, "float_value", -1e-3),
    (10, -273.15, "double_value", -273.15),
    (10, 1e300, "double_value", 1e300),
    (11, 1.0, "boolean_value", True),
    (11, 0.0, "boolean_value", False),
]


@pytest.mark.parametrize(("datatype", "expect", "field", "raw"), CASES)
def test_every_numeric_datatype_decodes_like_protobuf(
    datatype: int, expect: float, field: str, raw: Any
) -> None:
    pb = PB(timestamp=T_MS, seq=7)
    m = pb.metrics.add(name="Pump1/Value", alias=3, timestamp=T_MS + 1, datatype=datatype)
    setattr(m, field, raw)
    p = decode_payload(pb.SerializeToString())
    assert_same(pb, p)
    got = metric_number(p.metrics[0])
    want = float(np.float32(expect)) if datatype == 9 else float(expect)
    assert got == want
    # and our encoder (the NCMD one) writes what protobuf reads back the same
    mine = number_metric(datatype, expect, name="x", alias=1, timestamp_ms=T_MS)
    ref = PB.FromString(encode_payload(Payload(T_MS, (mine,), 1)))
    assert metric_number(decode_payload(ref.SerializeToString()).metrics[0]) == want


def test_non_numeric_and_broken_values_are_typed_errors() -> None:
    pb = PB()
    pb.metrics.add(name="s", datatype=12, string_value="läuft")
    pb.metrics.add(name="n", datatype=9, is_null=True)
    pb.metrics.add(name="v", datatype=3)
    pb.metrics.add(name="w", datatype=3, float_value=1.0)
    pb.metrics.add(name="nan", datatype=10, double_value=float("nan"))
    pb.metrics.add(name="d", datatype=16, dataset_value=PB.DataSet(num_of_columns=1, columns=["a"]))
    p = decode_payload(pb.SerializeToString())
    assert_same(pb, p)
    reasons = []
    for m in p.metrics:
        with pytest.raises(PayloadError) as ei:
            metric_number(m)
        reasons.append(ei.value.reason)
    assert reasons == ["bad_datatype", "null_value", "no_value", "bad_value", "non_finite", "bad_datatype"]
    assert set(reasons) <= set(REASONS)


_u64 = st.integers(0, 2**64 - 1)
_text = st.text(max_size=12)
_metric_kw = st.fixed_dictionaries(
    {},
    optional={
        "name": _text,
        "alias": _u64,
        "timestamp": _u64,
        "datatype": st.integers(0, 2**32 - 1),
        "is_historical": st.booleans(),
        "is_transient": st.booleans(),
        "is_null": st.booleans(),
    },
)
_value = st.one_of(
    st.none(),
    st.tuples(st.just("int_value"), st.integers(0, 2**32 - 1)),
    st.tuples(st.just("long_value"), _u64),
    st.tuples(st.just("float_value"), st.floats(width=32, allow_nan=True)),
    st.tuples(st.just("double_value"), st.floats(allow_nan=True)),
    st.tuples(st.just("boolean_value"), st.booleans()),
    st.tuples(st.just("string_value"), _text),
    st.tuples(st.just("bytes_value"), st.binary(max_size=16)),
    st.tuples(st.just("dataset_value"), st.lists(_text, max_size=3)),
    st.tuples(st.just("template_value"), _text),
)


@st.composite
def pb_payloads(draw: st.DrawFn) -> Any:
    pb = PB()
    for k, v in draw(
        st.fixed_dictionaries(
            {}, optional={"timestamp": _u64, "seq": _u64, "uuid": _text, "body": st.binary(max_size=16)}
        )
    ).items():
        setattr(pb, k, v)
    for _ in range(draw(st.integers(0, 4))):
        m = pb.metrics.add(**draw(_metric_kw))
        if draw(st.booleans()):
            m.metadata.CopyFrom(PB.MetaData(content_type=draw(_text), size=draw(_u64)))
        if draw(st.booleans()):
            m.properties.CopyFrom(PB.PropertySet(keys=draw(st.lists(_text, max_size=3))))
        v = draw(_value)
        if v is None:
            continue
        field, val = v
        if field == "dataset_value":
            m.dataset_value.CopyFrom(PB.DataSet(num_of_columns=len(val), columns=val))
        elif field == "template_value":
            m.template_value.CopyFrom(PB.Template(version=val, metrics=[PB.Metric(name=val, int_value=1)]))
        else:
            setattr(m, field, val)
    return pb


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(pb_payloads())
def test_decoder_agrees_with_protobuf_on_random_payloads(pb: Any) -> None:
    data = pb.SerializeToString()
    assert_same(pb, decode_payload(data))


@settings(max_examples=150, deadline=None)
@given(pb_payloads())
def test_encoder_round_trips_through_protobuf(pb: Any) -> None:
    """Our encoder (scalar values only) writes bytes protobuf reads as the same payload."""
    p = decode_payload(pb.SerializeToString())
    if any(m.value_field >= 17 for m in p.metrics):
        p = Payload(p.timestamp_ms, tuple(m for m in p.metrics if m.value_field < 17), p.seq, p.uuid, p.body)
    data = encode_payload(p)
    assert decode_payload(data) == p or any(
        isinstance(m.value, float) and math.isnan(m.value) for m in p.metrics
    )
    assert_same(PB.FromString(data), p)


# --------------------------------------------------------------------------- fuzzing

_SEED = bytes(
    PB(
        timestamp=T_MS,
        seq=3,
        uuid="u",
        metrics=[
            PB.Metric(name="a/b", alias=1, timestamp=T_MS, datatype=9, float_value=1.5),
            PB.Metric(alias=2, datatype=3, int_value=0xFFFFFFFF, metadata=PB.MetaData(size=4)),
            PB.Metric(name="t", datatype=19, template_value=PB.Template(metrics=[PB.Metric(name="in")])),
        ],
    ).SerializeToString()
)


def _decode_or_reason(data: bytes) -> Payload | str:
    try:
        return decode_payload(data)
    except PayloadError as exc:  # the only exception allowed
        assert exc.reason in REASONS, exc.reason
        return exc.reason


@settings(max_examples=800, deadline=None)
@given(st.binary(max_size=200))
def test_fuzz_random_bytes_only_payload_errors(data: bytes) -> None:
    _decode_or_reason(data)


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["flip", "cut", "insert", "delete"]), st.integers(0, 10_000), st.integers(0, 255)
        ),
        min_size=1,
        max_size=4,
    )
)
def test_fuzz_mutated_payloads_only_payload_errors_and_agree_with_protobuf(
    edits: list[tuple[str, int, int]],
) -> None:
    b = bytearray(_SEED)
    for op, pos, byte in edits:
        i = pos % (len(b) + 1)
        if op == "flip" and i < len(b):
            b[i] ^= byte or 1
        elif op == "cut":
            del b[i:]
        elif op == "insert":
            b[i:i] = bytes([byte])
        elif op == "delete" and i < len(b):
            del b[i]
    got = _decode_or_reason(bytes(b))
    if isinstance(got, Payload):
        try:
            ref = PB.FromString(bytes(b))
        except DecodeError:
            # a nested message (metadata, template ...) the decoder skips whole may be broken
            # inside; the decoder never looks into it, by design
            return
        assert_same(ref, got)


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x08" + b"\xff" * 10 + b"\x01", "bad_varint"),  # 11-byte varint
        (b"\x08\xff", "bad_varint"),  # cut off
        (b"\x12\x05\x0a\x01", "bad_length"),  # metric longer than the payload
        (b"\x12\x04\x0a\x05abcd", "bad_length"),  # name longer than its metric
        (b"\x0b", "bad_wire_type"),  # group start
        (b"\x0f", "bad_wire_type"),  # wire type 7
        (b"\x0a\x00", "bad_wire_type"),  # timestamp as bytes
        (b"\x00\x01", "bad_field"),  # field 0
        (b"\x12\x03\x0a\x01\xff", "bad_utf8"),
        (b"\x12\x02\x65\x00", "bad_length"),  # float_value with 0 of 4 bytes
        (b"x" * 100, "oversize"),
    ],
)
def test_malformed_payloads_name_their_reason(data: bytes, reason: str) -> None:
    with pytest.raises(PayloadError) as ei:
        decode_payload(data, max_bytes=64)
    assert ei.value.reason == reason


def test_limits_and_unknown_fields() -> None:
    many = PB(metrics=[PB.Metric(name=str(i)) for i in range(11)]).SerializeToString()
    with pytest.raises(PayloadError, match="too_many_metrics"):
        decode_payload(many, max_metrics=10)
    # unknown fields of every wire type are skipped (a newer schema's field 30 and 31, 32, 33)
    extra = b"\xf0\x01\x05" + b"\xf9\x01" + b"\0" * 8 + b"\x82\x02\x02hi" + b"\x8d\x02" + b"\0" * 4
    p = decode_payload(extra + many)
    assert [m.name for m in p.metrics] == [str(i) for i in range(11)]
    # a 10-byte varint's bits beyond 64 are dropped, as protobuf drops them
    big = b"\x08" + b"\xff" * 9 + b"\x7f"
    assert decode_payload(big).timestamp_ms == PB.FromString(big).timestamp == 2**64 - 1


def test_topics() -> None:
    t = parse_topic("spBv1.0/G1/NBIRTH/gw1")
    assert t is not None and (t.group, t.message_type, t.edge_node, t.device) == ("G1", "NBIRTH", "gw1", None)
    assert t.node_topic("NCMD") == "spBv1.0/G1/NCMD/gw1"
    for bad in (
        "spBv1.0/G1/NBIRTH/gw1/dev",
        "spBv1.0/G1/DDATA/gw1",
        "spAv1.0/G/NDATA/n",
        "spBv1.0/G/XDATA/n",
    ):
        assert parse_topic(bad) is None


# --------------------------------------------------------------------------- the source's rules


def config(url: str = "mqtt://127.0.0.1:1883", extra: str = "", state: str = "./mw-state") -> Config:
    return load_config_text(f'''
[engine]
state_dir = "{state}"
summary_interval_s = 1.0
[model]
learn_windows = 1000
[assets.pump1.machine]
shaft_hz = 25.0
[assets.pump1.streams.temp]
kind = "temperature"
rate_hz = 1
window_samples = 4
[assets.pump1.streams.speed]
kind = "speed"
rate_hz = 1
window_samples = 4
[assets.pump1.streams.flow]
kind = "scalar"
rate_hz = 1
window_samples = 4
[sources.scada]
kind = "sparkplug"
url = "{url}"
group_id = "Plant1"
reconnect_max_s = 0.5
{extra}
[[sources.scada.metrics]]
edge_node = "gw1"
device = "plc7"
metric = "Pump1/Temperature"
stream = "pump1/temp"
[[sources.scada.metrics]]
edge_node = "gw1"
device = "plc7"
metric = "Pump1/Speed"
stream = "pump1/speed"
scale = 0.5
offset = 1
[[sources.scada.metrics]]
edge_node = "gw1"
metric = "Line/Flow"
stream = "pump1/flow"
[sinks.local]
kind = "local"
''')


def source(cfg: Config, **kw: Any) -> SparkplugSource:
    return SparkplugSource("scada", cfg.sources["scada"].options, cfg, **kw)


def nbirth(seq: int = 0, bd: int = 5, flow: float = 3.0, t: int = T_MS) -> bytes:
    return PB(
        timestamp=t,
        seq=seq,
        metrics=[
            PB.Metric(name="bdSeq", datatype=8, long_value=bd, timestamp=t),
            PB.Metric(name="Node Control/Rebirth", datatype=11, boolean_value=False, timestamp=t),
            PB.Metric(name="Line/Flow", alias=100, datatype=10, double_value=flow, timestamp=t),
        ],
    ).SerializeToString()


def dbirth(seq: int, t: int = T_MS) -> bytes:
    return PB(
        timestamp=t,
        seq=seq,
        metrics=[
            PB.Metric(name="Pump1/Temperature", alias=1, datatype=9, float_value=40.0, timestamp=t),
            PB.Metric(name="Pump1/Speed", alias=2, datatype=2, int_value=0xFFFFFFF6, timestamp=t),  # -10
            PB.Metric(name="Pump1/Status", alias=3, datatype=12, string_value="RUN", timestamp=t),
        ],
    ).SerializeToString()


def ddata(seq: int, t: int, temp: float | None = None, speed: int | None = None, alias: int = 1) -> bytes:
    pb = PB(timestamp=t, seq=seq)
    if temp is not None:
        pb.metrics.add(alias=alias, timestamp=t, float_value=temp)  # DATA: alias only, no datatype
    if speed is not None:
        pb.metrics.add(alias=2, timestamp=t, int_value=speed & 0xFFFFFFFF)
    return bytes(pb.SerializeToString())


def death(bd: int) -> bytes:
    return bytes(PB(metrics=[PB.Metric(name="bdSeq", datatype=8, long_value=bd)]).SerializeToString())


N = "spBv1.0/Plant1/{}/gw1"
D = "spBv1.0/Plant1/{}/gw1/plc7"


def _chunks(items: list[Any]) -> list[tuple[str, int, float]]:
    return [(c.stream_id, c.t0_ns, float(c.values[0])) for c in items if isinstance(c, Chunk)]


def _reasons(items: list[Any]) -> list[str]:
    return [r.reason for r in items if isinstance(r, Rejected)]


def test_birth_aliases_data_and_deaths() -> None:
    src = source(config())
    now = (T_MS + 60_000) * 1_000_000
    r = src.handle(D.format("DDATA"), ddata(0, T_MS, temp=1.0), now)
    assert _reasons(r) == ["no_birth"] and src.pending_rebirths == []  # rebirth is off by default
    assert _chunks(src.handle(N.format("NBIRTH"), nbirth(), now)) == [("pump1/flow", T_MS * 10**6, 3.0)]
    got = src.handle(D.format("DBIRTH"), dbirth(1), now)
    assert _chunks(got) == [("pump1/temp", T_MS * 10**6, 40.0), ("pump1/speed", T_MS * 10**6, -4.0)]
    got = src.handle(D.format("DDATA"), ddata(2, T_MS + 1000, temp=41.5, speed=-20), now)
    assert _chunks(got) == [
        ("pump1/temp", (T_MS + 1000) * 10**6, 41.5),
        ("pump1/speed", (T_MS + 1000) * 10**6, -9.0),
    ]
    assert [c.seq for c in got if isinstance(c, Chunk)] == [1, 1]
    r = src.handle(D.format("DDATA"), ddata(3, T_MS + 2000, temp=1.0, alias=99), now)
    assert _reasons(r) == ["unknown_alias"]
    r = src.handle(D.format("DDATA"), ddata(4, T_MS + 1000, temp=1.0), now)  # not after the last
    assert _reasons(r) == ["out_of_order"]
    # DDEATH: only the device's streams go down; its DATA is then refused until a new DBIRTH
    r = src.handle(D.format("DDEATH"), PB(seq=5).SerializeToString(), now)
    assert r == [StreamDown("pump1/temp", "sparkplug_death", "DDEATH Plant1/gw1/plc7"),
                 StreamDown("pump1/speed", "sparkplug_death", "DDEATH Plant1/gw1/plc7")]  # fmt: skip
    assert _reasons(src.handle(D.format("DDATA"), ddata(6, T_MS + 3000, temp=1.0), now)) == ["no_birth"]
    # an NDEATH of an older session (another bdSeq) is ignored; the matching one takes all down
    assert _reasons(src.handle(N.format("NDEATH"), death(4), now)) == ["stale_death"]
    r = src.handle(N.format("NDEATH"), death(5), now)
    assert sorted(d.stream_id for d in r if isinstance(d, StreamDown)) == [
        "pump1/flow",
        "pump1/speed",
        "pump1/temp",
    ]
    assert _reasons(src.handle(N.format("NDATA"), nbirth(7), now)) == ["no_birth"]
    # a DDEATH takes the device's streams down even when its births were missed
    r = src.handle(D.format("DDEATH"), PB(seq=8).SerializeToString(), now)
    assert sorted(d.stream_id for d in r if isinstance(d, StreamDown)) == ["pump1/speed", "pump1/temp"]


def test_seq_gap_is_counted_data_kept_and_windows_not_stitched() -> None:
    src = source(config())
    now = (T_MS + 60_000) * 1_000_000
    src.handle(N.format("NBIRTH"), nbirth(seq=0), now)
    src.handle(D.format("DBIRTH"), dbirth(1), now)
    ok = src.handle(D.format("DDATA"), ddata(2, T_MS + 1000, temp=1.0), now)
    gap = src.handle(D.format("DDATA"), ddata(5, T_MS + 2000, temp=2.0), now)  # 3 and 4 lost
    assert _reasons(ok) == [] and _reasons(gap) == ["seq_gap"]
    assert [(c.seq, float(c.values[0])) for c in gap if isinstance(c, Chunk)] == [
        (3, 2.0)
    ]  # seq jumps 1 -> 3
    # wrap-around 255 -> 0 is not a gap
    src.handle(N.format("NBIRTH"), nbirth(seq=254, t=T_MS + 3000), now)
    src.handle(D.format("DBIRTH"), dbirth(255, t=T_MS + 3000), now)
    assert _reasons(src.handle(D.format("DDATA"), ddata(0, T_MS + 4000, temp=3.0), now)) == []


def test_historical_metrics_in_time_order() -> None:
    src = source(config())
    now = (T_MS + 60_000) * 1_000_000
    src.handle(N.format("NBIRTH"), nbirth(), now)
    src.handle(D.format("DBIRTH"), dbirth(1), now)
    pb = PB(timestamp=T_MS + 10_000, seq=2)
    for k in range(1, 4):  # a store-and-forward flush: three older readings in one DDATA
        pb.metrics.add(alias=1, timestamp=T_MS + k * 1000, is_historical=True, float_value=float(k))
    got = src.handle(D.format("DDATA"), pb.SerializeToString(), now)
    assert _chunks(got) == [("pump1/temp", (T_MS + k * 1000) * 10**6, float(k)) for k in range(1, 4)]


def test_rebirth_requests_are_rate_limited() -> None:
    clock = [0.0]
    src = source(config(extra="rebirth = true\nrebirth_interval_s = 5"), clock=lambda: clock[0])
    now = (T_MS + 60_000) * 1_000_000
    for _ in range(3):
        src.handle(D.format("DDATA"), ddata(0, T_MS, temp=1.0), now)
    assert src.pending_rebirths == ["spBv1.0/Plant1/NCMD/gw1"]
    clock[0] = 5.1
    src.handle(N.format("NDATA"), ddata(0, T_MS, temp=1.0), now)
    assert len(src.pending_rebirths) == 2


def test_bad_options_are_config_errors_by_key_path() -> None:
    with pytest.raises(ConfigError) as ei:
        config(extra='qos = 2\nbogus = 1\nrebirth_interval_s = -1\nmax_metrics = 0\n'
                     'password = "x"')  # fmt: skip
    text = str(ei.value)
    for key in (
        "scada.qos",
        "scada.bogus",
        "scada.rebirth_interval_s",
        "scada.max_metrics",
        "scada.password",
    ):
        assert f"sources.{key}" in text
    bad = config().sources["scada"].options | {
        "group_id": "a/b",
        "metrics": [
            {"edge_node": "gw+", "metric": "m", "stream": "pump1"},
            {"edge_node": "n", "metric": "m", "stream": "pump1/temp", "scale": 0, "unit": "C"},
            {"edge_node": "n", "metric": "m", "stream": "pump1/temp"},
            "nope",
        ],
    }
    probs = {str(p).split(":")[0] for p in SparkplugSource.validate_options(bad, "sources.s")}
    assert probs == {
        "sources.s.group_id",
        "sources.s.metrics[0].edge_node",
        "sources.s.metrics[0].stream",
        "sources.s.metrics[1].scale",
        "sources.s.metrics[1].unit",
        "sources.s.metrics[2]",  # the same metric again
        "sources.s.metrics[2].stream",  # a stream fed twice
        "sources.s.metrics[3]",
    }
    # a stream the config lacks: found by the config loader (so `machinewatch check` says it) ...
    with pytest.raises(ConfigError, match=r"sources\.scada\.metrics\[0\]\.stream: names no stream"):
        config(extra='[[sources.scada.metrics]]\nedge_node = "n"\nmetric = "m"\nstream = "pump1/nope"')
    # ... and by the constructor, for an engine built from options directly
    cfg = config()
    opts = cfg.sources["scada"].options | {
        "metrics": [{"edge_node": "n", "metric": "m", "stream": "pump1/nope"}]
    }
    with pytest.raises(ConfigError, match=r"sources\.scada\.metrics\[0\]\.stream: names no stream"):
        SparkplugSource("scada", opts, cfg)


def test_fleet_leaves_out_other_gateways_assets() -> None:
    cfg = config()
    other = dataclasses.replace(cfg, assets={}, unowned_assets=("pump1",))
    src = SparkplugSource("scada", cfg.sources["scada"].options, other)
    assert src.map == {}
    assert src.handle(N.format("NBIRTH"), nbirth(), (T_MS + 1000) * 10**6) == []


# --------------------------------------------------------------------------- real Mosquitto


async def _until(cond: Any, timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not cond():
            await asyncio.sleep(0.02)


@contextlib.asynccontextmanager
async def _running(src: SparkplugSource) -> AsyncIterator[list[Any]]:
    got: list[Any] = []

    async def run() -> None:
        async for item in src.chunks():
            got.append(item)

    task = asyncio.create_task(run())
    try:
        yield got
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_real_broker_births_aliases_death_and_rebirth(mosquitto: Any) -> None:
    src = source(config(mosquitto.url, 'client_id = "t-spb"\nrebirth = true'))
    async with (
        _running(src) as got,
        aiomqtt.Client("127.0.0.1", mosquitto.port, identifier="t-spb-node") as node,
    ):
        await node.subscribe("spBv1.0/Plant1/NCMD/+", qos=1)
        await _until(lambda: src.connects == 1)
        # DATA of a node not born since the source connected: rejected, and a rebirth is asked for
        await node.publish(D.format("DDATA"), ddata(9, T_MS, temp=1.0), qos=1)
        async with asyncio.timeout(10):
            cmd = await anext(aiter(node.messages))
        assert str(cmd.topic) == "spBv1.0/Plant1/NCMD/gw1"
        req = PB.FromString(bytes(cmd.payload))  # type: ignore[arg-type]
        assert [(m.name, m.datatype, m.boolean_value) for m in req.metrics] == [
            ("Node Control/Rebirth", 11, True)
        ]
        assert _reasons(got) == ["no_birth"]
        # the node answers with its births, then publishes by alias
        msgs = [(N.format("NBIRTH"), nbirth(0)), (D.format("DBIRTH"), dbirth(1))]
        msgs += [
            (D.format("DDATA"), ddata(2 + k, T_MS + (k + 1) * 1000, temp=50.0 + k, speed=2 * k))
            for k in range(3)
        ]
        msgs += [(D.format("DDEATH"), PB(seq=5).SerializeToString())]
        for topic, payload in msgs:
            await node.publish(topic, payload, qos=1)
        await _until(lambda: sum(isinstance(g, StreamDown) for g in got) == 2)
    temps = [v for sid, _, v in _chunks(got) if sid == "pump1/temp"]
    speeds = [v for sid, _, v in _chunks(got) if sid == "pump1/speed"]
    assert temps == [40.0, 50.0, 51.0, 52.0]
    assert speeds == [-4.0, 1.0, 2.0, 3.0]  # (-10, 0, 2, 4) * 0.5 + 1
    assert {d.stream_id for d in got if isinstance(d, StreamDown)} == {"pump1/temp", "pump1/speed"}
    assert _reasons(got) == ["no_birth"] and src.rebirths_sent == 1


async def _births_until_taken(engine: Engine, node: aiomqtt.Client) -> None:
    """Publish NBIRTH + DBIRTH until the engine took their three readings: its source may still
    be connecting (repeated births carry the same times, so the source takes them once)."""
    for _ in range(40):
        await node.publish(N.format("NBIRTH"), nbirth(0), qos=1)
        await node.publish(D.format("DBIRTH"), dbirth(1), qos=1)
        with contextlib.suppress(TimeoutError):
            await _until(lambda: engine.counters["chunks_in"] >= 3, timeout=0.5)
            return
    raise AssertionError("the engine never took the births")


async def test_engine_from_config_alone(mosquitto: Any, tmp_path: Path) -> None:
    """Births, 12 s of DDATA and a DDEATH through the whole engine: chunks in, windows cut,
    STALE raised at once by the death (no stale timer involved: stale_after_s is 10 s)."""
    cfg = config(mosquitto.url, 'client_id = "t-spb-engine"', state=str(tmp_path))
    engine = Engine(cfg, install_signals=False)
    task = asyncio.create_task(engine.run())
    try:
        async with aiomqtt.Client("127.0.0.1", mosquitto.port) as node:
            await _births_until_taken(engine, node)
            for k in range(12):
                t = T_MS + (k + 1) * 1000
                await node.publish(D.format("DDATA"), ddata(2 + k, t, temp=40.0 + k % 3, speed=k), qos=1)
            await _until(lambda: engine.counters["chunks_in"] >= 3 + 24)
            await node.publish(D.format("DDEATH"), PB(seq=14).SerializeToString(), qos=1)
            await _until(lambda: engine.counters["stream_down_sparkplug_death"] == 2)
    finally:
        engine.stop()
        report = await asyncio.wait_for(task, 30)
    c = report.counters
    assert c["chunks_in"] == 27 and c.get("rejected_seq_gap", 0) == 0
    assert c["buffer_windows"] == 6  # temp and speed: 13 one-second readings each, windows of 4 every 4
    db = sqlite3.connect(tmp_path / "machinewatch.db")
    stale = [a for a in read_alarms(db, "pump1") if a["kind"] == "quality" and a["to_state"] == "STALE"]
    assert sorted(a["stream"] for a in stale) == ["speed", "temp"]
    assert all("sparkplug_death" in a["reason"] for a in stale)
