"""Train a teacher on a dataset's full training split (thin CLI over ckd_jax.train.supervised).

Examples (from the repository root):

  # seconds on a CPU: sklearn's 8x8 digits
  python experiments/train_teacher.py --dataset digits --model tiny_cnn --epochs 5 \\
      --out runs/teacher_digits

  # the paper's recipe (SGD 0.05, batch 64, 240 epochs, x0.1 at 150/180/210)
  python experiments/train_teacher.py --dataset cifar100 --data-dir ~/data --model resnet110 \\
      --recipe paper --out runs/teacher_resnet110

  # the fast recipe (batch 512, lr 0.4, one-cycle, bf16 on GPU) on CIFAR-10 via TFDS
  python experiments/train_teacher.py --dataset tfds:cifar10 \\
      --data-dir /data/tensorflow_datasets --model resnet8 --recipe fast --epochs 3 \\
      --out runs/teacher_c10

  # your own data: an .npz (docs/data.md); the spec is derived from its training images
  python experiments/train_teacher.py --dataset npz --path my.npz --model tiny_cnn \
      --epochs 5 --flip --out runs/teacher_my

  # continue an interrupted run
  python experiments/train_teacher.py ... --out runs/teacher_c10 --resume

Writes <out>/checkpoints (orbax: latest + best by test accuracy), <out>/log.jsonl (one line per
epoch) and <out>/teacher.json (summary); prints the final test accuracy and the wall time.
Exit status 2 on a bad argument, reported before any work and without creating <out>.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys

os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(
    os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".jax_cache"))

import ckd_jax  # noqa: E402

ckd_jax.set_cpu_flags()  # our XLA:CPU speed flag, before jax starts (ckd_jax/__init__.py)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dataset", required=True, help="dataset name (ckd_jax.data.dataset_names())")
    p.add_argument("--model", required=True, help="model name (ckd_jax.models.model_names())")
    p.add_argument("--out", default=None,
                   help="run directory (default runs/teacher_<dataset>_<model>)")
    p.add_argument("--path", default=None, help="dataset file (e.g. cifar10_jpeg.npz)")
    p.add_argument("--data-dir", default=None, help="dataset directory (archives / TFDS)")
    p.add_argument("--recipe", default="paper", choices=["paper", "fast"])
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--momentum", type=float, default=0.9)
    p.add_argument("--weight-decay", type=float, default=5e-4)
    p.add_argument("--nesterov", action="store_true")
    p.add_argument("--schedule", default=None,
                   choices=["multistep", "cosine", "onecycle", "constant"])
    p.add_argument("--milestones", default=None,
                   help="comma-separated epochs for multistep (default 5/8,3/4,7/8 of epochs)")
    p.add_argument("--lr-factor", type=float, default=0.1)
    p.add_argument("--warmup-epochs", type=int, default=None)
    p.add_argument("--label-smoothing", type=float, default=None)
    p.add_argument("--compute-dtype", default=None, choices=["float32", "bfloat16", "auto"])
    p.add_argument("--model-kwargs", default="{}", help="JSON dict passed to create_model")
    g = p.add_argument_group(
        "preprocessing", "override the dataset's registered spec; for data without one (your "
        ".npz) unset fields are derived from the training images: crop = image side, padding = "
        "side // 8, no flip, mean/std of the training split (docs/data.md)")
    g.add_argument("--crop-size", type=int, default=None, help="random training crop side")
    g.add_argument("--padding", type=int, default=None, help="zero padding before the crop")
    g.add_argument("--flip", action=argparse.BooleanOptionalAction, default=None,
                   help="random horizontal flips (--no-flip: none)")
    g.add_argument("--mean", default=None, help="per-channel mean on [0, 1], comma-separated")
    g.add_argument("--std", default=None, help="per-channel std on [0, 1], comma-separated")
    g.add_argument("--eval-crop", type=int, default=None,
                   help="centre crop side for evaluation (default: the whole image)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-batch-size", type=int, default=1000)
    p.add_argument("--epoch-loop", default="auto", choices=["auto", "scan", "python"],
                   help="epoch as one lax.scan or a Python loop of jitted steps (auto: python "
                        "on CPU, scan elsewhere)")
    p.add_argument("--resume", action="store_true", help="continue from <out>/checkpoints")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    return p.parse_args(argv)


def config_from_args(a: argparse.Namespace):
    from ckd_jax.train.supervised import TeacherConfig

    try:
        model_kwargs = json.loads(a.model_kwargs)
    except json.JSONDecodeError as e:
        raise ValueError(f"--model-kwargs is not valid JSON: {a.model_kwargs!r}") from e
    milestones = None
    if a.milestones:
        try:
            milestones = tuple(int(m) for m in a.milestones.split(","))
        except ValueError as e:
            raise ValueError(f"--milestones must be comma-separated ints, got "
                             f"{a.milestones!r}") from e
    data_spec = {}
    for key in ("crop_size", "padding", "flip", "eval_crop"):
        if getattr(a, key) is not None:
            data_spec[key] = getattr(a, key)
    for key in ("mean", "std"):
        if getattr(a, key) is not None:
            try:
                data_spec[key] = [float(v) for v in getattr(a, key).split(",")]
            except ValueError as e:
                raise ValueError(f"--{key} must be comma-separated numbers, got "
                                 f"{getattr(a, key)!r}") from e
    out = a.out or os.path.join("runs", f"teacher_{a.dataset.replace(':', '_')}_{a.model}")
    return TeacherConfig(
        dataset=a.dataset, model=a.model, model_kwargs=model_kwargs,
        data_spec=data_spec or None, out_dir=out,
        data_dir=a.data_dir, data_path=a.path, recipe=a.recipe, epochs=a.epochs,
        batch_size=a.batch_size, lr=a.lr, momentum=a.momentum, weight_decay=a.weight_decay,
        nesterov=a.nesterov, schedule=a.schedule, milestones=milestones, lr_factor=a.lr_factor,
        warmup_epochs=a.warmup_epochs, label_smoothing=a.label_smoothing,
        compute_dtype=a.compute_dtype, seed=a.seed, eval_batch_size=a.eval_batch_size,
        epoch_loop=a.epoch_loop, resume=a.resume, progress=not a.no_progress)


def main(argv=None) -> int:
    args = parse_args(argv)
    from ckd_jax.train.supervised import train_teacher

    try:
        config = config_from_args(args)
        config.validate()
    except TypeError as e:  # a field of the wrong type: a bad argument too
        raise ValueError(str(e)) from e
    # Bad arguments raise ValueError / FileExistsError / FileNotFoundError before the run
    # directory is created; the command line turns them into one line and exit status 2
    # (ckd_jax.cli.run_command, below).
    from ckd_jax.runlock import run_lock

    created = config.out_dir is not None and not os.path.exists(config.out_dir)
    try:
        with run_lock(config.out_dir) if config.out_dir else contextlib.nullcontext():
            result = train_teacher(config)  # one process per run folder
    except BaseException:
        if created and os.path.isdir(config.out_dir) and not os.listdir(config.out_dir):
            os.rmdir(config.out_dir)  # a bad input leaves no empty folder behind
        raise
    print(f"final test accuracy {result.test_acc:.4f} (top-5 {result.test_top5:.4f}); best "
          f"{result.best_test_acc:.4f} at epoch {result.best_epoch}; wall time "
          f"{result.wall_time_s:.1f} s; run dir {result.run_dir}")
    return 0


if __name__ == "__main__":
    from ckd_jax.cli import run_command  # a bad input: one line on stderr, exit status 2

    sys.exit(run_command(main))
