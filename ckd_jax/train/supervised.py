"""Supervised (teacher) training: any zoo model on a dataset's full training split.

Recipes (`TeacherConfig.recipe`):
  "paper": RepDistiller's teacher recipe used by the CKD paper: SGD lr 0.05, momentum 0.9, weight
           decay 5e-4, batch 64, 240 epochs, lr x0.1 at epochs 150, 180, 210 (milestones scale
           with `epochs`: 5/8, 3/4, 7/8 of the run), float32, plain cross-entropy.
  "fast":  for an accelerator budget: batch 512, lr 0.4 (linear scaling of 0.05 @ 64), one-cycle
           schedule, 30 epochs, bfloat16 compute on GPU/TPU ("auto"), float32 on CPU.
Any field left None takes the recipe's value; explicit fields override it.

A teacher is a configuration of the one training engine (`ckd_jax.train.engine`), not a second
engine: a population of one member whose data is the whole training split, the method "ce" of
`ckd_jax.train.methods` (cross-entropy, `label_smoothing` as its option), and the recipe's
schedule in the StepSpec (`teacher_step_spec` over `config.make_step_spec`; the schedules and
torch-style SGD are `ckd_jax.train.optim`).
One epoch is one call of `engine.make_train_epoch` (a `lax.scan` on accelerators, a host loop
of one compiled step on CPU, chosen there): ceil(N / batch) steps over a permutation of the
training set, the last partial batch filled from a second permutation (every step has a static
shape), with on-device augmentation. After each epoch the test split is evaluated by
`engine.make_evaluate` (M = 1, float32), a line is appended to `<run_dir>/log.jsonl`, and an
orbax checkpoint of the engine state is written (the latest every epoch and the best by test
accuracy, `ckd_jax.checkpoint.Checkpointer`). Around the epochs runs the students' run loop
(`ckd_jax.train.runloop`: the run folder's resume check, log, checkpoints, summary, progress
bar, Ctrl-C); only the epoch body and the files above are the teacher's. `resume=True`
continues from the latest checkpoint (its config may differ only in `config.TEACHER_RESUME_FREE`)
and reproduces an uninterrupted run exactly (epoch e's randomness is
`fold_in(PRNGKey(seed), e)`, as for students).

Selecting a teacher by *test* accuracy would leak the test set, so `load_teacher` returns the
last epoch's weights by default (RepDistiller's released teachers are last-epoch weights too).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

from ckd_jax.checkpoint import Checkpointer
from ckd_jax.train import choices, optim
from ckd_jax.train import engine as S
from ckd_jax.train.config import TEACHER_RESUME_FREE, RunConfig, make_step_spec
from ckd_jax.train.engine import MemberData, StepSpec
from ckd_jax.train.methods import build_method
from ckd_jax.train.runloop import CHECKPOINT_SUBDIR, EpochLoop, RunFolder, check_run_folder

__all__ = ["TeacherConfig", "TeacherResult", "RECIPES", "train_teacher", "load_teacher",
           "teacher_step_spec", "teacher_data", "epoch_keys"]

RECIPES: dict[str, dict[str, Any]] = {
    "paper": dict(epochs=240, batch_size=64, lr=0.05, schedule="multistep", warmup_epochs=0,
                  label_smoothing=0.0, compute_dtype="float32"),
    "fast": dict(epochs=30, batch_size=512, lr=0.4, schedule="onecycle", warmup_epochs=0,
                 label_smoothing=0.0, compute_dtype="auto"),
}
SCHEDULES = choices.TEACHER_SCHEDULES
COMPUTE_DTYPES = (*choices.COMPUTE_DTYPES, "auto")  # auto: bfloat16 on an accelerator
# The paper's milestones as fractions of its 240 epochs: 150/240, 180/240, 210/240.
PAPER_MILESTONE_FRACTIONS = (0.625, 0.75, 0.875)
LOG_FILE = "log.jsonl"
SUMMARY_FILE = "teacher.json"
CHECKPOINT_LAYOUT = "engine-v1"  # {"state": engine.TrainState of one member}


@dataclass(frozen=True)
class TeacherConfig(RunConfig):
    """One teacher-training run: `RunConfig`'s data, optimiser, schedule and output folder
    (`out_dir`; the old name `out` is accepted too) plus the teacher's own fields. None fields
    take the value of `recipe` (see RECIPES)."""

    _SCHEDULES: ClassVar[tuple[str, ...]] = SCHEDULES
    _COMPUTE_DTYPES: ClassVar[tuple[str, ...]] = COMPUTE_DTYPES
    method: ClassVar[str] = "ce"  # the methods registry's, with `label_smoothing` (not a field)

    model: str = "tiny_cnn"
    model_kwargs: dict = field(default_factory=dict)
    # data_spec (RunConfig): the spec used is recorded in teacher.json (`data_spec`).
    recipe: str = "paper"
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    nesterov: bool = False
    schedule: str | None = None
    milestones: tuple[int, ...] | None = None  # multistep epochs; None = 5/8, 3/4, 7/8 of epochs
    lr_factor: float = 0.1
    warmup_epochs: int | None = None  # cosine only
    label_smoothing: float | None = None
    compute_dtype: str | None = None  # "float32", "bfloat16" or "auto" (bf16 on GPU/TPU)
    seed: int = 0
    eval_batch_size: int = 1000
    resume: bool = False

    @property
    def out(self) -> str | None:
        """The run folder under its old name (`out_dir`)."""
        return self.out_dir

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
        c._check_run_fields()  # data, optimiser, schedule: shared with DistillConfig
        if isinstance(c.seed, bool) or not isinstance(c.seed, int):
            raise ValueError(f"seed must be an int, got {c.seed!r}")
        if not isinstance(c.lr, (int, float)) or not c.lr > 0:
            raise ValueError(f"lr must be a positive number, got {c.lr!r}")
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
        if not isinstance(c.model_kwargs, dict):
            raise ValueError(f"model_kwargs must be a dict, got {c.model_kwargs!r}")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        if d["milestones"] is not None:
            d["milestones"] = list(d["milestones"])
        return d


def _accept_old_names(init):
    """TeacherConfig(out=...) (the name before RunConfig) is TeacherConfig(out_dir=...)."""

    @functools.wraps(init)
    def __init__(self, *args, **kwargs):
        if "out" in kwargs:
            if "out_dir" in kwargs:
                raise TypeError("give the run folder once: out_dir or its old name out")
            kwargs["out_dir"] = kwargs.pop("out")
        init(self, *args, **kwargs)

    return __init__


TeacherConfig.__init__ = _accept_old_names(TeacherConfig.__init__)


class TeacherResult(NamedTuple):
    """What `train_teacher` returns.

    variables: {"params", "batch_stats"} of the last epoch (host-independent jax arrays).
    test_acc / test_top5: of those last-epoch weights (fractions in [0, 1]).
    best_test_acc, best_epoch: the best epoch by test accuracy (checkpoint kept on disk).
    history: one dict per epoch (the lines of log.jsonl).
    run_dir: the run directory, or None when `config.out_dir` is None.
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


