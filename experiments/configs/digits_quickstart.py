"""The README's quickstart on scikit-learn digits (embedded data, no download).

Launch (one method):
  python experiments/distill.py --config experiments/configs/digits_quickstart.py \
      --set method=ckd --set teacher_checkpoint=runs/quickstart/teacher --out runs/digits_ckd
`experiments/quickstart.py` trains the teacher first and runs CE-only, KD and CKD.

Sized for a 2-core CPU: a 1,437-image train split, subset S=250 (B=200 teacher calls, 50
validation images), a width-8 TinyCNN student, 40 pseudo-epochs of 7 steps with a cosine LR.
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        dataset="digits",
        subset_size=250,
        teacher="tiny_cnn",
        teacher_kwargs={"width": 32},
        student="tiny_cnn",
        student_kwargs={"width": 8},
        batch_size=32,
        learning_rates=(0.05,),
        seeds=(1, 2, 3),
        schedule="cosine",
        epochs=40,
        eval_batch_size=400,
    )
