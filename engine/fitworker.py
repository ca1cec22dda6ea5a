"""Fit an asset's baseline in a child process.

The engine never imports scikit-learn: when an asset's learning phase is complete, its healthy
rows go to ``python -m machinewatch.engine.fitworker JOB_DIR`` (a child process at lower CPU
priority), which fits, calibrates and quantises exactly as :func:`~machinewatch.engine.scoring.fit_for`
does in-process, and writes the model with :func:`~machinewatch.models.store.save_model` (``.npz``
+ JSON manifest with sha256, no pickle). The engine loads it back with the same checks as any
stored model. This keeps scikit-learn's ~65 MB and ~1 s import out of the engine, and the
event loop free while the model is fitted.

A job folder holds ``rows.npy`` (the healthy rows, float64), ``job.json`` (the asset, the
``[model]`` settings and the feature names) and, once done, ``model.npz`` / ``model.json`` or
``error.txt``.
"""

from __future__ import annotations

__all__ = ["fit_in_child", "main", "read_job", "run_job", "write_job"]

import asyncio
import dataclasses
import itertools
import json
import os
import shutil
import sys
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.config import ModelConfig
from machinewatch.engine.errors import ModelError
from machinewatch.engine.scoring import LearnedModel

#: manifest entries that describe the file, not how the model was made
_FILE_KEYS = {
    "schema_version",
    "kind",
    "quantized",
    "params",
    "feature_names",
    "scaler",
    "threshold",
    "arrays",
    "arrays_sha256",
    "arrays_bytes",
    "created_utc",
    "asset",
}
_jobs = itertools.count()


def write_job(d: Path, asset: str, model: ModelConfig, names: tuple[str, ...], x: np.ndarray) -> None:
    """Write one fit job into the (new) folder ``d``."""
    d.mkdir(parents=True)
    np.save(d / "rows.npy", np.asarray(x, dtype=np.float64), allow_pickle=False)
    settings: dict[str, Any] = {
        f.name: getattr(model, f.name)
        for f in dataclasses.fields(model)
        if f.name != "path"  # a model file to load is not a fit setting
    }
    settings["options"] = dict(model.options)
    settings["features"] = list(model.features)
    spec = {"asset": asset, "names": list(names), "model": settings}
    (d / "job.json").write_text(json.dumps(spec))


def read_job(d: Path) -> tuple[str, ModelConfig, tuple[str, ...], np.ndarray]:
    """The job written by :func:`write_job`: asset, model settings, feature names, rows."""
    spec = json.loads((d / "job.json").read_text())
    m = dict(spec["model"])
    m["features"] = tuple(m.get("features", ()))
    model = ModelConfig(**m)
    x = np.load(d / "rows.npy", allow_pickle=False)
    return str(spec["asset"]), model, tuple(spec["names"]), x


def run_job(d: Path) -> Path:
    """Fit the job in ``d`` in this process and save the model as ``d/model``; its manifest path."""
    from machinewatch.engine.hotpath import model_factory
    from machinewatch.engine.scoring import fit_for
    from machinewatch.models.store import save_model

    asset, model, names, x = read_job(d)
    learned = fit_for(model, names, model_factory(model.kind, dict(model.options)), x)
    return save_model(d / "model", learned.model, learned.threshold, asset=asset, **dict(learned.info))


def main(argv: list[str] | None = None) -> int:
    """``python -m machinewatch.engine.fitworker JOB_DIR``: 0 on success, 3 with ``error.txt``."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m machinewatch.engine.fitworker JOB_DIR", file=sys.stderr)
        return 2
    d = Path(args[0])
    try:
        os.nice(10)  # the hot path first: fitting is background work
    except OSError:
        pass
    try:
        run_job(d)
    except ModelError as exc:
        (d / "error.txt").write_text(str(exc))
        return 3
    return 0


def _load(d: Path, names: tuple[str, ...]) -> LearnedModel:
    from machinewatch.models.store import load_model

    sm = load_model(d / "model", names)
    info: dict[str, Any] = {k: v for k, v in sm.manifest.items() if k not in _FILE_KEYS}
    return LearnedModel(sm.model, sm.threshold, info)


async def fit_in_child(
    asset: str,
    model: ModelConfig,
    names: tuple[str, ...],
    x: np.ndarray,
    workdir: Path,
    timeout_s: float = 900.0,
) -> LearnedModel:
    """Fit ``x`` for ``asset`` in a child process and load the result (same checks as any model file).

    Raises :class:`ModelError` when the fit fails (the child's reason), times out, or its file
    is refused. The job folder is removed either way.
    """
    d = workdir / f"fit-{asset}-{os.getpid()}-{next(_jobs)}"
    shutil.rmtree(d, ignore_errors=True)
    try:
        await asyncio.to_thread(write_job, d, asset, model, names, x)
        env = dict(os.environ)
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.setdefault(v, "1")  # a 2-core gateway: one core stays with the hot path
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "machinewatch.engine.fitworker",
            str(d),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except (TimeoutError, asyncio.CancelledError):
            proc.kill()
            await proc.wait()
            raise
        if proc.returncode != 0:
            why = (d / "error.txt").read_text() if (d / "error.txt").exists() else err.decode()[-2000:]
            raise ModelError(f"asset {asset}: fitting failed (exit {proc.returncode}): {why.strip()}")
        return await asyncio.to_thread(_load, d, names)
    except TimeoutError as exc:
        raise ModelError(f"asset {asset}: fitting took longer than {timeout_s:.0f} s") from exc
    except OSError as exc:
        raise ModelError(f"asset {asset}: fit job: {exc}") from exc
    finally:
        shutil.rmtree(d, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
