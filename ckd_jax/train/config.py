"""`DistillConfig`: every knob of a student-distillation run, with the paper's defaults.

One frozen dataclass is the single place where the hyper-parameters of the paper
(docs/method.md) are visible.
`validate()` checks everything that can be checked without data, so a bad configuration fails
before any file is written or any array is built. Config files under `experiments/configs/`
return instances of it; the CLIs accept `--set key=value` overrides through `apply_overrides`.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

import numpy as np

from ckd_jax.train.choices import COMPUTE_DTYPES, EPOCH_LOOPS, MEMBER_LOOPS
from ckd_jax.train.choices import STUDENT_SCHEDULES as SCHEDULES

if TYPE_CHECKING:
    from ckd_jax.train.methods import Method

GROUP_FORWARDS = ("separate", "joint")
TEACHER_VIEWS = ("augmented", "clean")
CALIBRATIONS = ("none", "table")
# Fields that never change a run's results (see DistillConfig.results_dict).
# member_loop is one of them: members are independent, and the vmapped and the sequential
# population give the same weights up to float reduction order (tests/test_member_loop.py).
RESULT_INVARIANT_FIELDS = ("progress", "checkpoint_every", "checkpoint_seconds", "eval_test_every",
                           "eval_test_curve_images", "member_loop")
# Where files lie: a moved or copied run must still match (docs/files.md). What they hold is
# checked by content instead: the logit tables record the hash of their images and teacher.
PATH_FIELDS = ("out_dir", "logit_table_dir", "data_path", "data_dir", "teacher_checkpoint")
# The evaluation batch changes no weight, only the float reduction order of an accuracy. A
# student's validation steers its protocol, so a student resume must keep it; a teacher's test
# evaluation takes no part in its training, so a teacher may change it; and a sweep reuses a
# finished result across it (ckd_jax/sweep.py).
EVAL_BATCH_FIELDS = ("eval_batch_size",)
# The fields a teacher run (train/supervised.py) may change between a run and its resumption:
# the above, and `resume` itself (what to do, not what to compute). The one list a teacher
# checks its checkpoint's config against; a student checks `DistillConfig.differs_from_saved`.
TEACHER_RESUME_FREE = (*RESULT_INVARIANT_FIELDS, *PATH_FIELDS, *EVAL_BATCH_FIELDS, "resume")
DEFAULT_TEACHER = "tiny_cnn"  # the teacher when neither the config nor a teacher.json names one
TEACHER_RECORD = "teacher.json"  # what experiments/train_teacher.py writes into its run dir


def teacher_record(checkpoint) -> tuple[str, dict] | None:
    """(path, content) of the `teacher.json` of a `train_teacher.py` run dir named by
    `checkpoint` (the run dir or its `checkpoints/` folder); None for None, a file (a
    RepDistiller .pth), a missing path or a folder without one. A damaged teacher.json is a
    one-line error (`ckd_jax.files.DamagedFile`)."""
    import os

    if checkpoint is None or not os.path.isdir(checkpoint):
        return None
    folder = os.path.abspath(os.fspath(checkpoint))
    for where in (folder, os.path.dirname(folder)):
        path = os.path.join(where, TEACHER_RECORD)
        if os.path.isfile(path):
            from ckd_jax.files import read_json

            return path, read_json(path, what="teacher summary",
                                   next_step="set teacher and teacher_kwargs explicitly")
    return None


def make_step_spec(data_spec, n_train: int, *, batch_size: int, epochs: int, momentum: float,
                   weight_decay: float, schedule: str, compute_dtype: str,
                   steps_per_epoch: int | None = None, group_forward: str = "separate",
                   has_remainder: bool = False, remainder_weight: float = 1.0,
                   use_pool: bool = False, nesterov: bool = False,
                   milestones: tuple[int, ...] | None = (), lr_factor: float = 0.1,
                   warmup_epochs: int | None = 0):
    """The one builder of `engine.StepSpec` (student runs, teachers, the benchmark).

    data_spec: a `DatasetSpec` (crop, padding, flip, mean, std, eval_crop). Epoch-based facts
    become global steps here: the horizon (epochs x steps per pseudo-epoch, at least 2 for a
    one-cycle schedule), multistep milestones and cosine warm-up. compute_dtype "auto" is
    bfloat16 on GPU/TPU and float32 on CPU. steps_per_epoch None: ceil(n_train / batch_size).
    """
    from ckd_jax.train import engine

    steps = steps_per_epoch or engine.steps_per_pseudo_epoch(n_train, batch_size)
    total = epochs * steps
    if compute_dtype == "auto":
        import jax

        compute_dtype = "bfloat16" if jax.default_backend() in ("gpu", "tpu") else "float32"
    d = data_spec
    return engine.StepSpec(
        batch_size=batch_size, steps_per_epoch=steps, n_train=n_train, crop_size=d.crop_size,
        padding=d.padding, flip=d.flip, mean=tuple(d.mean), std=tuple(d.std),
        eval_crop=d.eval_crop, momentum=momentum, weight_decay=weight_decay, schedule=schedule,
        total_steps=max(total, 2) if schedule == "onecycle" else total,
        compute_dtype=compute_dtype, group_forward=group_forward, has_remainder=has_remainder,
        remainder_weight=remainder_weight, use_pool=use_pool, nesterov=nesterov,
        milestones=tuple(m * steps for m in (milestones or ())) if schedule == "multistep"
        else (),
        lr_factor=lr_factor,
        warmup_steps=(warmup_epochs or 0) * steps if schedule == "cosine" else 0)


def _spec_given_matches(saved, now) -> bool:
    """A run records the full spec it used (`data_spec`, the fields derived from the data
    included); a config that gives fewer fields matches when the fields it gives agree."""
    if not isinstance(saved, dict) or not isinstance(now, (dict, type(None))):
        return False
    norm = lambda v: [float(a) for a in v] if isinstance(v, (list, tuple)) else v
    return all(k in saved and norm(saved[k]) == norm(v) for k, v in (now or {}).items())


def _without_invariant_fields(fields: dict) -> dict:
    """A config's JSON fields less RESULT_INVARIANT_FIELDS."""
    return {k: v for k, v in fields.items() if k not in RESULT_INVARIANT_FIELDS}


