"""One distillation run (a population of students) from a `DistillConfig`, end to end.

`run_distillation(config)`:
  1. validates and resolves the config once (`DistillConfig.resolve`: the teacher recorded in
     teacher.json, the method), passed down from there; loads the data; draws each seed's
     budgeted subset and split;
  2. checks every existing logit table against the run (dataset, indices, teacher), loads the
     teacher only if a table is missing, and fails on any mismatch *before* writing anything;
  3. creates the output directory, builds the missing tables (the only teacher calls);
  4. puts each member's uint8 images, labels and logit-table rows on the device(s) once;
  5. trains (`_train`): one compiled pseudo-epoch per call; between calls only what the protocol
     needs: the logit offset (calibration, from the member's own logit table) and validation,
     the protocol's decision, a metrics line per member, and a checkpoint once per
     `checkpoint_seconds` (resumable: a killed run reruns the epochs since, identically). The
     run folder, checkpoints, progress bar and Ctrl-C handling are the run loop teachers use
     too (`ckd_jax.train.runloop`);
  6. tests the best-validation weights (the paper's figure) and the last weights once, writes
     `summary.json` (per member: test top-1/top-5 at the best validation point and at the last
     epoch, raw and calibrated, the logit offset, teacher calls) and returns it.

Output directory layout: config.json, metrics.jsonl, summary.json, checkpoints/. The logit
tables go to `logit_table_dir`, by default one folder per teacher (`logit_table.table_folder`:
beside a teacher run folder, else <out_dir>/logit_tables); config.json records where.

White-box methods (docs/whitebox.md) need the teacher's intermediate features of the same view
as its logits: their tables are built by one teacher pass that returns both (one call per
sample) and live in their own files (`table_filename(..., feature_layers=...)`).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.files import make_dirs, note, write_atomic
from ckd_jax.interrupt import resume_line
from ckd_jax.logit_table import (
    REBUILD_FLAG,
    rebuild_cost,
    table_folder,
    teacher_fingerprint,
    variables_hash,
)
from ckd_jax.models import create_model
from ckd_jax.train import engine as S
from ckd_jax.train.config import DistillConfig, make_step_spec
from ckd_jax.train.methods import Method
from ckd_jax.train.optim import plateau_drop
from ckd_jax.train.protocol import PlateauProtocol
from ckd_jax.train.runloop import EpochLoop, RunFolder, json_default

Array = jax.Array


@dataclass
class _MemberSplit:
    seed: int
    split: Any  # ckd_jax.budget.BudgetSplit
    table_path: str | None
    table: Any = None  # LogitTable once loaded or built


def _log(config: DistillConfig, msg: str) -> None:
    if config.progress:
        print(msg, flush=True)


def table_filename(config: DistillConfig, dataset_name: str, subset_size: int, seed: int,
                   feature_layers=()) -> str:
    """Logit-table file name: one table per (dataset, teacher, view, subset size, seed).

    Tables that also cache teacher features (white-box methods) add the layer set and, for
    bfloat16 features, the dtype: `..._{view}_feat1-2-3[_bf16]_S{S}_seed{seed}.npz`, so plain
    tables and each layer set never overwrite or shadow each other.
    """
    tag = ""
    if feature_layers:
        tag = "_feat" + "-".join(str(int(i)) for i in sorted(feature_layers))
        if config.teacher_feature_dtype == "bfloat16":
            tag += "_bf16"
    return (f"{dataset_name}_{config.teacher}_{config.teacher_view}{tag}_S{subset_size}_"
            f"seed{seed}.npz")


def _tuple_pool(rng: np.random.Generator, n: int, k: int, size: int) -> np.ndarray:
    """The paper's fixed pool: `size` tuples of k distinct indices in [0, n), drawn once."""
    pool = rng.integers(0, n, size=(size, k))
    while True:  # redraw tuples with a repeated member (rare unless n is tiny)
        srt = np.sort(pool, axis=1)
        bad = np.any(srt[:, 1:] == srt[:, :-1], axis=1)
        if not bad.any():
            return pool.astype(np.int32)
        pool[bad] = rng.integers(0, n, size=(int(bad.sum()), k))


def _check_sizes(config: DistillConfig, method: Method, n_train: int, n_devices: int) -> None:
    need = config.batch_size if method.sampling == "sample" else method.tuple_size
    if n_train < need:
        raise ValueError(f"the teacher-labelled split has {n_train} samples, fewer than "
                         f"{'batch_size' if method.sampling == 'sample' else 'pos_and_neg'}"
                         f"={need}; raise subset_size/budget or lower it")
    if config.batch_size % n_devices:
        raise ValueError(f"batch_size={config.batch_size} must be divisible by the number of "
                         f"devices ({n_devices}) of the data-parallel mesh")


