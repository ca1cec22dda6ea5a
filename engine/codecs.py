"""Payload codecs (pure): MQTT payloads -> :class:`Decoded` samples, and back for publishers.

Three payload forms are understood, told apart by their first bytes:

1. **Binary waveform frame** (the compact form for vibration and current waveforms). A 40-byte
   little-endian header, then the samples::

       offset size type     field
       0      4    bytes    magic  b"MWWF"
       4      1    uint8    version (1)
       5      1    uint8    dtype: 1 = float32, 2 = int16 (value = raw * scale)
       6      2    uint16   channels (interleaved frame by frame; 0 is read as 1)
       8      8    float64  rate_hz (frames per second)
       16     8    int64    t0_ns (Unix time of the first frame, ns)
       24     8    uint64   seq (per-stream sequence number)
       32     4    uint32   n (number of values = frames x channels)
       36     4    float32  scale (int16 only; 1.0 for float32)
       40     n*4 or n*2    samples, little-endian

   ``struct.pack("<4sBBHdqQIf", b"MWWF", 1, 1, 1, 25600.0, t0_ns, seq, n, 1.0) +
   x.astype("<f4").tobytes()`` is a valid frame (see :func:`encode_frame`).

2. **JSON** objects: ``{"t": 1700000000.25, "v": [0.1, 0.2]}`` (a block) or
   ``{"t": 1700000000.25, "value": 42.1}`` (one reading). ``t`` is Unix time in seconds;
   ``t_ns`` (integer ns) may be given instead. Optional ``seq`` (integer) and ``rate_hz``.
   Without ``t`` the receive time is used.

3. **A plain number** in text, as ``mosquitto_pub -m 42.1`` sends.

Everything else raises :class:`~machinewatch.engine.errors.PayloadError` whose ``reason`` is one
of :data:`REASONS` (stable counter keys). Decoding never raises anything else (a hypothesis test
fuzzes that). Arrays returned are fresh, writable, C-contiguous float32: ``np.frombuffer`` gives
read-only views, which would make numba compile a second specialisation on the first real message.
"""

from __future__ import annotations

__all__ = [
    "FRAME_HEADER",
    "FRAME_MAGIC",
    "MAX_PAYLOAD_BYTES",
    "REASONS",
    "Decoded",
    "decode_payload",
    "encode_frame",
    "encode_json",
]

import json
import math
import struct
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from machinewatch.engine.errors import PayloadError

FRAME_MAGIC = b"MWWF"
FRAME_HEADER = struct.Struct("<4sBBHdqQIf")
FRAME_VERSION = 1
DTYPE_F32 = 1
DTYPE_I16 = 2
#: default upper bound of a payload (a 1 M-value float32 frame plus header)
MAX_PAYLOAD_BYTES = 4 * (1 << 20) + FRAME_HEADER.size
#: timestamps outside [2000-01-01, 2100-01-01) are absurd
T_MIN_NS = 946_684_800 * 10**9
T_MAX_NS = 4_102_444_800 * 10**9
_MAX_RATE_HZ = 10e6
_MAX_JSON_VALUES = 1 << 16

