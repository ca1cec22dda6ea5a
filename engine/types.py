"""The small typed records that flow through the engine (see DESIGN.md, "Data flow")."""

from __future__ import annotations

__all__ = ["AlarmEvent", "Chunk", "FeatureFrame", "Score", "Summary", "Window"]

from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True, slots=True)
class Chunk:
    """A block of samples from one stream.

    ``stream_id`` is ``"<asset>/<stream>"``. ``values`` is 1-D float32; a stream with
    ``channels > 1`` interleaves its channels frame by frame (``a0 b0 c0 a1 b1 c1 ...``).
    Scalar readings are chunks of one frame.
    """

    stream_id: str
    t0_ns: int
    rate_hz: float
    seq: int
    values: F32


@dataclass(frozen=True, slots=True)
class Window:
    """``size`` consecutive frames of one stream, gap-free, ready for feature extraction.

    ``values`` has shape ``(size,)`` for one channel and ``(size, channels)`` otherwise.
    """

    stream_id: str
    t0_ns: int
    t_end_ns: int
    rate_hz: float
    values: F32


@dataclass(frozen=True, slots=True)
class FeatureFrame:
    """The features of one window, in the stream's fixed feature order."""

    stream_id: str
    t_ns: int
    values: F64
    ok: bool = True  # False when the window held NaN/inf (its features are not scored)


@dataclass(frozen=True, slots=True)
class Score:
    """One scored asset feature vector."""

    asset: str
    t_ns: int
    score: float
    threshold: float
    contributions: F64
    features: F64


@dataclass(frozen=True, slots=True)
class AlarmEvent:
    """One alarm state transition of an asset (or of one of its streams, for data quality)."""

    site: str
    asset: str
    t_ns: int
    from_state: str
    to_state: str
    reason: str
    kind: str = "machine"  # "machine" or "quality"
    stream: str = ""
    score: float = float("nan")
    threshold: float = float("nan")
    top_features: tuple[str, ...] = ()


@dataclass(slots=True)
class Summary:
    """Per-asset, per-interval aggregate that goes to the sinks.

    ``fields`` holds the asset-level numbers (``score_max``, ``threshold``, ``windows_scored``
    ...); ``streams`` maps each stream name to its own fields (``rms_min``, ``rms_mean``,
    ``rms_max`` ...). ``state`` is the alarm state at the end of the interval. ``t_ns`` is
    the end of the interval (data time), which makes a replayed write overwrite, not duplicate.
    """

    site: str
    asset: str
    t_ns: int
    interval_s: float
    state: str
    fields: dict[str, float] = field(default_factory=dict)
    streams: dict[str, dict[str, float]] = field(default_factory=dict)