class _Prepared:
    """Everything checked and loaded before the first write (see module docstring)."""

    def __init__(self, config: DistillConfig, mesh, teacher_apply, teacher_variables,
                 rebuild_tables: bool = False, train=None, test=None):
        from ckd_jax.budget import select_budget

        # Validated and resolved once (`DistillConfig.resolve`): teacher / teacher_kwargs left
        # None take those recorded in the teacher run dir's teacher.json (what config.json and
        # the tables record), and the method is built; nothing later does either again.
        config, self.method = config.resolve()
        self.train, self.test = _load_data(config, train, test)
        if config.eval_test_curve_images > len(self.test.labels):
            raise ValueError(f"eval_test_curve_images={config.eval_test_curve_images} exceeds "
                             f"the test split's {len(self.test.labels)} images (0: all of them)")
        if train is not None:  # in-memory data: the run records the data's own name
            config = config.replace(dataset=self.train.name)
        self.spec, recorded = _data_spec(config, self.train)
        if recorded is not None:  # derived from the data (or completed): config.json says so
            config = config.replace(data_spec=recorded)
        table_dir = None
        if self.method.uses_teacher:  # one place per teacher by default; config.json says it
            table_dir = table_folder(config.logit_table_dir, config.teacher_checkpoint,
                                     config.out_dir)
            config = config.replace(logit_table_dir=table_dir)
            if table_dir:
                _log(config, f"logit tables: {table_dir}")
        self.config = config
        self.mesh = mesh
        self.num_classes = self.train.num_classes
        self.out_dir = config.out_dir

        self.members: list[_MemberSplit] = []
        for seed in config.seeds:
            split = select_budget(len(self.train.labels), seed=seed,
                                  subset_size=config.subset_size, budget=config.budget,
                                  labelled_remainder=config.labelled_remainder,
                                  labels=self.train.labels)
            path = None
            if self.method.uses_teacher:
                if table_dir is None:
                    raise ValueError("a method that uses the teacher needs out_dir or "
                                     "logit_table_dir (where the logit tables live)")
                path = os.path.join(table_dir, table_filename(
                    config, self.train.name, split.subset_size, seed,
                    feature_layers=self.method.teacher_layers))
            self.members.append(_MemberSplit(seed, split, path))
        _check_sizes(config, self.method, self.members[0].split.budget, mesh.size)
        if config.labelled_remainder and len(self.members[0].split.remainder_idx) == 0:
            raise ValueError("labelled_remainder=True but the subset is the whole training set")

        # The teacher: its weights are needed to build missing tables, and to check a table
        # that does not record this teacher's fingerprint.
        self.teacher_apply, self.teacher_variables = teacher_apply, teacher_variables
        self.teacher_hash, self._teacher_unreadable = None, False
        self.rebuild = set()  # tables the user asked to rebuild (damaged or not matching)
        if rebuild_tables:
            for m in self.members:
                if m.table_path and os.path.exists(m.table_path):
                    try:  # teacher hash unknown yet: the checks that need no teacher
                        self._load_table(m, teacher_hash=None)
                    except ValueError as e:
                        self.rebuild.add(m.table_path)
                        note(f"{REBUILD_FLAG}: {' '.join(str(e).split(';')[0].split())}")
        missing = [m for m in self.members if m.table_path and
                   (not os.path.exists(m.table_path) or m.table_path in self.rebuild)]
        if missing and self.teacher_variables is None:
            if config.teacher_checkpoint is None:
                raise ValueError(
                    f"no logit table at {missing[0].table_path} and no teacher_checkpoint to "
                    "build it from: give teacher_checkpoint (a train_teacher.py run dir or a "
                    "RepDistiller .pth) or logit_table_dir holding the tables")
            self._load_teacher()
        # Every table is checked against this run's teacher each time it is used: by the cheap
        # fingerprint of the teacher's files that the table recorded when it was built, else by
        # the weights' hash (the teacher is then loaded once, even when no table is missing).
        self.teacher_source = (teacher_fingerprint(config.teacher_checkpoint)
                               if teacher_variables is None else None)
        if self.teacher_hash is None:
            self._set_teacher_hash()
        for m in self.members:
            if m.table_path and os.path.exists(m.table_path) and m.table_path not in self.rebuild:
                try:
                    m.table = self._load_table(m, self.teacher_hash)
                    if self._needs_weights_check(m.table) and self._load_teacher(quiet=True):
                        m.table = self._load_table(m, self.teacher_hash)
                except ValueError as e:
                    if not rebuild_tables:
                        raise
                    self.rebuild.add(m.table_path)
                    m.table = None
                    note(f"{REBUILD_FLAG}: {' '.join(str(e).split(';')[0].split())}")
        if self.rebuild and self.teacher_variables is None:
            self._load_teacher()

    def _needs_weights_check(self, table) -> bool:
        """True when `table` was checked against no teacher yet: a teacher_checkpoint is named,
        its weights are not loaded, and the table did not record this teacher's fingerprint."""
        return (self.config.teacher_checkpoint is not None and self.teacher_hash is None
                and not self._teacher_unreadable
                and (self.teacher_source is None
                     or table.meta.get("teacher_source_sha256") != self.teacher_source))

    def _load_teacher(self, quiet: bool = False) -> bool:
        """Load the teacher from `teacher_checkpoint` (once); False when it holds no checkpoint
        and `quiet` (the tables are then used as they are, said in one line)."""
        from ckd_jax.train.supervised import load_teacher

        config = self.config
        try:
            self.teacher_variables = load_teacher(config.teacher_checkpoint, config.teacher,
                                                  self.num_classes,
                                                  model_kwargs=config.teacher_kwargs)
        except FileNotFoundError as e:
            if not quiet:
                raise
            self._teacher_unreadable = True
            note(f"the logit tables are used without a check of their teacher ({e})")
            return False
        self._set_teacher_hash()
        return True

    def _set_teacher_hash(self) -> None:
        if self.teacher_variables is not None and self.teacher_apply is None:
            self.teacher_apply = create_model(self.config.teacher, self.num_classes,
                                              **self.config.teacher_kwargs).apply
        self.teacher_hash = None
        if self.teacher_variables is not None:
            self.teacher_hash = variables_hash(self.teacher_variables)

    def _load_table(self, m: _MemberSplit, teacher_hash):
        """The member's table, checked against the run (images and view by content); one-line
        errors naming the file and the teacher calls a rebuild costs."""
        from ckd_jax.logit_table import images_hash, load_matching_table, view_hash

        cfg, idx = self.config, m.split.teacher_idx
        table = load_matching_table(
            m.table_path, rebuild_calls=len(idx), dataset=self.train.name, indices=idx,
            teacher_name=cfg.teacher, teacher_hash=teacher_hash, view=cfg.teacher_view,
            feature_layers=self.method.teacher_layers,
            images_hash=images_hash(self.train.images[idx]),
            view_hash=view_hash(self.spec, cfg.teacher_view), seed=m.seed)
        if table.logits.shape[1] != self.num_classes:
            raise ValueError(f"logit table {m.table_path} has {table.logits.shape[1]} classes, "
                             f"the dataset {self.num_classes}; "
                             f"{rebuild_cost(m.table_path, len(idx))}")
        return table

    def build_missing_tables(self) -> int:
        """Run the teacher on the budgeted samples that have no table yet; returns the calls.

        Each build holds a lock on the table folder: another process of the same
        machine that needs the same table (`sweep.py --jobs`, shards) waits, then loads it
        instead of paying its teacher calls a second time."""
        from ckd_jax.logit_table import build_or_load_logit_table

        calls = 0
        for m in self.members:
            if m.table_path is None or m.table is not None:
                continue
            with _table_lock(m.table_path):
                if os.path.exists(m.table_path) and m.table_path not in self.rebuild:
                    m.table = self._load_table(m, self.teacher_hash)  # another process built it
                    continue
                table, made = build_or_load_logit_table(
                    m.table_path, teacher_apply=self.teacher_apply,
                    teacher_variables=self.teacher_variables, teacher_name=self.config.teacher,
                    dataset_name=self.train.name, images=self.train.images,
                    indices=m.split.teacher_idx, key=jax.random.PRNGKey(10_000 + m.seed),
                    spec=self.spec, view=self.config.teacher_view, seed=m.seed,
                    feature_layers=self.method.teacher_layers,
                    features_dtype=(jnp.bfloat16
                                    if self.config.teacher_feature_dtype == "bfloat16"
                                    else np.float32),
                    rebuild=m.table_path in self.rebuild, teacher_source=self.teacher_source)
            m.table = table
            calls += made
        return calls

    def member_data(self) -> tuple[S.MemberData, np.ndarray, np.ndarray]:
        """Stacked per-member training data, validation images and labels (host arrays)."""
        cfg, train = self.config, self.train
        by_seed = {}
        for m in self.members:
            idx = m.split.teacher_idx
            teacher = (np.asarray(m.table.logits, np.float32) if m.table is not None
                       else np.zeros((len(idx), self.num_classes), np.float32))
            rem = m.split.remainder_idx if cfg.labelled_remainder else np.zeros(1, np.int64)
            pool = (_tuple_pool(np.random.default_rng(m.seed), len(idx),
                                self.method.tuple_size, cfg.tuple_pool)
                    if cfg.tuple_pool else np.zeros((1, max(1, self.method.tuple_size)),
                                                    np.int32))
            labels = train.labels[idx]
            aux = self.method.data_aux(labels) if self.method.data_aux else {}
            feats = {i: m.table.features[i] for i in self.method.teacher_layers}
            by_seed[m.seed] = dict(
                teacher_features=feats,
                images=train.images[idx], labels=labels, teacher_logits=teacher,
                remainder_images=train.images[rem], remainder_labels=train.labels[rem],
                tuple_pool=pool, aux=aux,
                val_images=train.images[m.split.val_idx], val_labels=train.labels[m.split.val_idx])
        rows = [by_seed[seed] for seed, _ in cfg.members()]
        stack = lambda key: np.stack([r[key] for r in rows])
        data = S.MemberData(
            images=stack("images"), labels=stack("labels"),
            teacher_logits=stack("teacher_logits"), remainder_images=stack("remainder_images"),
            remainder_labels=stack("remainder_labels"), tuple_pool=stack("tuple_pool"),
            aux={k: np.stack([r["aux"][k] for r in rows]) for k in rows[0]["aux"]},
            teacher_features=({i: np.stack([r["teacher_features"][i] for r in rows])
                               for i in self.method.teacher_layers}
                              if self.method.teacher_layers else None))
        return data, stack("val_images"), stack("val_labels")


