"""Supervised (teacher) training: any zoo model on a dataset's full training split.

Recipes (`TeacherConfig.recipe`):
  "paper": RepDistiller's teacher recipe used by the CKD paper: SGD lr 0.05, momentum 0.9, weight
           decay 5e-4, batch 64, 240 epochs, lr x0.1 at epochs 150, 180, 210 (milestones scale
           with `epochs`: 5/8, 3/4, 7/8 of the run), float32, plain cross-entropy.
  "fast":  for an accelerator budget: batch 512, lr 0.4 (linear scaling of 0.05 @ 64), one-cycle
           schedule, 30 epochs, bfloat16 compute on GPU/TPU ("auto"), float32 on CPU.
Any field left None takes the recipe's value; explicit fields override it.

How it runs: the uint8 training images live on the device; one epoch is one compiled
`lax.scan` (on CPU a Python loop of one jitted step, see `make_train_epoch`) over a random
permutation of the training set (the last incomplete batch is dropped,
so every step has a static shape; RepDistiller's loader keeps it: at 50000 / 64 that is 16 images
per epoch, a different 16 each epoch), with on-device augmentation (random crop after zero
padding, flip, normalise) and one SGD step per batch. After each epoch the test split is
evaluated (compiled, `ckd_jax.train.evaluate`), a line is appended to `<run_dir>/log.jsonl`, and
an orbax checkpoint is written (the latest every epoch and the best by test accuracy,
`ckd_jax.checkpoint.Checkpointer`). `resume=True` continues from the latest checkpoint and
reproduces an uninterrupted run exactly (all randomness comes from the PRNG key in the state).

Selecting a teacher by *test* accuracy would leak the test set, so `load_teacher` returns the
last epoch's weights by default (RepDistiller's released teachers are last-epoch weights too).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ckd_jax.checkpoint import Checkpointer
from ckd_jax.data.augment import normalize, random_crop_flip
from ckd_jax.train import optim
from ckd_jax.train.evaluate import make_eval_fn

__all__ = ["TeacherConfig", "TeacherResult", "RECIPES", "train_teacher", "load_teacher",
           "make_train_epoch", "init_train_state"]

RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=240, batch_size=64, lr=0.05, schedule="multistep", warmup_epochs=0,
                  label_smoothing=0.0, compute_dtype="float32"),
    "fast": dict(epochs=30, batch_size=512, lr=0.4, schedule="onecycle", warmup_epochs=0,
                 label_smoothing=0.0, compute_dtype="auto"),
}
SCHEDULES = ("multistep", "cosine", "onecycle", "constant")
COMPUTE_DTYPES = ("float32", "bfloat16", "auto")
# The paper's milestones as fractions of its 240 epochs: 150/240, 180/240, 210/240.
PAPER_MILESTONE_FRACTIONS = (0.625, 0.75, 0.875)
# Fields that may differ between a run and its resumption.
_RESUME_FREE = ("out", "data_dir", "data_path", "resume", "progress", "eval_batch_size")

CHECKPOINT_SUBDIR = "checkpoints"
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "teacher.json"


@dataclass(frozen=True)
class TeacherConfig:
    """One teacher-training run. None fields take the value of `recipe` (see RECIPES)."""

    dataset: str = "digits"
    model: str = "tiny_cnn"
    model_kwargs: dict = field(default_factory=dict)
    out: str | None = None  # run directory; None = keep nothing on disk (no checkpoints)
    data_dir: str | None = None
    data_path: str | None = None
    recipe: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    momentum: float = 0.9
    weight_decay: float = 5e-4
    nesterov: bool = False
    schedule: str | None = None
    milestones: tuple[int, ...] | None = None  # multistep epochs; None = 5/8, 3/4, 7/8 of epochs
    lr_factor: float = 0.1
    warmup_epochs: int | None = None  # cosine only
    label_smoothing: float | None = None
    compute_dtype: str | None = None  # "float32", "bfloat16" or "auto" (bf16 on GPU/TPU)
    seed: int = 0
    eval_batch_size: int = 1000
    epoch_loop: str = "auto"  # "scan", "python" or "auto" (see make_train_epoch)
    resume: bool = False
    progress: bool = True

    def resolved(self) -> TeacherConfig:
        """A copy with every None recipe field filled in (and milestones made explicit)."""
        if self.recipe not in RECIPES:
            raise ValueError(f"unknown recipe {self.recipe!r}; choose one of {sorted(RECIPES)}")
        fill = {k: v for k, v in RECIPES[self.recipe].items() if getattr(self, k) is None}
        cfg = dataclasses.replace(self, **fill)
        if cfg.milestones is None and cfg.schedule == "multistep" and isinstance(cfg.epochs, int):
            ms = tuple(max(1, round(f * cfg.epochs)) for f in PAPER_MILESTONE_FRACTIONS)
            cfg = dataclasses.replace(cfg, milestones=tuple(sorted(set(ms))))
        elif cfg.milestones is not None:
            cfg = dataclasses.replace(cfg, milestones=tuple(int(m) for m in cfg.milestones))
        return cfg

    def validate(self) -> None:
        """Raise ValueError naming the bad field and the accepted values (no data needed)."""
        from ckd_jax.models import model_names

        c = self.resolved()
        if c.model not in model_names():
            raise ValueError(f"unknown model {c.model!r}; available: {', '.join(model_names())}")

        def pos_int(name):
            v = getattr(c, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")

        for name in ("epochs", "batch_size", "eval_batch_size"):
            pos_int(name)
        if isinstance(c.seed, bool) or not isinstance(c.seed, int):
            raise ValueError(f"seed must be an int, got {c.seed!r}")
        if not isinstance(c.lr, (int, float)) or not c.lr > 0:
            raise ValueError(f"lr must be a positive number, got {c.lr!r}")
        if not 0 <= c.momentum < 1:
            raise ValueError(f"momentum must be in [0, 1), got {c.momentum!r}")
        if c.weight_decay < 0:
            raise ValueError(f"weight_decay must be >= 0, got {c.weight_decay!r}")
        if c.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {c.schedule!r}; choose one of {SCHEDULES}")
        if c.compute_dtype not in COMPUTE_DTYPES:
            raise ValueError(f"unknown compute_dtype {c.compute_dtype!r}; choose one of "
                             f"{COMPUTE_DTYPES}")
        if not 0 <= c.label_smoothing < 1:
            raise ValueError(f"label_smoothing must be in [0, 1), got {c.label_smoothing!r}")
        if not 0 < c.lr_factor <= 1:
            raise ValueError(f"lr_factor must be in (0, 1], got {c.lr_factor!r}")
        if c.schedule == "multistep":
            ms = list(c.milestones)
            if any(m < 1 for m in ms) or ms != sorted(set(ms)):
                raise ValueError(f"milestones must be strictly increasing positive epochs, got "
                                 f"{c.milestones}")
        if c.schedule == "cosine" and not 0 <= c.warmup_epochs < c.epochs:
            raise ValueError(f"warmup_epochs must be in [0, epochs={c.epochs}), got "
                             f"{c.warmup_epochs!r}")
        if c.epoch_loop not in ("scan", "python", "auto"):
            raise ValueError(f"epoch_loop must be 'scan', 'python' or 'auto', got "
                             f"{c.epoch_loop!r}")
        if not isinstance(c.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict, got {c.model_kwargs!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        return d


class TeacherResult(NamedTuple):
    """What `train_teacher` returns.

    variables: {"params", "batch_stats"} of the last epoch (host-independent jax arrays).
    test_acc / test_top5: of those last-epoch weights (fractions in [0, 1]).
    best_test_acc, best_epoch: the best epoch by test accuracy (checkpoint kept on disk).
    history: one dict per epoch (the lines of log.jsonl).
    run_dir: the run directory, or None when `config.out` is None.
    wall_time_s: this call's wall time, data loading and compilation included.
    """

    variables: dict
    test_acc: float
    test_top5: float
    best_test_acc: float
    best_epoch: int
    history: list
    run_dir: str | None
    wall_time_s: float


# ----------------------------------------------------------------------------- the compiled core
def _resolve_dtype(compute_dtype: str) -> Any:
    if compute_dtype == "auto":
        return jnp.bfloat16 if jax.default_backend() in ("gpu", "tpu") else jnp.float32
    return {"float32": jnp.float32, "bfloat16": jnp.bfloat16}[compute_dtype]


def init_train_state(model, tx: optax.GradientTransformation, image_shape: tuple[int, ...],
                     seed: int) -> dict:
    """Initial state {"params", "batch_stats", "opt_state", "rng", "epoch"} for `model`.

    `rng` is a typed PRNG key (checkpointed as raw key data); `epoch` counts finished epochs.
    """
    init_key, rng = jax.random.split(jax.random.key(seed))
    dummy = jnp.zeros((1,) + tuple(image_shape), jnp.float32)
    variables = jax.jit(lambda k: model.init(k, dummy, train=False))(init_key)
    params = variables["params"]
    return {"params": params, "batch_stats": variables.get("batch_stats", {}),
            "opt_state": tx.init(params), "rng": rng, "epoch": jnp.zeros((), jnp.int32)}


def make_train_epoch(model, tx: optax.GradientTransformation, spec: Any, *, batch_size: int,
                     num_train: int, num_classes: int, label_smoothing: float = 0.0,
                     compute_dtype: Any = jnp.float32, loop: str = "auto") -> Callable:
    """`train_epoch(state, images_u8 [N,H,W,C], labels [N]) -> (state, metrics)`.

    One epoch = floor(N / batch_size) SGD steps over a random permutation (drawn from
    `state["rng"]`), as a single `lax.scan`. Each step: gather the batch on device, random crop
    (`spec.crop_size` after `spec.padding` zero padding) and flip (`spec.flip`), normalise,
    forward in train mode (BatchNorm batch statistics), softmax cross-entropy with optional
    label smoothing, optax update. With `compute_dtype=bfloat16` the parameters and inputs are
    cast for the forward pass only; master weights, gradients, BN statistics and the loss stay
    float32. metrics = {"loss", "acc"}: means over the epoch's steps.

    loop: "scan" (the whole epoch is one jitted `lax.scan`), "python" (a jitted step dispatched
    `steps` times from Python; identical math) or "auto" (scan on GPU/TPU, python on CPU, where
    XLA runs conv gradients inside loops far slower, see below).
    """
    steps = num_train // batch_size
    if steps < 1:
        raise ValueError(f"batch_size={batch_size} is larger than the training set ({num_train})")

    def loss_fn(params, batch_stats, x, y):
        if compute_dtype != jnp.float32:
            params = jax.tree.map(lambda p: p.astype(compute_dtype), params)
            x = x.astype(compute_dtype)
        variables = {"params": params}
        if batch_stats:
            variables["batch_stats"] = batch_stats
        logits, new_vars = model.apply(variables, x, train=True, mutable=["batch_stats"])
        logits = logits.astype(jnp.float32)
        targets = jax.nn.one_hot(y, num_classes)
        if label_smoothing:
            targets = optax.smooth_labels(targets, label_smoothing)
        loss = optax.softmax_cross_entropy(logits, targets).mean()
        acc = jnp.mean(jnp.argmax(logits, -1) == y)
        return loss, (new_vars.get("batch_stats", batch_stats), acc)

    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)

    def plan(state):
        """The epoch's randomness: next key, batch indices [steps, batch], per-step keys."""
        rng, perm_key, aug_key = jax.random.split(state["rng"], 3)
        perm = jax.random.permutation(perm_key, num_train)[: steps * batch_size]
        return rng, perm.reshape(steps, batch_size), jax.random.split(aug_key, steps)

    def step(carry, inp, images_u8, labels):
        params, batch_stats, opt_state = carry
        idx, key = inp
        x = random_crop_flip(key, images_u8[idx], crop_size=spec.crop_size,
                             padding=spec.padding, flip=spec.flip)
        x = normalize(x, spec.mean, spec.std)
        (loss, (batch_stats, acc)), grads = grad_fn(params, batch_stats, x, labels[idx])
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        return (params, batch_stats, opt_state), (loss, acc)

    def finish(state, rng, carry, losses, accs):
        params, batch_stats, opt_state = carry
        new_state = {"params": params, "batch_stats": batch_stats, "opt_state": opt_state,
                     "rng": rng, "epoch": state["epoch"] + 1}
        return new_state, {"loss": jnp.mean(losses), "acc": jnp.mean(accs)}

    def scan_epoch(state, images_u8, labels):
        rng, perm, step_keys = plan(state)
        carry = (state["params"], state["batch_stats"], state["opt_state"])
        carry, (losses, accs) = jax.lax.scan(
            lambda c, i: step(c, i, images_u8, labels), carry, (perm, step_keys))
        return finish(state, rng, carry, losses, accs)

    if loop == "auto":
        loop = "python" if jax.default_backend() == "cpu" else "scan"
    if loop == "scan":
        return jax.jit(scan_epoch)
    if loop != "python":
        raise ValueError(f"loop must be 'scan', 'python' or 'auto', got {loop!r}")

    # XLA:CPU runs convolution gradients inside a while loop (what lax.scan lowers to) 20-30x
    # slower than the same step compiled alone (measured here: tiny_cnn, batch 512, 32x32:
    # 1.0-1.6 s per step alone, 30 s inside a scan), so on CPU the steps are dispatched from
    # Python: the same math, one compiled step, the data still resident on the device.
    plan_j = jax.jit(plan)
    step_j = jax.jit(step)
    finish_j = jax.jit(finish)

    def python_epoch(state, images_u8, labels):
        rng, perm, step_keys = plan_j(state)
        carry = (state["params"], state["batch_stats"], state["opt_state"])
        losses, accs = [], []
        for i in range(steps):
            carry, (loss, acc) = step_j(carry, (perm[i], step_keys[i]), images_u8, labels)
            losses.append(loss)
            accs.append(acc)
        return finish_j(state, rng, carry, jnp.stack(losses), jnp.stack(accs))

    return python_epoch