# ------------------------------------------------- the teacher as a configuration of the engine
def teacher_step_spec(c: TeacherConfig, spec: Any, n_train: int) -> StepSpec:
    """The StepSpec of a resolved TeacherConfig: one member, the whole training split, the
    recipe's schedule (`config.make_step_spec` turns epochs into global steps)."""
    return make_step_spec(
        spec, n_train, batch_size=c.batch_size, epochs=c.epochs, momentum=c.momentum,
        weight_decay=c.weight_decay, schedule=c.schedule, compute_dtype=c.compute_dtype,
        group_forward="joint", remainder_weight=0.0, nesterov=c.nesterov,
        milestones=c.milestones, lr_factor=c.lr_factor, warmup_epochs=c.warmup_epochs)


def teacher_data(images: np.ndarray, labels: np.ndarray, num_classes: int) -> MemberData:
    """The engine's MemberData of a population of one: the full split, no logit table
    (1-row dummies where the step expects a table, remainder or tuple pool; never read)."""
    h, w, ch = images.shape[1:]
    return MemberData(
        images=np.asarray(images)[None], labels=np.asarray(labels, np.int32)[None],
        teacher_logits=np.zeros((1, 1, num_classes), np.float32),
        remainder_images=np.zeros((1, 1, h, w, ch), np.uint8),
        remainder_labels=np.zeros((1, 1), np.int32), tuple_pool=np.zeros((1, 1, 1), np.int32),
        aux={})


