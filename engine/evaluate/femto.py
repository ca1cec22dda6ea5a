"""FEMTO-ST PRONOSTIA run-to-failure bearings: early warning through the live path.

Each ``BearingX_Y`` folder is one run: ``acc_NNNNN.csv`` holds 2560 samples (0.1 s at
25.6 kHz) of horizontal and vertical acceleration, file ``k`` starting at ``(k - 1) * 10 s``.
The two axes are two vibration streams of one asset (horizontal primary), one window per
file. The asset learns on the files of the first hour, then monitors. ``first_alarm_s`` is the
start of the first alarm that stays raised to the end of the run; ``lead_time_s = end_s -
first_alarm_s``; ``false_alarms_before_half_life`` counts alarms raised before half the run.
"""

from __future__ import annotations

__all__ = ["UPPER", "evaluate_femto", "read_acc"]

import csv
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.config import (
    AlarmConfig,
    AssetConfig,
    Config,
    EngineConfig,
    MachineConfig,
    ModelConfig,
    StreamConfig,
)
from machinewatch.engine.errors import MachinewatchError
from machinewatch.engine.evaluate.cwru import read_bearing
from machinewatch.engine.evaluate.replay import replay
from machinewatch.engine.types import Chunk

LEARN_S = 3600.0
#: features whose fall is not a fault (energy, impulsiveness, envelope lines): scored one-sided
UPPER = (
    "*.rms",
    "*.peak",
    "*.p2p",
    "*.crest",
    "*.kurtosis",
    "*.impulse_factor",
    "*.shape_factor",
    "*.band*",
    "*.x1",
    "*.x2",
    "*.x3",
    "*.env_*",
)
_ACC = re.compile(r"acc_(\d+)\.csv$")


def read_acc(path: Path) -> np.ndarray:
    """Horizontal and vertical acceleration ``(n, 2)`` of one ``acc_*.csv`` (, or ; separated)."""
    text = Path(path).read_text()
    delim = ";" if text.count(";") > text.count(",") else ","
    rows = [r for r in csv.reader(text.splitlines(), delimiter=delim) if len(r) >= 6]
    return np.array([[float(r[4]), float(r[5])] for r in rows], dtype=np.float64)


def evaluate_femto(root: Path, **overrides: Any) -> dict[str, Any]:
    """Lead time and early false alarms of every bearing run listed in ``MANIFEST.csv``."""
    opts = {
        "model": "mahalanobis",
        "quantized": True,
        "on_delay_windows": 3,
        "off_delay_windows": 3,
        # the same rule as SKAB: twice about the largest held-out healthy score
        "threshold_quantile": 0.999,
        "threshold_margin": 2.0,
        # vibration severity is one-sided: energy that falls after running in is no fault
        "upper": UPPER,
        **{k: v for k, v in overrides.items() if v is not None},
    }
    root = Path(root)
    bearing = read_bearing(root / "BEARING.toml")
    out = []
    for row in csv.DictReader(open(root / "MANIFEST.csv", newline="")):
        name = row["bearing"]
        rate = float(row["rate_hz"])
        period = float(row["file_period_s"])
        files = sorted(
            (int(m.group(1)), p) for p in (root / name).glob("acc_*.csv") if (m := _ACC.search(p.name))
        )
        if not files:
            raise MachinewatchError(f"{root / name}: no acc_*.csv files")
        first = read_acc(files[0][1])
        win = len(first)
        streams = {ax: StreamConfig(ax, "vibration", rate, win, win, units="g") for ax in ("h", "v")}
        n_learn = sum(1 for k, _ in files if (k - 1) * period < LEARN_S)
        asset = AssetConfig(
            name="femto",
            site="eval",
            description=name,
            primary_stream="h",
            streams=streams,
            machine=MachineConfig(shaft_hz=float(row["rpm"]) / 60.0, bearing=bearing),
            model=ModelConfig(
                kind=opts["model"],
                learn_windows=max(10, n_learn),
                quantized=bool(opts["quantized"]),
                # the int8 figures are of the int8 form: no float fallback (min_agreement)
                min_agreement=0.0,
                threshold_quantile=opts["threshold_quantile"],
                threshold_margin=opts["threshold_margin"],
                options={"upper": list(opts["upper"])} if opts["upper"] else {},
            ),
            alarm=replace(
                AlarmConfig(),
                on_delay_windows=opts["on_delay_windows"],
                off_delay_windows=opts["off_delay_windows"],
            ),
        )
        cfg = Config(EngineConfig(), {"femto": asset}, {}, {}, {})

        def chunks(
            files: list[tuple[int, Path]] = files, win: int = win, rate: float = rate, period: float = period
        ) -> Any:
            for k, p in files:
                x = read_acc(p)
                if len(x) != win:
                    continue
                t0 = round((k - 1) * period * 1e9)
                # v before h: the primary stream closes the asset vector
                yield Chunk("femto/v", t0, rate, k, x[:, 1].astype(np.float32))
                yield Chunk("femto/h", t0, rate, k, x[:, 0].astype(np.float32))

        r = replay(cfg, chunks(), "femto")
        end_s = (files[-1][0] - 1) * period + win / rate
        t_s = (r.t_ns / 1e9) - win / rate  # window start
        alarm = r.alarm
        first_alarm = None
        if len(alarm) and alarm[-1]:
            i = len(alarm) - 1
            while i > 0 and alarm[i - 1]:
                i -= 1
            first_alarm = float(t_s[i])
        rises = np.flatnonzero(np.diff(np.r_[0, alarm.astype(np.int8)]) == 1)
        half = end_s / 2.0
        out.append(
            {
                "bearing": name,
                "first_alarm_s": first_alarm,
                "end_s": end_s,
                "lead_time_s": (end_s - first_alarm) if first_alarm is not None else 0.0,
                "false_alarms_before_half_life": int(np.sum(t_s[rises] < half)),
                "windows": len(alarm),
                "learn_windows": n_learn,
                "threshold": r.learned.threshold if r.learned else None,
                "_series": (t_s, r.score, r.threshold),
            }
        )
    return {"dataset": "femto", "model": opts["model"], "quantized": bool(opts["quantized"]), "bearings": out}
