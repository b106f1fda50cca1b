#!/usr/bin/env bash
# The CIFAR-10 CNN study's report (table.md/.csv, paired.md/.csv, budget.png/.csv, curves*,
# plot.png, results.jsonl in this folder) from every committed run: the S = 1000 runs of
# study/ and the budget runs of budget/runs/ (S = 250, 500; mixup_kd at 1000), one finished
# cell per sweep folder, or, for a cell not yet finished, its finished members (single run
# folders). Run from anywhere; python is the one on PATH.
set -euo pipefail
cd "$(dirname "$0")/../.."
src=(results/cifar10_cnn/study/*)
for sweep in results/cifar10_cnn/budget/runs/*/; do
  sweep=${sweep%/}
  cell=$sweep/$(basename "$sweep")
  if [ -f "$cell/summary.json" ]; then
    src+=("$sweep")
  else
    for member in "$cell"/members/*/; do
      [ -f "$member/summary.json" ] && src+=("${member%/}")
    done
  fi
done
python experiments/report.py "${src[@]}" --out results/cifar10_cnn \
    --curves ce,kd,mixup,mixup_kd,ckd,ckd_cal,ckd_anchor
