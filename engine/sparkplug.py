"""Sparkplug B payloads (pure): a bounded protobuf decoder for Eclipse Tahu's ``sparkplug_b.proto``.

Sparkplug B (Eclipse Foundation) carries SCADA and PLC-gateway data over MQTT as protobuf. Only
the two messages the engine reads are decoded here, straight from the protobuf wire format, so no
protobuf runtime is needed on the gateway::

    message Payload {                       message Metric {
      optional uint64 timestamp = 1;  // ms    optional string name = 1;   optional uint64 alias = 2;
      repeated Metric metrics   = 2;           optional uint64 timestamp = 3;  // ms since the epoch
      optional uint64 seq       = 3;  // 0..255 optional uint32 datatype = 4;
      optional string uuid      = 4;           optional bool is_historical = 5, is_transient = 6,
      optional bytes  body      = 5;                         is_null = 7;
    }                                          metadata = 8, properties = 9   (skipped)
                                               oneof value { uint32 int_value = 10;
                                                 uint64 long_value = 11; float float_value = 12;
                                                 double double_value = 13; bool boolean_value = 14;
                                                 string string_value = 15; bytes bytes_value = 16;
                                                 dataset 17, template 18, extension 19 (skipped) }

The decoder is bounded: the payload size and the metric count are capped, a varint is at most 10
bytes, every length is checked against what is left, and nesting is two levels by construction
(nested messages of a metric are skipped whole, never parsed). Unknown fields of the four
protobuf wire types in use are skipped. Anything malformed raises
:class:`~machinewatch.engine.errors.PayloadError` with a reason from :data:`REASONS`, and nothing
else is ever raised (a hypothesis test fuzzes that, and another checks every field against the
``protobuf`` package's own encoder).

Signed integers: Sparkplug stores Int8/16/32 in ``uint32 int_value`` and Int64 in ``uint64
long_value`` as two's complement. Publishers differ in whether they sign-extend (Int8 -23 as 233
or as 4294967273), so :func:`metric_number` keeps the datatype's low bits and reads their sign,
which decodes both.
"""

from __future__ import annotations

__all__ = [
    "DATATYPES",
    "MAX_METRICS",
    "MAX_PAYLOAD_BYTES",
    "MESSAGE_TYPES",
    "NAMESPACE",
    "REASONS",
    "Metric",
    "Payload",
    "SparkplugTopic",
    "decode_payload",
    "encode_payload",
    "metric_number",
    "number_metric",
    "parse_topic",
    "rebirth_payload",
]

import math
import struct
from dataclasses import dataclass

from machinewatch.engine.errors import PayloadError

NAMESPACE = "spBv1.0"
#: the Sparkplug message types of an edge-node topic ``spBv1.0/<group>/<type>/<node>[/<device>]``
MESSAGE_TYPES = ("NBIRTH", "NDEATH", "NDATA", "NCMD", "DBIRTH", "DDEATH", "DDATA", "DCMD")
MAX_PAYLOAD_BYTES = 4 * (1 << 20)
MAX_METRICS = 100_000

#: Sparkplug datatype codes (``sparkplug_b.proto``, spec 3.0 section 6.4.16)
DATATYPES = {
    0: "Unknown",
    1: "Int8",
    2: "Int16",
    3: "Int32",
    4: "Int64",
    5: "UInt8",
    6: "UInt16",
    7: "UInt32",
    8: "UInt64",
    9: "Float",
    10: "Double",
    11: "Boolean",
    12: "String",
    13: "DateTime",
    14: "Text",
    15: "UUID",
    16: "DataSet",
    17: "Bytes",
    18: "File",
    19: "Template",
}
#: integer datatypes: (bits, signed)
_INT_BITS = {1: (8, True), 2: (16, True), 3: (32, True), 4: (64, True)} | {
    5: (8, False),
    6: (16, False),
    7: (32, False),
    8: (64, False),
}
_FLOAT_TYPES = (9, 10)
_BOOLEAN = 11