#: every reason a payload can be rejected for (stable counter keys)
REASONS = (
    "empty",
    "oversize",
    "bad_magic",
    "bad_version",
    "bad_dtype",
    "bad_length",
    "bad_rate",
    "bad_timestamp",
    "bad_scale",
    "non_finite",
    "bad_json",
    "bad_type",
    "bad_number",
    "too_many_values",
    "bad_channels",
)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One decoded payload. ``t0_ns``/``seq``/``rate_hz`` are ``None`` when the payload had none."""

    values: npt.NDArray[np.float32]
    t0_ns: int | None
    seq: int | None
    rate_hz: float | None
    channels: int = 1
    kind: str = "frame"  # "frame", "json" or "number"


def _check_t(t_ns: int) -> int:
    if not T_MIN_NS <= t_ns < T_MAX_NS:
        raise PayloadError("bad_timestamp", f"t0_ns {t_ns} outside 2000..2100")
    return t_ns


def _finite(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    if x.size and not np.isfinite(x).all():
        raise PayloadError("non_finite", "NaN or infinity in the samples")
    return x


def _decode_frame(p: bytes) -> Decoded:
    if len(p) < FRAME_HEADER.size:
        raise PayloadError("bad_length", f"{len(p)} bytes, shorter than the {FRAME_HEADER.size}-byte header")
    _, version, dtype, channels, rate, t0, seq, n, scale = FRAME_HEADER.unpack_from(p)
    if version != FRAME_VERSION:
        raise PayloadError("bad_version", f"frame version {version}")
    if dtype not in (DTYPE_F32, DTYPE_I16):
        raise PayloadError("bad_dtype", f"dtype code {dtype}")
    width = 4 if dtype == DTYPE_F32 else 2
    if len(p) != FRAME_HEADER.size + n * width:
        held = len(p) - FRAME_HEADER.size
        raise PayloadError("bad_length", f"header says {n} values, payload holds {held} bytes")
    if n == 0:
        raise PayloadError("empty", "frame with no samples")
    channels = channels or 1
    if n % channels:
        raise PayloadError("bad_channels", f"{n} values are not a multiple of {channels} channels")
    if not (math.isfinite(rate) and 0 < rate <= _MAX_RATE_HZ):
        raise PayloadError("bad_rate", f"rate_hz {rate!r}")
    _check_t(t0)
    if dtype == DTYPE_F32:
        x = np.frombuffer(p, dtype="<f4", count=n, offset=FRAME_HEADER.size).astype(np.float32, copy=True)
    else:
        if not (math.isfinite(scale) and scale > 0):
            raise PayloadError("bad_scale", f"int16 scale {scale!r}")
        raw = np.frombuffer(p, dtype="<i2", count=n, offset=FRAME_HEADER.size)
        x = raw.astype(np.float32) * np.float32(scale)
    return Decoded(_finite(x), t0, seq, rate, channels, "frame")


def _json_number(v: object, key: str) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float):
        raise PayloadError("bad_type", f"{key} must be a number, got {type(v).__name__}")
    try:
        f = float(v)
    except OverflowError:
        f = math.inf
    if not math.isfinite(f):
        raise PayloadError("non_finite", f"{key} is {v!r}")
    return f


def _decode_json(p: bytes, max_values: int) -> Decoded:
    try:
        obj = json.loads(p)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise PayloadError("bad_json", str(exc)[:80]) from exc
    if not isinstance(obj, dict):
        raise PayloadError("bad_type", f"JSON payload must be an object, got {type(obj).__name__}")
    t0: int | None = None
    if "t_ns" in obj:
        tn = obj["t_ns"]
        if isinstance(tn, bool) or not isinstance(tn, int):
            raise PayloadError("bad_type", "t_ns must be an integer")
        t0 = _check_t(tn)
    elif "t" in obj:
        t = _json_number(obj["t"], "t")
        if not T_MIN_NS / 1e9 <= t < T_MAX_NS / 1e9:
            raise PayloadError("bad_timestamp", f"t {t!r} s outside 2000..2100")
        t0 = round(t * 1e6) * 1000  # microsecond resolution: a float64 of Unix seconds holds no more
    seq: int | None = None
    if "seq" in obj:
        s = obj["seq"]
        if isinstance(s, bool) or not isinstance(s, int) or s < 0 or s >= 1 << 64:
            raise PayloadError("bad_type", "seq must be a non-negative integer")
        seq = s
    rate: float | None = None
    if "rate_hz" in obj:
        rate = _json_number(obj["rate_hz"], "rate_hz")
        if not 0 < rate <= _MAX_RATE_HZ:
            raise PayloadError("bad_rate", f"rate_hz {rate!r}")
    if "v" in obj:
        v = obj["v"]
        if not isinstance(v, list):
            raise PayloadError("bad_type", f"v must be a list, got {type(v).__name__}")
        if not v:
            raise PayloadError("empty", "v is an empty list")
        if len(v) > max_values:
            raise PayloadError("too_many_values", f"{len(v)} values > {max_values}")
        vals = [_json_number(e, "v[]") for e in v]
    elif "value" in obj:
        vals = [_json_number(obj["value"], "value")]
    else:
        raise PayloadError("bad_type", "JSON object has neither 'v' nor 'value'")
    x = np.asarray(vals, dtype=np.float64)
    if np.abs(x).max() > 3.0e38:
        raise PayloadError("non_finite", "a value overflows float32")
    return Decoded(x.astype(np.float32), t0, seq, rate, 1, "json")


def _decode_number(p: bytes) -> Decoded:
    try:
        text = p.decode("ascii").strip()
        v = float(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise PayloadError("bad_number", f"not a frame, JSON object or number: {p[:24]!r}") from exc
    if not math.isfinite(v) or abs(v) > 3.0e38:
        raise PayloadError("non_finite", f"value {text!r}")
    return Decoded(np.array([v], dtype=np.float32), None, None, None, 1, "number")


def decode_payload(
    payload: bytes | bytearray | memoryview,
    max_bytes: int = MAX_PAYLOAD_BYTES,
    max_json_values: int = _MAX_JSON_VALUES,
) -> Decoded:
    """Decode one payload (binary frame, JSON object or plain number).

    Raises
    ------
    PayloadError
        With ``reason`` in :data:`REASONS` when the payload is malformed.

    Examples
    --------
    >>> decode_payload(b"42.5").values.tolist()
    [42.5]
    >>> d = decode_payload(b'{"t": 1700000000.5, "v": [1, 2]}')
    >>> d.t0_ns, d.values.tolist()
    (1700000000500000000, [1.0, 2.0])
    >>> decode_payload(b'{"value": NaN}')
    Traceback (most recent call last):
    ...
    machinewatch.engine.errors.PayloadError: non_finite: value is nan
    """
    p = bytes(payload)
    if not p:
        raise PayloadError("empty", "empty payload")
    if len(p) > max_bytes:
        raise PayloadError("oversize", f"{len(p)} bytes > {max_bytes}")
    if p[:4] == FRAME_MAGIC:
        return _decode_frame(p)
    head = p.lstrip()[:1]
    if head == b"{":
        return _decode_json(p, max_json_values)
    if head in (b"[", b'"'):
        raise PayloadError("bad_type", "JSON payload must be an object")
    if len(p) > 64:
        raise PayloadError("bad_magic", f"not a frame, JSON object or number: {p[:8]!r}...")
    return _decode_number(p)


def encode_frame(
    values: npt.ArrayLike,
    t0_ns: int,
    seq: int,
    rate_hz: float,
    channels: int = 1,
    dtype: str = "float32",
    scale: float = 1.0,
) -> bytes:
    """A binary waveform frame (the publisher side of :func:`decode_payload`).

    ``dtype="int16"`` stores ``round(values / scale)`` clipped to the int16 range.

    >>> import numpy as np
    >>> f = encode_frame(np.ones(4, np.float32), 1_700_000_000 * 10**9, 7, 25600.0)
    >>> len(f), decode_payload(f).seq
    (56, 7)
    """
    x = np.asarray(values).reshape(-1)
    if dtype == "float32":
        body = x.astype("<f4").tobytes()
        code, scale = DTYPE_F32, 1.0
    elif dtype == "int16":
        body = np.clip(np.rint(x / scale), -32768, 32767).astype("<i2").tobytes()
        code = DTYPE_I16
    else:
        raise ValueError(f"dtype must be float32 or int16, not {dtype!r}")
    return (
        FRAME_HEADER.pack(
            FRAME_MAGIC,
            FRAME_VERSION,
            code,
            channels,
            float(rate_hz),
            int(t0_ns),
            int(seq),
            x.size,
            float(scale),
        )
        + body
    )


def encode_json(values: npt.ArrayLike, t0_ns: int | None = None, seq: int | None = None) -> bytes:
    """A JSON payload ``{"t_ns": .., "seq": .., "v": [...]}`` (slow; for simple devices and tests)."""
    obj: dict[str, object] = {"v": np.asarray(values, dtype=np.float64).reshape(-1).tolist()}
    if t0_ns is not None:
        obj["t_ns"] = int(t0_ns)
    if seq is not None:
        obj["seq"] = int(seq)
    return json.dumps(obj).encode()
