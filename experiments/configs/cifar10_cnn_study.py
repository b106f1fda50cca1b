"""The paper's own regime on CIFAR-10: a CNN teacher, the paper's CNN student (resnet8, trained
from scratch), the paper's training view (random crop 32 after padding 4, horizontal flip) for the
teacher pass and for the student, batch 64 (tuples for CKD), SGD momentum 0.9, weight decay 5e-4,
and the paper's plateau protocol (patience 50, reload the best weights with LR/10, stop at the
third plateau or 1000 pseudo-epochs). S labelled images per seed, split 80/20 into the B = 0.8 S
teacher-labelled training part and validation; the official 10,000-image test split.

The data path below is the tests' JPEG copy of CIFAR-10 (the official archive's images
re-encoded as JPEG). To use the official archive instead, build the same file from it with
`python experiments/make_cifar10_jpeg.py` (docs/data.md) or pass `--set dataset=cifar10 --set
data_path=<cifar-10-batches-py>`. Run from the repository root or pass `--set data_path=...`.

  # 1. the teacher, once (committed under results/cifar10_cnn/teacher, 85.50% test top-1)
  python experiments/train_teacher.py --dataset cifar10_jpeg --path <cifar10_jpeg.npz> \
      --model resnet14 --epochs 30 --batch-size 128 --lr 0.1 --schedule cosine \
      --out results/cifar10_cnn/teacher
  # 2a. learning-rate pilot: seed 1, the paper's grid, S = 1000, a 60-pseudo-epoch cosine
  #     schedule (cheaper than the plateau protocol); then the LR each method chooses on
  #     validation; under this schedule ckd trains exactly as ckd_cal, so its choice is
  #     ckd_cal's raw-selection column (one run answers for both)
  python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
      --set schedule=cosine --set epochs=60 --set eval_test_every=0 \
      --methods ce,kd,ckd_cal,ckd_kd_cal,ckd_anchor,mixup,mixup_kd,crd \
      --subset-sizes 1000 --seeds 1 --lrs 0.1,0.05,0.025 --jobs 2 --out runs/cifar10_cnn_pilot
  python experiments/pick_lr.py runs/cifar10_cnn_pilot
  # 2b. the study: for each method M at its chosen learning rate L (results/cifar10_cnn/README.md
  #     lists them) and each seed K of 1-5, the plateau protocol, one sweep folder per run so
  #     that runs can go to separate processes (on this 2-core CPU: one per core, each under
  #     `taskset -c <core>`, with jemalloc as in docs/performance.md):
  #       python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
  #           --methods M --subset-sizes 1000 --seeds K --lrs L --jobs 1 --out runs/cnn/M_sK
  #     then copy each finished run's cell.json, config.json, summary.json and metrics.jsonl
  #     (not its checkpoints or logit tables) to results/cifar10_cnn/study/M_sK/M_S1000/.
  # 2c. the budget study (S = 250, 500, 1000; seeds 1-5): per method M and subset size S at its
  #     chosen rate L, one command; its one cell's five members (seeds) run apart, one worker
  #     per core (`--split-members`, automatic when fewer cells than --jobs are left), with the
  #     rows of the cell run whole; the same command resumes a killed run:
  #       python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
  #           --methods M --subset-sizes S --seeds 1,2,3,4,5 --lrs L --jobs 2 \
  #           --set eval_test_every=30 --out runs/cnn/M_S<S>
  #     (the committed S = 250 and 500 runs logged their test curve every 30 pseudo-epochs on
  #     the whole test split; `--set eval_test_curve_images=1000` measures the curve on a fixed
  #     1,000 test images instead, cheaper at small S and changing no reported figure)
  # 3. the report: one table from all those folders, the training-length figure (one per
  #    budget), the budget figure (budget.png: test top-1 against B) and the paired per-seed
  #    differences (paired.md). Before it, `--publish` copies the finished runs' config, cell,
  #    summary and metrics files (no checkpoints or tables) into the committed folder:
  #      python experiments/report.py runs/cnn/* --publish results/cifar10_cnn/study \
  #          --out runs/cnn_report
  python experiments/report.py results/cifar10_cnn/study/* results/cifar10_cnn/budget/runs/* \
      --out results/cifar10_cnn --curves ce,kd,mixup,mixup_kd,ckd,ckd_cal,ckd_anchor
  # (results/cifar10_cnn/report.sh runs it, reading an unfinished cell's finished members)
  # On an accelerator, the whole study in one command (every rate of the grid for every method,
  # budget and seed; members vmapped; the report picks each rate on validation, no pilot):
  #   python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
  #       --methods ce,kd,ckd,ckd_cal,ckd_kd_cal,ckd_anchor,mixup,mixup_kd,crd \
  #       --subset-sizes 250,500,1000,2000 --seeds 1,2,3,4,5 --lrs 0.1,0.05,0.025 \
  #       --out runs/cifar10_cnn
  #   python experiments/report.py runs/cifar10_cnn --out results/cifar10_cnn_gpu \
  #       --curves ce,kd,mixup,mixup_kd,ckd,ckd_cal,ckd_anchor

Teacher resnet14 (0.17 M parameters), student resnet8 (0.08 M), both RepDistiller's CIFAR ResNets.
CRD draws 256 negatives per sample, not the paper's 16,384: at S = 1000 there are 800
teacher-labelled samples to draw them from. `ckd_kd_cal` is CKD's comparison terms plus KD's
per-sample CE and KD terms, every weight 1 (each term at its weight in its own method; fixed
before any run), calibrated like `ckd_cal`. `eval_test_every = 10` logs a test curve every 10
pseudo-epochs for the training-length plot; it never takes part in a decision. Every choice is
made on validation; the test split is measured only for the report.
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        dataset="cifar10_jpeg",
        data_path="../shared/data/cifar10_jpeg.npz",
        subset_size=1000,
        teacher="resnet14",
        teacher_checkpoint="results/cifar10_cnn/teacher",
        teacher_view="augmented",
        student="resnet8",
        batch_size=64,
        momentum=0.9,
        weight_decay=5e-4,
        learning_rates=(0.1, 0.05, 0.025),
        seeds=(1, 2, 3),
        schedule="plateau",
        patience=50,
        max_lr_drops=3,
        max_epochs=1000,
        eval_batch_size=1000,
        eval_test_every=10,
        crd_negatives=256,
    )