#: every reason a payload or metric is rejected for (stable counter keys)
REASONS = (
    "oversize",
    "bad_varint",
    "bad_length",
    "bad_wire_type",
    "bad_field",
    "bad_utf8",
    "too_many_metrics",
    "null_value",
    "no_value",
    "bad_datatype",
    "bad_value",
    "non_finite",
)

_MASK32 = (1 << 32) - 1
_MASK64 = (1 << 64) - 1
_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
_F32 = struct.Struct("<f")
_F64 = struct.Struct("<d")
_WIRE_NAMES = {0: "varint", 1: "64-bit", 2: "length-delimited", 3: "group start", 4: "group end", 5: "32-bit"}


@dataclass(frozen=True, slots=True)
class Metric:
    """One decoded metric. ``value_field`` is the protobuf field that carried the value (10-19),
    0 when none did; ``value`` is ``None`` for none and for the nested kinds (17-19), which are
    skipped. Unset optional fields are ``None`` (``datatype`` 0 = not given)."""

    name: str | None = None
    alias: int | None = None
    timestamp_ms: int | None = None
    datatype: int = 0
    is_historical: bool = False
    is_transient: bool = False
    is_null: bool = False
    value: int | float | bool | str | bytes | None = None
    value_field: int = 0


@dataclass(frozen=True, slots=True)
class Payload:
    """One decoded Sparkplug B payload (times in ms since the Unix epoch)."""

    timestamp_ms: int | None = None
    metrics: tuple[Metric, ...] = ()
    seq: int | None = None
    uuid: str | None = None
    body: bytes | None = None


@dataclass(frozen=True, slots=True)
class SparkplugTopic:
    """The parts of an edge-node topic; ``device`` is ``None`` for the N* message types."""

    group: str
    message_type: str
    edge_node: str
    device: str | None = None

    def node_topic(self, message_type: str) -> str:
        """The node-level topic of another message type (``NCMD`` for a rebirth request)."""
        return f"{NAMESPACE}/{self.group}/{message_type}/{self.edge_node}"


def parse_topic(topic: str) -> SparkplugTopic | None:
    """``spBv1.0/<group>/<type>/<node>[/<device>]`` -> its parts; ``None`` for anything else.

    >>> parse_topic("spBv1.0/Plant1/DDATA/gw1/plc7")
    SparkplugTopic(group='Plant1', message_type='DDATA', edge_node='gw1', device='plc7')
    >>> parse_topic("spBv1.0/Plant1/DDATA/gw1") is None   # a device message needs a device
    True
    """
    parts = topic.split("/")
    if parts[0] != NAMESPACE or len(parts) not in (4, 5) or not all(parts):
        return None
    mt = parts[2]
    if mt not in MESSAGE_TYPES or (len(parts) == 5) != mt.startswith("D"):
        return None
    return SparkplugTopic(parts[1], mt, parts[3], parts[4] if len(parts) == 5 else None)


# --------------------------------------------------------------------------- wire format


def _varint(b: bytes, i: int, end: int) -> tuple[int, int]:
    """A base-128 varint at ``b[i:end]`` -> (value mod 2**64, next index); at most 10 bytes."""
    v = 0
    for k in range(10):
        if i >= end:
            raise PayloadError("bad_varint", f"varint cut off at byte {i}")
        byte = b[i]
        i += 1
        v |= (byte & 0x7F) << (7 * k)
        if byte < 0x80:
            return v & _MASK64, i
    raise PayloadError("bad_varint", f"varint longer than 10 bytes ending at byte {i}")


def _span(b: bytes, i: int, end: int) -> tuple[int, int]:
    """A length-delimited field's (start, stop), checked against the enclosing message."""
    n, i = _varint(b, i, end)
    if n > end - i:
        raise PayloadError("bad_length", f"field of {n} bytes at byte {i}, only {end - i} left")
    return i, i + n


