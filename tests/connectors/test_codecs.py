"""Payload codecs: round trips, every malformed case by reason, and a fuzz that only PayloadError escapes."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machinewatch.engine.codecs import (
    FRAME_HEADER,
    FRAME_MAGIC,
    REASONS,
    decode_payload,
    encode_frame,
    encode_json,
)
from machinewatch.engine.errors import PayloadError

T0 = 1_700_000_000 * 10**9


def reason(payload: bytes, **kw: int) -> str:
    with pytest.raises(PayloadError) as ei:
        decode_payload(payload, **kw)
    assert ei.value.reason in REASONS
    return ei.value.reason


def test_float32_frame_round_trip_is_writable_float32() -> None:
    x = np.random.default_rng(0).normal(size=1024).astype(np.float32)
    d = decode_payload(encode_frame(x, T0, 41, 25600.0))
    assert (d.t0_ns, d.seq, d.rate_hz, d.channels, d.kind) == (T0, 41, 25600.0, 1, "frame")
    np.testing.assert_array_equal(d.values, x)
    assert d.values.dtype == np.float32 and d.values.flags.writeable and d.values.flags.c_contiguous


def test_int16_frame_applies_scale() -> None:
    x = np.array([0.0, 1.0, -2.5, 3.25], np.float32)
    d = decode_payload(encode_frame(x, T0, 0, 100.0, dtype="int16", scale=0.25))
    np.testing.assert_array_equal(d.values, x)
    assert d.values.flags.writeable


def test_header_layout_is_the_documented_one() -> None:
    frame = encode_frame(np.zeros(3, np.float32), T0, 5, 10.0, channels=3)
    assert FRAME_HEADER.size == 40 and frame[:4] == FRAME_MAGIC
    assert struct.unpack_from("<4sBBHdqQIf", frame) == (FRAME_MAGIC, 1, 1, 3, 10.0, T0, 5, 3, 1.0)


def test_json_forms_and_plain_number() -> None:
    d = decode_payload(b'{"t": 1700000000.25, "v": [1, 2.5], "seq": 3, "rate_hz": 10}')
    assert (d.t0_ns, d.seq, d.rate_hz, d.values.tolist()) == (1_700_000_000_250_000_000, 3, 10.0, [1.0, 2.5])
    d = decode_payload(b'{"t": 1700000000, "value": 42.1}')
    assert d.values.tolist() == [pytest.approx(42.1)] and d.kind == "json"
    d = decode_payload(encode_json([1.0], t0_ns=T0, seq=9))
    assert (d.t0_ns, d.seq) == (T0, 9)
    d = decode_payload(b" 42.1\n")
    assert d.kind == "number" and d.t0_ns is None and d.values.tolist() == [pytest.approx(42.1)]


@pytest.mark.parametrize(
    ("payload", "why"),
    [
        (b"", "empty"),
        (b"x" * 100, "bad_magic"),
        (b"hello", "bad_number"),
        (b"nan", "non_finite"),
        (b"1e999", "non_finite"),
        (b"{not json", "bad_json"),
        (b"[1, 2]", "bad_type"),
        (b'{"v": "abc"}', "bad_type"),
        (b'{"v": []}', "empty"),
        (b'{"v": [1, "2"]}', "bad_type"),
        (b'{"v": [1, true]}', "bad_type"),
        (b'{"value": NaN}', "non_finite"),
        (b'{"value": Infinity}', "non_finite"),
        (b'{"value": 1e39}', "non_finite"),
        (b'{"t": 5, "value": 1}', "bad_timestamp"),
        (b'{"t": 1e300, "value": 1}', "bad_timestamp"),
        (b'{"t_ns": 1.5, "value": 1}', "bad_type"),
        (b'{"seq": -1, "value": 1}', "bad_type"),
        (b'{"rate_hz": 0, "value": 1}', "bad_rate"),
        (b'{"nothing": 1}', "bad_type"),
        (b'{"v": [' + b"1," * 70000 + b"1]}", "too_many_values"),
        (b"\xff\xfe{", "bad_number"),
    ],
)
def test_malformed_payloads_have_a_stable_reason(payload: bytes, why: str) -> None:
    assert reason(payload) == why


def _frame(**kw: object) -> bytes:
    f = dict(magic=FRAME_MAGIC, version=1, dtype=1, channels=1, rate=100.0, t0=T0, seq=0, n=2, scale=1.0)
    f.update(kw)
    head = FRAME_HEADER.pack(*f.values())
    return head + np.ones(2, "<f4").tobytes()


@pytest.mark.parametrize(
    ("frame", "why"),
    [
        (_frame(version=2), "bad_version"),
        (_frame(dtype=9), "bad_dtype"),
        (_frame(n=3), "bad_length"),
        (_frame()[:-1], "bad_length"),
        (FRAME_MAGIC + b"\x01", "bad_length"),
        (_frame(rate=0.0), "bad_rate"),
        (_frame(rate=float("nan")), "bad_rate"),
        (_frame(t0=0), "bad_timestamp"),
        (_frame(t0=-(2**63)), "bad_timestamp"),
        (_frame(channels=3), "bad_channels"),
        (FRAME_HEADER.pack(FRAME_MAGIC, 1, 2, 1, 1.0, T0, 0, 4, 0.0) + b"\0" * 8, "bad_scale"),
        (FRAME_HEADER.pack(FRAME_MAGIC, 1, 1, 1, 1.0, T0, 0, 0, 1.0), "empty"),
        (
            FRAME_HEADER.pack(FRAME_MAGIC, 1, 1, 1, 1.0, T0, 0, 1, 1.0) + np.float32(np.nan).tobytes(),
            "non_finite",
        ),
    ],
)
def test_malformed_frames_have_a_stable_reason(frame: bytes, why: str) -> None:
    assert reason(frame) == why


def test_oversize() -> None:
    assert reason(b"1" * 11, max_bytes=10) == "oversize"


@st.composite
def hostile(draw: st.DrawFn) -> bytes:
    """Random bytes, mutated valid frames, random JSON and number-like text."""
    kind = draw(st.integers(0, 3))
    if kind == 0:
        return draw(st.binary(max_size=200))
    if kind == 1:
        good = bytearray(encode_frame(np.arange(8, dtype=np.float32), T0, 1, 100.0))
        for _ in range(draw(st.integers(1, 4))):
            i = draw(st.integers(0, len(good) - 1))
            good[i] = draw(st.integers(0, 255))
        cut = draw(st.integers(0, len(good)))
        return bytes(good[:cut]) if draw(st.booleans()) else bytes(good)
    if kind == 2:
        leaf = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5)
        val = st.recursive(
            leaf,
            lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=3), c, max_size=3),
            max_leaves=8,
        )
        obj = draw(
            st.dictionaries(
                st.sampled_from(["t", "t_ns", "v", "value", "seq", "rate_hz", "x"]), val, max_size=4
            )
        )
        return json.dumps(obj).encode()
    return draw(st.text(alphabet="0123456789.eE+-_naifINF x", max_size=30)).encode()


@settings(max_examples=800, deadline=None)
@given(hostile())
def test_fuzz_only_payload_error_escapes(payload: bytes) -> None:
    try:
        d = decode_payload(payload)
    except PayloadError as exc:
        assert exc.reason in REASONS
        return
    assert d.values.dtype == np.float32 and d.values.size >= 1 and np.isfinite(d.values).all()
    assert d.values.flags.writeable
