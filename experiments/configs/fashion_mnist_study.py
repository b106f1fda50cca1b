"""Few-teacher-call study on Fashion-MNIST (real, complete: 60,000 train / 10,000 test, 28x28
grey), sized for a 2-core CPU.

Data: the Debian package `dataset-fashion-mnist` (`sudo apt-get install dataset-fashion-mnist`;
IDX files under /usr/share/datasets/fashion-mnist/, the loader's default for fashion_mnist).

  # 1. the teacher, once (about 4 minutes on 2 cores; committed under results/fashion_mnist/)
  python experiments/train_teacher.py --dataset fashion_mnist --model tiny_cnn \
      --model-kwargs '{"width": 32}' --recipe paper --epochs 4 --batch-size 128 --lr 0.1 \
      --schedule cosine --out results/fashion_mnist/teacher
  # 2. the sweep (resumable: rerun the same command to continue), then the report
  python experiments/sweep.py --config experiments/configs/fashion_mnist_study.py \
      --set teacher_checkpoint=results/fashion_mnist/teacher \
      --methods ce,kd,ckd,ckd_cal --subset-sizes 1000,2000,4000 --seeds 1,2,3 \
      --lrs 0.05,0.1 --out runs/fashion_mnist
  python experiments/report.py runs/fashion_mnist --out results/fashion_mnist

Teacher TinyCNN(32), student TinyCNN(8) (4x narrower). Fixed-length schedule (cosine, 20
pseudo-epochs of ceil(B / 64) steps), not the paper's plateau protocol: it does not fit this
machine's budget. The learning rate is chosen per (method, budget) from {0.05, 0.1} by the mean
validation accuracy over seeds (the 20% validation part of each seed's subset); the test split
is never used for any choice.
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        dataset="fashion_mnist",
        subset_size=1000,
        teacher="tiny_cnn",
        teacher_kwargs={"width": 32},
        student="tiny_cnn",
        student_kwargs={"width": 8},
        batch_size=64,
        learning_rates=(0.05, 0.1),
        seeds=(1, 2, 3),
        schedule="cosine",
        epochs=20,
        eval_batch_size=1000,
    )