def _fixed(b: bytes, i: int, end: int, size: int) -> int:
    if end - i < size:
        raise PayloadError("bad_length", f"{size}-byte field at byte {i}, only {end - i} left")
    return i + size


def _tag(b: bytes, i: int, end: int) -> tuple[int, int, int]:
    key, i = _varint(b, i, end)
    field, wire = key >> 3, key & 7
    if field == 0 or field > 0x1FFFFFFF:
        raise PayloadError("bad_field", f"field number {field} at byte {i}")
    if wire not in (_VARINT, _I64, _LEN, _I32):
        # groups (3, 4) are deprecated and unused by Sparkplug; 6 and 7 do not exist
        raise PayloadError(
            "bad_wire_type", f"wire type {wire} ({_WIRE_NAMES.get(wire, 'invalid')}) at byte {i}"
        )
    return field, wire, i


def _skip(b: bytes, i: int, end: int, wire: int) -> int:
    if wire == _VARINT:
        return _varint(b, i, end)[1]
    if wire == _LEN:
        return _span(b, i, end)[1]
    return _fixed(b, i, end, 8 if wire == _I64 else 4)


def _expect(field: int, wire: int, want: int, what: str, at: int) -> None:
    if wire != want:
        raise PayloadError(
            "bad_wire_type",
            f"{what} field {field} is {_WIRE_NAMES[wire]}, expected {_WIRE_NAMES[want]} (byte {at})",
        )


def _text(b: bytes, lo: int, hi: int, what: str) -> str:
    try:
        return b[lo:hi].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise PayloadError(
            "bad_utf8", f"{what} is not UTF-8 ({exc.reason} at byte {lo + exc.start})"
        ) from exc


#: Metric's varint fields below the value oneof: number -> attribute
_METRIC_VARINTS = {
    2: "alias",
    3: "timestamp_ms",
    4: "datatype",
    5: "is_historical",
    6: "is_transient",
    7: "is_null",
}


def _metric(b: bytes, i: int, end: int) -> Metric:
    name: str | None = None
    ints: dict[str, int] = {}
    value: int | float | bool | str | bytes | None = None
    value_field = 0
    while i < end:
        at = i
        field, wire, i = _tag(b, i, end)
        if field == 1:
            _expect(field, wire, _LEN, "Metric.name", at)
            lo, i = _span(b, i, end)
            name = _text(b, lo, i, "metric name")
        elif field in _METRIC_VARINTS:
            _expect(field, wire, _VARINT, f"Metric.{_METRIC_VARINTS[field]}", at)
            ints[_METRIC_VARINTS[field]], i = _varint(b, i, end)
        elif field in (10, 11, 14):
            _expect(field, wire, _VARINT, "Metric value", at)
            v, i = _varint(b, i, end)
            value = bool(v) if field == 14 else v & _MASK32 if field == 10 else v
            value_field = field
        elif field == 12:
            _expect(field, wire, _I32, "Metric.float_value", at)
            j = _fixed(b, i, end, 4)
            value, value_field, i = float(_F32.unpack_from(b, i)[0]), field, j
        elif field == 13:
            _expect(field, wire, _I64, "Metric.double_value", at)
            j = _fixed(b, i, end, 8)
            value, value_field, i = float(_F64.unpack_from(b, i)[0]), field, j
        elif field in (15, 16):
            _expect(field, wire, _LEN, "Metric value", at)
            lo, i = _span(b, i, end)
            value = _text(b, lo, i, "string_value") if field == 15 else bytes(b[lo:i])
            value_field = field
        elif field in (8, 9, 17, 18, 19):
            # metadata, properties, dataset, template, extension: nested messages, skipped whole
            _expect(field, wire, _LEN, "Metric message", at)
            i = _span(b, i, end)[1]
            if field >= 17:
                value, value_field = None, field
        else:
            i = _skip(b, i, end, wire)
    return Metric(
        name=name,
        alias=ints.get("alias"),
        timestamp_ms=ints.get("timestamp_ms"),
        datatype=ints.get("datatype", 0) & _MASK32,
        is_historical=bool(ints.get("is_historical", 0)),
        is_transient=bool(ints.get("is_transient", 0)),
        is_null=bool(ints.get("is_null", 0)),
        value=value,
        value_field=value_field,
    )


