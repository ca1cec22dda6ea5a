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
import zipfile
from pathlib import Path

import numpy as np

# the replay source's own readers of file headers (private), so the row counts are of the rows
# it will read: a header or a variable picked the same way
from machinewatch.connectors.sources.replay import (
    FileSpec,
    ReplaySource,
    _csv_layout,
    _mat_variables,
    _pick_variable,
)
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


def _file_rows(spec: FileSpec) -> int:
    """Rows (samples) of one replay file, read cheaply: a CSV's line count, an array's header."""
    kind = spec.kind
    if kind == "csv":
        lines, last = 0, b"\n"
        with open(spec.path, "rb") as fh:
            while block := fh.read(1 << 20):
                lines += block.count(b"\n")
                last = block[-1:]
        return lines + (last != b"\n") - int(_csv_layout(spec)[1])
    if kind == "npy":
        shape = np.load(spec.path, mmap_mode="r", allow_pickle=False).shape
    elif kind == "npz":
        with zipfile.ZipFile(spec.path) as zf:
            names = [n.removesuffix(".npy") for n in zf.namelist()]
            with zf.open(_pick_variable(names, spec.variable, spec.path) + ".npy") as fh:
                version = np.lib.format.read_magic(fh)
                read = np.lib.format.read_array_header_1_0
                if version != (1, 0):
                    read = np.lib.format.read_array_header_2_0
                shape = read(fh)[0]
    else:
        variables = _mat_variables(spec.path)
        shape = dict(variables)[_pick_variable([n for n, _ in variables], spec.variable, spec.path)]
    # a MATLAB vector may be stored as one row
    return int(max(shape) if len(shape) == 2 and 1 in shape else shape[0])


def expected_chunks(sources: list[object]) -> int | None:
    """Chunks the given sources will yield, known up front for ``replay`` sources.

    Counted from each file's rows, its ``decimate`` and the frames per chunk; ``None`` for
    any other source kind or a file that cannot be sized (the bar then shows counts only).
    Gaps in a file start extra chunks, so the real count may exceed it by a few.
    """
    total = 0
    for src in sources:
        files = getattr(src, "files", None)
        if not isinstance(src, ReplaySource) or not files:
            return None
        for spec in files:
            try:
                rows = _file_rows(spec)
            except (OSError, ValueError, KeyError):
                return None
            frames = -(-max(rows, 0) // spec.decimate)
            total += -(-frames // spec.frames_per_chunk)
    return total


class _Bar:
    """Progress on stderr: a bar with the chunk total when it is known, else running counts."""

    WIDTH = 30

    def __init__(self, enabled: bool, total: int | None = None, every: int = 200) -> None:
        self.enabled = enabled
        self.total = total
        self.every = every
        self.n = 0

    def _line(self, vectors: int, chunks: int) -> str:
        if not self.total:
            return f"train: {chunks} chunks read, {vectors} asset vectors"
        frac = min(1.0, chunks / self.total)
        filled = round(frac * self.WIDTH)
        bar = "#" * filled + "." * (self.WIDTH - filled)
        return f"train [{bar}] {frac:4.0%} {chunks}/{self.total} chunks, {vectors} asset vectors"

    def update(self, vectors: int, chunks: int) -> None:
        self.n += 1
        if self.enabled and self.n % self.every == 0:
            spin = "" if self.total else "|/-\\"[(self.n // self.every) % 4] + " "
            sys.stderr.write(f"\r{spin}{self._line(vectors, chunks)}")
            sys.stderr.flush()

    def done(self, vectors: int, chunks: int) -> None:
        if self.enabled:
            if self.total:
                self.total = max(self.total, chunks)  # gaps made more chunks than counted
            sys.stderr.write(f"\r{self._line(vectors, chunks)}. done\n")


async def _collect(cfg: Config, assets: set[str], limit: int, progress: bool) -> dict[str, list[np.ndarray]]:
    hot = HotPath(cfg)
    vectors: dict[str, list[np.ndarray]] = {a: [] for a in assets}
    chunks = n_vectors = 0
    sources = [
        registry.get("sources", pc.kind)(pc.name, {**pc.options, "speedup": "max"}, cfg)
        for pc in cfg.sources.values()
    ]
    bar = _Bar(progress, expected_chunks(sources) if progress else None)
    for src in sources:
        async with src:
            async for item in src.chunks():
                if not isinstance(item, Chunk):
                    continue
                chunks += 1
                bar.update(n_vectors, chunks)
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
                            n_vectors += 1
    bar.done(n_vectors, chunks)
    return vectors


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    assets = set(args.asset or cfg.assets)
    unknown = assets - set(cfg.assets)
    if unknown:
        raise ModelError(f"unknown asset(s): {', '.join(sorted(unknown))}")
    vectors = asyncio.run(_collect(cfg, assets, args.max_windows, not args.no_progress))
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
            if info.get("int8_rejected"):
                extra += f" < model.min_agreement {m.min_agreement:g}: int8 rejected, float model stored"
        print(
            f"asset {name}: {m.kind}{' int8' if m.quantized else ''} fitted on {len(x)} vectors, "
            f"threshold {learned.threshold:.4g}{extra} -> {path}"
        )
    return 0
