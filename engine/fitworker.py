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

__all__ = ["Job", "fit_in_child", "fit_many_in_child", "main", "read_job", "run_job", "write_job"]

import asyncio
import dataclasses
import itertools
import json
import os
import shutil
import sys
import tempfile
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
    "quantization_scales",
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
    """``python -m machinewatch.engine.fitworker JOB_DIR ...``: fits every job, one after another.

    A job that fails writes ``error.txt`` in its folder and the others go on; the exit code is 0
    when every job was fitted, 3 when some failed, 2 on bad usage.
    """
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python -m machinewatch.engine.fitworker JOB_DIR ...", file=sys.stderr)
        return 2
    try:
        os.nice(10)  # the hot path first: fitting is background work
    except OSError:
        pass
    rc = 0
    for a in args:
        d = Path(a)
        try:
            run_job(d)
        except Exception as exc:
            (d / "error.txt").write_text(
                f"{type(exc).__name__}: {exc}" if not isinstance(exc, ModelError) else str(exc)
            )
            rc = 3
    return rc


def _load(d: Path, names: tuple[str, ...]) -> LearnedModel:
    from machinewatch.models.store import load_model

    sm = load_model(d / "model", names)
    info: dict[str, Any] = {k: v for k, v in sm.manifest.items() if k not in _FILE_KEYS}
    return LearnedModel(sm.model, sm.threshold, info)


#: one fit job: asset, its ``[model]`` settings, feature names, healthy rows
Job = tuple[str, ModelConfig, tuple[str, ...], np.ndarray]


async def fit_many_in_child(
    jobs: list[Job], workdir: Path | None = None, timeout_s: float = 900.0
) -> dict[str, LearnedModel | ModelError]:
    """Fit every job in ONE child process (one scikit-learn import for all of them).

    Returns, per asset, the loaded model (same checks as any model file) or the
    :class:`ModelError` saying why it failed (the child's reason, a timeout, a refused file).
    The job folders are removed either way.
    """
    # job files go to the system temp folder by default, not the state folder: the spool's disk
    # may be small and full (the spool then drops its oldest records to make room)
    base = Path(tempfile.mkdtemp(prefix="machinewatch-fit-")) if workdir is None else workdir
    dirs = {a: base / f"fit-{a}-{os.getpid()}-{next(_jobs)}" for a, *_ in jobs}
    out: dict[str, LearnedModel | ModelError] = {}
    try:
        for asset, model, names, x in jobs:
            shutil.rmtree(dirs[asset], ignore_errors=True)
            await asyncio.to_thread(write_job, dirs[asset], asset, model, names, x)
        env = dict(os.environ)
        for v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
            env.setdefault(v, "1")  # a 2-core gateway: one core stays with the hot path
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "machinewatch.engine.fitworker",
            *(str(d) for d in dirs.values()),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=env,
        )
        try:
            _, err = await asyncio.wait_for(proc.communicate(), timeout_s)
        except (TimeoutError, asyncio.CancelledError) as exc:
            proc.kill()
            await proc.wait()
            if isinstance(exc, asyncio.CancelledError):
                raise
            return {a: ModelError(f"asset {a}: fitting took longer than {timeout_s:.0f} s") for a in dirs}
        for asset, _, names, _ in jobs:
            d = dirs[asset]
            if (d / "error.txt").exists():
                why = (d / "error.txt").read_text().strip()
                out[asset] = ModelError(f"asset {asset}: fitting failed: {why}")
                continue
            try:
                out[asset] = await asyncio.to_thread(_load, d, names)
            except ModelError as exc:
                tail = err.decode(errors="replace")[-2000:].strip() if proc.returncode else ""
                out[asset] = ModelError(
                    f"asset {asset}: fitting failed (exit {proc.returncode}): {exc} {tail}".strip()
                )
        return out
    except OSError as exc:
        return {a: ModelError(f"asset {a}: fit job: {exc}") for a in dirs}
    finally:
        for d in dirs.values():
            shutil.rmtree(d, ignore_errors=True)
        if workdir is None:
            shutil.rmtree(base, ignore_errors=True)


async def fit_in_child(
    asset: str,
    model: ModelConfig,
    names: tuple[str, ...],
    x: np.ndarray,
    workdir: Path,
    timeout_s: float = 900.0,
) -> LearnedModel:
    """Fit one asset in a child process (see :func:`fit_many_in_child`); :class:`ModelError` on failure."""
    res = (await fit_many_in_child([(asset, model, names, x)], workdir, timeout_s))[asset]
    if isinstance(res, ModelError):
        raise res
    return res


if __name__ == "__main__":
    sys.exit(main())