def decode_payload(
    data: bytes | bytearray | memoryview, max_bytes: int = MAX_PAYLOAD_BYTES, max_metrics: int = MAX_METRICS
) -> Payload:
    """A Sparkplug B payload -> :class:`Payload`; raises :class:`PayloadError` (and nothing else).

    >>> p = decode_payload(bytes.fromhex("08e80712070a015420035002180b"))
    >>> p.timestamp_ms, p.seq, p.metrics[0].name, p.metrics[0].value
    (1000, 11, 'T', 2)
    """
    b = bytes(data)
    if len(b) > max_bytes:
        raise PayloadError("oversize", f"{len(b)} bytes > {max_bytes}")
    end = len(b)
    i = 0
    ts = seq = None
    uuid: str | None = None
    body: bytes | None = None
    metrics: list[Metric] = []
    while i < end:
        at = i
        field, wire, i = _tag(b, i, end)
        if field in (1, 3):
            _expect(field, wire, _VARINT, "Payload.timestamp" if field == 1 else "Payload.seq", at)
            v, i = _varint(b, i, end)
            if field == 1:
                ts = v
            else:
                seq = v
        elif field == 2:
            _expect(field, wire, _LEN, "Payload.metrics", at)
            lo, i = _span(b, i, end)
            if len(metrics) >= max_metrics:
                raise PayloadError("too_many_metrics", f"more than {max_metrics} metrics")
            metrics.append(_metric(b, lo, i))
        elif field in (4, 5):
            _expect(field, wire, _LEN, "Payload.uuid" if field == 4 else "Payload.body", at)
            lo, i = _span(b, i, end)
            if field == 4:
                uuid = _text(b, lo, i, "uuid")
            else:
                body = b[lo:i]
        else:
            i = _skip(b, i, end, wire)
    return Payload(ts, tuple(metrics), seq, uuid, body)


# --------------------------------------------------------------------------- values


def metric_number(m: Metric, datatype: int | None = None) -> float:
    """The numeric value of a metric, as a float; ``datatype`` overrides the metric's own (DATA
    messages usually omit it and the BIRTH gave it). Booleans read as 0.0 and 1.0.

    Raises :class:`PayloadError` (``null_value``, ``no_value``, ``bad_datatype``, ``bad_value``,
    ``non_finite``).

    >>> metric_number(Metric(datatype=1, value=233, value_field=10))          # Int8 -23
    -23.0
    >>> metric_number(Metric(datatype=2, value=0xFFFFFFA9, value_field=10))   # Int16 -87, sign-extended
    -87.0
    """
    dt = m.datatype if datatype is None or datatype == 0 else datatype
    if m.is_null:
        raise PayloadError("null_value", "metric is null")
    if m.value_field == 0:
        raise PayloadError("no_value", "metric carries no value")
    v = m.value
    name = DATATYPES.get(dt, str(dt))
    if dt in _INT_BITS:
        if m.value_field not in (10, 11) or not isinstance(v, int):
            raise PayloadError("bad_value", f"{name} in value field {m.value_field}")
        bits, signed = _INT_BITS[dt]
        iv = v & ((1 << bits) - 1)
        if signed and iv >> (bits - 1):
            iv -= 1 << bits
        return float(iv)
    if dt in _FLOAT_TYPES:
        if m.value_field not in (12, 13) or not isinstance(v, float):
            raise PayloadError("bad_value", f"{name} in value field {m.value_field}")
        if not math.isfinite(v):
            raise PayloadError("non_finite", f"{name} {v!r}")
        return v
    if dt == _BOOLEAN:
        if m.value_field != 14:
            raise PayloadError("bad_value", f"Boolean in value field {m.value_field}")
        return 1.0 if v else 0.0
    raise PayloadError("bad_datatype", f"datatype {name} is not numeric")


