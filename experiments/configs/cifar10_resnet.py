"""CIFAR-10 (a JPEG-encoded copy), resnet110 -> resnet32, the paper's protocol otherwise.

The setting of experiments/gpu_evidence.sh. Launch, one cell (the JPEG file: written by
experiments/make_cifar10_jpeg.py from the official archive; or use the archive itself with
`--set dataset=cifar10 --set data_path=/data/cifar-10-python.tar.gz`):
  python experiments/distill.py --config experiments/configs/cifar10_resnet.py \
      --set data_path=/data/cifar10_jpeg.npz \
      --set teacher_checkpoint=runs/teacher_resnet110_c10 \
      --set method=ckd --set subset_size=2000 --out runs/c10_ckd_S2000
The whole table: experiments/sweep.py with this config (docs/experiments.md). Expected result: not
measured yet (needs an accelerator).
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        dataset="cifar10_jpeg",
        subset_size=2000,
        teacher="resnet110",
        student="resnet32",
        batch_size=64,
        learning_rates=(0.1, 0.05, 0.025),
        seeds=(1, 2, 3),
        schedule="plateau",
        patience=50,
        max_lr_drops=3,
        max_epochs=1000,
        compute_dtype="float32",
    )
