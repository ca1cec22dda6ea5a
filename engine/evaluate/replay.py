"""Replay recorded data through the live hot path (buffers, features, scorer, threshold, alarms).

Evaluation calls exactly what ``machinewatch run`` calls: :class:`~machinewatch.engine.hotpath.HotPath`
``ingest`` -> ``features`` -> ``apply``, in data order, with accelerated time (the data carries
its own timestamps) and no look-ahead: a window is scored, and the alarm decided, from the
samples up to its end only.
"""

from __future__ import annotations

__all__ = ["ReplayResult", "replay"]

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

from machinewatch.engine.config import Config
from machinewatch.engine.hotpath import HotPath
from machinewatch.engine.scoring import LearnedModel
from machinewatch.engine.types import Chunk, Window

_BATCH = 512


@dataclass(slots=True)
class ReplayResult:
    """Every scored window of one asset: end time, score, threshold, alarm state after it."""

    t_ns: np.ndarray
    score: np.ndarray
    threshold: np.ndarray
    state: np.ndarray
    learned_at_ns: int | None
    learned: LearnedModel | None
    top: list[tuple[str, ...]] = field(default_factory=list)
    features: np.ndarray = field(default_factory=lambda: np.empty((0, 0)))
    names: tuple[str, ...] = ()
    counters: dict[str, int] = field(default_factory=dict)

    @property
    def alarm(self) -> np.ndarray:
        """True where the alarm state is ALARM."""
        return np.asarray(self.state == "ALARM")


def replay(
    config: Config, chunks: Iterable[Chunk], asset: str, learned: LearnedModel | None = None
) -> ReplayResult:
    """Run ``chunks`` (in time order) through a fresh hot path; collect ``asset``'s scores.

    With ``learned`` the asset monitors from the first window (as after a restart with a
    stored model); otherwise it learns its baseline first, as configured.
    """
    hot = HotPath(config, {asset: learned} if learned is not None else None)
    t, s, th, st, top, fv = [], [], [], [], [], []
    learned_at: int | None = None
    state = hot.alarms[asset].state
    windows: list[Window] = []

    def flush() -> None:
        nonlocal learned_at, state
        out = hot.apply(hot.features(windows))
        windows.clear()
        events = sorted(
            (e for e in out.events if e.asset == asset and e.kind == "machine"), key=lambda e: e.t_ns
        )
        ei = 0
        for sc in out.scores:
            if sc.asset != asset:
                continue
            while ei < len(events) and events[ei].t_ns <= sc.t_ns:
                state = events[ei].to_state
                ei += 1
            t.append(sc.t_ns)
            s.append(sc.score)
            th.append(sc.threshold)
            st.append(state)
            top.append(hot.scorers[asset].top_features(sc.contributions, 2))
            fv.append(sc.features)
        for e in events[ei:]:
            state = e.to_state
        if asset in out.learned and learned_at is None:
            learned_at = next(
                (e.t_ns for e in events if e.to_state == "NORMAL" and e.from_state == "LEARNING"), 0
            )

    for c in chunks:
        windows.extend(hot.ingest(c))
        if len(windows) >= _BATCH:
            flush()
    if windows:
        flush()
    return ReplayResult(
        np.asarray(t, dtype=np.int64),
        np.asarray(s),
        np.asarray(th),
        np.asarray(st, dtype=object),
        learned_at,
        hot.scorers[asset].learned,
        top,
        np.vstack(fv) if fv else np.empty((0, len(hot.scorers[asset].names))),
        hot.scorers[asset].names,
        dict(hot.counters) | hot.buffer_counters(),
    )
