"""Summaries, alarm events and health samples as InfluxDB line protocol (pure, no I/O).

The schema (README, "InfluxDB and Grafana"):

``machinewatch_summary``
    tags ``site``, ``asset``, ``stream``. One point per stream and interval with that stream's
    feature statistics (``rms_min``, ``rms_mean``, ``rms_max`` ..., ``windows``, ``dq_*``), plus
    one *asset-level* point per interval under the fixed stream name :data:`ASSET_STREAM`
    (``"_asset"``) with ``score_min/mean/max``, ``threshold``, ``windows_*``, the alarm state as
    a string field ``state`` and its number ``state_code`` (LEARNING -1, NORMAL 0, WARNING 1,
    ALARM 2). A fixed name rather than an empty tag: InfluxDB drops empty tag values, and a
    named series is easy to select and group by in InfluxQL and PromQL alike.
``machinewatch_alarm``
    tags ``site``, ``asset``, ``stream`` (``"_asset"`` for machine alarms), ``kind``
    (``machine`` / ``quality``); fields ``from_state``, ``to_state``, ``reason``,
    ``top_features`` (comma-separated), ``from_code``, ``to_code``, ``score``, ``threshold``.
``machinewatch_health``
    tag ``site``; numeric engine self-metrics (see :mod:`machinewatch.engine.health`).

Every point also carries the tags given to :func:`encode` as ``tags``: the InfluxDB sink adds
``gateway`` (``engine.gateway_id``), so in a fleet each point says which engine wrote it (README,
"Fleets: scaling out").

Every number is written as a float (never ``i``), so a field never changes type between points
(InfluxDB rejects a write whose field type conflicts). Timestamps are explicit nanoseconds, the
data time of the record, so a replayed write overwrites the same point instead of adding one.
Non-finite fields cannot be sent: they are dropped and counted; a point left without fields, or
with a timestamp outside the sane range, is dropped and counted.

>>> from machinewatch.engine.types import Summary
>>> s = Summary("p 1", "m1", 1_700_000_000_000_000_000, 10.0, "NORMAL", {"state_code": 0.0},
...             {"vib": {"rms_mean": 1.25, "kurtosis_max": float("nan")}})
>>> enc = encode([s], [], now_ns=1_700_000_000_000_000_000)
>>> print("\\n".join(enc.lines))
machinewatch_summary,asset=m1,site=p\\ 1,stream=_asset state_code=0.0,state="NORMAL" 1700000000000000000
machinewatch_summary,asset=m1,site=p\\ 1,stream=vib rms_mean=1.25 1700000000000000000
>>> enc.dropped_fields
1
"""

from __future__ import annotations

__all__ = [
    "ALARM_MEASUREMENT",
    "ASSET_STREAM",
    "HEALTH_MEASUREMENT",
    "MIN_TIME_NS",
    "SUMMARY_MEASUREMENT",
    "Encoded",
    "alarm_point",
    "encode",
    "escape_key",
    "escape_measurement",
    "escape_string",
    "format_line",
    "health_point",
    "summary_points",
    "time_ok",
]

import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from machinewatch.engine.alarm import STATE_CODES
from machinewatch.engine.types import AlarmEvent, Summary

SUMMARY_MEASUREMENT = "machinewatch_summary"
ALARM_MEASUREMENT = "machinewatch_alarm"
HEALTH_MEASUREMENT = "machinewatch_health"
#: the ``stream`` tag of the asset-level summary point and of machine alarms
ASSET_STREAM = "_asset"
#: 2000-01-01T00:00:00Z: anything older is a clock or unit error (seconds or ms taken as ns)
MIN_TIME_NS = 946_684_800_000_000_000
#: default tolerance for timestamps ahead of the wall clock
MAX_FUTURE_S = 86_400.0

_MEAS_ESC = str.maketrans({",": r"\,", " ": r"\ ", "\n": " ", "\r": " ", "\t": " "})
_KEY_ESC = str.maketrans({",": r"\,", "=": r"\=", " ": r"\ ", "\n": " ", "\r": " ", "\t": " "})
_STR_ESC = str.maketrans({"\\": "\\\\", '"': '\\"', "\n": " ", "\r": " "})

# A field, tag or point: (measurement, tags, numeric fields, string fields, time).
Tags = Mapping[str, str]


@dataclass(slots=True)
class Encoded:
    """Lines ready to send, and what could not be sent (counted, never raised)."""

    lines: list[str] = field(default_factory=list)
    #: non-finite field values removed from points
    dropped_fields: int = 0
    #: points dropped because their timestamp was out of range
    dropped_bad_time: int = 0
    #: points dropped because no field was left
    dropped_empty: int = 0


def escape_measurement(name: str) -> str:
    """Escape a measurement name (commas and spaces; control characters become spaces)."""
    return name.translate(_MEAS_ESC)