def _make_schedule(c: TeacherConfig, steps_per_epoch: int):
    total = c.epochs * steps_per_epoch
    if c.schedule == "multistep":
        return optim.multistep(c.lr, steps_per_epoch, c.milestones, c.lr_factor)
    if c.schedule == "cosine":
        return optim.cosine(c.lr, total, c.warmup_epochs * steps_per_epoch)
    if c.schedule == "onecycle":
        return optim.onecycle(c.lr, max(total, 2))
    return float(c.lr)  # constant


# ----------------------------------------------------------------------------- data and run dir
def _load_data(c: TeacherConfig):
    from ckd_jax.data import dataset_names, dataset_spec, load_train_test

    if c.dataset not in dataset_names():
        raise ValueError(f"unknown dataset {c.dataset!r}; available: {', '.join(dataset_names())}")
    spec = dataset_spec(c.dataset)
    train, test = load_train_test(c.dataset, data_dir=c.data_dir, path=c.data_path)
    return train, test, spec


def _check_split(name: str, split: Any) -> None:
    for attr in ("images", "labels"):
        if not hasattr(split, attr):
            raise TypeError(f"{name} must be an ImageSet-like object with .images, .labels and "
                            f".class_names; got {type(split).__name__}")
    imgs, labels = split.images, np.asarray(split.labels)
    if getattr(imgs, "dtype", None) != np.uint8 or imgs.ndim != 4:
        raise ValueError(f"{name}.images must be uint8 [N, H, W, C], got "
                         f"{getattr(imgs, 'dtype', None)} {getattr(imgs, 'shape', None)}")
    if labels.shape != (imgs.shape[0],) or imgs.shape[0] == 0:
        raise ValueError(f"{name}: need N > 0 images and labels [N]; got {imgs.shape}, "
                         f"{labels.shape}")