def _choice(name, value, accepted) -> None:
    if value not in accepted:
        raise ValueError(f"{name}={value!r} is not supported; accepted: "
                         f"{', '.join(map(str, accepted))}")


@dataclass(frozen=True)
class RunConfig:
    """The fields every training run has, a student population (`DistillConfig`) or a teacher
    (`ckd_jax.train.supervised.TeacherConfig`): data, optimiser and schedule, output folder.
    Subclasses may change a default and the accepted choices (`_SCHEDULES`, `_COMPUTE_DTYPES`);
    `_check_run_fields` is the one check of these fields."""

    _SCHEDULES: ClassVar[tuple[str, ...]] = SCHEDULES
    _COMPUTE_DTYPES: ClassVar[tuple[str, ...]] = COMPUTE_DTYPES

    # --- data ----------------------------------------------------------------------------
    dataset: str = "digits"
    data_path: str | None = None
    data_dir: str | None = None
    # Preprocessing (docs/data.md): any of crop_size, padding, flip, mean, std, eval_crop over
    # the dataset's registered spec; for a dataset without one (an .npz of your own, images in
    # memory) the rest is derived from the training images (side, side // 8, no flip, their
    # per-channel mean and std), computed once and recorded in the run's config.json /
    # teacher.json.
    data_spec: dict | None = None

    # --- optimiser and schedule ----------------------------------------------------------
    batch_size: int | None = 64  # samples per step (tuples per step for CKD)
    momentum: float = 0.9
    weight_decay: float = 5e-4
    # students: the paper's early-stopping protocol ("plateau") or fixed-length cosine
    schedule: str | None = "plateau"
    epochs: int | None = 30  # students: pseudo-epochs for schedule="cosine"
    compute_dtype: str | None = "float32"
    epoch_loop: str = "auto"  # "scan" (one lax.scan per pseudo-epoch), "python", "auto"
    eval_batch_size: int = 500

    # --- output --------------------------------------------------------------------------
    out_dir: str | None = None  # the run folder; None = keep nothing on disk
    progress: bool = True

    def _check_run_fields(self) -> None:
        """Raise ValueError naming the bad value of a shared field and the accepted ones."""
        _choice("schedule", self.schedule, self._SCHEDULES)
        _choice("compute_dtype", self.compute_dtype, self._COMPUTE_DTYPES)
        _choice("epoch_loop", self.epoch_loop, EPOCH_LOOPS)
        for name in ("batch_size", "epochs", "eval_batch_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
                raise ValueError(f"{name}={v!r} must be a positive int")
            if v < 1:
                raise ValueError(f"{name}={v} must be >= 1")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"momentum={self.momentum!r} must be in [0, 1)")
        if not self.weight_decay >= 0:
            raise ValueError(f"weight_decay={self.weight_decay!r} must be >= 0")
        from ckd_jax.data.specs import check_spec_dict

        check_spec_dict(self.data_spec)