def escape_key(name: str) -> str:
    r"""Escape a tag key, tag value or field key (commas, ``=``, spaces).

    A trailing backslash would escape the separator after it, so it is doubled.

    >>> escape_key("a b,c=d")
    'a\\ b\\,c\\=d'
    """
    out = name.translate(_KEY_ESC)
    if out.endswith("\\") and not out.endswith("\\\\"):
        out += "\\"
    return out


def escape_string(value: str) -> str:
    r"""A string field value with its quotes (backslash and double quote escaped).

    >>> escape_string('say "hi" \\ ok')
    '"say \\"hi\\" \\\\ ok"'
    """
    return '"' + value.translate(_STR_ESC) + '"'


def time_ok(t_ns: int, now_ns: int, max_future_s: float = MAX_FUTURE_S) -> bool:
    """Whether ``t_ns`` is a plausible data time: after 2000 and at most ``max_future_s`` ahead."""
    return MIN_TIME_NS <= t_ns <= now_ns + int(max_future_s * 1e9)


def _float(v: float) -> str:
    # repr gives the shortest round-tripping form ("0.1", "1e-05", "3.0"), valid line protocol
    return repr(float(v))


def format_line(
    measurement: str,
    tags: Tags,
    fields: Mapping[str, float],
    strings: Mapping[str, str],
    t_ns: int,
) -> tuple[str | None, int]:
    """One line, or ``None`` when no field is left; also the count of non-finite fields dropped.

    Tags with an empty value are left out (InfluxDB ignores them anyway); tags are sorted by key,
    the order InfluxDB stores them in.
    """
    parts = []
    dropped = 0
    for k, v in fields.items():
        fv = float(v)
        if math.isfinite(fv):
            parts.append(f"{escape_key(k)}={_float(fv)}")
        else:
            dropped += 1
    parts.extend(f"{escape_key(k)}={escape_string(v)}" for k, v in strings.items())
    if not parts:
        return None, dropped
    tag_s = "".join(f",{escape_key(k)}={escape_key(v)}" for k, v in sorted(tags.items()) if v)
    return f"{escape_measurement(measurement)}{tag_s} {','.join(parts)} {int(t_ns)}", dropped


def summary_points(s: Summary) -> list[tuple[str, dict[str, str], dict[str, float], dict[str, str], int]]:
    """The points of one summary: the asset-level point first, then one per stream."""
    base = {"asset": s.asset, "site": s.site}
    fields = dict(s.fields)
    fields.setdefault("state_code", float(STATE_CODES.get(s.state, -1)))
    out = [(SUMMARY_MEASUREMENT, base | {"stream": ASSET_STREAM}, fields, {"state": s.state}, s.t_ns)]
    for stream, f in sorted(s.streams.items()):
        out.append((SUMMARY_MEASUREMENT, base | {"stream": stream}, dict(f), {}, s.t_ns))
    return out


def alarm_point(e: AlarmEvent) -> tuple[str, dict[str, str], dict[str, float], dict[str, str], int]:
    """The point of one alarm transition."""
    tags = {"site": e.site, "asset": e.asset, "stream": e.stream or ASSET_STREAM, "kind": e.kind}
    fields = {
        "from_code": float(STATE_CODES.get(e.from_state, -1)),
        "to_code": float(STATE_CODES.get(e.to_state, -1)),
        "score": e.score,
        "threshold": e.threshold,
    }
    strings = {
        "from_state": e.from_state,
        "to_state": e.to_state,
        "reason": e.reason,
        "top_features": ",".join(e.top_features),
    }
    return ALARM_MEASUREMENT, tags, fields, strings, e.t_ns


def health_point(
    site: str, t_ns: int, fields: Mapping[str, float]
) -> tuple[str, dict[str, str], dict[str, float], dict[str, str], int]:
    """The point of one engine self-metrics sample."""
    return HEALTH_MEASUREMENT, {"site": site}, dict(fields), {}, t_ns


def encode(
    summaries: Iterable[Summary],
    events: Iterable[AlarmEvent],
    health: Sequence[tuple[str, int, Mapping[str, float]]] = (),
    *,
    now_ns: int | None = None,
    max_future_s: float = MAX_FUTURE_S,
    tags: Tags | None = None,
) -> Encoded:
    """Line protocol for a batch, with counts of what was dropped.

    ``health`` holds ``(site, t_ns, fields)`` samples. ``now_ns`` (default: the wall clock)
    bounds timestamps from above, with ``max_future_s`` of tolerance. ``tags`` are added to
    every point (a point's own tags win on a clash).
    """
    now = time.time_ns() if now_ns is None else now_ns
    enc = Encoded()
    points = [p for s in summaries for p in summary_points(s)]
    points += [alarm_point(e) for e in events]
    points += [health_point(site, t, f) for site, t, f in health]
    extra = dict(tags or {})
    for meas, point_tags, fields, strings, t_ns in points:
        if not time_ok(t_ns, now, max_future_s):
            enc.dropped_bad_time += 1
            continue
        line, dropped = format_line(meas, {**extra, **point_tags}, fields, strings, t_ns)
        enc.dropped_fields += dropped
        if line is None:
            enc.dropped_empty += 1
        else:
            enc.lines.append(line)
    return enc
