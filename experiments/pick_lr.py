"""The learning rate each sweep cell would choose on validation, under both selections.

  python experiments/pick_lr.py runs/cifar10_cnn_pilot

For every cell of a sweep directory (`<out>/<variant>_S<subset>/metrics.jsonl`), each member's
best validation top-1 over its pseudo-epochs is read twice: on raw logits (`val_top1`) and on
calibrated logits (`val_top1_calibrated`, logged for every method with a logit table even when
selection used raw logits). Per (cell, selection) the learning rate with the highest mean over
seeds is marked as chosen (`ckd_jax.results.choose_lr`, the rule the reports use: ties go to the
smaller rate). Under a schedule without reloads (cosine), a calibrated run and its
raw twin train identically, so one run answers for both (e.g. `ckd_cal`'s cell gives `ckd`'s
choice on its raw column). Only validation is read; the test split takes no part.
"""

from __future__ import annotations

import argparse
import glob
import json
import math
import os
import sys
from collections import defaultdict

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ckd_jax.results import choose_lr  # noqa: E402


def best_val(metrics_path: str) -> dict:
    """{(seed, lr): {"raw": best val_top1, "calibrated": best val_top1_calibrated}}."""
    best: dict = defaultdict(lambda: {"raw": -math.inf, "calibrated": -math.inf})
    with open(metrics_path) as f:
        for line in f:
            row = json.loads(line)
            b = best[(row["seed"], row["lr"])]
            for sel, key in (("raw", "val_top1"), ("calibrated", "val_top1_calibrated")):
                v = row.get(key)
                if v is not None and math.isfinite(v):
                    b[sel] = max(b[sel], v)
    return dict(best)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir")
    args = ap.parse_args(argv)
    paths = sorted(glob.glob(os.path.join(args.sweep_dir, "*", "metrics.jsonl")))
    if not paths:
        raise FileNotFoundError(f"no <cell>/metrics.jsonl under {args.sweep_dir!r}")
    print("| cell | selection | lr | mean best val top-1 (%) | seeds | chosen |")
    print("|---|---|---:|---:|---:|---|")
    for path in paths:
        cell = os.path.basename(os.path.dirname(path))
        best = best_val(path)
        for sel in ("raw", "calibrated"):
            by_lr = defaultdict(list)
            for (_seed, lr), b in best.items():
                if math.isfinite(b[sel]):
                    by_lr[lr].append(b[sel])
            if not by_lr:
                continue  # no logit table: no calibrated figure
            means = {lr: sum(v) / len(v) for lr, v in by_lr.items()}
            chosen = choose_lr(means)
            for lr in sorted(means, reverse=True):
                print(f"| {cell} | {sel} | {lr:g} | {100 * means[lr]:.2f} | {len(by_lr[lr])} | "
                      f"{'**chosen**' if lr == chosen else ''} |")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
