"""Data-quality flags: NaN/inf, flat line (and turning it off), clipping; batch equals per window."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from machinewatch.engine.config import StreamConfig, load_config_text
from machinewatch.engine.errors import ConfigError
from machinewatch.engine.features.base import bit_views, float_extremes
from machinewatch.engine.quality import quality_flag, quality_flags

S = StreamConfig("v", "vibration", 100.0, 8, 8, clip_level=1.0)
CASES = {
    "ok": ([0, 0.1, -0.2, 0.3, 0, 0.5, -0.5, 0.2], None),
    "nan": ([0, np.nan, 0, 0, 0, 0, 0, 0], "nan"),
    "inf": ([0, 0, np.inf, 0, 0, 0, 0, 0], "nan"),
    "flat": ([2.5] * 8, "flatline"),
    "clip": ([1.0, -1.0, 0, 0, 0.1, 0.2, 0, 0], "clipping"),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", sorted(CASES))
def test_flags(case: str, dtype: type) -> None:
    values, flag = CASES[case]
    assert quality_flag(np.array(values, dtype), S) == flag
    assert quality_flags(np.array([values, CASES["ok"][0]], dtype), S) == [flag, None]


def test_negative_flatline_turns_the_check_off() -> None:
    off = dataclasses.replace(S, flatline_p2p=-1.0, clip_level=0.0)
    held = np.full(8, 21.5, np.float32)  # a coarse PLC value holding still for a whole window
    assert quality_flag(held, dataclasses.replace(S, clip_level=0.0)) == "flatline"
    assert quality_flag(held, off) is None
    assert quality_flags(np.stack([held, held]), off) == [None, None]
    assert quality_flag(np.array([np.nan] * 8, np.float32), off) == "nan"  # NaN is still caught


def test_config_accepts_negative_flatline_and_rejects_non_numbers() -> None:
    text = """
[assets.p.streams.t]
kind = "scalar"
rate_hz = 1
window_samples = 10
flatline_p2p = {v}
[sources.s]
kind = "simulator"
"""
    assert load_config_text(text.format(v="-1")).assets["p"].streams["t"].flatline_p2p == -1.0
    with pytest.raises(ConfigError, match=r"assets\.p\.streams\.t\.flatline_p2p"):
        load_config_text(text.format(v='"off"'))


@settings(max_examples=300, deadline=None)
@given(
    st.sampled_from([np.float32, np.float64]).flatmap(
        lambda dt: st.lists(
            st.floats(allow_nan=False, allow_infinity=False, width=32 if dt == np.float32 else 64),
            min_size=1,
            max_size=64,
        ).map(lambda v: np.array(v, dtype=dt))
    )
)
def test_float_extremes_from_bit_patterns_match_numpy(x: np.ndarray) -> None:
    """Min/max from the bit patterns' integer extremes (signs, -0.0, subnormals, both widths)."""
    keys, ukeys = bit_views(x)
    mn, mx = float_extremes(keys.min(), keys.max(), ukeys.min(), ukeys.max(), keys, x)
    assert mn == float(np.min(x)) and mx == float(np.max(x))
    if float(np.min(x)) == 0.0:  # -0.0 and 0.0 compare equal; the sign may be either's
        return
    assert math.copysign(1.0, mn) == math.copysign(1.0, float(np.min(x)))