def _load_data(config: DistillConfig, train, test):
    """(train, test) ImageSets: those given in memory (both, checked), else loaded from
    `config.dataset` / `data_path` / `data_dir`."""
    from ckd_jax.data import ImageSet, load_train_test
    from ckd_jax.data.sources import check_train_test

    if (train is None) != (test is None):
        raise ValueError("pass both train= and test= (ImageSets), or neither")
    if train is None:
        return load_train_test(config.dataset, data_dir=config.data_dir, path=config.data_path)
    for name, split in (("train", train), ("test", test)):
        if not isinstance(split, ImageSet):
            raise TypeError(f"{name} must be a ckd_jax.data.ImageSet (uint8 [N, H, W, C] "
                            f"images, labels, class_names, name), got {type(split).__name__}")
    check_train_test(train, test)
    return train, test


def _data_spec(config: DistillConfig, train):
    """(spec, what config.json records as data_spec or None to keep the config's): the
    registered spec of the dataset under `config.data_spec`, or for a dataset without one the
    spec derived from the training split (`ckd_jax.data.resolve_spec`), recorded in full."""
    from ckd_jax.data import has_spec, resolve_spec, spec_dict

    spec = resolve_spec(train.name, train.images, config.data_spec)
    if has_spec(train.name) and not config.data_spec:
        return spec, None
    return spec, spec_dict(spec)


