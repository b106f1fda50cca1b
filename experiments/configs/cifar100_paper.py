"""The paper's CIFAR-100 protocol (docs/method.md, "The protocol"), resnet110 -> resnet32.

Launch (needs CIFAR-100 locally: a prepared TFDS data_dir or the official archive, and a
teacher: a RepDistiller checkpoint `resnet110_vanilla/ckpt_epoch_240.pth` or a run dir of
experiments/train_teacher.py):
  python experiments/distill.py --config experiments/configs/cifar100_paper.py \
      --set data_path=/data/cifar-100-python.tar.gz \
      --set teacher_checkpoint=/models/resnet110_vanilla/ckpt_epoch_240.pth \
      --set method=ckd --set subset_size=2000 --out runs/c100_ckd_S2000
Every knob below is the paper's: subsets S in {2000, ..., 6000} (80% teacher-labelled), SGD
momentum 0.9, weight decay 5e-4, batch 64 (tuples for CKD), LR grid {0.1, 0.05, 0.025}, seeds
{1, 2, 3} (a seed also redraws the subset), early stopping with patience 50, LR /10 on plateaus,
stop at the third plateau or 1000 pseudo-epochs. The WACV release's CKD: MSE form, k = 2.
Expected result: not measured (this library has not been run on CIFAR-100 or on a GPU yet).
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        pos_and_neg=2,
        ckd_form="mse",
        ckd_combine="diff",
        temperature=4.0,
        w_cls=1.0,
        w_kd=1.0,
        w_rel=1.0,
        dataset="cifar100",
        subset_size=2000,
        teacher="resnet110",
        teacher_view="augmented",
        student="resnet32",
        batch_size=64,
        learning_rates=(0.1, 0.05, 0.025),
        seeds=(1, 2, 3),
        momentum=0.9,
        weight_decay=5e-4,
        schedule="plateau",
        patience=50,
        max_lr_drops=3,
        max_epochs=1000,
        group_forward="separate",
    )
