"""Leave-files-out cross-validation of the SKAB threshold margin (honest figure for unseen files).

Every margin of a small grid is run once over every file (``evaluate_skab``); then, for each of
4 folds (file ``i`` in fold ``i % 4``), the margin with the best F1 at FAR <= 15 % on the other
12 files is chosen and scored, pooled, on the 4 held-out files. Run:
``NUMBA_NUM_THREADS=1 .venv/bin/python bench/skab_cv.py ../shared/data/skab [--float]``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from machinewatch.engine.evaluate.skab import evaluate_skab

MARGINS = (1.5, 1.75, 2.0, 2.5, 3.0)
FOLDS = 4


def _pool(files: list[dict[str, int]]) -> tuple[float, float]:
    tp, fp, tn, fn = (sum(f[k] for f in files) for k in ("tp", "fp", "tn", "fn"))
    f1 = 2 * tp / max(1, 2 * tp + fp + fn)
    return f1, 100.0 * fp / max(1, fp + tn)


def main(root: Path, quantized: bool) -> None:
    runs = {m: evaluate_skab(root, threshold_margin=m, quantized=quantized) for m in MARGINS}
    for m, r in runs.items():
        print(f"margin {m:4}: F1 {r['f1']:.3f} FAR {r['far']:5.2f} % NAB {r['nab_standard']:.2f}")
    n = len(runs[MARGINS[0]]["files"])
    for k in range(FOLDS):
        train = [i for i in range(n) if i % FOLDS != k]
        test = [i for i in range(n) if i % FOLDS == k]
        scored = {m: _pool([r["files"][i] for i in train]) for m, r in runs.items()}
        ok = [m for m in MARGINS if scored[m][1] <= 15.0] or list(MARGINS)
        best = max(ok, key=lambda m: scored[m][0])
        f1, far = _pool([runs[best]["files"][i] for i in test])
        print(
            f"fold {k}: margin {best} (train F1 {scored[best][0]:.3f}) -> held-out F1 {f1:.3f} FAR {far:.1f}"
        )
    picks = []
    for k in range(FOLDS):
        train = [i for i in range(n) if i % FOLDS != k]
        scored = {m: _pool([r["files"][i] for i in train]) for m, r in runs.items()}
        ok = [m for m in MARGINS if scored[m][1] <= 15.0] or list(MARGINS)
        picks.append((k, max(ok, key=lambda m: scored[m][0])))
    pooled = [runs[m]["files"][i] for k, m in picks for i in range(n) if i % FOLDS == k]
    f1, far = _pool(pooled)
    print(f"cross-validated, pooled over the 4 held-out folds: F1 {f1:.3f} FAR {far:.2f} %")


if __name__ == "__main__":
    main(Path(sys.argv[1]), "--float" not in sys.argv)