@contextlib.contextmanager
def _table_lock(table_path: str):
    """An exclusive lock on the table's folder (fcntl.flock on the directory itself, so no lock
    file is left among the tables; released when the block ends or the process dies). Says so
    once when it has to wait for another process."""
    import fcntl

    folder = os.path.dirname(os.path.abspath(table_path))
    make_dirs(folder)
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"waiting for another process to build a table in {folder}", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def run_distillation(config: DistillConfig, *, mesh=None, resume: bool = True,
                     teacher_apply=None, teacher_variables=None,
                     stop_after_epochs: int | None = None, on_epoch=None,
                     rebuild_tables: bool = False, train=None, test=None) -> dict:
    """Train the population described by `config`; returns the summary dict.

    Args:
      config: the run's configuration (validated here).
      mesh: a 1-D `data` mesh (`engine.make_mesh`); default all local devices.
      resume: continue from the latest checkpoint in `config.out_dir` if there is one (the
        stored config must match).
      teacher_apply, teacher_variables: a teacher given in memory instead of
        `config.teacher_checkpoint` (used only to build missing logit tables).
      stop_after_epochs: end this call after that many pseudo-epochs even if the protocol goes
        on, saving nothing more (simulates a kill; a later call resumes from the checkpoint).
      on_epoch: optional `f(epoch)` called after each pseudo-epoch has been fully handled
        (evaluation, protocol, logging, checkpoint), e.g. to time the whole loop.
      rebuild_tables: rebuild the logit tables that are damaged or do not match this run
        (`--rebuild-tables`; the cost is printed first). Without it such a table is an error.
      train, test: the data in memory (`ckd_jax.data.ImageSet`s, both) instead of loading
        `config.dataset`; the run records `train.name` as its dataset (it names the logit
        tables, which also record a hash of the images). Preprocessing: `config.data_spec` over
        the registered spec of that name, or derived from `train` (docs/data.md).
    """
    mesh = S.make_mesh() if mesh is None else mesh
    if jax.process_count() > 1 and config.out_dir is not None and config.checkpoint_every:
        raise ValueError(f"checkpoint_every={config.checkpoint_every} with "
                         f"{jax.process_count()} processes: checkpoints of a multi-process run "
                         "are not supported; set checkpoint_every=0")
    prep = _Prepared(config, mesh, teacher_apply, teacher_variables, rebuild_tables,
                     train=train, test=test)
    cfg = prep.config

    created_out = False
    if cfg.out_dir is None or jax.process_index() != 0:
        lock = contextlib.nullcontext()
    else:
        from ckd_jax.runlock import run_lock

        created_out = not os.path.exists(cfg.out_dir)
        lock = run_lock(cfg.out_dir)  # one process per run folder (creates it)
    with lock:
        try:
            teacher_calls = prep.build_missing_tables()
        except BaseException:
            if created_out:  # leave nothing half-written behind
                shutil.rmtree(cfg.out_dir, ignore_errors=True)
            raise
        if prep.members and prep.members[0].table_path:
            print(f"logit tables: {os.path.dirname(prep.members[0].table_path)}", flush=True)
        host_data, val_images, val_labels = prep.member_data()
        return _train(prep, host_data, val_images, val_labels, teacher_calls, resume,
                      stop_after_epochs, on_epoch)


