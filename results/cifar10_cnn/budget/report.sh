#!/usr/bin/env bash
# The report of the budget runs committed so far (results/cifar10_cnn/README.md, "Budget curve"):
# each finished cell (its sweep folder) and each finished member of an unfinished cell (a single
# run folder), one table with its paired differences. Run from anywhere; python is the one on PATH.
set -euo pipefail
cd "$(dirname "$0")/../../.."
src=()
for sweep in results/cifar10_cnn/budget/runs/*/; do
  sweep=${sweep%/}
  cell=$sweep/$(basename "$sweep")
  if [ -f "$cell/summary.json" ]; then src+=("$sweep"); else src+=("$cell"/members/*); fi
done
python experiments/report.py "${src[@]}" --out results/cifar10_cnn/budget/report
