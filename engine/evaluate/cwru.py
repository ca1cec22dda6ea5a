"""CWRU bearing data: detection through the live path and a rule-based envelope diagnosis.

The 48 kHz healthy record is decimated to 12 kHz (``scipy.signal.decimate``, an anti-alias
FIR, zero phase over the whole record: the recorded file is resampled once before replay,
the way a gateway would configure its acquisition rate) so that the detector cannot tell the
files apart by sample rate. The asset learns on the first half of the healthy record, then the
second half and every fault file are replayed with that model. Windows of 4096 samples
(0.34 s), hop 1024.

Diagnosis is a rule on the envelope fault-order features, not a classifier trained on these
labels: per file, the median over its windows of ``env_bpfo``, ``env_bpfi`` and ``env_bsf2``
(each a line-to-floor ratio of the squared-envelope spectrum at the fault order; the outer
race also by its 2nd harmonic; not the inner race's 2nd harmonic, 10.83x, which sits on the
outer race's 3rd, 10.75x, within the slip tolerance, for any ball bearing with ``d/D ~ 0.2``);
the largest names the fault if it stands out
(``>= DIAG_MIN_RATIO``), else ``unknown``.
"""

from __future__ import annotations

__all__ = ["DIAG_MIN_RATIO", "diagnose", "evaluate_cwru", "read_bearing"]

import csv
import tomllib
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.config import (
    AlarmConfig,
    AssetConfig,
    BearingGeometry,
    Config,
    EngineConfig,
    MachineConfig,
    ModelConfig,
    StreamConfig,
)
from machinewatch.engine.errors import MachinewatchError
from machinewatch.engine.evaluate.metrics import roc_auc
from machinewatch.engine.evaluate.replay import replay
from machinewatch.engine.types import Chunk

RATE_HZ = 12000.0
WINDOW = 4096
HOP = 1024
DIAG_MIN_RATIO = 3.0
_DIAG = {"outer_race": ("env_bpfo", "env_bpfo_h2"), "inner_race": ("env_bpfi",), "ball": ("env_bsf2",)}


def read_bearing(path: Path) -> BearingGeometry:
    """Bearing geometry from a ``BEARING.toml`` (mm or inch keys)."""
    t = tomllib.loads(Path(path).read_text())
    unit = 25.4 if "ball_diameter_in" in t else 1.0
    sfx = "in" if unit != 1.0 else "mm"
    return BearingGeometry(
        int(t["balls"]),
        float(t[f"ball_diameter_{sfx}"]) * unit,
        float(t[f"pitch_diameter_{sfx}"]) * unit,
        float(t.get("contact_angle_deg", 0.0)),
    )


def _config(bearing: BearingGeometry, shaft_hz: float, opts: dict[str, Any], learn: int) -> Config:
    s = StreamConfig("de", "vibration", RATE_HZ, WINDOW, HOP, units="g")
    a = AssetConfig(
        name="cwru",
        site="eval",
        description="CWRU drive end",
        primary_stream="de",
        streams={"de": s},
        machine=MachineConfig(shaft_hz=shaft_hz, bearing=bearing),
        model=ModelConfig(
            kind=opts["model"],
            learn_windows=learn,
            quantized=bool(opts["quantized"]),
            # the int8 figures are of the int8 form: no float fallback (min_agreement)
            min_agreement=0.0,
            threshold_quantile=opts["threshold_quantile"],
            threshold_margin=opts["threshold_margin"],
        ),
        alarm=replace(AlarmConfig(), on_delay_windows=opts["on_delay_windows"], off_delay_windows=3),
    )
    return Config(EngineConfig(), {"cwru": a}, {}, {}, {})


def _chunks(x: np.ndarray, chunk: int = HOP) -> Iterator[Chunk]:
    for i in range(0, len(x) - chunk + 1, chunk):
        yield Chunk(
            "cwru/de", round(i * 1e9 / RATE_HZ), RATE_HZ, i // chunk, x[i : i + chunk].astype(np.float32)
        )