def epoch_keys(seed: int, epoch: int) -> jax.Array:
    """[1] PRNG keys of one epoch: fold_in(PRNGKey(seed), epoch), as the student engine."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), epoch)[None]


def _lr_of_step(c: TeacherConfig, spec: StepSpec, step: int) -> float:
    return float(optim.scheduled_lr(spec.schedule, jnp.float32(c.lr), jnp.int32(step),
                                    total_steps=spec.total_steps, milestones=spec.milestones,
                                    factor=spec.lr_factor, warmup_steps=spec.warmup_steps))


# ----------------------------------------------------------------------------- data and run dir
def _load_data(c: TeacherConfig):
    from ckd_jax.data import dataset_names, load_train_test

    if c.dataset not in dataset_names():
        raise ValueError(f"unknown dataset {c.dataset!r}; available: {', '.join(dataset_names())}")
    train, test = load_train_test(c.dataset, data_dir=c.data_dir, path=c.data_path)
    return train, test, _spec_of(c, train)


def _spec_of(c: TeacherConfig, train: Any):
    """`c.data_spec` over the registered spec of the data's name, or derived from the training
    images for data without one (`ckd_jax.data.resolve_spec`)."""
    from ckd_jax.data import resolve_spec

    return resolve_spec(getattr(train, "name", c.dataset), np.asarray(train.images),
                        c.data_spec)


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


def _read_resume_point(ckpt_dir: str, c: TeacherConfig) -> int | None:
    """Latest saved epoch of a previous run, after checking its config matches `c`."""
    if not os.path.isdir(ckpt_dir):
        return None
    ck = Checkpointer(ckpt_dir, best_metric="test_acc")
    try:
        step = ck.latest_intact_step()  # a damaged newest step: the older one, said in a line
        if step is None:
            return None
        extra = ck.extra(step) or {}
    finally:
        ck.close()
    if extra.get("layout") != CHECKPOINT_LAYOUT:
        raise ValueError(f"cannot resume from {ckpt_dir}: it was written by the teacher engine "
                         "before the merge into the student engine (docs/teacher.md); its "
                         "weights load with load_teacher, but the run cannot be continued")
    saved = extra.get("config", {})
    now = c.to_dict()
    diff = {k: (saved.get(k), now[k]) for k in now
            if k not in TEACHER_RESUME_FREE and k in saved and saved.get(k) != now[k]}
    if diff:
        raise ValueError(f"cannot resume from {ckpt_dir}: its config differs in "
                         + ", ".join(f"{k} (saved {a!r}, now {b!r})" for k, (a, b) in diff.items()))
    return step


# ----------------------------------------------------------------------------------- training
def train_teacher(config: TeacherConfig, *, train: Any = None, test: Any = None,
                  spec: Any = None, on_epoch_end: Callable[[dict], None] | None = None,
                  mesh: Any = None) -> TeacherResult:
    """Train `config.model` on the full training split, evaluating the test split every epoch.

    Args:
      config: a TeacherConfig (checked before any data is loaded or file written).
      train, test: ImageSet-like splits (uint8 images [N,H,W,C], int labels [N], class_names);
        default: `ckd_jax.data.load_train_test(config.dataset, ...)`.
      spec: a DatasetSpec (mean, std, crop_size, padding, flip, eval_crop); default
        `ckd_jax.data.dataset_spec(config.dataset)`.
      on_epoch_end: called with each epoch's history row after its checkpoint is on disk.
      mesh: the engine's 1-D `data` mesh (`engine.make_mesh`); default one device.

    Returns:
      TeacherResult (last-epoch variables, accuracies, history, run_dir, wall time).

    Files in `config.out_dir` (if set): checkpoints/ (orbax: latest + best by test_acc),
    log.jsonl (one JSON object per epoch), teacher.json (summary, written at the end).
    """
    t_start = time.time()
    from ckd_jax.models import create_model

    config.validate()
    c = config.resolved()
    run_dir = os.path.abspath(c.out_dir) if c.out_dir else None
    ckpt_dir = os.path.join(run_dir, CHECKPOINT_SUBDIR) if run_dir else None

    # --- every check before any work: run dir, data, model/input compatibility -------------
    resume_step = None
    if check_run_folder(run_dir, c.resume):  # an earlier run: continued only with resume
        resume_step = _read_resume_point(ckpt_dir, c)
        from ckd_jax.interrupt import resume_line

        print(resume_line(run_dir, resume_step, "epoch", c.epochs), flush=True)
    if (train is None) != (test is None):
        raise ValueError("pass both train= and test=, or neither")
    if train is None:
        train, test, data_spec = _load_data(c)
        spec = spec or data_spec
    elif spec is None:
        spec = _spec_of(c, train)
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
    mesh = S.make_mesh(1) if mesh is None else mesh
    if c.batch_size % mesh.size:
        raise ValueError(f"batch_size={c.batch_size} must be divisible by the number of "
                         f"devices ({mesh.size}) of the data-parallel mesh")

    # --- the engine: one member, the full split, method "ce", the recipe's schedule ---------
    step_spec = teacher_step_spec(c, spec, n_train)
    method = build_method(c)  # the registry's "ce" with the teacher's label smoothing
    put = lambda tree: jax.device_put(tree, NamedSharding(mesh, P()))  # replicated
    state = put(S.init_state(model, method, jax.random.PRNGKey(c.seed)[None],
                             jnp.asarray([c.lr], jnp.float32), in_shape, num_classes, n_train))
    history: list[dict] = []
    start_epoch = 0
    if run_dir:
        os.makedirs(run_dir, exist_ok=True)
    # A checkpoint every epoch: the latest and the best by test accuracy.
    folder = RunFolder(run_dir, LOG_FILE, checkpoints=dict(best_metric="test_acc", max_to_keep=1))
    if resume_step is not None:
        state = put(folder.restore(resume_step, {"state": state})["state"])
        start_epoch = resume_step
        history = list((folder.ckpt.extra(resume_step) or {}).get("history", []))
    folder.write_log(history)  # the checkpoint's history: what a resumed log goes on from

    data = put(teacher_data(train.images, train.labels, num_classes))
    test_images = put(np.asarray(test.images))
    test_labels = put(np.asarray(test.labels, np.int32))
    train_epoch = S.make_train_epoch(model, method, step_spec, mesh, loop=c.epoch_loop)
    # Evaluated in float32 (the weights a teacher hands on), whatever the training dtype.
    eval_bs = -(-min(c.eval_batch_size, len(test.labels)) // mesh.size) * mesh.size
    evaluate = S.make_evaluate(model, dataclasses.replace(step_spec, compute_dtype="float32"),
                               mesh, eval_bs, shared_images=True)
    active = jnp.ones(1, bool)
    steps_per_epoch = step_spec.steps_per_epoch

    def test_accuracy(st):
        top1, top5 = evaluate(st.params["student"], st.batch_stats, test_images, test_labels)
        return float(top1[0]), float(top5[0])

    loop = EpochLoop(folder, unit="epoch", progress=c.progress,
                     bar=dict(total=c.epochs, initial=start_epoch, desc=f"{c.model}/{c.dataset}",
                              unit="epoch", file=sys.stderr, dynamic_ncols=True),
                     resume_flags=() if c.resume else ("--resume",))
    with loop:
        for epoch in range(start_epoch, c.epochs):
            t0 = time.time()
            state, m = train_epoch(state, data, epoch_keys(c.seed, epoch), active)
            top1, top5 = test_accuracy(state)
            row = {"epoch": epoch + 1, "step": (epoch + 1) * steps_per_epoch,
                   "lr": _lr_of_step(c, step_spec, (epoch + 1) * steps_per_epoch - 1),
                   "train_loss": float(m["loss"][0]), "train_acc": float(m["acc"][0]),
                   "test_acc": top1, "test_top5": top5,
                   "epoch_time_s": round(time.time() - t0, 3)}
            if not math.isfinite(row["train_loss"]):
                raise FloatingPointError(f"training diverged at epoch {epoch + 1} "
                                         f"(loss {row['train_loss']}); lower the lr")
            history.append(row)
            if folder.writes:
                folder.save(epoch + 1, {"state": state}, {"test_acc": row["test_acc"]},
                            extra={"history": history, "config": c.to_dict(),
                                   "layout": CHECKPOINT_LAYOUT,
                                   "image_shape": list(in_shape), "num_classes": num_classes})
                folder.log([row])
            loop.advance(loss=f"{row['train_loss']:.3f}", test=f"{row['test_acc']:.4f}")
            if on_epoch_end is not None:
                on_epoch_end(row)
            if epoch + 1 < c.epochs:
                loop.stop_if_requested(epoch + 1, {"state": state})

    from ckd_jax.data import spec_dict

    variables = _member_variables(state.params["student"], state.batch_stats)
    if history:
        last = history[-1]
        best = max(history, key=lambda r: (r["test_acc"], -r["epoch"]))
        test_acc, test_top5 = last["test_acc"], last["test_top5"]
    else:  # nothing to train (resumed a finished run): evaluate the restored weights
        test_acc, test_top5 = test_accuracy(state)
        best = {"test_acc": test_acc, "epoch": start_epoch}
    wall = time.time() - t_start
    if folder.writes:
        summary = {"model": c.model, "dataset": c.dataset, "num_classes": num_classes,
                   "image_shape": list(in_shape), "epochs": c.epochs,
                   "test_acc": test_acc, "test_top5": test_top5,
                   "best_test_acc": best["test_acc"], "best_epoch": best["epoch"],
                   "wall_time_s": round(wall, 2),
                   "train_time_s": round(sum(r["epoch_time_s"] for r in history), 2),
                   "device": str(jax.devices()[0].device_kind), "backend": jax.default_backend(),
                   "compute_dtype": step_spec.compute_dtype, "config": c.to_dict(),
                   "data_spec": spec_dict(spec)}
        folder.write_summary(SUMMARY_FILE, summary, indent=2)
    return TeacherResult(variables, test_acc, test_top5, best["test_acc"], best["epoch"],
                         history, run_dir, wall)


def _member_variables(params, batch_stats, i: int = 0) -> dict:
    """{"params", "batch_stats"} of member i of the engine's stacked state."""
    take = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[i], tree)
    return {"params": take(params), "batch_stats": take(batch_stats or {})}


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
      model_kwargs: extra `create_model` arguments; None (default) = those the run recorded.
        A real mismatch (a variable whose shape differs) is a one-line ValueError naming the
        first differing kwarg and variable with both shapes.

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
        # A damaged newest step: the newest intact older one, said in one line.
        step = ck.latest_intact_step() if which == "last" else ck.best_step()
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
    variables = _restored_variables(raw)
    image_shape = tuple(extra.get("image_shape", ()))
    saved_kwargs = dict(saved_cfg.get("model_kwargs") or {})
    kwargs = saved_kwargs if model_kwargs is None else dict(model_kwargs)
    if image_shape:  # check every shape against a freshly built model
        model = create_model(name, num_classes, **kwargs)
        order: list[str] = []  # the model's variables in creation (layer) order

        def init():
            v = model.init(jax.random.key(0), jnp.zeros((1,) + image_shape), train=False)
            order.extend(_flat_shapes(v))  # a side effect at trace time: no compute
            return v

        ref = jax.eval_shape(init)
        ref = {"params": ref["params"], "batch_stats": ref.get("batch_stats", {})}
        first = _first_shape_difference(variables, ref, order)
        if first is not None:
            raise ValueError(_mismatch_message(src, name, saved_kwargs, kwargs, first))
    return jax.tree.map(jnp.asarray, variables)