@dataclass(frozen=True)
class DistillConfig(RunConfig):
    """A student run (or a population of runs sharing one method and budget); the data,
    optimiser, schedule and output fields are `RunConfig`'s.

    Population members are the cross product `seeds x learning_rates`; each seed draws its own
    budgeted subset and split (as in the paper) and its own student initialisation.
    """

    # --- method (see ckd_jax.train.methods for the registry) -------------------------------
    method: str = "ckd"
    pos_and_neg: int = 2  # CKD group size k: n_neg = k // 2, n_pos = k - n_neg
    ckd_form: str = "mse"  # "mse" (WACV release) or "kl" (first release, T = 4)
    ckd_combine: str = "diff"  # "diff" (CKD), "add", "interp" (ablation)
    temperature: float = 4.0  # KD / KL-form temperature
    w_cls: float = 1.0  # weight of the ground-truth term (CE, or CKD's label term)
    w_kd: float = 1.0  # weight of the KD term for KD-based baselines
    w_rel: float = 1.0  # weight of CKD's relative (teacher) term
    w_extra: float | None = None  # weight of a baseline's own term; None = the paper's value
    # CKD's loss is blind to one offset shared by all student logits (docs/calibration.md).
    # w_anchor > 0 (CKD only) adds w_anchor * mean_c (mean_batch s - mean_batch t)^2 over the
    # tuple members, pinning that offset during training (an in-training alternative).
    w_anchor: float = 0.0
    # w_sample > 0 (CKD only) adds w_sample * (CE + KD at `temperature`) on every tuple member:
    # the per-sample terms KD has and CKD lacks, beside CKD's comparison terms.
    w_sample: float = 0.0
    mix_soft: str = "ce"  # mixing baselines: "ce" (soft CE at T=1) or "kd" (KD at T)
    crd_negatives: int = 16384
    crd_feat_dim: int = 128
    tuple_pool: int | None = None  # the paper's fixed pool of max_rel_samples tuples (100000)
    group_forward: str = "separate"  # P and N groups as two forward passes (paper) or one
    # white-box methods (fitnet, vid, cc and ckd_*; docs/whitebox.md). Their term's weight is
    # w_extra (None = the paper's: hint 100, VID 1, CC 0.02). Layers index the models'
    # `return_features=True` list (RepDistiller's is_feat order); negative counts from the end.
    hint_layer: int = 2  # FitNet: the hinted layer (RepDistiller --hint_layer 2)
    hint_relu: bool = True  # FitNet regressor ends in ReLU (RepDistiller ConvReg)
    vid_layers: tuple[int, ...] = ()  # VID layers; () = RepDistiller's feat[1:-1]
    cc_feat_dim: int = 128  # CC embedding size
    teacher_feature_dtype: str = "float32"  # cached teacher features: float32 or bfloat16

    # --- data and budget ---------------------------------------------------------------------
    subset_size: int | None = 250
    budget: int | None = None  # alternative to subset_size: B teacher calls (S = B / 0.8)
    labelled_remainder: bool = False  # rest of the train split keeps labels (CE), no teacher
    remainder_weight: float = 1.0

    # --- models ------------------------------------------------------------------------------
    # teacher / teacher_kwargs None: the model and kwargs recorded in the teacher run dir's
    # teacher.json (`teacher_checkpoint`), else "tiny_cnn" / {} (see `with_teacher`).
    teacher: str | None = None
    teacher_kwargs: dict | None = None  # create_model kwargs (small models)
    teacher_checkpoint: str | None = None  # teacher run dir (train_teacher.py) or RepDistiller .pth
    teacher_view: str = "augmented"  # the view the teacher labels: one augmented view (paper)
    # default: one folder per teacher, <teacher run dir>/logit_tables (else <out_dir>/...):
    # runs on the same teacher reuse tables (ckd_jax.logit_table.table_folder)
    logit_table_dir: str | None = None
    student: str = "tiny_cnn"
    student_kwargs: dict = field(default_factory=dict)

    # --- optimisation ------------------------------------------------------------------------
    learning_rates: tuple[float, ...] = (0.05,)
    seeds: tuple[int, ...] = (1,)
    # How the population's members run: "vmap" (one program for all, the accelerator path),
    # "sequential" (one after another through the program compiled for one member; on XLA:CPU
    # the vmap takes 2.1-2.7x as long, docs/performance.md), "auto" (sequential on CPU, vmap
    # elsewhere).
    member_loop: str = "auto"

    # --- protocol ----------------------------------------------------------------------------
    patience: int = 50
    max_lr_drops: int = 3
    max_epochs: int = 1000
    # "none": validation and test on raw logits (the paper). "table": before every validation
    # each member's logit offset is estimated on its own teacher-labelled images and their
    # cached teacher logits (no teacher call, no validation or test data) and subtracted, so
    # model selection and the reported accuracy use calibrated logits. Under "none" the
    # calibrated accuracy is still logged as a diagnostic (docs/calibration.md).
    calibration: str = "none"
    # Two best slots in one run. With calibration="table" under schedule="cosine" (no reloads,
    # so training never depends on which epoch is selected) the run also keeps the best weights
    # by *raw* validation top-1 and tests them on raw logits: the same run then answers for the
    # paper's `ckd` as well as `ckd_cal` (summary.json: members[i]["raw_selection"]; the sweep's
    # results rows: one more row per member, variant "<variant>@raw").
    also_select_raw: bool = False

    # --- output ------------------------------------------------------------------------------
    # A checkpoint is written after a pseudo-epoch once at least `checkpoint_every` pseudo-epochs
    # (0: never) and `checkpoint_seconds` of wall time have passed since the last one, and at
    # the end. A killed run reruns the pseudo-epochs since then and gets the same result.
    checkpoint_every: int = 1
    checkpoint_seconds: float = 60.0
    # Test accuracy: measured once per member at the end, on the best-validation weights (the
    # reported figure) and on the last weights. eval_test_every = N > 0 also logs a test curve
    # every N pseudo-epochs in metrics.jsonl (it never takes part in any decision).
    eval_test_every: int = 0
    # The curve's test images: 0 = the whole test split; K > 0 = a fixed random K of them (the
    # same K for every run and point; `curve_test_indices`), whose rows say so ("test_images").
    # At S = 250 a whole 10,000-image pass costs about five pseudo-epochs on CPU
    # (docs/performance.md); the reported test figures above always use the whole split.
    eval_test_curve_images: int = 0

    # ---------------------------------------------------------------------------------------
    @property
    def num_members(self) -> int:
        return len(self.seeds) * len(self.learning_rates)

    def members(self) -> list[tuple[int, float]]:
        """(seed, learning_rate) per population member, seed-major."""
        return [(s, lr) for s in self.seeds for lr in self.learning_rates]

    def replace(self, **changes) -> DistillConfig:
        return dataclasses.replace(self, **changes)

    def with_teacher(self) -> DistillConfig:
        """A copy with `teacher` and `teacher_kwargs` filled in.

        A field left None takes the value recorded in the teacher run dir's `teacher.json`
        (when `teacher_checkpoint` names a `train_teacher.py` run dir), else `DEFAULT_TEACHER`
        / {}. An explicit `teacher` that differs from the recorded model is a one-line
        ValueError; explicit kwargs that differ are checked against the checkpoint's shapes
        when the teacher is loaded (`load_teacher`), where only a real mismatch fails.
        """
        record = teacher_record(self.teacher_checkpoint)
        teacher, kwargs = self.teacher, self.teacher_kwargs
        if record is not None:
            path, info = record
            model = info.get("model")
            if teacher is not None and model is not None and teacher != model:
                raise ValueError(f"teacher={teacher!r} does not match {path}: the checkpoint "
                                 f"holds a {model!r} model; leave teacher unset to take the "
                                 "model and its kwargs from there")
            teacher = teacher or model
            if kwargs is None:
                kwargs = dict((info.get("config") or {}).get("model_kwargs") or {})
        teacher = teacher or DEFAULT_TEACHER
        kwargs = {} if kwargs is None else dict(kwargs)
        if teacher == self.teacher and kwargs == self.teacher_kwargs:
            return self
        return dataclasses.replace(self, teacher=teacher, teacher_kwargs=kwargs)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["learning_rates"] = list(self.learning_rates)
        d["seeds"] = list(self.seeds)
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    def results_dict(self) -> dict:
        """`to_dict()` without the fields that cannot change a run's results (progress output,
        checkpoint frequency, the optional test curve): what a resumed or reused run must
        match."""
        return _without_invariant_fields(json.loads(self.to_json()))

    def differs_from_saved(self, path: str, *, resolved: bool = False) -> list[str]:
        """Fields (outside RESULT_INVARIANT_FIELDS and PATH_FIELDS) in which the config.json at
        `path` differs from this config; [] when a run stored there can be resumed or reused
        as it is, wherever it and its inputs lie now. A missing or damaged file is one line
        (FileNotFoundError / `ckd_jax.files.DamagedFile`) naming it. resolved=True: this
        config's teacher is filled in already (`resolve`), so teacher.json is not read again."""
        from ckd_jax.files import read_json

        saved = _without_invariant_fields(read_json(
            path, what="run config", next_step="the run cannot be checked against this "
            "command: use another out_dir, or delete that run folder to run it again"))
        now = (self if resolved else self.with_teacher()).results_dict()
        # A field an older config.json lacks had its default then (new fields keep the old
        # behaviour as their default), so a run saved before it was added still matches.
        default = DistillConfig().results_dict()
        changed = sorted(k for k in set(saved) | set(now)
                         if k not in PATH_FIELDS and saved.get(k, default.get(k)) != now.get(k))
        if "data_spec" in changed and _spec_given_matches(saved.get("data_spec"),
                                                          now.get("data_spec")):
            changed.remove("data_spec")
        return changed

    def validate(self) -> DistillConfig:
        """Raise ValueError naming the bad value and the accepted ones; return self."""
        self._checked()
        return self

    def resolve(self) -> tuple[DistillConfig, Method]:
        """Validate, and resolve what lies outside the config once: (this config with its
        teacher filled in from teacher.json (`with_teacher`), its `methods.Method`). What
        `run_distillation` works with from then on; nothing below it reads teacher.json or
        builds the method again."""
        resolved, method = self._checked()
        if method is None:
            from ckd_jax.train.methods import build_method

            method = build_method(resolved, resolved=True)
        return resolved, method

    def _checked(self) -> tuple[DistillConfig, Method | None]:
        """The checks of `validate`; returns (the config with its teacher resolved, the Method
        when a check needed it, else None)."""
        from ckd_jax.models import model_names
        from ckd_jax.train.methods import method_names

        choice = _choice
        choice("method", self.method, method_names())
        choice("student", self.student, model_names())
        resolved = self.with_teacher()  # teacher None: from teacher.json (an error if it clashes)
        choice("teacher", resolved.teacher, model_names())
        if not isinstance(resolved.teacher_kwargs, dict):
            raise ValueError(f"teacher_kwargs={self.teacher_kwargs!r} must be a dict or None")
        choice("ckd_form", self.ckd_form, ("mse", "kl"))
        choice("ckd_combine", self.ckd_combine, ("diff", "add", "interp"))
        choice("mix_soft", self.mix_soft, ("ce", "kd"))
        choice("group_forward", self.group_forward, GROUP_FORWARDS)
        choice("member_loop", self.member_loop, MEMBER_LOOPS)
        choice("teacher_view", self.teacher_view, TEACHER_VIEWS)
        choice("calibration", self.calibration, CALIBRATIONS)
        self._check_run_fields()
        method = None
        if self.calibration == "table":
            from ckd_jax.train.methods import build_method

            method = build_method(resolved, resolved=True)
            if not method.uses_teacher:
                raise ValueError(
                    f"calibration='table' needs a logit table, but method={self.method!r} "
                    "makes no teacher call and has none; use calibration='none'")
        if self.also_select_raw and (self.calibration != "table" or self.schedule != "cosine"):
            raise ValueError(
                f"also_select_raw=True needs calibration='table' and schedule='cosine', got "
                f"calibration={self.calibration!r}, schedule={self.schedule!r}: under the "
                "plateau protocol the reloads follow the selection, so raw and calibrated "
                "selection train differently and need two runs")
        if not self.w_anchor >= 0:
            raise ValueError(f"w_anchor={self.w_anchor} must be >= 0")
        if self.w_anchor > 0 and self.method != "ckd":
            raise ValueError(f"w_anchor={self.w_anchor} applies to method='ckd' only, got "
                             f"method={self.method!r}; set w_anchor=0")
        if not self.w_sample >= 0:
            raise ValueError(f"w_sample={self.w_sample} must be >= 0")
        if self.w_sample > 0 and self.method != "ckd":
            raise ValueError(f"w_sample={self.w_sample} applies to method='ckd' only, got "
                             f"method={self.method!r}; set w_sample=0 (kd already has both "
                             "per-sample terms)")
        if self.pos_and_neg < 2:
            raise ValueError(f"pos_and_neg={self.pos_and_neg} must be >= 2 (one positive and "
                             "one negative group member at least)")
        if self.temperature <= 0:
            raise ValueError(f"temperature={self.temperature} must be > 0")
        if (self.subset_size is None) == (self.budget is None):
            raise ValueError("give exactly one of subset_size and budget, got "
                             f"subset_size={self.subset_size!r}, budget={self.budget!r}")
        for name in ("subset_size", "budget"):
            v = getattr(self, name)
            if v is not None and v < 2:
                raise ValueError(f"{name}={v} must be >= 2")
        for name in ("patience", "max_epochs"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if int(self.eval_test_curve_images) < 0:
            raise ValueError(f"eval_test_curve_images={self.eval_test_curve_images} must be >= 0 "
                             "(0: the whole test split)")
        for name in ("checkpoint_every", "eval_test_every"):
            if int(getattr(self, name)) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0 (0: never)")
        if not self.checkpoint_seconds >= 0:
            raise ValueError(f"checkpoint_seconds={self.checkpoint_seconds} must be >= 0")
        if self.max_lr_drops < 0:
            raise ValueError(f"max_lr_drops={self.max_lr_drops} must be >= 0")
        if not self.learning_rates or any(lr <= 0 for lr in self.learning_rates):
            raise ValueError(f"learning_rates={self.learning_rates} must be non-empty and > 0")
        if not self.seeds:
            raise ValueError("seeds must be non-empty")
        if len(set(self.members())) != self.num_members:
            raise ValueError(f"duplicate (seed, learning_rate) members in seeds={self.seeds}, "
                             f"learning_rates={self.learning_rates}")
        if self.tuple_pool is not None and self.tuple_pool < 1:
            raise ValueError(f"tuple_pool={self.tuple_pool} must be >= 1 or None")
        if self.crd_negatives < 1:
            raise ValueError(f"crd_negatives={self.crd_negatives} must be >= 1")
        choice("teacher_feature_dtype", self.teacher_feature_dtype, COMPUTE_DTYPES)
        is_int = lambda v: isinstance(v, (int, np.integer)) and not isinstance(v, bool)
        if not is_int(self.hint_layer):
            raise ValueError(f"hint_layer={self.hint_layer!r} must be an int (index into the "
                             "feature list)")
        layers = tuple(self.vid_layers)
        if not all(is_int(v) for v in layers) or len(set(layers)) != len(layers):
            raise ValueError(f"vid_layers={self.vid_layers!r} must be distinct ints (indices "
                             "into the feature list), or () for RepDistiller's feat[1:-1]")
        if not is_int(self.cc_feat_dim) or self.cc_feat_dim < 1:
            raise ValueError(f"cc_feat_dim={self.cc_feat_dim!r} must be an int >= 1")
        if self.w_extra is not None and not self.w_extra >= 0:
            raise ValueError(f"w_extra={self.w_extra} must be >= 0 or None (the paper's value)")
        return resolved, method


def _parse_value(text: str, current, annotation: str = ""):
    """Parse `text` to the type of the field's current value (JSON for lists/dicts/None);
    `annotation` (the field's type, as a string) gives the item type of an empty tuple."""
    if isinstance(current, bool):
        if text.lower() in ("1", "true", "yes"):
            return True
        if text.lower() in ("0", "false", "no"):
            return False
        raise ValueError(f"expected a boolean, got {text!r}")
    if isinstance(current, tuple):
        items = json.loads(text) if text.startswith("[") else text.split(",")
        kind = type(current[0]) if current else (int if "tuple[int" in annotation else float)
        return tuple(kind(v) for v in items)
    if text.lower() in ("none", "null") and not isinstance(current, dict):
        return None
    if isinstance(current, dict) or annotation.startswith("dict"):
        if text.strip().lower() in ("", "none", "null"):
            if "None" in annotation:
                return None  # optional: "not given" (e.g. teacher_kwargs from teacher.json)
            return {}
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise ValueError(f"expected a JSON object such as '{{\"width\": 32}}'"
                             f"{' or None' if 'None' in annotation else ''}, got {text!r}")
        return value
    if isinstance(current, int):
        return int(text)
    if isinstance(current, float):
        return float(text)
    if current is None:  # optional field: best effort, int then float then str
        for kind in (int, float):
            try:
                return kind(text)
            except ValueError:
                pass
    return text


def apply_overrides(config: DistillConfig, overrides: list[str]) -> DistillConfig:
    """Apply `key=value` strings (from `--set`) to a config; unknown keys are an error."""
    fields = {f.name: str(f.type) for f in dataclasses.fields(DistillConfig)}
    changes = {}
    for item in overrides:
        if "=" not in item:
            raise ValueError(f"override {item!r} must look like key=value")
        key, text = item.split("=", 1)
        if key not in fields:
            raise ValueError(f"unknown config key {key!r}; accepted: {', '.join(sorted(fields))}")
        try:
            changes[key] = _parse_value(text, getattr(config, key), fields[key])
        except ValueError as e:  # json / int / float: name the override, not their internals
            raise ValueError(f"--set {key}={text}: {e}") from None
    return config.replace(**changes)


def load_config_file(path: str) -> DistillConfig:
    """A DistillConfig from a config file (a .py whose `get_config()` returns one) or from an
    importable module path with `get_config()` (e.g. "experiments.configs.cifar100_paper")."""
    import importlib
    import importlib.util
    import os

    if path.endswith(".py") or os.path.sep in path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"config file {path} does not exist")
        spec = importlib.util.spec_from_file_location(f"_ckd_config_{abs(hash(path))}", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        module = importlib.import_module(path)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config {path} defines no get_config()")
    config = module.get_config()
    if not isinstance(config, DistillConfig):
        raise ValueError(f"{path}: get_config() returned {type(config).__name__}, "
                         "expected DistillConfig")
    return config
