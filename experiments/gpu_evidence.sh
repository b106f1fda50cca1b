#!/usr/bin/env bash
# A first GPU run, meant for one H100/H200-class GPU: the throughput benchmark against its
# limit, a resnet110 teacher with the fast recipe, then the cells of a CIFAR-10 sweep
# (resnet110 -> resnet32, ten methods, S = 2000 and 6000, seeds 1-3, the LR grid), as many as the
# time allows. Everything here runs on CPU first with QUICK=1 (tiny settings).
#
# From the repository root, with a JPEG-encoded CIFAR-10 file at $DATA (default
# .data/cifar10_jpeg.npz; experiments/make_cifar10_jpeg.py writes one from the official archive):
#   OUT=runs/gpu_evidence bash experiments/gpu_evidence.sh
# Writes under $OUT: bench.md/json (throughput against the limit), teacher.log, sweep.log,
# report/table.md, report/table.csv, report/plot.png, results.jsonl.
#
# Time: not measured on a GPU (bench.md and teacher.log give the first figures, each beside its
# command). The sweep is resumable, so a second call continues where the first stopped.
# MAX_EPOCHS caps the paper's 1000-pseudo-epoch protocol (default 200) and is recorded in every
# cell's config.json.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
OUT=${OUT:-runs/gpu_evidence}
DATA=${DATA:-.data/cifar10_jpeg.npz}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
PY=${PY:-python3}

if [ "$QUICK" = 1 ]; then   # CPU rehearsal of every step with tiny settings
  BENCH=(--quick)
  TEACHER=(--model tiny_cnn --recipe fast --epochs 1 --batch-size 512)
  SWEEP=(--set student=tiny_cnn --set schedule=cosine --set epochs=1
         --subset-sizes 200 --seeds 1 --lrs 0.05 --methods ce,ckd)
else
  BENCH=(--models resnet32 --methods ce,kd,ckd_k2,ckd_k3,mixup,rkd,crd --populations 1,8,32
         --dtypes float32,bfloat16)
  TEACHER=(--model resnet110 --recipe fast --epochs ${TEACHER_EPOCHS:-30})
  SWEEP=(--set max_epochs=${MAX_EPOCHS:-200} --set compute_dtype=bfloat16
         --subset-sizes 2000,6000 --seeds 1,2,3 --lrs 0.1,0.05,0.025
         --methods ${METHODS:-ce,kd,ckd,ckd_cal,ckd_kl3,mixup,cutmix,rkd,dist,crd})
fi

"$PY" -c "import jax; print('devices:', jax.devices(), 'jax', jax.__version__)"
"$PY" experiments/benchmark.py "${BENCH[@]}" --json "$OUT/bench.json" | tee "$OUT/bench.md"
if [ ! -f "$OUT/teacher/teacher.json" ]; then
  "$PY" experiments/train_teacher.py --dataset cifar10_jpeg --path "$DATA" "${TEACHER[@]}" \
      --out "$OUT/teacher" --no-progress 2>&1 | tee "$OUT/teacher.log"
fi
TEACHER_MODEL=$("$PY" -c "import json,sys; print(json.load(open(sys.argv[1]))['config']['model'])" \
    "$OUT/teacher/teacher.json")
"$PY" experiments/sweep.py --config experiments/configs/cifar10_resnet.py \
    --set data_path="$DATA" --set teacher="$TEACHER_MODEL" \
    --set teacher_checkpoint="$OUT/teacher" --set progress=false "${SWEEP[@]}" \
    --out "$OUT/sweep" 2>&1 | tee "$OUT/sweep.log"
"$PY" experiments/report.py "$OUT/sweep" --out "$OUT/report"
cp "$OUT/sweep/results.jsonl" "$OUT/results.jsonl"
