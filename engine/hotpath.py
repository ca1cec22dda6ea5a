"""The hot path, synchronous and free of I/O: chunks in, scores, alarm events and summaries out.

The pipeline (:mod:`machinewatch.engine.pipeline`) is the only caller: it feeds chunks with
:meth:`HotPath.ingest`, runs :meth:`HotPath.features` (numba, ``nogil``) in a worker thread on a
batch of windows, then hands the results back to :meth:`HotPath.apply` on the event loop.
"""

from __future__ import annotations

__all__ = ["HotPath", "Outputs", "WindowResult"]

import logging
from collections import Counter, deque
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from machinewatch.engine import features as feats
from machinewatch.engine.alarm import AlarmMachine
from machinewatch.engine.buffers import StreamBuffer
from machinewatch.engine.config import Config
from machinewatch.engine.errors import ModelError
from machinewatch.engine.quality import quality_flags
from machinewatch.engine.registry import registry
from machinewatch.engine.scoring import AssetScorer, LearnedModel
from machinewatch.engine.summary import AssetSummariser
from machinewatch.engine.types import F64, AlarmEvent, Chunk, FeatureFrame, Score, Summary, Window
from machinewatch.models.base import AnomalyModel
from machinewatch.models.kernels import warmup as warm_models

log = logging.getLogger(__name__)


@dataclass(slots=True)
class WindowResult:
    """Features (or the data-quality flag) of one window."""

    window: Window
    features: np.ndarray | None
    flag: str | None


@dataclass(slots=True)
class Outputs:
    """What one :meth:`HotPath.apply` produced."""

    scores: list[Score] = field(default_factory=list)
    events: list[AlarmEvent] = field(default_factory=list)
    summaries: list[Summary] = field(default_factory=list)
    learned: list[str] = field(default_factory=list)
    #: (asset, healthy rows) whose learning phase just completed, to fit elsewhere
    #: (:attr:`HotPath.defer_fits`); the asset keeps its vectors until :meth:`HotPath.install`
    fits: list[tuple[str, np.ndarray]] = field(default_factory=list)


#: vectors kept per asset while its model is fitted elsewhere (scored once it arrives); beyond
#: this the oldest are dropped and counted (``fit_backlog_dropped``)
FIT_BACKLOG = 20_000


def model_factory(kind: str, options: dict[str, object]) -> Callable[[], AnomalyModel]:
    """A zero-argument factory for the registered model ``kind``."""
    cls = registry.get("models", kind)

    def make() -> AnomalyModel:
        m: AnomalyModel = cls(**options)
        return m

    return make


