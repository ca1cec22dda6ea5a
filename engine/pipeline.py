"""The async shell: sources -> hot path -> sinks and actuators, under one TaskGroup.

Every queue is bounded. Chunks wait for room (sources are paced or backed by the broker's
buffers), windows the hot path cannot keep up with are shed oldest-first and counted, and
summaries and alarm events go through the durable spool (:mod:`machinewatch.engine.spool`,
``<state_dir>/spool.db``, one cursor per sink): they survive outages, crashes and restarts, and
when the spool reaches ``engine.spool_max_bytes`` the oldest are dropped and counted.
"""

from __future__ import annotations

__all__ = ["Engine", "EngineReport"]

import asyncio
import contextlib
import gc
import logging
import random
import signal
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from machinewatch.connectors.actuators.policy import PolicedActuator
from machinewatch.connectors.base import Actuator, Rejected, Sink, Source, StreamDown
from machinewatch.engine.alarm import AlarmStore, QualityAlarm, atomic_write_json
from machinewatch.engine.config import Config, PluginConfig
from machinewatch.engine.errors import ConnectorError, ModelError, SpoolError
from machinewatch.engine.fitworker import fit_many_in_child
from machinewatch.engine.fleet import mqtt_client_id
from machinewatch.engine.health import HealthSample, HealthServer, engine_metrics, engine_problems
from machinewatch.engine.hotpath import HotPath, Outputs
from machinewatch.engine.learning import ModelStore, restore_models, save_learned
from machinewatch.engine.logutil import RateLimitedLog
from machinewatch.engine.registry import registry
from machinewatch.engine.scoring import LearnedModel
from machinewatch.engine.silence import SilenceClock
from machinewatch.engine.spool import Spool
from machinewatch.engine.status import CommandDir, EngineStatus
from machinewatch.engine.types import AlarmEvent, Chunk, Summary, Window

log = logging.getLogger(__name__)

_STOP = object()
#: at most this many windows go to the worker thread in one call
_BATCH_WINDOWS = 256
#: a batch this small is computed on the loop (a 4096-sample vibration window: ~0.2-0.3 ms):
#: the worker-thread round trip (wake the thread, hand the GIL back and forth, wake the loop)
#: costs more than that on a busy 2-core box and sat in every command's latency (bench/
#: e2e_latency.py stage trace: chunk decoded -> command dispatched, p50 ~6 ms -> ~2 ms)
_INLINE_WINDOWS = 4
_SINK_BATCH = 500


@dataclass(slots=True)
class EngineReport:
    """What a run did (counters) and how it ended."""

    counters: dict[str, int] = field(default_factory=dict)
    wall_s: float = 0.0
    warmup_s: float = 0.0


def _make(group: str, p: PluginConfig, config: Config) -> Any:
    return registry.get(group, p.kind)(p.name, p.options, config)