def _flat_shapes(variables: dict) -> dict[str, tuple]:
    from flax.traverse_util import flatten_dict

    return {"/".join(map(str, k)): tuple(v.shape)
            for k, v in flatten_dict(dict(variables)).items()}


def _first_shape_difference(got: dict, want: dict, model_order: list[str] = ()
                            ) -> tuple[str, tuple | None, tuple | None] | None:
    """(path, checkpoint shape, model shape) of the first variable whose shape differs or that
    only one side has (None for the missing side; params before batch_stats, each in the
    model's layer order `model_order`); None when all match."""
    a, b = _flat_shapes(got), _flat_shapes(want)
    order = [p for p in model_order if p in a or p in b]
    order += [p for p in list(b) + list(a) if p not in order]
    for path in sorted(order, key=lambda p: (not p.startswith("params/"), order.index(p))):
        if a.get(path) != b.get(path):
            return path, a.get(path), b.get(path)
    return None


def _mismatch_message(src: str, name: str, saved_kwargs: dict, kwargs: dict,
                      first: tuple) -> str:
    """One line: which kwarg differs from the run's record (if one does), the first variable
    whose shape differs and both shapes."""
    from ckd_jax.train.config import teacher_record

    path, have, build = first
    shape = lambda s: "nothing" if s is None else str(s)
    where = f"checkpoint has {path} {shape(have)}, config builds {shape(build)}"
    if have is None:
        where = f"config builds {path} {shape(build)}, the checkpoint has no such variable"
    elif build is None:
        where = f"checkpoint has {path} {shape(have)}, the config builds no such variable"
    keys = [k for k in sorted(set(saved_kwargs) | set(kwargs))
            if saved_kwargs.get(k, _UNSET) != kwargs.get(k, _UNSET)]
    record = teacher_record(src)
    named = record[0] if record is not None else src
    if keys:
        return (f"teacher kwargs do not match {named}: {keys[0]}: {where} (the run recorded "
                f"{saved_kwargs}, the config gives {kwargs}; leave teacher_kwargs unset to "
                "take the recorded ones)")
    return f"checkpoint variables of {src} do not match model {name!r} {kwargs}: {where}"


_UNSET = object()


def _restored_variables(raw: dict) -> dict:
    """{"params", "batch_stats"} of a checkpoint restored without a template: the engine's
    {"state": TrainState of one member} (this code), or the old teacher layout (top-level
    params / batch_stats)."""
    if "state" not in raw:
        return {"params": raw["params"], "batch_stats": raw.get("batch_stats") or {}}
    st = raw["state"]  # TrainState comes back as a dict of its fields
    return _member_variables(st["params"]["student"], st.get("batch_stats"))