def _n_windows(n: int) -> int:
    return max(0, (n // HOP * HOP - WINDOW) // HOP + 1)


def diagnose(features: np.ndarray, names: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """Fault type from the median envelope line ratios of a file's windows (see module doc)."""
    strength: dict[str, float] = {}
    for fault, cols in _DIAG.items():
        vals = [np.nanmedian(features[:, names.index(f"de.{c}")]) for c in cols if f"de.{c}" in names]
        strength[fault] = float(np.nanmax(vals)) if vals else float("nan")
    best = max(strength, key=lambda k: -np.inf if np.isnan(strength[k]) else strength[k])
    return (best if strength[best] >= DIAG_MIN_RATIO else "unknown"), strength


def evaluate_cwru(root: Path, **overrides: Any) -> dict[str, Any]:
    """Detection rate and diagnosis per file, false-alarm rate on held-out healthy data, AUC."""
    import scipy.io as sio
    from scipy.signal import decimate

    opts = {
        "model": "mahalanobis",
        "quantized": True,
        "on_delay_windows": 3,
        "threshold_quantile": 0.995,
        "threshold_margin": 1.5,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    root = Path(root)
    manifest = list(csv.DictReader(open(root / "MANIFEST.csv", newline="")))
    bearing = read_bearing(root / "BEARING.toml")
    normal = [r for r in manifest if r["condition"] == "normal"]
    if not normal:
        raise MachinewatchError(f"{root}/MANIFEST.csv lists no normal record")

    def load(row: dict[str, str]) -> np.ndarray:
        x = np.asarray(sio.loadmat(root / row["file"])[row["channel"]], dtype=np.float64).ravel()
        rate = float(row["rate_hz"])
        if rate != RATE_HZ:
            q = round(rate / RATE_HZ)
            if abs(rate / q - RATE_HZ) > 1e-6:
                raise MachinewatchError(f"{row['file']}: {rate} Hz is no integer multiple of {RATE_HZ} Hz")
            x = decimate(x, q, ftype="fir", zero_phase=True)
        return x

    x0 = load(normal[0])
    half = len(x0) // 2 // HOP * HOP
    learn = _n_windows(half)
    cfg = _config(bearing, float(normal[0]["rpm"]) / 60.0, opts, learn)
    base = replay(cfg, _chunks(x0[:half]), "cwru")
    if base.learned is None:
        raise MachinewatchError(f"the CWRU baseline was not learned ({learn} windows; {base.counters})")
    held = replay(cfg, _chunks(x0[half:]), "cwru", base.learned)
    files: list[dict[str, Any]] = []
    labels, scores = [np.zeros(len(held.score))], [held.score]
    for row in manifest:
        if row["condition"] == "normal":
            continue
        c = _config(bearing, float(row["rpm"]) / 60.0, opts, learn)
        r = replay(c, _chunks(load(row)), "cwru", base.learned)
        diag, strength = diagnose(r.features, r.names)
        files.append(
            {
                "file": row["file"],
                "condition": row["condition"],
                "detection_rate": float(np.mean(r.alarm)) if len(r.alarm) else 0.0,
                "diagnosis": diag,
                "envelope": strength,
                "windows": len(r.alarm),
                "_series": (r.t_ns / 1e9, r.score, r.threshold),
            }
        )
        labels.append(np.ones(len(r.score)))
        scores.append(r.score)
    diag_ok = [
        f["diagnosis"] == f["condition"] for f in files if f["condition"] in ("inner_race", "outer_race")
    ]
    return {
        "dataset": "cwru",
        "model": opts["model"],
        "quantized": bool(opts["quantized"]),
        "files": files,
        "false_alarm_rate": float(np.mean(held.alarm)) if len(held.alarm) else 0.0,
        "auc": roc_auc(np.concatenate(labels), np.concatenate(scores)),
        "diagnosis_accuracy": float(np.mean(diag_ok)) if diag_ok else float("nan"),
        "diagnosis_all": float(np.mean([f["diagnosis"] == f["condition"] for f in files]))
        if files
        else float("nan"),
        "held_out_windows": len(held.alarm),
        "learn_windows": learn,
        "threshold": base.learned.threshold,
        "agreement": base.learned.info.get("agreement"),
    }