def _num_classes(train: Any) -> int:
    if hasattr(train, "num_classes"):
        return int(train.num_classes)
    if hasattr(train, "class_names"):
        return len(train.class_names)
    return int(np.max(train.labels)) + 1


def _write_jsonl(path: str, rows: list[dict]) -> None:
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    os.replace(tmp, path)


def _read_resume_point(ckpt_dir: str, c: TeacherConfig) -> int | None:
    """Latest saved epoch of a previous run, after checking its config matches `c`."""
    if not os.path.isdir(ckpt_dir):
        return None
    ck = Checkpointer(ckpt_dir, best_metric="test_acc")
    try:
        step = ck.latest_step()
        if step is None:
            return None
        extra = ck.extra(step) or {}
    finally:
        ck.close()
    saved = extra.get("config", {})
    now = c.to_dict()
    diff = {k: (saved.get(k), now[k]) for k in now
            if k not in _RESUME_FREE and k in saved and saved.get(k) != now[k]}
    if diff:
        raise ValueError(f"cannot resume from {ckpt_dir}: its config differs in "
                         + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items()))
    return step


# ----------------------------------------------------------------------------------- training
def train_teacher(config: TeacherConfig, *, train: Any = None, test: Any = None,
                  spec: Any = None,
                  on_epoch_end: Callable[[dict], None] | None = None) -> TeacherResult:
    """Train `config.model` on the full training split, evaluating the test split every epoch.

    Args:
      config: a TeacherConfig (checked before any data is loaded or file written).
      train, test: ImageSet-like splits (uint8 images [N,H,W,C], int labels [N], class_names);
        default: `ckd_jax.data.load_train_test(config.dataset, ...)`.
      spec: a DatasetSpec (mean, std, crop_size, padding, flip, eval_crop); default
        `ckd_jax.data.dataset_spec(config.dataset)`.
      on_epoch_end: called with each epoch's history row after its checkpoint is on disk.

    Returns:
      TeacherResult (last-epoch variables, accuracies, history, run_dir, wall time).

    Files in `config.out` (if set): checkpoints/ (orbax: latest + best by test_acc),
    log.jsonl (one JSON object per epoch), teacher.json (summary, written at the end).
    """
    t_start = time.time()
    from ckd_jax.models import create_model

    config.validate()
    c = config.resolved()
    run_dir = os.path.abspath(c.out) if c.out else None
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_SUBDIR) if run_dir else None

    # --- every check before any work: run dir, data, model/input compatibility -------------
    resume_step = None
    if run_dir and os.path.isdir(run_dir) and os.listdir(run_dir):
        if not c.resume:
            raise FileExistsError(f"run directory {run_dir} exists and is not empty; pass "
                                  f"resume=True (--resume) to continue it or choose another out")
        resume_step = _read_resume_point(ckpt_dir, c)
    if (train is None) != (test is None):
        raise ValueError("pass both train= and test=, or neither")
    if train is None:
        train, test, data_spec = _load_data(c)
        spec = spec or data_spec
    elif spec is None:
        from ckd_jax.data import dataset_spec

        spec = dataset_spec(c.dataset)
    _check_split("train", train)
    _check_split("test", test)
    num_classes = _num_classes(train)
    n_train = int(train.images.shape[0])
    if c.batch_size > n_train:
        raise ValueError(f"batch_size={c.batch_size} is larger than the training set "
                         f"({n_train} images)")
    if test.images.shape[1:] != train.images.shape[1:]:
        raise ValueError(f"train and test image shapes differ: {train.images.shape[1:]} vs "
                         f"{test.images.shape[1:]}")
    h, w, ch = train.images.shape[1:]
    crop = spec.crop_size or h
    if crop > h + 2 * spec.padding:
        raise ValueError(f"spec.crop_size={crop} is larger than the padded {h}x{w} images")
    model = create_model(c.model, num_classes, **c.model_kwargs)
    in_shape = (crop, crop, ch)
    eval_shape = (spec.eval_crop, spec.eval_crop, ch) if spec.eval_crop else (h, w, ch)
    if eval_shape != in_shape:
        raise ValueError(f"training crops {in_shape} and evaluation views {eval_shape} differ")
    try:
        jax.eval_shape(lambda: model.init(jax.random.key(0), jnp.zeros((1,) + in_shape),
                                          train=False))
    except Exception as e:  # shape errors of the architecture on this input size
        raise ValueError(f"model {c.model!r} cannot run on {in_shape} inputs: {e}") from e

    steps_per_epoch = n_train // c.batch_size
    tx = optim.make_optimizer(lr_schedule=_make_schedule(c, steps_per_epoch),
                              momentum=c.momentum, weight_decay=c.weight_decay,
                              nesterov=c.nesterov)
    compute_dtype = _resolve_dtype(c.compute_dtype)

    # --- set-up ------------------------------------------------------------------------------
    state = init_train_state(model, tx, in_shape, c.seed)
    history: list[dict] = []
    ckpt = None
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
        ckpt = Checkpointer(ckpt_dir, best_metric="test_acc", max_to_keep=1)
        if resume_step is not None:
            _, state = ckpt.restore_latest(state)
            history = list((ckpt.extra(resume_step) or {}).get("history", []))
        _write_jsonl(os.path.join(run_dir, LOG_FILE), history)

    images = jax.device_put(np.asarray(train.images))
    labels = jax.device_put(np.asarray(train.labels, np.int32))
    test_images = jax.device_put(np.asarray(test.images))
    test_labels = jax.device_put(np.asarray(test.labels, np.int32))
    train_epoch = make_train_epoch(model, tx, spec, batch_size=c.batch_size, num_train=n_train,
                                   num_classes=num_classes, label_smoothing=c.label_smoothing,
                                   compute_dtype=compute_dtype, loop=c.epoch_loop)
    eval_fn = make_eval_fn(model, spec, min(c.eval_batch_size, len(test_labels)))

    start_epoch = int(state["epoch"])
    bar = None
    if c.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=c.epochs, initial=start_epoch, desc=f"{c.model}/{c.dataset}",
                   unit="epoch", file=sys.stderr, dynamic_ncols=True)
    try:
        for epoch in range(start_epoch, c.epochs):
            t0 = time.time()
            state, m = train_epoch(state, images, labels)
            variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
            top1, top5 = eval_fn(variables, test_images, test_labels)
            row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                   "lr": float(optim.get_lr(state["opt_state"])),
                   "train_loss": float(m["loss"]), "train_acc": float(m["acc"]),
                   "test_acc": float(top1), "test_top5": float(top5),
                   "epoch_time_s": round(time.time() - t0, 3)}
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} "
                                         f"(loss {row['train_loss']}); lower the lr")
            history.append(row)
            if ckpt is not None:
                ckpt.save(epoch + 1, state, {"test_acc": row["test_acc"]},
                          extra={"history": history, "config": c.to_dict(),
                                 "image_shape": list(in_shape), "num_classes": num_classes})
                with open(os.path.join(run_dir, LOG_FILE), "a") as f:
                    f.write(json.dumps(row) + "\n")
            if bar is not None:
                bar.update(1)
                bar.set_postfix(loss=f"{row['train_loss']:.3f}", test=f"{row['test_acc']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(row)
    finally:
        if bar is not None:
            bar.close()
        if ckpt is not None:
            ckpt.close()

    variables = {"params": state["params"], "batch_stats": state["batch_stats"]}
    if history:
        last = history[-1]
        best = max(history, key=lambda r: (r["test_acc"], -r["epoch"]))
        test_acc, test_top5 = last["test_acc"], last["test_top5"]
    else:  # nothing to train (resumed a finished run): evaluate the restored weights
        top1, top5 = eval_fn(variables, test_images, test_labels)
        test_acc, test_top5 = float(top1), float(top5)
        best = {"test_acc": test_acc, "epoch": start_epoch}
    wall = time.time() - t_start
    if run_dir:
        summary = {"model": c.model, "dataset": c.dataset, "num_classes": num_classes,
                   "image_shape": list(in_shape), "epochs": c.epochs,
                   "test_acc": test_acc, "test_top5": test_top5,
                   "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                   "wall_time_s": round(wall, 2),
                   "train_time_s": round(sum(r["epoch_time_s"] for r in history), 2),
                   "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
                   "compute_dtype": jnp.dtype(compute_dtype).name, "config": c.to_dict()}
        with open(os.path.join(run_dir, SUMMARY_FILE), "w") as f:
            json.dump(summary, f, indent=2)
    return TeacherResult(variables, test_acc, test_top5, best["test_acc"], best["epoch"],
                         history, run_dir, wall)


# ----------------------------------------------------------------------------------- loading
_TORCH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".tar", ".ckpt")