def _step_spec(cfg: DistillConfig, prep: _Prepared, n_train: int) -> S.StepSpec:
    """The static facts the compiled step is specialised on."""
    return make_step_spec(
        prep.spec, n_train, batch_size=cfg.batch_size, epochs=cfg.epochs,
        momentum=cfg.momentum, weight_decay=cfg.weight_decay, schedule=cfg.schedule,
        compute_dtype=cfg.compute_dtype, group_forward=cfg.group_forward,
        has_remainder=cfg.labelled_remainder, remainder_weight=cfg.remainder_weight,
        use_pool=bool(cfg.tuple_pool))


_ACC_KEYS = ("top1", "top5", "top1_calibrated", "top5_calibrated")


class _Evaluator:
    """Compiled evaluation of every member: the logit offset (calibration, from the member's
    own teacher-labelled images and logit table), validation, and test; accuracies as NumPy.

    Keys of the returned dicts: `{split}_top1`, `{split}_top5` (raw logits) and the same with
    `_calibrated` (NaN for a method without a logit table, which has no offset).
    """

    def __init__(self, model, spec, mesh, cfg: DistillConfig, method: Method, num_members: int,
                 num_classes: int):
        bs = -(-cfg.eval_batch_size // mesh.size) * mesh.size  # whole batches per device
        loop = cfg.member_loop
        self._val = S.make_evaluate(model, spec, mesh, bs, shared_images=False, calibrated=True,
                                    member_loop=loop)
        self._test = S.make_evaluate(model, spec, mesh, bs, shared_images=True, calibrated=True,
                                     member_loop=loop)
        self._offset = (S.make_logit_offset(model, spec, mesh, bs, member_loop=loop)
                        if method.uses_teacher else None)
        self.has_offset = self._offset is not None
        self.no_offset = jnp.zeros((num_members, num_classes), jnp.float32)

    def offset(self, params, batch_stats, data) -> Array:
        if self._offset is None:
            return self.no_offset
        return self._offset(params["student"], batch_stats, data.images, data.teacher_logits)

    def _named(self, split: str, values) -> dict:
        acc = {f"{split}_{k}": np.asarray(v, np.float64) for k, v in zip(_ACC_KEYS, values)}
        if not self.has_offset:  # no table, no calibrated figure
            acc.update({k: np.full_like(v, np.nan) for k, v in acc.items() if "calib" in k})
        return acc

    def val(self, params, batch_stats, offset, x, y) -> dict:
        return self._named("val", self._val(params["student"], batch_stats, x, y, offset))

    def test(self, params, batch_stats, offset, x, y) -> dict:
        return self._named("test", self._test(params["student"], batch_stats, x, y, offset))


def curve_test_indices(n_test: int, k: int) -> np.ndarray:
    """Indices (sorted) of the test images a test-curve point is measured on
    (`eval_test_curve_images` = k): all n_test for k = 0, else a random k drawn with a fixed
    seed, so every run and every point of a study measures the same images."""
    if k == 0 or k == n_test:
        return np.arange(n_test)
    return np.sort(np.random.default_rng(0).permutation(n_test)[:k])


def _run_folder(cfg: DistillConfig) -> RunFolder:
    """The run folder of a student run (`runloop.RunFolder`): config.json, metrics.jsonl,
    summary.json and the checkpoints (none without out_dir or with checkpoint_every=0). Of
    several processes (jax.distributed), process 0 alone writes it."""
    return RunFolder(cfg.out_dir, "metrics.jsonl",
                     checkpoints=(dict(keep_best=False, max_to_keep=1)
                                  if cfg.checkpoint_every else None),
                     writes=cfg.out_dir is not None and jax.process_index() == 0)


def _restore_or_start(cfg: DistillConfig, folder: RunFolder, template: dict,
                      resume: bool) -> dict | None:
    """The latest checkpoint's tree if resuming (the stored config must match), else None
    after writing config.json and removing old metrics. A resumed run drops the metrics rows
    written after its checkpoint (they are computed again, identically)."""
    if not folder.writes:
        return None
    config_path = os.path.join(cfg.out_dir, "config.json")
    restored = folder.restore_latest(template) if resume else None
    if restored is None:
        if folder.has_log():  # an earlier attempt left no checkpoint
            print(resume_line(cfg.out_dir, None, "pseudo-epoch",
                              why="" if resume else " (resume off)"), flush=True)
        write_atomic(config_path, cfg.to_json())
        folder.remove_log()
        return None
    changed = cfg.differs_from_saved(config_path, resolved=True)
    if changed:
        raise ValueError(f"{cfg.out_dir} holds a run with another configuration "
                         f"(differs in {changed}); use a new out_dir or resume=False")
    step, tree = restored
    folder.cut_log(step)
    return tree


def _epoch_rows(protocol: PlateauProtocol, members, was_active, acc: dict, offset,
                train_metrics: dict, calibrated: bool, note: dict) -> list[dict]:
    """metrics.jsonl rows of one pseudo-epoch, one per member that trained in it; `note` is
    added to each (the test curve's image count when it is a subset)."""
    norm = np.linalg.norm(np.asarray(offset), axis=-1)
    return [{"epoch": protocol.epoch, "member": i, "seed": seed, "lr": lr,
             "lr_now": float(lr * protocol.lr_scale[i]), **{k: v[i] for k, v in acc.items()},
             "selection": "calibrated" if calibrated else "raw",
             "logit_offset_norm": float(norm[i]), "best_val_top1": protocol.best_val[i],
             **{f"train_{k}": float(v[i]) for k, v in train_metrics.items()}, **note}
            for i, (seed, lr) in enumerate(members) if was_active[i]]


def _member_results(best_acc: dict, last_acc: dict, best_offset, calibrated: bool,
                    has_table: bool, i: int) -> dict:
    """Member i's test figures: the selected evaluation's (`test_top1_at_best_val`, ...), both
    evaluations by name, and the logit offset kept with the best weights."""
    f = lambda a: float(a[i]) if np.isfinite(a[i]) else None
    sel = "_calibrated" if calibrated else ""
    offset = np.asarray(best_offset[i], np.float64)
    return {
        "test_top1_at_best_val": f(best_acc[f"test_top1{sel}"]),
        "test_top5_at_best_val": f(best_acc[f"test_top5{sel}"]),
        "last_test_top1": f(last_acc[f"test_top1{sel}"]),
        "last_test_top5": f(last_acc[f"test_top5{sel}"]),
        "selected_on": "calibrated" if calibrated else "raw",
        "test_top1_at_best_val_raw": f(best_acc["test_top1"]),
        "test_top1_at_best_val_calibrated": f(best_acc["test_top1_calibrated"]),
        "last_test_top1_raw": f(last_acc["test_top1"]),
        "last_test_top1_calibrated": f(last_acc["test_top1_calibrated"]),
        "logit_offset": offset.tolist() if has_table else None,
        "logit_offset_norm": float(np.linalg.norm(offset)) if has_table else None,
    }


def _raw_selection(raw_protocol: PlateauProtocol, raw_acc: dict, last_acc: dict, i: int) -> dict:
    """Member i's second best slot (`also_select_raw`): selected and tested on raw logits, as
    the paper's `ckd` run of the same training would report it."""
    f = lambda a: float(a[i]) if np.isfinite(a[i]) else None
    got = raw_protocol.summary(i)
    return {"best_epoch": got["best_epoch"], "best_val_top1": got["best_val_top1"],
            "last_val_top1": got["last_val_top1"],
            "test_top1_at_best_val": f(raw_acc["test_top1"]),
            "test_top5_at_best_val": f(raw_acc["test_top5"]),
            "test_top1_at_best_val_calibrated": f(raw_acc["test_top1_calibrated"]),
            "last_test_top1": f(last_acc["test_top1"]), "last_test_top5": f(last_acc["test_top5"])}


def _train(prep: _Prepared, host_data, val_images, val_labels, teacher_calls: int, resume: bool,
           stop_after_epochs: int | None, on_epoch=None) -> dict:
    """The loop: train one pseudo-epoch, calibrate and validate, let the protocol decide (keep
    best / reload with LR/10 / stop), log, checkpoint now and then; at the end test the best
    and the last weights once and write the summary."""
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    cfg, method, mesh = prep.config, prep.method, prep.mesh
    n_train = host_data.images.shape[1]
    spec = _step_spec(cfg, prep, n_train)
    model = create_model(cfg.student, prep.num_classes, **cfg.student_kwargs)
    put = lambda tree: jax.device_put(tree, NamedSharding(mesh, P()))  # replicated
    data = put(host_data)
    val_x, val_y = put(val_images), put(val_labels)
    test_x, test_y = put(prep.test.images), put(prep.test.labels)
    curve_idx = curve_test_indices(len(prep.test.labels), cfg.eval_test_curve_images)
    if len(curve_idx) == len(prep.test.labels):  # the whole split: rows keep their old form
        curve_x, curve_y, curve_note = test_x, test_y, {}
    else:  # a subset's figures are named by their image count
        curve_x, curve_y = put(prep.test.images[curve_idx]), put(prep.test.labels[curve_idx])
        curve_note = {"test_images": int(len(curve_idx))}

    members = cfg.members()
    member_keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray([s for s, _ in members]))
    sample_shape = (spec.crop_size, spec.crop_size, host_data.images.shape[-1])
    t_shapes = ({i: f.shape[2:] for i, f in host_data.teacher_features.items()}
                if host_data.teacher_features is not None else None)
    state = put(S.init_state(model, method, member_keys,
                             jnp.asarray([lr for _, lr in members], jnp.float32), sample_shape,
                             prep.num_classes, n_train, teacher_feature_shapes=t_shapes))
    train_epoch = S.make_train_epoch(model, method, spec, mesh, loop=cfg.epoch_loop,
                                     member_loop=cfg.member_loop)
    ev = _Evaluator(model, spec, mesh, cfg, method, len(members), prep.num_classes)
    calibrated = cfg.calibration == "table"
    select = jax.jit(S.tree_select)
    # The best slot: weights and the logit offset measured with them. A copy, since `state` is
    # donated to the compiled epoch and must not alias it.
    best = put(jax.tree.map(jnp.copy, (state.params, state.batch_stats, ev.no_offset)))
    new_protocol = lambda: PlateauProtocol(
        len(members), schedule=cfg.schedule, patience=cfg.patience,
        max_plateaus=cfg.max_lr_drops, max_epochs=cfg.max_epochs, epochs=cfg.epochs)
    protocol = new_protocol()
    # The second best slot (`also_select_raw`): weights chosen on raw validation, tracked by a
    # protocol of their own whose decisions never act on training (the schedule has no reloads).
    raw_protocol = new_protocol() if cfg.also_select_raw else None
    best_raw = (put(jax.tree.map(jnp.copy, (state.params, state.batch_stats)))
                if raw_protocol is not None else None)

    def saved_tree() -> dict:
        tree = {"state": state, "best": best, "protocol": protocol.state_dict()}
        if raw_protocol is not None:
            tree.update(best_raw=best_raw, protocol_raw=raw_protocol.state_dict())
        return tree

    folder = _run_folder(cfg)
    tree = _restore_or_start(cfg, folder, saved_tree(), resume)
    if tree is not None:
        state, best = put(tree["state"]), put(tree["best"])
        protocol.load_state_dict(tree["protocol"])
        if raw_protocol is not None:
            raw_protocol.load_state_dict(tree["protocol_raw"])
            best_raw = put(tree["best_raw"])
        print(resume_line(cfg.out_dir, protocol.epoch, "pseudo-epoch"), flush=True)
    _log(cfg, f"{method.name}: {len(members)} member(s), {n_train} teacher-labelled samples, "
              f"{spec.steps_per_epoch} steps/pseudo-epoch, {mesh.size} device(s)")
    loop = EpochLoop(folder, unit="pseudo-epoch", progress=cfg.progress,
                     bar=dict(total=protocol.max_epochs, initial=protocol.epoch, unit="ep",
                              leave=True),
                     unsaved="no out_dir or checkpoint_every=0")

    t0 = time.time()
    epochs_this_call = 0
    with loop:
        while not protocol.done:
            epoch_keys = jax.vmap(jax.random.fold_in, in_axes=(0, None))(member_keys,
                                                                         protocol.epoch)
            state, train_metrics = train_epoch(state, data, epoch_keys,
                                               jnp.asarray(protocol.active))
            offset = ev.offset(state.params, state.batch_stats, data)
            acc = ev.val(state.params, state.batch_stats, offset, val_x, val_y)
            sel = "_calibrated" if calibrated else ""
            was_active = protocol.active.copy()
            decision = protocol.update(acc[f"val_top1{sel}"], val5=acc[f"val_top5{sel}"])
            tested = bool(cfg.eval_test_every) and protocol.epoch % cfg.eval_test_every == 0
            if tested:
                acc.update(ev.test(state.params, state.batch_stats, offset, curve_x, curve_y))
            if decision.improved.any():
                best = select(jnp.asarray(decision.improved),
                              (state.params, state.batch_stats, offset), best)
            if raw_protocol is not None:
                raw_improved = raw_protocol.update(acc["val_top1"], val5=acc["val_top5"]).improved
                if raw_improved.any():
                    best_raw = select(jnp.asarray(raw_improved), (state.params, state.batch_stats),
                                      best_raw)
            if decision.reload.any():
                r = jnp.asarray(decision.reload)
                params, stats = select(r, best[:2], (state.params, state.batch_stats))
                state = state._replace(params=params, batch_stats=stats,
                                       lr=plateau_drop(state.lr, r))
            folder.log(_epoch_rows(protocol, members, was_active, acc, offset,
                                   jax.tree.map(np.asarray, train_metrics), calibrated,
                                   curve_note if tested else {}))
            folder.save_if_due(protocol.epoch, saved_tree(), every=cfg.checkpoint_every,
                               seconds=cfg.checkpoint_seconds, finished=protocol.done)
            loop.advance(val=f"{np.nanmax(acc[f'val_top1{sel}']):.3f}",
                         best_val=f"{np.nanmax(protocol.best_val):.3f}",
                         active=int(protocol.active.sum()))
            if on_epoch is not None:
                on_epoch(protocol.epoch)
            epochs_this_call += 1
            if stop_after_epochs is not None and epochs_this_call >= stop_after_epochs:
                break  # like a kill: nothing more is saved; a rerun resumes from the checkpoint
            if not protocol.done:
                loop.stop_if_requested(protocol.epoch, saved_tree())
    wall = time.time() - t0

    # The paper's figure: test accuracy of the best-validation weights, measured once.
    best_acc = ev.test(best[0], best[1], best[2], test_x, test_y)
    last_acc = ev.test(state.params, state.batch_stats,
                       ev.offset(state.params, state.batch_stats, data), test_x, test_y)
    raw_acc = None
    if raw_protocol is not None:  # the raw slot: its own offset only for the diagnostic
        raw_acc = ev.test(best_raw[0], best_raw[1], ev.offset(best_raw[0], best_raw[1], data),
                          test_x, test_y)
    summary = {
        "method": method.name, "method_hyper": method.hyper, "dataset": prep.train.name,
        "teacher": cfg.teacher, "student": cfg.student, "schedule": cfg.schedule,
        "subset_size": prep.members[0].split.subset_size,
        "budget": int(n_train), "teacher_calls_this_run": int(teacher_calls),
        "finished": bool(protocol.done), "train_seconds": wall,
        "steps_per_epoch": spec.steps_per_epoch, "devices": mesh.size,
        "member_loop": S.resolve_member_loop(cfg.member_loop, mesh),
        "calibration": cfg.calibration,
        "members": [{"seed": seed, "lr": lr,
                     "teacher_calls": int(n_train) if method.uses_teacher else 0,
                     **protocol.summary(i),
                     **_member_results(best_acc, last_acc, best[2], calibrated,
                                       ev.has_offset, i),
                     **({} if raw_protocol is None else
                        {"raw_selection": _raw_selection(raw_protocol, raw_acc, last_acc, i)})}
                    for i, (seed, lr) in enumerate(members)],
    }
    folder.write_summary("summary.json", summary, default=json_default)
    # Returned for tests and programmatic use; not part of summary.json.
    summary["_final"] = {"state": state, "best": best, "compiles": train_epoch._cache_size(),
                         "best_raw": best_raw}
    return summary
