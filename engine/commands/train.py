"""``machinewatch train CONFIG``: fit each asset's model offline from recorded data.

The config's sources (normally ``replay`` sources over recorded healthy files) are read as
fast as possible through the same buffers and feature kernels as ``run``; the asset feature
vectors are collected, the model fitted (float, then int8 with its own threshold, agreement
checked) and stored in the engine's state directory, where ``run`` loads it at start.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.config import Config, load_config
from machinewatch.engine.errors import ModelError
from machinewatch.engine.hotpath import HotPath, model_factory
from machinewatch.engine.learning import ModelStore
from machinewatch.engine.registry import registry
from machinewatch.engine.scoring import fit_for
from machinewatch.engine.types import Chunk, FeatureFrame

NAME = "train"
HELP = "fit the asset models offline from recorded data (the config's sources) and store them"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", type=Path, help="TOML config whose sources replay recorded healthy data")
    p.add_argument("--asset", action="append", help="train only this asset (repeatable)")
    p.add_argument("--max-windows", type=int, default=0, help="use at most this many vectors per asset")
    p.add_argument("--state-dir", type=Path, help="store models here instead of the config's state_dir")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")


class _Bar:
    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.n = 0

    def update(self, vectors: int, chunks: int) -> None:
        self.n += 1
        if self.enabled and self.n % 200 == 0:
            spin = "|/-\\"[(self.n // 200) % 4]
            sys.stderr.write(f"\r{spin} train: {chunks} chunks read, {vectors} asset vectors")
            sys.stderr.flush()

    def done(self, vectors: int, chunks: int) -> None:
        if self.enabled:
            sys.stderr.write(f"\r# train: {chunks} chunks read, {vectors} asset vectors. done\n")


async def _collect(cfg: Config, assets: set[str], limit: int, bar: _Bar) -> dict[str, list[np.ndarray]]:
    hot = HotPath(cfg)
    vectors: dict[str, list[np.ndarray]] = {a: [] for a in assets}
    chunks = 0
    for pc in cfg.sources.values():
        opts: dict[str, Any] = {**pc.options, "speedup": "max"}
        src = registry.get("sources", pc.kind)(pc.name, opts, cfg)
        async with src:
            async for item in src.chunks():
                if not isinstance(item, Chunk):
                    continue
                chunks += 1
                windows = hot.ingest(item)
                if not windows:
                    continue
                for r in hot.features(windows):
                    asset, _, stream = r.window.stream_id.partition("/")
                    if asset not in vectors:
                        continue
                    scorer = hot.scorers[asset]
                    if r.features is None:
                        scorer.invalidate(stream)
                        continue
                    due = scorer.update(
                        FeatureFrame(r.window.stream_id, r.window.t_end_ns, r.features), stream
                    )
                    if due is not None and np.isfinite(due[0]).all():
                        if not limit or len(vectors[asset]) < limit:
                            vectors[asset].append(due[0])
                bar.update(sum(len(v) for v in vectors.values()), chunks)
    bar.done(sum(len(v) for v in vectors.values()), chunks)
    return vectors


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    assets = set(args.asset or cfg.assets)
    unknown = assets - set(cfg.assets)
    if unknown:
        raise ModelError(f"unknown asset(s): {', '.join(sorted(unknown))}")
    bar = _Bar(not args.no_progress)
    vectors = asyncio.run(_collect(cfg, assets, args.max_windows, bar))
    store = ModelStore(args.state_dir or cfg.engine.state_dir)
    hot_names = HotPath(cfg).scorers
    for name in sorted(assets):
        a = cfg.assets[name]
        x = np.vstack(vectors[name]) if vectors[name] else np.empty((0, 0))
        if len(x) < 6:
            raise ModelError(f"asset {name}: only {len(x)} feature vectors in the recorded data; need >= 6")
        m = a.model
        learned = fit_for(m, hot_names[name].names, model_factory(m.kind, dict(m.options)), x)
        path = store.save(name, learned)
        info = learned.info
        extra = ""
        if "agreement" in info:
            agreement = info["agreement"]
            assert isinstance(agreement, int | float)
            extra = (
                f", int8 {info['int8_bytes']} B vs float {info['float_bytes']} B, "
                f"float/int8 agreement {agreement:.4f}"
            )
        print(
            f"asset {name}: {m.kind}{' int8' if m.quantized else ''} fitted on {len(x)} vectors, "
            f"threshold {learned.threshold:.4g}{extra} -> {path}"
        )
    return 0
