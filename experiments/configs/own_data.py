"""Distillation on your own images: an .npz in the documented layout (docs/data.md).

  python experiments/distill.py --config experiments/configs/own_data.py \
      --set data_path=my_data.npz --set teacher_checkpoint=runs/my_teacher \
      --set method=ckd --out runs/my_ckd

The teacher's model and kwargs come from its run dir's teacher.json (`teacher` is left unset),
the preprocessing from the data (crop = image side, padding = side // 8, no flip, mean and std
of the training split; override with `--set data_spec='{"flip": true}'`). Sized like the digits
quickstart: subset S = 250 (B = 200 teacher calls per seed), a width-8 TinyCNN student, 40
pseudo-epochs with a cosine LR, seeds 1-3.
"""

from ckd_jax.train.config import DistillConfig


def get_config() -> DistillConfig:
    return DistillConfig(
        method="ckd",
        dataset="npz",
        subset_size=250,
        student="tiny_cnn",
        student_kwargs={"width": 8},
        batch_size=32,
        learning_rates=(0.05,),
        seeds=(1, 2, 3),
        schedule="cosine",
        epochs=40,
        eval_batch_size=400,
    )
