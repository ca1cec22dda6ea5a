"""Leave-files-out cross-validation of the SKAB evaluation settings (honest figures for unseen files).

The grid: model kind x ``[model] threshold_folds`` (3 = blocked cross-fitting, 1 = the former
single held-out last third) x threshold margin, on-delay 3 and off-delay 30 as shipped. For each
(model, folds) pair ``evaluate_skab`` runs once, through the live hot path, at margin 1; the
threshold is linear in the margin (``quantile x margin``) and the alarm decisions depend only on
the score and the threshold, so every margin is then decided by the engine's own
:class:`~machinewatch.engine.alarm.AlarmMachine` over the same scores. A self-check asserts that
this reproduces ``evaluate_skab`` at the shipped defaults exactly.

Cross-validation: for each fold the setting with the best F1 at FAR <= 15 % on the training
files is chosen and scored on the held-out files; the held-out confusion counts are pooled.
Two splits: 4 folds (file ``i`` in fold ``i % 4``, 12 files to choose on) and leave one file out
(16 folds, 15 files to choose on; steadier, since one fold no longer holds several of the hard
files). Printed: the CV of the margin alone for each (model, folds), then of the whole grid
(the model and folds chosen inside each fold too). Run::

    NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 .venv/bin/python bench/skab_cv.py ../shared/data/skab [--float]
"""

from __future__ import annotations

import itertools
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from machinewatch.engine.alarm import AlarmMachine
from machinewatch.engine.config import AlarmConfig
from machinewatch.engine.evaluate.metrics import changepoints, nab_score
from machinewatch.engine.evaluate.skab import SKAB_DEFAULTS, evaluate_skab

MODELS = ("pca", "mahalanobis", "autoencoder", "iforest")
THRESHOLD_FOLDS = (3, 1)
MARGINS = (1.25, 1.5, 1.75, 2.0, 2.5, 3.0)
FAR_MAX = 15.0

Setting = tuple[str, int, float]
FileCounts = dict[str, Any]


def _decide(file: FileCounts, margin: float) -> FileCounts:
    """One evaluated file's counts and changepoints with its margin-1 threshold x ``margin``."""
    t_s, score, thr, truth, _ = file["_series"]
    thr1 = float(thr[0])
    d = SKAB_DEFAULTS
    cfg = AlarmConfig(
        on_delay_windows=d["on_delay_windows"],
        off_delay_windows=d["off_delay_windows"],
        clear_ratio=d["clear_ratio"],
    )
    m = AlarmMachine(cfg, state="NORMAL", clock=lambda: 0.0)
    pred = np.zeros(len(score), dtype=bool)
    for i, s in enumerate(score):
        if np.isfinite(s):
            m.update(float(s), thr1 * margin)
        pred[i] = m.state == "ALARM"
    return {
        "tp": int((pred & truth).sum()),
        "fp": int((pred & ~truth).sum()),
        "tn": int((~pred & ~truth).sum()),
        "fn": int((~pred & truth).sum()),
        "true_cp": file["_true_cp"],
        "pred_cp": [float(v) for v in changepoints(t_s, pred)],
    }


def _pool(files: list[FileCounts]) -> tuple[float, float, float]:
    tp, fp, tn, fn = (sum(f[k] for f in files) for k in ("tp", "fp", "tn", "fn"))
    nab = nab_score([(f["true_cp"], f["pred_cp"]) for f in files], "standard")
    return 2 * tp / max(1, 2 * tp + fp + fn), 100.0 * fp / max(1, fp + tn), nab


def _cv(grid: dict[Setting, list[FileCounts]], folds: int) -> tuple[float, float, float, Counter[Setting]]:
    """Pooled held-out F1, FAR, NAB and how often each setting was chosen."""
    n = len(next(iter(grid.values())))
    held: list[FileCounts] = []
    picks: Counter[Setting] = Counter()
    for k in range(folds):
        train = [i for i in range(n) if i % folds != k]
        scored = {g: _pool([r[i] for i in train]) for g, r in grid.items()}
        ok = [g for g in grid if scored[g][1] <= FAR_MAX] or list(grid)
        best = max(ok, key=lambda g: scored[g][0])
        picks[best] += 1
        held += [grid[best][i] for i in range(n) if i % folds == k]
    return (*_pool(held), picks)


def main(root: Path, quantized: bool) -> None:
    grid: dict[Setting, list[FileCounts]] = {}
    for kind, folds in itertools.product(MODELS, THRESHOLD_FOLDS):
        run = evaluate_skab(
            root, model=kind, threshold_folds=folds, threshold_margin=1.0, quantized=quantized
        )
        for margin in MARGINS:
            grid[(kind, folds, margin)] = [_decide(f, margin) for f in run["files"]]
    # self-check: the shortcut reproduces the live evaluation at the shipped defaults
    d = SKAB_DEFAULTS
    live = evaluate_skab(root, quantized=quantized)
    mine = grid[(d["model"], d["threshold_folds"], d["threshold_margin"])]
    for a, b in zip(live["files"], mine, strict=True):
        assert all(a[k] == b[k] for k in ("tp", "fp", "tn", "fn")), (a["file"], b)
    print(f"SKAB {'int8' if quantized else 'float'}, {len(mine)} files; in-sample (all files):")
    for g, files in grid.items():
        f1, far, nab = _pool(files)
        print(f"  {g[0]:12} folds {g[1]} margin {g[2]:4}: F1 {f1:.3f} FAR {far:5.2f} % NAB {nab:6.2f}")
    for nf, label in ((4, "4-fold"), (len(mine), "leave-one-file-out")):
        print(f"{label} CV of the margin, per model and threshold_folds:")
        for kind, folds in itertools.product(MODELS, THRESHOLD_FOLDS):
            sub = {g: r for g, r in grid.items() if g[:2] == (kind, folds)}
            f1, far, nab, picks = _cv(sub, nf)
            chosen = ", ".join(f"{g[2]} x{c}" for g, c in picks.most_common())
            print(
                f"  {kind:12} folds {folds}: F1 {f1:.3f} FAR {far:5.2f} % NAB {nab:6.2f} (margins {chosen})"
            )
        shipped = {g: r for g, r in grid.items() if g[1] == d["threshold_folds"]}
        for label2, sub in (("whole grid", grid), (f"folds {d['threshold_folds']} only", shipped)):
            f1, far, nab, picks = _cv(sub, nf)
            chosen = ", ".join(f"{g[0]}/{g[1]}/{g[2]} x{c}" for g, c in picks.most_common())
            print(f"  {label2:12}: F1 {f1:.3f} FAR {far:5.2f} % NAB {nab:6.2f} (chosen {chosen})")


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--float" not in sys.argv)