def load_teacher(source: str | os.PathLike, name: str, num_classes: int, *,
                 which: str = "last", model_kwargs: dict | None = None) -> dict:
    """Teacher variables {"params", "batch_stats"} from a run directory or a RepDistiller .pth.

    Args:
      source: a `train_teacher` run directory (or its `checkpoints/` directory), or a PyTorch
        checkpoint file (RepDistiller format) converted by `ckd_jax.models.load_torch_checkpoint`.
      name: model name (`ckd_jax.models.model_names()`); must match the run's model.
      num_classes: classifier width; must match the checkpoint.
      which: "last" (final epoch, default) or "best" (best test accuracy; leaks the test set
        if used for model selection).
      model_kwargs: extra `create_model` arguments the run used.

    Raises:
      FileNotFoundError / ValueError with the offending value before anything is restored.
    """
    from ckd_jax.models import create_model, model_names

    src = os.fspath(source)
    if name not in model_names():
        raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    if which not in ("last", "best"):
        raise ValueError(f"which must be 'last' or 'best', got {which!r}")
    if os.path.isfile(src):
        if not src.endswith(_TORCH_SUFFIXES):
            raise ValueError(f"{src} is a file but not a PyTorch checkpoint "
                             f"({', '.join(_TORCH_SUFFIXES)}); pass a run directory instead")
        from ckd_jax.models import load_torch_checkpoint  # lazy: pulls in torch

        return load_torch_checkpoint(src, name, num_classes)
    if not os.path.isdir(src):
        raise FileNotFoundError(f"teacher source {src} does not exist")
    ckpt_dir = os.path.join(src, CHECKPOINT_SUBDIR)
    if not os.path.isdir(ckpt_dir):
        ckpt_dir = src
    ck = Checkpointer(ckpt_dir, best_metric="test_acc")
    try:
        step = ck.latest_step() if which == "last" else ck.best_step()
        if step is None:
            raise FileNotFoundError(f"no checkpoint in {ckpt_dir}")
        extra = ck.extra(step) or {}
        saved_cfg = extra.get("config", {})
        if saved_cfg.get("model", name) != name:
            raise ValueError(f"{src} holds a {saved_cfg['model']!r} model, not {name!r}")
        if extra.get("num_classes", num_classes) != num_classes:
            raise ValueError(f"{src} has {extra['num_classes']} classes, not {num_classes}")
        raw = ck.restore(step)
    finally:
        ck.close()
    variables = {"params": raw["params"], "batch_stats": raw.get("batch_stats") or {}}
    image_shape = tuple(extra.get("image_shape", ()))
    if image_shape:  # check every shape against a freshly built model
        model = create_model(name, num_classes, **(model_kwargs or saved_cfg.get("model_kwargs")
                                                   or {}))
        ref = jax.eval_shape(lambda: model.init(jax.random.key(0),
                                                jnp.zeros((1,) + image_shape), train=False))
        ref = {"params": ref["params"], "batch_stats": ref.get("batch_stats", {})}
        got = jax.tree.map(lambda x: tuple(x.shape), variables)
        want = jax.tree.map(lambda x: tuple(x.shape), ref)
        if got != want:
            raise ValueError(f"checkpoint variables of {src} do not match model {name!r}")
    return jax.tree.map(jnp.asarray, variables)