class Engine:
    """Runs a config until its sources end or :meth:`stop` is called (SIGINT/SIGTERM).

    ``on_outputs`` is called on the loop after every hot-path batch (the demo's live view).
    """

    def __init__(
        self,
        config: Config,
        *,
        on_outputs: Callable[[Outputs], None] | None = None,
        learned: dict[str, LearnedModel] | None = None,
        install_signals: bool = True,
    ) -> None:
        self.config = config
        self.hot = HotPath(config, learned)
        self.hot.defer_fits = config.engine.fit_in_subprocess
        self._fits: set[asyncio.Task[None]] = set()
        #: learning phases waiting for a fit; one child process at a time fits all that wait (each
        #: holds scikit-learn, ~150 MB, and a core: 64 assets that finish learning together must
        #: not start 64 processes on a 2-core gateway)
        self._fit_queue: list[tuple[str, np.ndarray]] = []
        self.models = ModelStore(config.engine.state_dir)
        for name in restore_models(self.hot, self.models):  # a restart monitors at once
            log.info("asset %s: stored model loaded, monitoring", name)
        self.on_outputs = on_outputs
        self.install_signals = install_signals
        self.counters: Counter[str] = Counter()
        self._rl = RateLimitedLog(log)
        self._stop = asyncio.Event()
        self._chunks: asyncio.Queue[Chunk | object] = asyncio.Queue(config.engine.queue_chunks)
        self._windows: deque[Window] = deque()
        self.spool: Spool | None = None
        self.sinks: list[Sink] = []
        self.started_wall = time.time()
        self._closed = asyncio.Event()
        self._sink_wake: dict[str, asyncio.Event] = {}
        self._act_q: asyncio.Queue[tuple[str, bool, AlarmEvent | None] | object] = asyncio.Queue(1024)
        # while the actuator task runs, commands start straight from _dispatch (see _actuate_now)
        self._actuators: dict[str, PolicedActuator] | None = None
        self._act_last: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._act_inflight = 0
        #: when each stream last delivered (monotonic), net of the engine's own stalls; its
        #: tick is the watchdog's period
        self.silence = SilenceClock(0.5, time.monotonic())
        self._closing = False
        # alarm state survives restarts (a latched alarm stays latched); quality alarms per stream
        self.alarm_store = AlarmStore(config.engine.state_dir)
        for name, snap in self.alarm_store.load().items():
            if name in self.hot.alarms:
                self.hot.alarms[name].restore(snap)
        self.quality: dict[str, QualityAlarm] = {
            a.stream_id(s): QualityAlarm(a.alarm.on_delay_windows, a.alarm.off_delay_windows)
            for a in config.assets.values()
            for s in a.streams
        }
        self.commands = CommandDir(config.engine.state_dir)
        self._pending_records: list[Summary | AlarmEvent | HealthSample] = []
        self._pending_alarms: dict[str, Any] | None = None
        self._persist_wake = asyncio.Event()
        self._persist_closing = False

    def stop(self) -> None:
        """Ask the engine to stop: sources stop, the hot path drains, sinks flush."""
        self._stop.set()

    async def run(self) -> EngineReport:
        """Warm up, run every task, and return the counters once everything has stopped."""
        t0 = time.perf_counter()
        report = EngineReport()
        # the kernels load (or compile) in a worker thread while the connectors connect and the
        # first data arrives; the hot path waits for them before its first window
        warm = asyncio.ensure_future(asyncio.to_thread(self.hot.warmup))
        warm.add_done_callback(lambda _: setattr(report, "warmup_s", time.perf_counter() - t0))
        # retrieved here too, so a start that fails elsewhere first (a connector) logs no
        # "exception never retrieved"; the hot path re-raises a failed warm-up
        warm.add_done_callback(lambda f: f.cancelled() or f.exception())
        loop = asyncio.get_running_loop()
        if self.install_signals:
            for sig in (signal.SIGINT, signal.SIGTERM):
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, self.stop)
        cfg = self.config
        sources: list[Source] = [_make("sources", p, cfg) for p in cfg.sources.values()]
        sinks: list[Sink] = [_make("sinks", p, cfg) for p in cfg.sinks.values()]
        actuators: dict[str, Actuator] = {n: _make("actuators", p, cfg) for n, p in cfg.actuators.items()}
        self.sinks = sinks
        async with contextlib.AsyncExitStack() as stack:
            self.spool = Spool(
                cfg.engine.state_dir / "spool.db", [s.name for s in sinks], cfg.engine.spool_max_bytes
            )
            stack.callback(self.spool.close)
            if cfg.engine.http_port:
                await stack.enter_async_context(
                    HealthServer(
                        cfg.engine.http_host,
                        cfg.engine.http_port,
                        lambda: engine_metrics(self),
                        lambda: engine_problems(self, max(300.0, 10 * cfg.engine.summary_interval_s)),
                        {"site": cfg.engine.site, "gateway": cfg.engine.gateway_id},
                    )
                )
            for c in [*sinks, *actuators.values()]:
                await stack.enter_async_context(c)
            gc.freeze()  # the connectors' modules and clients live as long as the run
            async with asyncio.TaskGroup() as tg:
                tg.create_task(self._health_task(), name="health")
                for snk in sinks:
                    self._sink_wake[snk.name] = asyncio.Event()
                    tg.create_task(
                        self._sink_task(snk), name=f"sink.{snk.config.sinks[snk.name].kind}[{snk.name}]"
                    )
                policed = {n: PolicedActuator(a) for n, a in actuators.items()}
                tg.create_task(self._actuator_task(policed), name="actuators")
                tg.create_task(self._watchdog_task(), name="watchdog")
                status = self._status_link(sources)
                if status is not None:
                    tg.create_task(status.run(self._closed), name="status")
                persist = tg.create_task(self._persist_task(), name="persist")
                tg.create_task(self._hot_task(persist, warm), name="hotpath")
                tg.create_task(self._sources_task(sources, stack), name="sources")
            st = self.spool.stats()
            self.counters["spool_dropped_overflow"] = st.dropped_overflow
            self.counters["spool_records_left"] = st.records
            if st.reserve_released:
                self.counters["spool_reserve_released"] = st.reserve_released
        report.counters = dict(self.counters) | {
            f"buffer_{k}": v for k, v in self.hot.buffer_counters().items()
        }
        report.counters |= dict(self.hot.counters)
        report.wall_s = time.perf_counter() - t0
        return report

    async def _sources_task(self, sources: list[Source], stack: contextlib.AsyncExitStack) -> None:
        try:
            async with asyncio.TaskGroup() as tg:
                tasks = []
                for src in sources:
                    await stack.enter_async_context(src)
                    kind = self.config.sources[src.name].kind
                    tasks.append(tg.create_task(self._source_task(src), name=f"source.{kind}[{src.name}]"))
                stopper = tg.create_task(self._stop.wait(), name="stop-watch")
                await asyncio.wait(tasks)
                if not stopper.done():
                    stopper.cancel()
        finally:
            await self._chunks.put(_STOP)

    async def _source_task(self, src: Source) -> None:
        """Move one source's items to the hot path's queue until the source ends or the engine stops.

        The source is awaited directly (no task and ``asyncio.wait`` per item: at thousands of
        messages/s that bookkeeping cost more loop time than the decoding). A stop cancels this
        task only while it waits on the source, never while it hands an item on, so nothing
        the source already yielded is lost.
        """
        me = asyncio.current_task()
        assert me is not None
        it = aiter(src.chunks())
        waiting = False
        stopped = False

        def on_stop(_: object) -> None:
            nonlocal stopped
            if waiting and not stopped:
                stopped = True
                me.cancel()

        stop = asyncio.ensure_future(self._stop.wait())
        stop.add_done_callback(on_stop)
        try:
            while not self._stop.is_set():
                waiting = True
                try:
                    item = await anext(it)
                except StopAsyncIteration:
                    break
                except asyncio.CancelledError:
                    if stopped and me.uncancel() == 0:
                        break  # our own stop, not the task group's cancellation
                    raise
                finally:
                    waiting = False
                if isinstance(item, Rejected):
                    self._rejected(item)
                elif isinstance(item, StreamDown):
                    self._stream_down(item)
                else:
                    self.counters["chunks_in"] += 1
                    self.silence.heard(item.stream_id, time.monotonic())
                    q = self.quality.get(item.stream_id)
                    if q is not None and q.state == "STALE":
                        self._quality_event(item.stream_id, q.data(), item.t0_ns)
                    await self._chunks.put(item)
        finally:
            stop.remove_done_callback(on_stop)
            stop.cancel()
            aclose = getattr(it, "aclose", None)
            if aclose is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(aclose(), 5.0)

    def _rejected(self, item: Rejected) -> None:
        if item.reason == "not_owned":  # another gateway's asset (fleets): not an error
            self.counters["not_owned"] += 1
            return
        self.counters[f"rejected_{item.reason}"] += 1
        self._rl.warning(
            f"{item.where}:{item.reason}",
            "rejected input from %s: %s %s",
            item.where,
            item.reason,
            item.detail,
        )

    def _take_windows(self, chunk: Chunk) -> None:
        cap = self.config.engine.queue_windows
        for w in self.hot.ingest(chunk):
            if len(self._windows) >= cap:
                self._windows.popleft()
                self.counters["windows_shed"] += 1
                self._rl.warning("shed", "hot path behind: shedding oldest windows")
            self._windows.append(w)

    def _ingest(self, item: Chunk | object) -> bool:
        """Buffer one queued chunk; True when it was the end-of-sources marker."""
        if item is _STOP:
            return True
        assert isinstance(item, Chunk)
        self._take_windows(item)
        return False

    async def _hot_task(self, persist: asyncio.Task[None], warm: asyncio.Future[None]) -> None:
        await warm
        # What is alive now (modules, numba dispatchers, buffers, models, connectors) lives for
        # the whole run: take it out of the cyclic collector, so a full (gen-2) collection scans
        # only what the run allocates. A full collection of the warmed-up heap paused the process
        # ~120-200 ms on the 2-core bench box (bench/e2e_stages.py): a latency spike every time
        # one came due in a long run.
        gc.collect()
        gc.freeze()
        log.info("hot path running: kernels warm, heap frozen")
        done = False
        while True:
            if not done and not self._windows:
                done = self._ingest(await self._chunks.get())  # block only when idle
            while not done and not self._chunks.empty() and len(self._windows) < _BATCH_WINDOWS:
                done = self._ingest(self._chunks.get_nowait())
            if not self._windows:
                if done:
                    break
                continue
            batch = [self._windows.popleft() for _ in range(min(_BATCH_WINDOWS, len(self._windows)))]
            if len(batch) <= _INLINE_WINDOWS:
                results = self.hot.features(batch)
            else:
                results = await asyncio.to_thread(self.hot.features, batch)
            out = self.hot.apply(results)
            out.events.extend(self._quality_events(results))
            self._dispatch(out)
        while self._fits and not self._stop.is_set():  # a finite run: its models first, then flush
            await asyncio.wait(set(self._fits))
        for t in list(self._fits):  # stopping: an unfinished fit is learned again after restart
            t.cancel()
        self._dispatch(Outputs(summaries=self.hot.flush()))
        self._persist_closing = True
        self._persist_wake.set()
        await persist  # everything durable before the sinks take their last batch
        self._closing = True
        self._closed.set()
        for name in self._sink_wake:
            self._sink_wake[name].set()
        await self._act_q.put(_STOP)

    def _dispatch(self, out: Outputs) -> None:
        if out.learned:
            self.counters["state_write_errors"] += save_learned(self.hot, self.models, out.learned)
            # the model (and, fitted in this process, scikit-learn) lives from now on: out of the
            # cyclic collector's reach too, so full collections do not scan it; freeze() costs no pause
            gc.freeze()
        if out.fits:
            self._fit_queue.extend(out.fits)
            if not self._fits:
                t = asyncio.get_running_loop().create_task(self._fit_runner(), name="fit")
                self._fits.add(t)
                t.add_done_callback(self._fits.discard)
        for e in out.events:
            log.info("%s %s: %s -> %s (%s)", e.kind, e.asset, e.from_state, e.to_state, e.reason)
            alarm_cfg = self.config.assets[e.asset].alarm
            if e.kind == "quality" and alarm_cfg.safe_state_on_quality:
                # lost or bad data: outputs to their configured safe state; back to what the
                # machine alarm says once the data is good again
                bad = e.to_state != "OK"
                machine_on = self.hot.alarms[e.asset].state == "ALARM"
                for act in alarm_cfg.actuators:
                    safe = bool(self.config.actuators[act].options.get("safe_state", False))
                    self._wish(act, safe if bad else machine_on, e)
                continue
            # outputs move only when ALARM is entered or left, never on other transitions
            if e.kind != "machine" or (e.to_state == "ALARM") == (e.from_state == "ALARM"):
                continue
            for act in alarm_cfg.actuators:
                self._wish(act, e.to_state == "ALARM", e)
        if any(e.kind == "machine" for e in out.events):
            self._save_alarms()
        self._spool_put([*out.summaries, *out.events])
        self.counters["summaries"] += len(out.summaries)
        self.counters["alarm_events"] += len(out.events)
        if self.on_outputs is not None:
            self.on_outputs(out)

    async def _fit_runner(self) -> None:
        """Fit every waiting learning phase in one child process, put the models in place, repeat."""
        while self._fit_queue:
            batch, self._fit_queue = self._fit_queue, []
            jobs = [(a, self.config.assets[a].model, self.hot.scorers[a].names, x) for a, x in batch]
            log.info(
                "fitting %d baseline(s) in a child process: %s", len(jobs), ", ".join(a for a, *_ in jobs)
            )
            res = await fit_many_in_child(jobs)
            for asset, _ in batch:
                r = res[asset]
                if isinstance(r, ModelError):
                    log.error("asset %s: learning the baseline failed, starting over: %s", asset, r)
                learned = None if isinstance(r, ModelError) else r
                self.counters["models_fitted" if learned else "models_fit_failed"] += 1
                self._dispatch(self.hot.install(asset, learned, time.time_ns()))

    def _wish(self, act: str, energised: bool, event: AlarmEvent) -> None:
        """Send one output wish to an actuator (the policy decides whether and when it moves)."""
        if self._actuators is not None:
            self._actuate_now(act, energised, event)
            return
        try:
            self._act_q.put_nowait((act, energised, event))
        except asyncio.QueueFull:
            self.counters["actuator_commands_dropped"] += 1

    def _spool_put(self, records: list[Summary | AlarmEvent | HealthSample]) -> None:
        """Hand records to the persist task, which makes them durable and wakes the sinks."""
        if not records or self.spool is None:
            return
        self._pending_records.extend(records)
        self._persist_wake.set()

    async def _persist_task(self) -> None:
        """Durable writes (spool commits, alarm state) in a worker thread, off the event loop.

        Each is an fsync of a few ms; done inline they would delay the actuator commands and
        the next batch of windows queued behind them. Writes are batched while one is running.
        """
        while True:
            await self._persist_wake.wait()
            self._persist_wake.clear()
            while self._pending_records or self._pending_alarms is not None:
                records, self._pending_records = self._pending_records, []
                alarms, self._pending_alarms = self._pending_alarms, None
                stored = await asyncio.to_thread(self._persist, records, alarms)
                if stored:
                    for wake in self._sink_wake.values():
                        wake.set()
            if self._persist_closing:
                return

    def _persist(
        self, records: list[Summary | AlarmEvent | HealthSample], alarms: dict[str, Any] | None
    ) -> bool:
        """Worker thread: write the alarm snapshots and the spool records; True when records stored."""
        if alarms is not None:
            try:
                self.alarm_store.save_snapshots(alarms)
            except OSError as exc:  # a full disk: alarms.json keeps its last good content
                self.counters["state_write_errors"] += 1
                self._rl.warning("alarm-store", "cannot persist alarm state: %s", exc)
        if not records or self.spool is None:
            return False
        try:
            self.spool.put(records)
        except SpoolError as exc:  # a full or failing disk must not stop monitoring
            self.counters["spool_errors"] += len(records) - exc.stored
            self._rl.warning("spool", "%s", exc)
            return False
        return True

    async def _health_task(self) -> None:
        """Self-metrics into the spool every ``engine.health_interval_s`` until the engine stops."""
        cfg = self.config.engine
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), cfg.health_interval_s)
            if not self._closed.is_set():
                self._spool_put([HealthSample(cfg.site, time.time_ns(), engine_metrics(self))])
                self.counters["health_samples"] += 1  # the spool ledger: summaries + events + these

    async def _sink_task(self, sink: Sink) -> None:
        """Spool -> sink: a batch leaves the spool only once the sink acknowledged it.

        Failed writes are retried whole with capped exponential backoff and jitter (or after
        the server's Retry-After). At stop, a sink that cannot write leaves its records in the
        spool for the next start: nothing is lost.
        """
        assert self.spool is not None
        spool = self.spool
        wake = self._sink_wake[sink.name]
        takes_health = bool(getattr(sink, "accepts_health", False))
        backoff = 0.5
        while True:
            batch = spool.peek(sink.name, _SINK_BATCH)
            if not batch:
                if self._closing:
                    return
                await wake.wait()
                wake.clear()
                continue
            summaries = [r for _, r in batch if isinstance(r, Summary)]
            events = [r for _, r in batch if isinstance(r, AlarmEvent)]
            health = [r for _, r in batch if isinstance(r, HealthSample)]
            try:
                if takes_health and health:
                    write: Any = sink.write  # a sink with accepts_health takes health=
                    await write(summaries, events, health=health)
                elif summaries or events:
                    await sink.write(summaries, events)
            except ConnectorError as exc:
                self.counters["sink_write_errors"] += 1
                self.counters[f"sink_write_errors_{sink.name}"] += 1
                self._rl.warning(f"sink:{sink.name}", "sink %s: %s (retrying)", sink.name, exc)
                if self._closing:
                    left = spool.pending(sink.name)
                    log.warning("sink %s: %d record(s) stay in the spool for the next start", sink.name, left)
                    self.counters["sink_pending_at_stop"] += left
                    return
                retry_after = getattr(exc, "retry_after_s", None)
                delay = retry_after if retry_after is not None else backoff * (0.5 + random.random())
                backoff = min(backoff * 2, 30.0)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), min(delay, 300.0))
                continue
            backoff = 0.5
            try:
                spool.ack(sink.name, batch[-1][0])
            except SpoolError as exc:  # a full disk: the batch is sent again later (same points)
                self.counters["spool_ack_errors"] += 1
                self._rl.warning("spool-ack", "%s", exc)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closed.wait(), 1.0)
                if self._closing:
                    return
                continue
            self.counters[f"sink_written_{sink.name}"] += len(batch)

    async def _actuate(
        self,
        act: PolicedActuator,
        name: str,
        on: bool,
        event: AlarmEvent | None,
        prev: asyncio.Task[None] | None,
    ) -> None:
        try:
            if prev is not None:
                await asyncio.wait([prev])  # keep the order of one output's commands
            await act.set(event.asset if event else "", on, event)
            self.counters["actuations"] += 1
        except ConnectorError as exc:
            self.counters["actuator_errors"] += 1
            self._rl.warning(f"act:{name}", "actuator %s: %s", name, exc)
        finally:
            self._act_inflight -= 1

    def _actuate_now(self, name: str, on: bool, event: AlarmEvent | None) -> None:
        """Start one command now, as a task (no queue hop between the decision and the plant).

        A set() may wait on the plant (an MQTT QoS 1 publish awaits its PUBACK, ~1-3 ms):
        commands of different assets go out concurrently when the connector allows it
        (``concurrent_assets``, e.g. mqtt: one connection per asset), so a command never waits
        for another asset's acknowledgement; one output's commands stay in order (chained).
        At most 1024 commands are in flight; beyond that they are dropped and counted.
        """
        assert self._actuators is not None
        last = self._act_last
        for k in [k for k, t in last.items() if t.done()]:
            last.pop(k).result()  # an unexpected error stops the engine, as before
        if self._act_inflight >= 1024:
            self.counters["actuator_commands_dropped"] += 1
            return
        act = self._actuators[name]
        per_asset = getattr(getattr(act, "inner", act), "concurrent_assets", False)
        key = (name, event.asset if event is not None and per_asset else "")
        self._act_inflight += 1
        last[key] = asyncio.create_task(self._actuate(act, name, on, event, last.get(key)))

    async def _actuator_task(self, actuators: dict[str, PolicedActuator]) -> None:
        self._actuators = actuators
        try:
            while True:
                item = await self._act_q.get()  # commands queued before this task started; _STOP
                if item is _STOP:
                    break
                name, on, event = item  # type: ignore[misc]
                self._actuate_now(name, on, event)
        finally:
            self._actuators = None  # commands after the stop go nowhere, as before
            if self._act_last:
                await asyncio.gather(*self._act_last.values())
            for name, act in actuators.items():
                try:
                    await asyncio.wait_for(act.safe_state(), 5.0)
                except (ConnectorError, TimeoutError) as exc:
                    log.error("actuator %s: safe state failed: %s", name, exc)

    # -- data quality, STALE watchdog, operator commands, alarm persistence ------------------------

    def _quality_event(self, sid: str, d: Any, t_ns: int) -> AlarmEvent | None:
        """Turn a quality decision into an event; dispatched at once when called off the hot path."""
        if d is None:
            return None
        asset, _, stream = sid.partition("/")
        a = self.config.assets[asset]
        self.counters[f"quality_{d.to_state.lower()}"] += 1
        e = AlarmEvent(a.site, asset, t_ns, d.from_state, d.to_state, d.reason, "quality", stream)
        if d.to_state == "OK" and d.from_state == "STALE":
            self._dispatch(Outputs(events=[e]))
            return None
        return e

    def _stream_down(self, item: StreamDown) -> None:
        """A source reported a stream without valid data: STALE now, buffer reset, counted."""
        self.counters[f"stream_down_{item.reason}"] += 1
        q = self.quality.get(item.stream_id)
        if q is None:
            self._rl.warning(f"{item.stream_id}:down", "stream down for unknown stream %s", item.stream_id)
            return
        self._rl.warning(
            f"{item.stream_id}:down", "stream %s down: %s %s", item.stream_id, item.reason, item.detail
        )
        self.hot.buffers[item.stream_id].reset()  # never stitch a window across it
        why = f"source: {item.reason}" + (f" ({item.detail})" if item.detail else "")
        e = self._quality_event(item.stream_id, q.stale(0.0, why), time.time_ns())
        if e is not None:
            self._dispatch(Outputs(events=[e]))

    def _quality_events(self, results: list[Any]) -> list[AlarmEvent]:
        out = []
        for r in results:
            sid = r.window.stream_id
            q = self.quality.get(sid)
            if q is None or q.state == "STALE":
                continue
            e = self._quality_event(sid, q.update(r.flag), r.window.t_end_ns)
            if e is not None:
                out.append(e)
        return out

    def _save_alarms(self) -> None:
        """Snapshot every alarm machine now (on the loop); the persist task writes it."""
        self._pending_alarms = {name: m.snapshot() for name, m in self.hot.alarms.items()}
        self._persist_wake.set()

    def command(self, cmd: dict[str, Any]) -> bool:
        """Apply an operator command (``ack``, ``shelve``, ``unshelve``); True when it changed state."""
        m = self.hot.alarms.get(str(cmd.get("asset")))
        if m is None:
            # in a fleet every gateway of the site gets each command; the owner applies it
            mine = str(cmd.get("asset")) not in self.config.unowned_assets
            self.counters["commands_unknown_asset" if mine else "commands_not_owned"] += 1
            return False
        by = str(cmd.get("by", ""))
        kind = cmd.get("cmd")
        if kind == "ack":
            d = m.acknowledge(by)
        elif kind == "shelve":
            d = m.shelve(float(cmd.get("duration_s", 0.0)), by)
        elif kind == "unshelve":
            d = m.unshelve(f"unshelved by {by}" if by else "unshelved")
        else:
            return False
        self.counters[f"commands_{kind}"] += 1
        if d is None:
            self._save_alarms()
            return False
        a = self.config.assets[str(cmd["asset"])]
        self._dispatch(
            Outputs(events=[AlarmEvent(a.site, a.name, time.time_ns(), d.from_state, d.to_state, d.reason)])
        )
        return True

    def _status_link(self, sources: Sequence[Source] = ()) -> EngineStatus | None:
        for p in self.config.sources.values():
            if p.kind == "mqtt" and p.options.get("status", True):
                site = self.config.engine.site
                return EngineStatus(
                    p.options,
                    site,
                    f"sources.{p.name}",
                    lambda: self.counters,
                    self.command,
                    float(p.options.get("heartbeat_s", 10.0)),
                    gateway=self.config.engine.gateway_id,
                    client_id=mqtt_client_id(p.options, self.config, f"machinewatch-{site}") + "-status",
                    assets=list(self.config.assets),
                    # "online" only once every source listens: a publisher waiting for it loses nothing
                    ready=lambda: asyncio.gather(*(s.ready() for s in sources)),
                )
        return None

    def counters_snapshot(self) -> dict[str, int]:
        """Every counter now (engine, buffers, hot path)."""
        c = dict(self.counters) | {f"buffer_{k}": v for k, v in self.hot.buffer_counters().items()}
        return c | dict(self.hot.counters)

    async def _watchdog_task(self) -> None:
        """Each 0.5 s (monotonic): STALE streams, shelf expiry, command files, counters file."""
        counters_path = self.config.engine.state_dir / "counters.json"
        while not self._closed.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.silence.tick_s)
            now = time.monotonic()
            # a late tick: the engine stood still (the data waiting in the socket is read right
            # after this), so that time is nobody's silence (see machinewatch.engine.silence)
            stalled = self.silence.tick(now)
            if stalled > 1.0:
                self._rl.warning("stall", "engine stalled %.1f s: not counted as silence", stalled)
            for a in self.config.assets.values():
                for s in a.streams.values():
                    sid = a.stream_id(s.name)
                    silent = self.silence.silent_s(sid, now)
                    if silent > s.stale_after_s and self.quality[sid].state != "STALE":
                        d = self.quality[sid].stale(silent)
                        self.hot.buffers[sid].reset()  # never stitch a window across the silence
                        e = self._quality_event(sid, d, time.time_ns())
                        if e is not None:
                            self._dispatch(Outputs(events=[e]))
                m = self.hot.alarms[a.name]
                d2 = m.poll()
                if d2 is not None:
                    self._dispatch(
                        Outputs(
                            events=[
                                AlarmEvent(
                                    a.site, a.name, time.time_ns(), d2.from_state, d2.to_state, d2.reason
                                )
                            ]
                        )
                    )
            for cmd in self.commands.take():
                self.command(cmd)
            self._write_counters(counters_path)
        self._write_counters(counters_path)

    def _write_counters(self, path: Any) -> None:
        """The informative counters file; a failure (a full disk) is counted, never fatal."""
        try:
            atomic_write_json(path, self.counters_snapshot(), fsync=False)
        except OSError as exc:
            self.counters["state_write_errors"] += 1
            self._rl.warning("counters-file", "cannot write %s: %s", path, exc)