def number_metric(
    datatype: int,
    value: float | bool,
    *,
    name: str | None = None,
    alias: int | None = None,
    timestamp_ms: int | None = None,
    is_historical: bool = False,
) -> Metric:
    """A numeric metric with its value in the field Sparkplug uses for ``datatype`` (two's
    complement for negative integers, in ``int_value`` up to 32 bits, else ``long_value``).

    >>> number_metric(1, -23, name="x").value
    233
    """
    if datatype in _INT_BITS:
        bits, _ = _INT_BITS[datatype]
        raw = int(value) & ((1 << bits) - 1)
        field = 10 if bits <= 32 else 11
        v: int | float | bool = raw
    elif datatype in _FLOAT_TYPES:
        field, v = (12 if datatype == 9 else 13), float(value)
    elif datatype == _BOOLEAN:
        field, v = 14, bool(value)
    else:
        raise ValueError(f"datatype {DATATYPES.get(datatype, datatype)} is not numeric")
    return Metric(name, alias, timestamp_ms, datatype, is_historical, False, False, v, field)


def _put_varint(out: bytearray, v: int) -> None:
    v &= _MASK64
    while v >= 0x80:
        out.append((v & 0x7F) | 0x80)
        v >>= 7
    out.append(v)


def _put_len(out: bytearray, field: int, data: bytes) -> None:
    _put_varint(out, field << 3 | _LEN)
    _put_varint(out, len(data))
    out += data


def _encode_metric(m: Metric) -> bytes:
    out = bytearray()
    if m.name is not None:
        _put_len(out, 1, m.name.encode())
    for field, n in ((2, m.alias), (3, m.timestamp_ms), (4, m.datatype or None)):
        if n is not None:
            _put_varint(out, field << 3)
            _put_varint(out, n)
    for field, flag in ((5, m.is_historical), (6, m.is_transient), (7, m.is_null)):
        if flag:
            out += bytes((field << 3, 1))
    f, v = m.value_field, m.value
    if f in (10, 11, 14):
        _put_varint(out, f << 3)
        _put_varint(out, int(v) & (_MASK32 if f == 10 else _MASK64))  # type: ignore[arg-type]
    elif f in (12, 13):
        _put_varint(out, f << 3 | (_I32 if f == 12 else _I64))
        out += (_F32 if f == 12 else _F64).pack(float(v))  # type: ignore[arg-type]
    elif f == 15:
        _put_len(out, f, str(v).encode())
    elif f == 16:
        _put_len(out, f, bytes(v))  # type: ignore[arg-type]
    elif f:
        raise ValueError(f"cannot encode value field {f}")
    return bytes(out)


def encode_payload(p: Payload) -> bytes:
    """A :class:`Payload` -> protobuf bytes (scalar values only; nested kinds raise ``ValueError``).

    The engine needs it for one message (:func:`rebirth_payload`); tests and simulators use it to
    publish. ``decode_payload(encode_payload(p)) == p`` for every scalar payload.
    """
    out = bytearray()
    if p.timestamp_ms is not None:
        out.append(1 << 3)
        _put_varint(out, p.timestamp_ms)
    for m in p.metrics:
        _put_len(out, 2, _encode_metric(m))
    if p.seq is not None:
        out.append(3 << 3)
        _put_varint(out, p.seq)
    if p.uuid is not None:
        _put_len(out, 4, p.uuid.encode())
    if p.body is not None:
        _put_len(out, 5, p.body)
    return bytes(out)


def rebirth_payload(timestamp_ms: int) -> bytes:
    """The NCMD payload that asks an edge node to publish its BIRTH certificates again."""
    m = Metric("Node Control/Rebirth", None, timestamp_ms, _BOOLEAN, value=True, value_field=14)
    return encode_payload(Payload(timestamp_ms, (m,)))
