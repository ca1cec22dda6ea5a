"""``machinewatch evaluate {skab,cwru,femto} DIR``: replay public data through the live path."""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any

from machinewatch.engine.errors import MachinewatchError

NAME = "evaluate"
HELP = "replay SKAB / CWRU / FEMTO data through the live code path and report detection quality"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("dataset", choices=("skab", "cwru", "femto"))
    p.add_argument("dir", type=Path, help="data folder (e.g. ../shared/data/skab)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument(
        "--plot", type=Path, metavar="OUT.png", help="draw score and threshold (needs the plot extra)"
    )
    p.add_argument("--model", help="model kind (default: the data set's default)")
    p.add_argument(
        "--float",
        dest="quantized",
        action="store_false",
        default=None,
        help="score with the float model instead of int8",
    )


def _clean(o: Any) -> Any:
    if isinstance(o, dict):
        return {k: _clean(v) for k, v in o.items() if not str(k).startswith("_")}
    if isinstance(o, list):
        return [_clean(v) for v in o]
    if isinstance(o, float) and not math.isfinite(o):
        return None
    if hasattr(o, "item"):
        return o.item()
    return o


def _table(res: dict[str, Any]) -> str:
    ds = res["dataset"]
    mode = "int8" if res.get("quantized") else "float"
    lines = [f"{ds}: model {res['model']} ({mode})"]
    if ds == "skab":
        lines.append(f"{'file':<40} {'TP':>6} {'FP':>6} {'TN':>6} {'FN':>6}")
        for f in res["files"]:
            lines.append(
                f"{Path(f['file']).name[-40:]:<40} {f['tp']:>6} {f['fp']:>6} {f['tn']:>6} {f['fn']:>6}"
            )
        lines.append(
            f"F1 {res['f1']:.3f}  FAR {res['far']:.2f} %  MAR {res['mar']:.2f} %  NAB standard "
            f"{res['nab_standard']:.2f}  low-FP {res['nab_low_fp']:.2f}  low-FN {res['nab_low_fn']:.2f}"
        )
    elif ds == "cwru":
        lines.append(f"{'file':<20} {'condition':<12} {'detection':>9}  diagnosis")
        for f in res["files"]:
            lines.append(
                f"{f['file']:<20} {f['condition']:<12} {f['detection_rate']:>9.3f}  {f['diagnosis']}"
            )
        lines.append(
            f"false-alarm rate {res['false_alarm_rate']:.3f}  AUC {res['auc']:.3f}  "
            f"diagnosis accuracy (inner/outer race) {res['diagnosis_accuracy']:.2f}"
        )
    else:
        lines.append(f"{'bearing':<12} {'first alarm s':>13} {'end s':>9} {'lead s':>9} {'early FA':>8}")
        for b in res["bearings"]:
            fa = "-" if b["first_alarm_s"] is None else f"{b['first_alarm_s']:.0f}"
            lines.append(
                f"{b['bearing']:<12} {fa:>13} {b['end_s']:>9.0f} {b['lead_time_s']:>9.0f} "
                f"{b['false_alarms_before_half_life']:>8}"
            )
    return "\n".join(lines)


def _plot(res: dict[str, Any], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise MachinewatchError("--plot needs matplotlib: pip install 'machinewatch[plot]'") from exc
    series = res.get("files") or res.get("bearings") or []
    n = len(series)
    fig, axes = plt.subplots(n, 1, figsize=(10, 1.8 * n + 0.5), squeeze=False)
    for ax, item in zip(axes[:, 0], series, strict=True):
        s = item["_series"]
        t, score, thr = s[0], s[1], s[2]
        ax.plot(t, score, lw=0.7, label="score")
        ax.plot(t, thr, "r--", lw=0.7, label="threshold")
        ax.set_yscale("symlog")
        if len(s) > 3:  # SKAB: shade the labelled anomalies
            ax.fill_between(
                t, 0, 1, where=s[3], transform=ax.get_xaxis_transform(), color="orange", alpha=0.25
            )
        title = str(item.get("file") or item.get("bearing"))
        if "end_s" in item:  # FEMTO: the half-life (no alarm before it) and the first held alarm
            ax.axvline(item["end_s"] / 2.0, color="grey", ls=":", lw=0.8, label="half-life")
            if item["first_alarm_s"] is not None:
                ax.axvline(item["first_alarm_s"], color="red", lw=0.8, label="first alarm")
        elif "condition" in item:  # CWRU: what the file is and what the engine made of it
            title += f" ({item['condition']}: detection {item['detection_rate']:.3f}, {item['diagnosis']})"
        ax.set_title(title, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out, dpi=90)


def main(args: argparse.Namespace) -> int:
    from machinewatch.engine.evaluate import cwru, femto, skab

    run = {"skab": skab.evaluate_skab, "cwru": cwru.evaluate_cwru, "femto": femto.evaluate_femto}[
        args.dataset
    ]
    if not args.dir.is_dir():
        raise MachinewatchError(f"{args.dir}: no such data folder")
    res = run(args.dir, model=args.model, quantized=args.quantized)
    if args.plot:
        _plot(res, args.plot)
    if args.json:
        json.dump(_clean(res), sys.stdout)
        sys.stdout.write("\n")
    else:
        print(_table(res))
    return 0
