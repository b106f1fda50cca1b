"""The paper's own regime on CIFAR-10: a CNN teacher, the paper's CNN student (resnet8, trained
from scratch), the paper's training view (random crop 32 after padding 4, horizontal flip) for the
teacher pass and for the student, batch 64 (tuples for CKD), SGD momentum 0.9, weight decay 5e-4,
and the paper's plateau protocol (patience 50, reload the best weights with LR/10, stop at the
third plateau or 1000 pseudo-epochs). S labelled images per seed, split 80/20 into the B = 0.8 S
teacher-labelled training part and validation; the official 10,000-image test split.

The data path below is the tests' JPEG copy of CIFAR-10 (an .npz of the official archive's
images re-encoded as JPEG; `data_path` accepts any .npz in the documented layout, e.g. one built
from the official python archive: docs/data.md). Run from the repository root or pass
`--set data_path=...`.

  # 1. the teacher, once (committed under results/cifar10_cnn/teacher, 85.50% test top-1)
  python experiments/train_teacher.py --dataset cifar10_jpeg --path <cifar10_jpeg.npz> \
      --model resnet14 --epochs 30 --batch-size 128 --lr 0.1 --schedule cosine \
      --out results/cifar10_cnn/teacher
  # 2a. learning-rate pilot: seed 1, the paper's grid, S = 1000, the plateau protocol
  python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
      --methods ce,kd,ckd,ckd_cal,ckd_kd_cal,ckd_anchor,mixup,crd \
      --subset-sizes 1000 --seeds 1 --lrs 0.1,0.05,0.025 --jobs 2 --out runs/cifar10_cnn_pilot
  # 2b. seeds 2 and 3 at the learning rate each method chose on the pilot's validation
  #     accuracy (results/cifar10_cnn/README.md lists the choices and the commands)
  python experiments/sweep.py --config experiments/configs/cifar10_cnn_study.py \
      --methods <method> --subset-sizes 1000 --seeds 2,3 --lrs <chosen> --jobs 2 \
      --out runs/cifar10_cnn_seeds
  # 3. the report (reads every finished cell of both sweeps)
  python experiments/report.py runs/cifar10_cnn_pilot runs/cifar10_cnn_seeds \
      --out results/cifar10_cnn

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
