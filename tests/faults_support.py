"""Shared pieces of the fault-injection tests (tests/test_faults*.py): the damages, a snapshot
of a folder, and hand-made run folders in the layout the commands write (no training)."""

from __future__ import annotations

import hashlib
import json
import os

import jax.numpy as jnp
import numpy as np
from experiments_support import ROOT

from ckd_jax.budget import select_budget
from ckd_jax.data import dataset_spec, load_train_test
from ckd_jax.logit_table import build_or_load_logit_table

QUICKSTART_CONFIG = os.path.join(ROOT, "experiments", "configs", "digits_quickstart.py")
QS_ARGS = ["--variants", "kd", "--epochs", "1", "--quiet"]
QS_B = 200  # teacher calls of one quickstart table (S = 250)

# Damages of a file's bytes; the kind-specific ones (version, other run) live with each kind.
BYTE_DAMAGES = ("empty", "trunc10", "trunc50", "trunc90", "flip")


def damage(path, kind: str, seed: int = 0) -> None:
    """Apply one damage to `path`: missing, empty, truncated to 10/50/90 % of its size, or 8
    bytes flipped (XOR 0xFF: a JSON file stops being UTF-8, a binary one changes)."""
    path = os.fspath(path)
    if kind == "missing":
        os.remove(path)
        return
    data = open(path, "rb").read()
    if kind == "empty":
        data = b""
    elif kind.startswith("trunc"):
        data = data[:len(data) * int(kind[5:]) // 100]
    elif kind == "flip":
        rng = np.random.default_rng(seed)
        buf = bytearray(data)
        for p in rng.choice(len(buf), size=min(8, len(buf)), replace=False):
            buf[p] ^= 0xFF
        data = bytes(buf)
    else:
        raise ValueError(kind)
    with open(path, "wb") as f:
        f.write(data)


def snapshot(folder) -> dict:
    """{relative path: sha256} of every file under `folder` (what "nothing touched" means)."""
    out = {}
    for root, _, files in os.walk(folder):
        for name in files:
            full = os.path.join(root, name)
            out[os.path.relpath(full, folder)] = hashlib.sha256(open(full, "rb").read()
                                                                ).hexdigest()
    return out


def _zero_teacher(variables, x, train=False):
    return jnp.zeros((x.shape[0], 10), jnp.float32) + x.mean()


def quickstart_tables(folder, images=None) -> list[str]:
    """The quickstart's three logit tables (S = 250, seeds 1-3) in `folder`, built by a
    stand-in teacher on `images` (default: the digits training images)."""
    train, _ = load_train_test("digits")
    images = train.images if images is None else images
    paths = []
    for seed in (1, 2, 3):
        split = select_budget(len(train.labels), seed=seed, subset_size=250,
                              labels=train.labels)
        path = os.path.join(folder, f"digits_tiny_cnn_augmented_S250_seed{seed}.npz")
        import jax

        build_or_load_logit_table(path, teacher_apply=_zero_teacher,
                                  teacher_variables={"w": np.zeros(1, np.float32)},
                                  teacher_name="tiny_cnn", dataset_name="digits", images=images,
                                  indices=split.teacher_idx, key=jax.random.PRNGKey(seed),
                                  spec=dataset_spec("digits"), seed=seed)
        paths.append(path)
    return paths


def quickstart_config(out: str, variant: str = "kd"):
    """The DistillConfig quickstart.py builds for `variant` under `--out out --epochs 1`."""
    from ckd_jax.train.config import load_config_file
    from ckd_jax.train.methods import variant_overrides

    base = load_config_file(QUICKSTART_CONFIG).replace(epochs=1, progress=False)
    return base.replace(**variant_overrides(variant),
                        teacher_checkpoint=os.path.join(out, "teacher"),
                        logit_table_dir=os.path.join(out, "logit_tables"),
                        out_dir=os.path.join(out, variant))


def finished_summary(cfg, acc: float = 0.5) -> dict:
    return {"method": cfg.method, "dataset": "digits", "teacher": cfg.teacher,
            "student": cfg.student, "schedule": cfg.schedule, "subset_size": cfg.subset_size,
            "budget": 200, "teacher_calls_this_run": 0, "finished": True, "train_seconds": 1.0,
            "calibration": cfg.calibration,
            "members": [{"seed": s, "lr": lr, "teacher_calls": 200,
                         "test_top1_at_best_val": acc + 0.01 * s, "best_val_top1": acc,
                         "best_epoch": 1} for s, lr in cfg.members()]}


def make_quickstart_folder(out, tables_from=None, finished: bool = True) -> None:
    """A quickstart --out folder as a finished `--variants kd --epochs 1` run leaves it (a
    teacher.json, the three tables, kd/config.json and kd/summary.json), made by hand."""
    out = os.fspath(out)
    os.makedirs(os.path.join(out, "teacher"))
    with open(os.path.join(out, "teacher", "teacher.json"), "w") as f:
        json.dump({"model": "tiny_cnn", "test_acc": 0.9}, f)
    quickstart_tables(os.path.join(out, "logit_tables"), tables_from)
    if finished:
        cfg = quickstart_config(out)
        os.makedirs(cfg.out_dir)
        with open(os.path.join(cfg.out_dir, "config.json"), "w") as f:
            f.write(cfg.to_json())
        with open(os.path.join(cfg.out_dir, "summary.json"), "w") as f:
            json.dump(finished_summary(cfg), f)


def table_build_args(on_batch=None) -> dict:
    """Arguments of `build_or_load_logit_table` for a 6-row table of a TinyCNN teacher, in
    batches of 3; `on_batch(n)` runs (on the host) as each teacher batch executes."""
    import jax

    from ckd_jax.data.specs import DatasetSpec
    from ckd_jax.models import create_model

    model = create_model("tiny_cnn", 10, width=4)
    variables = model.init(jax.random.PRNGKey(0), np.zeros((1, 8, 8, 1), np.float32),
                           train=False)

    def apply(v, x, train=False):
        if on_batch is not None:
            jax.debug.callback(on_batch, x.shape[0])
        return model.apply(v, x, train=train)

    images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 1), dtype=np.uint8)
    return dict(teacher_apply=apply, teacher_variables=variables, teacher_name="tiny_cnn",
                dataset_name="toy", images=images, indices=np.array([9, 1, 4, 0, 7, 2]),
                key=jax.random.PRNGKey(3), spec=DatasetSpec(mean=(0.5,), std=(0.25,),
                                                            crop_size=8, padding=1, flip=True),
                seed=1, batch_size=3)


