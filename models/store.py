"""Model files without pickle: arrays in ``.npz`` plus a JSON manifest with their sha256.

A model saved at ``<path>`` is two files, ``<path>.npz`` (arrays only, read with
``allow_pickle=False``) and ``<path>.json`` (the manifest: schema version, model kind, int8 or
float, parameters, feature names in order, scaler, quantisation scales (int8 forms: a summary
per scale array, the arrays themselves are in the ``.npz``), threshold, training set size and
hash, float-vs-int8 agreement, creation time, and the sha256 of the ``.npz`` bytes). Loading refuses
a pickle, a hash mismatch or a feature list that differs from the running config, each with
a :class:`~machinewatch.engine.errors.ModelError` that says which.

Writes are atomic (temporary file, fsync, ``os.replace``), the ``.npz`` before the manifest,
so a power cut leaves either the old model or the new one, never a mix the hash would accept.
"""

from __future__ import annotations

__all__ = ["SCHEMA_VERSION", "StoredModel", "array_hash", "load_model", "save_model", "scale_summary"]

import hashlib
import io
import json
import os
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.errors import ModelError
from machinewatch.models.base import AnomalyModel

#: bumped only when a file of the old version would be read wrongly; optional manifest entries
#: added since (``quantization_scales``) are for people and never read, so files without them load
SCHEMA_VERSION = 1
_PICKLE_MAGIC = (b"\x80", b"(", b"c", b"]", b"}")


@dataclass(slots=True)
class StoredModel:
    """A loaded (or about to be saved) model with its threshold and manifest."""

    model: AnomalyModel
    threshold: float
    manifest: dict[str, Any] = field(default_factory=dict)


def array_hash(x: np.ndarray) -> str:
    """sha256 of a training matrix (shape, dtype and bytes), to tell which data made a model."""
    a = np.ascontiguousarray(x)
    h = hashlib.sha256(f"{a.shape}{a.dtype.str}".encode())
    h.update(a.tobytes())
    return h.hexdigest()


def _paths(path: str | os.PathLike[str]) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".npz", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".npz"), p.with_name(p.name + ".json")


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError:
        tmp.unlink(missing_ok=True)  # a full disk: no half-written file left to eat it
        raise


def save_model(path: str | os.PathLike[str], model: AnomalyModel, threshold: float, **meta: Any) -> Path:
    """Write ``model`` (fitted) and its threshold; ``meta`` adds manifest entries.

    Returns the manifest path. ``meta`` may hold ``training_rows``, ``training_sha256``,
    ``agreement`` (float-vs-int8 decision agreement) and anything JSON-able.
    """
    arrays = model.get_arrays()
    buf = io.BytesIO()
    # model arrays are numeric: no pickled objects in a model file (and the name cannot clash)
    np.savez(buf, allow_pickle=False, **arrays)
    data = buf.getvalue()
    npz, man = _paths(path)
    npz.parent.mkdir(parents=True, exist_ok=True)
    scaler = {k: np.asarray(arrays[k], dtype=np.float64).tolist() for k in ("center", "scale") if k in arrays}
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "kind": model.kind,
        "quantized": model.quantized,
        "params": model.params,
        "feature_names": list(model.feature_names_),
        "scaler": scaler,
        "quantization_scales": scale_summary(model),
        "threshold": float(threshold),
        "arrays": {k: {"dtype": v.dtype.str, "shape": list(v.shape)} for k, v in arrays.items()},
        "arrays_sha256": hashlib.sha256(data).hexdigest(),
        "arrays_bytes": int(sum(v.nbytes for v in arrays.values())),
        "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **meta,
    }
    _write_atomic(npz, data)
    _write_atomic(man, (json.dumps(manifest, indent=1, default=_json_default) + "\n").encode())
    return man


def scale_summary(model: AnomalyModel) -> dict[str, dict[str, Any]]:
    """A readable summary of the model's quantisation scales (``{}`` for a float model).

    Per array named in ``scale_arrays``: its shape and the min, median and max scale (one
    scale per output channel; the arrays themselves are in the ``.npz``).
    """
    out: dict[str, dict[str, Any]] = {}
    arrays = model.get_arrays()
    for name in model.scale_arrays:
        a = np.asarray(arrays[name], dtype=np.float64)
        out[name] = {
            "shape": list(a.shape),
            "min": float(a.min()) if a.size else None,
            "median": float(np.median(a)) if a.size else None,
            "max": float(a.max()) if a.size else None,
        }
    return out


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON-able: {type(o).__name__}")


def load_model(path: str | os.PathLike[str], feature_names: tuple[str, ...] | None = None) -> StoredModel:
    """Read a model saved by :func:`save_model`; check its hash and (if given) its features."""
    from machinewatch.engine.registry import registry  # models are found by kind, like the engine does

    npz, man = _paths(path)
    try:
        manifest = json.loads(man.read_text())
        data = npz.read_bytes()
    except FileNotFoundError as exc:
        raise ModelError(f"model file missing: {exc.filename}") from exc
    except (OSError, ValueError) as exc:
        raise ModelError(f"model manifest {man} unreadable: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ModelError(f"model manifest {man} is not a JSON object")
    if data[:1] in _PICKLE_MAGIC or not data.startswith(b"PK"):
        raise ModelError(
            f"refusing {npz}: not a plain .npz archive (a pickle?); model files hold arrays only"
        )
    if manifest.get("schema_version") != SCHEMA_VERSION:
        raise ModelError(
            f"{man}: schema_version {manifest.get('schema_version')!r}, expected {SCHEMA_VERSION}"
        )
    digest = hashlib.sha256(data).hexdigest()
    if digest != manifest.get("arrays_sha256"):
        raise ModelError(
            f"{npz}: sha256 mismatch (file {digest[:12]}, manifest "
            f"{str(manifest.get('arrays_sha256'))[:12]}): the model file is damaged or was altered"
        )
    names = tuple(manifest.get("feature_names", ()))
    if feature_names is not None and tuple(feature_names) != names:
        missing = [n for n in feature_names if n not in names]
        extra = [n for n in names if n not in feature_names]
        raise ModelError(
            f"{man}: model features differ from the config's ({len(names)} in the model, "
            f"{len(feature_names)} configured; missing {missing[:5]}, unexpected {extra[:5]}"
            + ("; same names, other order" if not missing and not extra else "")
            + "): retrain the model"
        )
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, zipfile.BadZipFile, OSError) as exc:
        raise ModelError(f"refusing {npz}: {exc}") from exc
    cls = registry.get("models", str(manifest.get("kind")))
    if manifest.get("quantized"):
        if cls.quantized_class is None:
            raise ModelError(f"{man}: model kind {manifest.get('kind')!r} has no int8 form")
        cls = cls.quantized_class
    params = manifest.get("params") or {}
    model = cls(**params).set_arrays(arrays, names)
    return StoredModel(model, float(manifest["threshold"]), manifest)
