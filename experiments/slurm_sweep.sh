#!/bin/bash
# One shard of a sweep per SLURM array task. Submit from the repository root:
#   sbatch experiments/slurm_sweep.sh                       # the paper's CIFAR-100 sweep below
#   sbatch experiments/slurm_sweep.sh --config ... --out ...  # your sweep: these replace SWEEP
# The number of shards N is the array's size, written once: in --array below (0-3 = 4 shards),
# or on the command line (sbatch --array=0-7 ... overrides it: 8 shards).
# When every task is done: python experiments/report.py <the sweep's --out folder>.
# tests/test_slurm_sweep.py runs this file with SLURM's variables set and no sbatch.
#SBATCH --job-name=ckd-sweep
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --time=24:00:00
# SLURM opens --output before the script runs, so it cannot go into a folder made below: this
# file gets only what fails before the log below is opened.
#SBATCH --output=slurm-%A_%a.out
set -euo pipefail

fail() { echo "slurm_sweep.sh: error: $*" >&2; exit 2; }

# SLURM runs a copy of this file from its spool folder: the repository is where sbatch ran.
REPO=${REPO:-${SLURM_SUBMIT_DIR:-$PWD}}
cd "$REPO" || fail "cannot cd to REPO=$REPO"
[ -f experiments/sweep.py ] || fail "REPO=$REPO is not the ckd_jax repository (submit from its root or set REPO)"

# The environment of the README's install (python3 -m venv .venv && pip install -e '.[cuda,test]').
VENV=${VENV:-.venv}
[ -f "$VENV/bin/activate" ] || fail "no virtual environment at VENV=$VENV (set VENV to yours)"
# shellcheck disable=SC1091
source "$VENV/bin/activate"
PYTHON=${PYTHON:-python}

: "${SLURM_ARRAY_TASK_ID:?not an array task: submit with sbatch (the --array line sets the shards)}"
N=$((SLURM_ARRAY_TASK_MAX + 1))
if [ "${SLURM_ARRAY_TASK_MIN:-0}" != 0 ] || [ "${SLURM_ARRAY_TASK_COUNT:-$N}" != "$N" ]; then
  fail "--array must be 0-(N-1) with every task (got min ${SLURM_ARRAY_TASK_MIN:-?}, max $SLURM_ARRAY_TASK_MAX, count ${SLURM_ARRAY_TASK_COUNT:-?})"
fi

LOG_DIR=${LOG_DIR:-logs}
mkdir -p "$LOG_DIR"
LOG="$LOG_DIR/sweep_${SLURM_ARRAY_JOB_ID:-local}_${SLURM_ARRAY_TASK_ID}-of-${N}.log"
echo "slurm_sweep.sh: shard ${SLURM_ARRAY_TASK_ID}/${N}, log $LOG"
exec >"$LOG" 2>&1

# The paper's sweep (resnet110 -> resnet32 on CIFAR-100, experiments/configs/cifar100_paper.py);
# arguments given to this script replace it.
SWEEP=(--config experiments/configs/cifar100_paper.py
       --set dataset=tfds:cifar100 --set data_dir=/data/tensorflow_datasets
       --set teacher=resnet110
       --set teacher_checkpoint=save/models/resnet110_vanilla/ckpt_epoch_240.pth
       --methods ce,kd,ckd,ckd_cal,ckd_kl3,mixup,cutmix,rkd,dist,crd
       --subset-sizes 2000,3000,4000,5000,6000 --seeds 1,2,3 --lrs 0.1,0.05,0.025
       --out results/c100_resnet110_resnet32)
if [ $# -gt 0 ]; then SWEEP=("$@"); fi

set -x
"$PYTHON" experiments/sweep.py "${SWEEP[@]}" --shard "${SLURM_ARRAY_TASK_ID}/${N}"