def teacher_folder(folder, width: int = 32, seed: int = 0):
    """A train_teacher.py run folder (one checkpoint step and a teacher.json) of an untrained
    TinyCNN of `width`, made without training; returns its variables."""
    import jax

    from ckd_jax.checkpoint import Checkpointer
    from ckd_jax.models import create_model

    folder = os.fspath(folder)
    model = create_model("tiny_cnn", 10, width=width)
    variables = model.init(jax.random.PRNGKey(seed), np.zeros((1, 8, 8, 1), np.float32),
                           train=False)
    variables = {"params": variables["params"],
                 "batch_stats": variables.get("batch_stats", {})}
    cfg = {"model": "tiny_cnn", "model_kwargs": {"width": width}}
    with Checkpointer(os.path.join(folder, "checkpoints"), best_metric="test_acc") as ck:
        ck.save(1, variables, {"test_acc": 0.5},
                extra={"config": cfg, "num_classes": 10, "image_shape": [8, 8, 1]})
    with open(os.path.join(folder, "teacher.json"), "w") as f:
        json.dump({"model": "tiny_cnn", "config": cfg, "test_acc": 0.9}, f)
    return variables


def build_tables(out, teacher_dir, table_dir, width: int = 32, seeds=(1, 2, 3)) -> int:
    """The quickstart's kd tables of the teacher in `teacher_dir`, built into `table_dir` the
    way the command builds them (in process, no training); returns the teacher calls."""
    import jax

    from ckd_jax.train.distill import _Prepared

    cfg = quickstart_config(os.fspath(out)).replace(
        teacher_checkpoint=os.fspath(teacher_dir), logit_table_dir=os.fspath(table_dir),
        teacher_kwargs={"width": width}, seeds=tuple(seeds))
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]), ("data",))
    return _Prepared(cfg, mesh, None, None).build_missing_tables()