class HotPath:
    """Buffers, kernels, scorers, alarm machines and summarisers of every configured asset."""

    def __init__(self, config: Config, learned: dict[str, LearnedModel] | None = None) -> None:
        self.config = config
        self.counters: Counter[str] = Counter()
        self.buffers: dict[str, StreamBuffer] = {}
        self.extractors: dict[str, feats.FeatureExtractor] = {}
        self._batch_keys: dict[str, Hashable] = {}
        self.scorers: dict[str, AssetScorer] = {}
        self.alarms: dict[str, AlarmMachine] = {}
        self.summarisers: dict[str, AssetSummariser] = {}
        self.speed_hz: dict[str, float] = {}
        self._warned_nonfinite: set[str] = set()
        #: fit completed learning phases elsewhere (the engine: a child process) instead of in
        #: :meth:`apply`; vectors that arrive meanwhile wait in :attr:`backlog`
        self.defer_fits = False
        self.backlog: dict[str, deque[tuple[F64, int]]] = {}
        learned = learned or {}
        for a in config.assets.values():
            names: dict[str, tuple[str, ...]] = {}
            for s in a.streams.values():
                sid = a.stream_id(s.name)
                self.buffers[sid] = StreamBuffer(
                    sid, s.rate_hz, s.window_samples, s.hop_samples, s.channels, s.gap_tolerance_samples
                )
                ex = feats.make_extractor(s, a.machine)
                self.extractors[sid] = ex
                self._batch_keys[sid] = ex.batch_key()
                names[s.name] = tuple(ex.names)
            factory = model_factory(a.model.kind, dict(a.model.options))
            self.scorers[a.name] = AssetScorer(a, names, factory, learned.get(a.name))
            self.alarms[a.name] = AlarmMachine(a.alarm, "NORMAL" if a.name in learned else "LEARNING")
            self.summarisers[a.name] = AssetSummariser(
                a.site, a.name, names, config.engine.summary_interval_s
            )
            self.speed_hz[a.name] = a.machine.shaft_hz or float("nan")

    def warmup(self) -> None:
        """Compile every kernel the configured streams need before the first sample."""
        vibration = []
        for a in self.config.assets.values():
            for s in a.streams.values():
                feats.warmup(s, a.machine)
                quality_flags(np.ones((2, s.window_samples * s.channels), np.float32), s)  # compile
                if s.kind == "vibration":
                    vibration.append((s, a.machine))
        warm_models()
        if vibration and feats.measure_fft_backends(*vibration[0]):
            for sid, ex in self.extractors.items():  # every vibration extractor takes the winner
                if isinstance(ex, feats.VibrationExtractor):
                    ex.use_backend(feats.fft_backend())
                    self._batch_keys[sid] = ex.batch_key()

    def ingest(self, chunk: Chunk) -> list[Window]:
        """Buffer one chunk; return the windows it completes."""
        buf = self.buffers.get(chunk.stream_id)
        if buf is None:
            self.counters["rejected_unknown_stream"] += 1
            return []
        return buf.push(chunk)

    def features(self, windows: list[Window]) -> list[WindowResult]:
        """Quality check and features of a batch of windows (thread-safe: reads config only).

        Windows of streams whose extractors compute alike (:meth:`FeatureExtractor.batch_key`:
        for example vibration streams of the same rate and window on identical bearings) go
        through one batched kernel call: 16 streams completing a window together cost one call
        of 16 windows (~23 us each) instead of 16 calls of one (~50-67 us each).
        """
        out = [WindowResult(w, None, None) for w in windows]
        groups: dict[Hashable, dict[str, list[WindowResult]]] = {}
        for r in out:
            sid = r.window.stream_id
            groups.setdefault(self._batch_keys[sid], {}).setdefault(sid, []).append(r)
        for streams in groups.values():
            # one stack per group and one quality kernel per stream (a contiguous slice), both
            # keeping the GIL: no GIL round trip per window (each can wait a whole switch
            # interval while the loop runs Python)
            all_rs = [r for rs in streams.values() for r in rs]
            stack = feats.stack_windows([r.window.values for r in all_rs])
            i = 0
            for sid, rs in streams.items():
                _, stream = self.config.stream(sid)
                for r, f in zip(rs, quality_flags(stack[i : i + len(rs)], stream), strict=True):
                    r.flag = f
                i += len(rs)
            keep = [i for i, r in enumerate(all_rs) if r.flag is None]
            if not keep:
                continue
            if len(keep) < len(all_rs):
                stack = stack[keep]
            rs = [all_rs[i] for i in keep]
            ex = self.extractors[rs[0].window.stream_id]
            speed = np.array([self.speed_hz[r.window.stream_id.partition("/")[0]] for r in rs])
            res = np.empty((len(rs), len(ex.names)))
            ok = ex.compute_batch(stack, speed, res)
            for i, r in enumerate(rs):
                if ok[i]:
                    r.features = res[i]
                else:
                    r.flag = "nan"
        return out

    def apply(self, results: list[WindowResult]) -> Outputs:
        """Stack features per asset, learn or score, decide alarms, summarise."""
        out = Outputs()
        for r in results:
            asset_name, _, stream = r.window.stream_id.partition("/")
            a = self.config.assets[asset_name]
            scorer = self.scorers[asset_name]
            alarm = self.alarms[asset_name]
            summ = self.summarisers[asset_name]
            t = r.window.t_end_ns
            if r.features is None:
                scorer.invalidate(stream)
                self.counters[f"windows_dq_{r.flag}"] += 1
                s = summ.add_quality(stream, t, r.flag or "nan", alarm.state)
                if s:
                    out.summaries.append(s)
                continue
            if a.streams[stream].kind == "speed" and np.isfinite(r.features[0]):
                self.speed_hz[asset_name] = float(r.features[0])
            s = summ.add_frame(stream, t, r.features, alarm.state)
            if s:
                out.summaries.append(s)
            due = scorer.update(_frame(r, t), stream)
            if due is None:
                continue
            vector, t_ns = due
            if not np.isfinite(vector).all():  # never learn from or score a broken vector
                self.counters["vectors_nonfinite"] += 1
                summ.count("vectors_nonfinite")
                if asset_name not in self._warned_nonfinite:
                    self._warned_nonfinite.add(asset_name)
                    bad = [n for n, v in zip(scorer.names, vector, strict=True) if not np.isfinite(v)]
                    log.warning(
                        "asset %s: not scored while features are NaN/inf: %s (see machinewatch check)",
                        asset_name,
                        ", ".join(bad[:8]),
                    )
                continue
            if asset_name in self.backlog:  # its model is being fitted: score it once it is in
                q = self.backlog[asset_name]
                if len(q) == q.maxlen:
                    self.counters["fit_backlog_dropped"] += 1
                q.append((vector, t_ns))
                continue
            if scorer.learning:
                summ.count("windows_learned")
                if self.defer_fits:
                    x = scorer.collect(vector)
                    if x is not None:
                        self.backlog[asset_name] = deque(maxlen=FIT_BACKLOG)
                        out.fits.append((asset_name, x))
                    continue
                try:
                    fitted = scorer.learn(vector)
                except ModelError as exc:
                    self.counters["learn_failed"] += 1
                    log.error("asset %s: learning the baseline failed, starting over: %s", asset_name, exc)
                    fitted = False
                if fitted:
                    self._count_validation(asset_name, scorer.learned)
                    d = alarm.start_monitoring()
                    out.learned.append(asset_name)
                    out.events.append(_event(a.site, asset_name, t_ns, d.from_state, d.to_state, d.reason))
                continue
            self._score(asset_name, vector, t_ns, out)
        return out

    def _score(self, asset_name: str, vector: F64, t_ns: int, out: Outputs) -> None:
        """Score one asset vector, count it, summarise it and move the alarm."""
        scorer = self.scorers[asset_name]
        alarm = self.alarms[asset_name]
        sc = scorer.score(vector, t_ns)
        self.counters["windows_scored"] += 1
        out.scores.append(sc)
        self.summarisers[asset_name].add_score(sc.score, sc.threshold)
        dec = alarm.update(sc.score, sc.threshold)
        if dec is not None:
            top = scorer.top_features(sc.contributions)
            out.events.append(
                _event(
                    self.config.assets[asset_name].site,
                    asset_name,
                    t_ns,
                    dec.from_state,
                    dec.to_state,
                    f"{dec.reason}; top: {', '.join(top)}",
                    sc.score,
                    sc.threshold,
                    top,
                )
            )

    def _count_validation(self, asset_name: str, learned: LearnedModel | None) -> None:
        """Warn and count (``models_agreement_failed``) when a fit's int8 form failed validation.

        :func:`~machinewatch.engine.scoring.fit_baseline` then returned the float form: the asset
        monitors, never with an int8 model whose decisions were not checked, and never silently.
        """
        if learned is None or not learned.info.get("int8_rejected"):
            return
        self.counters["models_agreement_failed"] += 1
        got, need = (learned.info.get(k) for k in ("agreement", "min_agreement"))
        log.warning(
            "asset %s: int8 model failed validation: float/int8 decision agreement %s < "
            "model.min_agreement %s on the healthy learning windows; scoring with the float model",
            asset_name,
            f"{got:.4f}" if isinstance(got, float) else got,
            f"{need:.4f}" if isinstance(need, float) else need,
        )

    def install(self, asset_name: str, learned: LearnedModel | None, t_ns: int) -> Outputs:
        """Put a model fitted elsewhere in place and score the vectors that waited for it.

        ``learned`` None means the fit failed: the waiting vectors start the learning over.
        The backlog's scores count in the summary interval open now (not their own).
        """
        out = Outputs()
        q = self.backlog.pop(asset_name, deque())
        scorer = self.scorers[asset_name]
        if learned is None:
            self.counters["learn_failed"] += 1
            for vector, _ in q:
                x = scorer.collect(vector)
                if x is not None:  # enough waited for a whole learning phase: fit again
                    self.backlog[asset_name] = deque(maxlen=FIT_BACKLOG)
                    out.fits.append((asset_name, x))
            return out
        self._count_validation(asset_name, learned)
        scorer.learned = learned  # one reference assignment: atomic for the scoring path
        d = self.alarms[asset_name].start_monitoring()
        a = self.config.assets[asset_name]
        t0 = q[0][1] if q else t_ns
        out.events.append(_event(a.site, asset_name, t0, d.from_state, d.to_state, d.reason))
        out.learned.append(asset_name)
        for vector, t in q:
            self._score(asset_name, vector, t, out)
        return out

    def flush(self) -> list[Summary]:
        """Summaries of every open interval (at stop)."""
        out = []
        for name, summ in self.summarisers.items():
            s = summ.flush(self.alarms[name].state)
            if s:
                out.append(s)
        return out

    def buffer_counters(self) -> dict[str, int]:
        """Buffer counters summed over streams."""
        total: Counter[str] = Counter()
        for b in self.buffers.values():
            for k in b.counters.__slots__:
                total[k] += getattr(b.counters, k)
        return dict(total)


def _frame(r: WindowResult, t_ns: int) -> FeatureFrame:
    assert r.features is not None
    return FeatureFrame(r.window.stream_id, t_ns, r.features)


def _event(
    site: str,
    asset: str,
    t_ns: int,
    frm: str,
    to: str,
    reason: str,
    score: float = float("nan"),
    threshold: float = float("nan"),
    top: tuple[str, ...] = (),
) -> AlarmEvent:
    return AlarmEvent(site, asset, t_ns, frm, to, reason, "machine", "", score, threshold, top)
