"""Every registered model: size float vs int8, float-vs-int8 decision agreement, AUC, score time.

Run: ``NUMBA_NUM_THREADS=1 OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 MKL_NUM_THREADS=1
.venv/bin/python bench/models.py [--features 40]``. Data: correlated Gaussian healthy rows and
a fault set where one feature drifts by 3 sigma and another by 2 sigma (synthetic, seeded).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from machinewatch.engine.evaluate.metrics import roc_auc
from machinewatch.engine.registry import registry
from machinewatch.models.quantize import decision_agreement, model_nbytes, quantize
from machinewatch.models.threshold import calibrate_threshold


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", type=int, default=40)
    ap.add_argument("--rows", type=int, default=2000)
    a = ap.parse_args()
    f = a.features
    rng = np.random.default_rng(0)
    mix = rng.normal(size=(f, f)) / np.sqrt(f)

    def gen(n: int) -> np.ndarray:
        return rng.normal(size=(n, f)) @ mix

    train, cal, test_h, test_f = gen(a.rows), gen(a.rows // 2), gen(2000), gen(2000)
    sd = train.std(axis=0)
    test_f[:, 3] += 3 * sd[3]
    test_f[:, 7] += 2 * sd[7]
    x = np.vstack([test_h, test_f])
    y = np.r_[np.zeros(len(test_h)), np.ones(len(test_f))]
    print(
        f"{'model':<12} {'float B':>9} {'int8 B':>8} {'ratio':>6} {'agree':>7} {'AUC f':>6} {'AUC q':>6} "
        f"{'us/row f':>9} {'us/row q':>9}"
    )
    for kind in registry.names("models"):
        m = registry.get("models", kind)().fit(train)
        q = quantize(m)
        q.score(x[:2])
        tf, tq = calibrate_threshold(m.score(cal)), calibrate_threshold(q.score(cal))
        t0 = time.perf_counter()
        sf = np.concatenate([m.score(r) for r in x[:500]])
        t1 = time.perf_counter()
        sq = np.concatenate([q.score(r) for r in x[:500]])
        t2 = time.perf_counter()
        sf, sq = m.score(x), q.score(x)
        bf, bq = model_nbytes(m), model_nbytes(q)
        print(
            f"{kind:<12} {bf:>9} {bq:>8} {bf / bq:>6.1f} {decision_agreement(sf, tf, sq, tq):>7.4f} "
            f"{roc_auc(y, sf):>6.3f} {roc_auc(y, sq):>6.3f} "
            f"{(t1 - t0) / 500 * 1e6:>9.1f} {(t2 - t1) / 500 * 1e6:>9.1f}"
        )


if __name__ == "__main__":
    main()
