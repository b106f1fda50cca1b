"""The teacher pass and the `LogitTable` that caches its output.

The teacher is called once per teacher-labelled sample, ever: `teacher_pass` runs it in eval mode
on one view per image (as in the paper: one random crop+flip view, fixed for the whole run; or the
clean view), and `build_or_load_logit_table` saves the result so a rerun makes no teacher call.
Every call is charged to a `TeacherCallCounter` that refuses to exceed the budget.

File format (`LogitTable.save`): one .npz, written atomically (`ckd_jax.files.write_atomic`), with
  logits       float32 [B, C], or uint16 [B, C] holding bfloat16 bits (meta logits_dtype says);
  indices      int64 [B], dataset indices of the rows (row r labels training image indices[r]);
  meta_json    0-d unicode string, JSON of the meta dict (dataset, split, teacher_name,
               teacher_hash, view, seed, num_classes, teacher_calls (the calls that built it),
               created, format_version; from format 2: images_hash, the sha256 of the
               labelled images, view_hash, of the view's parameters, and content_sha256, of
               the stored arrays, checked on every load).
  feature_<i>  (only in tables built for white-box methods) the teacher's feature i of
               `model.apply(..., return_features=True)` on the *same* view as the logits,
               float32, or uint16 holding bfloat16 bits (meta features_dtype says); [B, ...].
The features come from the same teacher call as the logits (`teacher_pass_features`), so a
table with features still costs exactly one teacher call per row.
"""

from __future__ import annotations

import datetime
import functools
import hashlib
import json
import os
import zipfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import jax
import jax.numpy as jnp
import numpy as np

from ckd_jax.data.augment import center_crop, normalize, random_crop_flip
from ckd_jax.data.specs import DatasetSpec
from ckd_jax.files import DamagedFile, hash_arrays, note, read_json, write_atomic, write_json

# 2: images_hash, view_hash and content_sha256 in the meta (format 1 tables still load; their
# images cannot be checked, which `check_matches` says in one line).
FORMAT_VERSION = 2
VIEWS = ("augmented", "clean")
REBUILD_FLAG = "--rebuild-tables"


class TeacherBudgetExceeded(RuntimeError):
    """Raised when a teacher call would go over the teacher-call budget."""


class TeacherCallCounter:
    """Counts teacher calls (samples labelled by the teacher) against a fixed budget."""

    def __init__(self, budget: int):
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 0:
            raise ValueError(f"budget must be a non-negative int, got {budget!r}")
        self.budget = int(budget)
        self._calls = 0

    @property
    def calls(self) -> int:
        return self._calls

    @property
    def remaining(self) -> int:
        return self.budget - self._calls

    def charge(self, n: int) -> None:
        """Record `n` more teacher calls; raises TeacherBudgetExceeded (recording nothing) if the
        total would pass the budget."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be a non-negative int, got {n!r}")
        if self._calls + n > self.budget:
            raise TeacherBudgetExceeded(
                f"{n} more teacher calls would make {self._calls + n}, over the budget of "
                f"{self.budget} ({self._calls} already made)")
        self._calls += int(n)

    def __repr__(self) -> str:
        return f"TeacherCallCounter(calls={self._calls}, budget={self.budget})"


def _teacher_view(images: jax.Array, keys: jax.Array, spec: DatasetSpec, view: str) -> jax.Array:
    if view == "clean":
        out = images if spec.eval_crop is None else center_crop(images, spec.eval_crop)
    else:
        # One key per sample, so a sample's view does not depend on the batch it lands in.
        def one(k, img):
            return random_crop_flip(k, img[None], crop_size=spec.crop_size,
                                    padding=spec.padding, flip=spec.flip)[0]
        out = jax.vmap(one)(keys, images)
    return normalize(out, spec.mean, spec.std)


def _make_batch_logits_fn(apply_fn: Callable, spec: DatasetSpec, view: str,
                          feature_layers: tuple[int, ...] = (), features_dtype: str = "float32"):
    def batch_logits(variables, x_u8, batch_keys):
        x = _teacher_view(x_u8, batch_keys, spec, view)
        if not feature_layers:
            return apply_fn(variables, x, train=False).astype(jnp.float32)
        # One call returns logits and features of the same view (no second teacher call).
        feats, logits = apply_fn(variables, x, train=False, return_features=True)
        if max(feature_layers) >= len(feats):
            raise ValueError(f"feature layers {list(feature_layers)} requested but the teacher "
                             f"returns {len(feats)} features (indices 0..{len(feats) - 1})")
        out = {i: feats[i].astype(features_dtype) for i in feature_layers}
        return logits.astype(jnp.float32), out

    return jax.jit(batch_logits)


_cached_batch_logits_fn = functools.lru_cache(maxsize=16)(_make_batch_logits_fn)


def _batch_logits_fn(apply_fn: Callable, spec: DatasetSpec, view: str,
                     feature_layers: tuple[int, ...] = (), features_dtype: str = "float32"):
    """The jitted per-batch function; reused across passes with the same teacher function so a
    second pass does not recompile (falls back to a fresh one for unhashable apply_fns)."""
    try:
        return _cached_batch_logits_fn(apply_fn, spec, view, feature_layers, features_dtype)
    except TypeError:
        return _make_batch_logits_fn(apply_fn, spec, view, feature_layers, features_dtype)


def _check_feature_layers(feature_layers) -> tuple[int, ...]:
    layers = tuple(feature_layers)
    if any(isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0
           for i in layers) or len(set(layers)) != len(layers):
        raise ValueError(f"feature_layers must be distinct non-negative ints (indices into the "
                         f"teacher's feature list), got {list(layers)}")
    return tuple(sorted(int(i) for i in layers))


def _features_dtype_name(dtype) -> str:
    d = np.dtype(dtype)
    if d == np.dtype(np.float32):
        return "float32"
    if d == np.dtype(jnp.bfloat16):
        return "bfloat16"
    raise ValueError(f"features_dtype must be float32 or bfloat16, got {dtype}")


def teacher_pass(apply_fn: Callable, variables, images_u8: np.ndarray, *, key: jax.Array,
                 spec: DatasetSpec, view: str = "augmented", batch_size: int = 512,
                 counter: TeacherCallCounter) -> np.ndarray:
    """Teacher logits for every image, one teacher call per image.

    Args:
      apply_fn: `apply_fn(variables, x, train=False)` -> logits [b, C]; x float32 [b, h, w, c].
      variables: the teacher's variables (params and batch_stats).
      images_u8: uint8 [B, H, W, C], the teacher-labelled images in table row order.
      key: PRNG key of the augmented views; row i uses `jax.random.split(key, B)[i]`, so the
        result does not depend on `batch_size`.
      spec: preprocessing (crop/padding/flip for "augmented", eval_crop for "clean", mean/std).
      view: "augmented" (the paper: one random crop+flip view per image) or "clean".
      batch_size: rows per teacher batch; the last batch is zero-padded to the same shape (one
        compilation), padded rows are neither counted nor returned.
      counter: charged B calls (batch by batch); checked before any work.

    Returns:
      float32 [B, C] logits.
    """
    logits, _ = _teacher_pass(apply_fn, variables, images_u8, key=key, spec=spec, view=view,
                              batch_size=batch_size, counter=counter)
    return logits


def teacher_pass_features(apply_fn: Callable, variables, images_u8: np.ndarray, *,
                          key: jax.Array, spec: DatasetSpec, feature_layers: Sequence[int],
                          view: str = "augmented", batch_size: int = 512,
                          counter: TeacherCallCounter,
                          features_dtype=np.float32) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    """Teacher logits *and* intermediate features for every image, one teacher call per image.

    As `teacher_pass` (same views, keys, batching and call counting), but `apply_fn` is called
    as `apply_fn(variables, x, train=False, return_features=True)` -> (features list, logits)
    and the features `feature_layers` (indices into that list) of the same view are returned.

    Returns:
      (logits float32 [B, C], {layer index: features [B, ...] in `features_dtype`}).
    """
    layers = _check_feature_layers(feature_layers)
    if not layers:
        raise ValueError("feature_layers must name at least one layer (use teacher_pass for "
                         "logits only)")
    return _teacher_pass(apply_fn, variables, images_u8, key=key, spec=spec, view=view,
                         batch_size=batch_size, counter=counter, feature_layers=layers,
                         features_dtype=_features_dtype_name(features_dtype))


def _teacher_pass(apply_fn, variables, images_u8, *, key, spec, view, batch_size, counter,
                  feature_layers: tuple[int, ...] = (), features_dtype: str = "float32"):
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    if not isinstance(spec, DatasetSpec):
        raise ValueError(f"spec must be a DatasetSpec, got {type(spec).__name__}")
    images_u8 = np.asarray(images_u8)
    if images_u8.dtype != np.uint8 or images_u8.ndim != 4:
        raise ValueError(f"images_u8 must be uint8 [B, H, W, C], got {images_u8.dtype} "
                         f"{images_u8.shape}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    n = len(images_u8)
    if n == 0:
        raise ValueError("no images to label")
    if n > counter.remaining:
        raise TeacherBudgetExceeded(
            f"labelling {n} images needs {n} teacher calls but only {counter.remaining} of the "
            f"budget of {counter.budget} remain")
    bs = min(batch_size, n)
    keys = jax.random.split(key, n)
    batch_logits = _batch_logits_fn(apply_fn, spec, view, feature_layers, features_dtype)
    if feature_layers:  # a bad layer index fails here, before any call is charged
        jax.eval_shape(batch_logits, variables, images_u8[:bs], keys[:bs])
    out, feats = None, {}
    for start in range(0, n, bs):
        real = min(bs, n - start)
        x = images_u8[start:start + real]
        k = keys[start:start + real]
        if real < bs:
            x = np.concatenate([x, np.zeros((bs - real,) + x.shape[1:], np.uint8)])
            k = jnp.concatenate([k, jnp.repeat(k[:1], bs - real, axis=0)])
        counter.charge(real)
        result = batch_logits(variables, x, k)
        logits, fb = result if feature_layers else (result, {})
        logits = np.asarray(logits)
        if logits.ndim != 2 or logits.shape[0] != bs:
            raise ValueError(f"apply_fn must return logits [batch, C], got shape {logits.shape}")
        if out is None:
            out = np.empty((n, logits.shape[1]), np.float32)
            feats = {i: np.empty((n,) + f.shape[1:], f.dtype) for i, f in fb.items()}
        out[start:start + real] = logits[:real]
        for i, f in fb.items():
            feats[i][start:start + real] = np.asarray(f)[:real]
    return out, feats


def variables_hash(variables) -> str:
    """sha256 hex digest over the flattened leaves' key paths, dtypes, shapes and bytes, sorted
    by path (so dict insertion order does not matter)."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(variables)
    items = sorted((jax.tree_util.keystr(p), np.asarray(v)) for p, v in leaves)
    h = hashlib.sha256()
    for path, a in items:
        a = np.ascontiguousarray(a)
        h.update(f"{path}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def teacher_fingerprint(source) -> str | None:
    """A cheap identity of the teacher weights at `source` (no weights loaded), recorded in
    every table built from it (`teacher_source_sha256`) and compared each time a table is used:
    for a RepDistiller .pth the sha256 of the file; for a `train_teacher.py` run dir (or its
    checkpoints/ folder) the sha256 of the newest step's checkpoint manifest (which holds the
    sha256 of every file of that step). None when there is none to read (no checkpoint, or
    steps written before manifests): the caller then compares the weights' own hash."""
    if source is None:
        return None
    src = os.fspath(source)
    if os.path.isfile(src):
        h = hashlib.sha256()
        with open(src, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    folder = os.path.join(src, "checkpoints")
    folder = folder if os.path.isdir(folder) else src
    try:
        steps = sorted((int(n) for n in os.listdir(folder) if n.isdigit()), reverse=True)
    except OSError:
        return None
    for step in steps:
        try:
            with open(os.path.join(folder, str(step), "ckd_sha256.json"), "rb") as f:
                return hashlib.sha256(f.read()).hexdigest()
        except OSError:
            continue
    return None


TABLES_SUBDIR = "logit_tables"


def table_folder(logit_table_dir, teacher_checkpoint, out_dir) -> str | None:
    """Where a run's logit tables live: `logit_table_dir` when given; else one place per
    teacher, `<teacher run dir>/logit_tables`, so runs on the same teacher, data and seeds
    reuse the tables instead of spending the teacher calls again. The run's own
    `<out_dir>/logit_tables` is used when it already holds tables (a run made before this
    default keeps them), when the teacher is a .pth file or in memory, and, with a note, when
    the teacher's folder is not writable. None when there is no place (no out_dir)."""
    if logit_table_dir:
        return os.fspath(logit_table_dir)
    own = os.path.join(os.fspath(out_dir), TABLES_SUBDIR) if out_dir else None
    if own and os.path.isdir(own) and any(n.endswith(".npz") for n in os.listdir(own)):
        return own
    if teacher_checkpoint is None or not os.path.isdir(teacher_checkpoint):
        return own
    run = os.path.abspath(os.fspath(teacher_checkpoint))
    if os.path.basename(run) == "checkpoints":
        run = os.path.dirname(run)
    shared = os.path.join(run, TABLES_SUBDIR)
    if os.access(shared if os.path.isdir(shared) else run, os.W_OK | os.X_OK):
        return shared
    if own:
        note(f"the teacher's folder {run} is not writable: the logit tables go to {own} (a "
             "run on this teacher elsewhere builds them again; set logit_table_dir to share)")
    return own


def images_hash(images_u8: np.ndarray) -> str:
    """Content hash of the teacher-labelled images in table row order (what the table is of)."""
    return hash_arrays(np.asarray(images_u8))


def view_hash(spec: DatasetSpec, view: str) -> str:
    """Hash of the view's parameters: the same images under another crop, padding, flip or
    normalisation give other teacher outputs."""
    return hash_arrays(extra={"view": view, "crop_size": spec.crop_size,
                              "padding": spec.padding, "flip": bool(spec.flip),
                              "mean": [float(v) for v in spec.mean],
                              "std": [float(v) for v in spec.std],
                              "eval_crop": spec.eval_crop})


def rebuild_cost(path, calls: int | None) -> str:
    """The safe next step for an unusable table: the words every such error ends with."""
    cost = f"{calls} teacher calls" if calls is not None else "one teacher call per row"
    return (f"deleting {os.fspath(path)} is safe (it is a cache of teacher outputs); the next "
            f"run rebuilds it at a cost of {cost}, or pass {REBUILD_FLAG} to rebuild it now")


def _content_hash(arrays: dict) -> str:
    return hash_arrays(*(arrays[k] for k in sorted(arrays)), extra=sorted(arrays))


@dataclass
class LogitTable:
    """Cached teacher logits for the teacher-labelled samples.

    logits: [B, C] float32 or bfloat16 (row r = teacher output for dataset index indices[r]).
    indices: int64 [B], the dataset indices of the rows (BudgetSplit.teacher_idx order).
    meta: dict with (at least, when built here) dataset, split, teacher_name, teacher_hash, view,
      seed, num_classes, teacher_calls, created, format_version; must be JSON-serialisable.
    features: {layer index: [B, ...] float32 or bfloat16}, the teacher's intermediate features
      (index into its `return_features=True` list) on the same view as the logits; empty for a
      plain logit table. White-box methods need the layers they use (`check_matches`).
    """

    logits: np.ndarray
    indices: np.ndarray
    meta: dict = field(default_factory=dict)
    features: dict = field(default_factory=dict)

    def __post_init__(self):
        logits = np.asarray(self.logits)
        if logits.dtype not in (np.dtype(np.float32), np.dtype(jnp.bfloat16)):
            raise ValueError(f"logits must be float32 or bfloat16, got {logits.dtype}")
        if logits.ndim != 2:
            raise ValueError(f"logits must be [B, C], got shape {logits.shape}")
        indices = np.asarray(self.indices)
        if indices.ndim != 1 or (indices.size and not np.issubdtype(indices.dtype, np.integer)):
            raise ValueError(f"indices must be a 1-D integer array, got {indices.dtype} "
                             f"{indices.shape}")
        if len(indices) != len(logits):
            raise ValueError(f"{len(logits)} logit rows but {len(indices)} indices")
        self.logits, self.indices = logits, indices.astype(np.int64)
        self.meta = dict(self.meta)
        feats = {}
        for i, f in dict(self.features or {}).items():
            if isinstance(i, bool) or not isinstance(i, (int, np.integer)) or i < 0:
                raise ValueError(f"feature keys must be non-negative layer indices, got {i!r}")
            f = np.asarray(f)
            if f.dtype not in (np.dtype(np.float32), np.dtype(jnp.bfloat16)):
                raise ValueError(f"features[{i}] must be float32 or bfloat16, got {f.dtype}")
            if f.ndim < 2 or len(f) != len(logits):
                raise ValueError(f"features[{i}] must be [B={len(logits)}, ...], got shape "
                                 f"{f.shape}")
            feats[int(i)] = f
        dtypes = {f.dtype for f in feats.values()}
        if len(dtypes) > 1:
            raise ValueError(f"all features must share one dtype, got {sorted(map(str, dtypes))}")
        self.features = dict(sorted(feats.items()))

    @property
    def feature_layers(self) -> tuple[int, ...]:
        """The teacher feature layers this table holds (sorted; empty for a plain table)."""
        return tuple(self.features)

    @property
    def num_classes(self) -> int:
        return self.logits.shape[1]

    def __len__(self) -> int:
        return len(self.indices)

    def save(self, path) -> None:
        """Write the table to `path` (.npz) atomically: a crash leaves either the old file or
        the new one, never a partial file."""
        path = os.fspath(path)
        meta = dict(self.meta)
        if self.logits.dtype == np.dtype(jnp.bfloat16):
            meta["logits_dtype"], stored = "bfloat16", self.logits.view(np.uint16)
        else:
            meta["logits_dtype"], stored = "float32", self.logits
        arrays = {}
        if self.features:
            fdtype = next(iter(self.features.values())).dtype
            bf16 = fdtype == np.dtype(jnp.bfloat16)
            meta["features_dtype"] = "bfloat16" if bf16 else "float32"
            arrays = {f"feature_{i}": (f.view(np.uint16) if bf16 else f)
                      for i, f in self.features.items()}
        arrays = {"logits": stored, "indices": self.indices, **arrays}
        meta["content_sha256"] = _content_hash(arrays)
        meta_json = json.dumps(meta, sort_keys=True)
        write_atomic(path, lambda f: np.savez(f, meta_json=np.asarray(meta_json), **arrays))

    @classmethod
    def load(cls, path, *, rebuild_calls: int | None = None) -> LogitTable:
        """Read a table written by `save`. A missing file is FileNotFoundError; a damaged one
        (truncated, bytes changed, not a table, a newer format) is `DamagedFile`, one line
        naming the file and what rebuilding it costs (`rebuild_calls` teacher calls)."""
        path = os.fspath(path)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"no logit table at {path!r}")
        try:
            return cls._load(path)
        except DamagedFile as e:
            raise DamagedFile(f"logit table {path} {e}; {rebuild_cost(path, rebuild_calls)}"
                              ) from e
        except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as e:
            why = " ".join(str(e).split()) or type(e).__name__
            raise DamagedFile(f"logit table {path} is damaged (cannot be read: {why}); "
                              f"{rebuild_cost(path, rebuild_calls)}") from e

    @classmethod
    def _load(cls, path: str) -> LogitTable:
        if os.path.getsize(path) == 0:
            raise DamagedFile("is empty")
        with np.load(path, allow_pickle=False) as z:
            need = {"logits", "indices", "meta_json"}
            if not need <= set(z.files):
                raise DamagedFile(f"is not a logit table: has {sorted(z.files)}, expected "
                                  f"{sorted(need)}")
            meta = json.loads(str(z["meta_json"]))
            arrays = {name: z[name] for name in z.files if name != "meta_json"}
        if not isinstance(meta, dict):
            raise DamagedFile("is damaged: its meta_json is not an object")
        version = meta.get("format_version", 1)
        if not isinstance(version, int) or version > FORMAT_VERSION:
            raise DamagedFile(f"was written by a newer ckd_jax (table format {version!r}, this "
                              f"code reads up to {FORMAT_VERSION}); use that version")
        want = meta.pop("content_sha256", None)
        if want is not None and want != _content_hash(arrays):
            raise DamagedFile("is damaged: its arrays do not match their recorded sha256 "
                              "(bytes changed on disk)")
        logits, indices = arrays["logits"], arrays["indices"]
        features = {int(name[len("feature_"):]): a for name, a in arrays.items()
                    if name.startswith("feature_")}
        dtype = meta.pop("logits_dtype", "float32")
        if dtype == "bfloat16":
            logits = logits.view(jnp.bfloat16)
        elif dtype != "float32":
            raise DamagedFile(f"has an unknown logits_dtype {dtype!r}")
        fdtype = meta.pop("features_dtype", "float32")
        if fdtype == "bfloat16":
            features = {i: f.view(jnp.bfloat16) for i, f in features.items()}
        elif fdtype != "float32":
            raise DamagedFile(f"has an unknown features_dtype {fdtype!r}")
        return cls(logits, indices, meta, features)

    def check_matches(self, *, dataset: str, indices, teacher_name: str, teacher_hash: str,
                      view: str | None = None, feature_layers: Sequence[int] = (),
                      images_hash: str | None = None, view_hash: str | None = None,
                      seed: int | None = None) -> None:
        """Raise ValueError naming the first field in which this table differs from what the
        run expects (dataset name, row indices, teacher name, teacher weights hash, view, the
        seed that drew its split and view (a table renamed to another seed's file name), the
        teacher feature layers a white-box method needs, and, for tables that record them, the
        content hash of the images and of the view's parameters)."""
        for fieldname, want in (("dataset", dataset), ("teacher_name", teacher_name),
                                ("teacher_hash", teacher_hash), ("view", view)):
            if want is None:
                continue
            have = self.meta.get(fieldname)
            if have != want:
                raise ValueError(f"logit table {fieldname} mismatch: the table has {have!r}, "
                                 f"the run expects {want!r}")
        if seed is not None and "seed" in self.meta and self.meta["seed"] != seed:
            raise ValueError(f"logit table seed mismatch: the table was built for seed "
                             f"{self.meta['seed']!r}, the run expects seed {seed} (renamed?)")
        want_idx = np.asarray(indices)
        if want_idx.shape != self.indices.shape:
            raise ValueError(f"logit table indices mismatch: the table has {len(self.indices)} "
                             f"rows, the run expects {want_idx.size} indices")
        diff = np.flatnonzero(want_idx != self.indices)
        if diff.size:
            r = int(diff[0])
            raise ValueError(f"logit table indices mismatch: {diff.size} rows differ, first at "
                             f"row {r}: the table has {int(self.indices[r])}, the run expects "
                             f"{int(want_idx[r])}")
        missing = [int(i) for i in feature_layers if int(i) not in self.features]
        if missing:
            raise ValueError(
                f"logit table features mismatch: the run needs teacher features of layers "
                f"{sorted(int(i) for i in feature_layers)} but the table holds "
                f"{list(self.feature_layers) or 'none (a plain logit table)'}; features can "
                f"only be cached in the same teacher call as the logits, so build a new table: "
                f"use a fresh logit_table_dir (this costs one teacher call per row again)")
        for fieldname, want, what in (
                ("images_hash", images_hash, "the images it was computed on differ from this "
                 "run's (same dataset name and indices, other image content)"),
                ("view_hash", view_hash, "it was computed under other view parameters (crop, "
                 "padding, flip, mean or std)")):
            if want is None:
                continue
            have = self.meta.get(fieldname)
            if have is None:
                note(f"logit table ({self.meta.get('dataset')}, seed {self.meta.get('seed')}) "
                     f"predates {fieldname} (table format {self.meta.get('format_version', 1)}"
                     f"): its {'images' if fieldname == 'images_hash' else 'view'} cannot be "
                     "checked")
            elif have != want:
                raise ValueError(f"logit table {fieldname.split('_')[0]} mismatch: {what}")


def load_matching_table(path, *, rebuild_calls: int, **expect) -> LogitTable:
    """`LogitTable.load(path)` and `check_matches(**expect)`, every failure one line naming
    the file, what is wrong and the teacher calls rebuilding would cost."""
    table = LogitTable.load(path, rebuild_calls=rebuild_calls)
    try:
        table.check_matches(**expect)
    except ValueError as e:
        raise ValueError(f"{os.fspath(path)}: {e}; this run cannot use it: use another "
                         f"logit_table_dir, or {rebuild_cost(path, rebuild_calls)}") from e
    return table


def build_or_load_logit_table(path, *, teacher_apply: Callable, teacher_variables,
                              teacher_name: str, dataset_name: str, images: np.ndarray,
                              indices, key: jax.Array, spec: DatasetSpec,
                              view: str = "augmented", seed: int, batch_size: int = 512,
                              split: str = "train", logits_dtype=np.float32,
                              feature_layers: Sequence[int] = (),
                              features_dtype=np.float32,
                              rebuild: bool = False,
                              teacher_source: str | None = None) -> tuple[LogitTable, int]:
    """Load the logit table at `path` if it exists (checking that it matches; 0 teacher calls),
    else run `teacher_pass` on `images[indices]` under a budget of len(indices) and save it.

    Args:
      path: the table's .npz file.
      teacher_apply, teacher_variables: as `teacher_pass`'s apply_fn and variables.
      teacher_name: recorded and checked (e.g. "resnet110").
      dataset_name: recorded and checked (ImageSet.name).
      images: uint8 [N, H, W, C], the whole training split that `indices` index into.
      indices: int [B], the teacher-labelled indices (BudgetSplit.teacher_idx), row order.
      key, spec, view, batch_size: as `teacher_pass`.
      seed: recorded in meta (the run seed that drew the split and the key).
      split: recorded in meta.
      logits_dtype: np.float32 or jnp.bfloat16 for the stored table.
      feature_layers: teacher feature layers to cache with the logits (white-box methods), taken
        from the same teacher call (`teacher_pass_features`); a loaded table must hold them.
      features_dtype: np.float32 or jnp.bfloat16 for the stored features.
      rebuild: build the table even if a file exists (the user asked: `--rebuild-tables`);
        the cost is printed first, and the old file stays until the new one is written.
      teacher_source: `teacher_fingerprint` of where the teacher was loaded from, recorded
        so that a later run checks the table against its teacher without loading it.

    Returns:
      (table, teacher_calls_made): 0 calls when loaded, B when built.
    """
    if view not in VIEWS:
        raise ValueError(f"view must be one of {VIEWS}, got {view!r}")
    indices = np.asarray(indices)
    images = np.asarray(images)
    if indices.ndim != 1 or not np.issubdtype(indices.dtype, np.integer) or indices.size == 0:
        raise ValueError(f"indices must be a non-empty 1-D integer array, got {indices.dtype} "
                         f"{indices.shape}")
    if images.ndim != 4:
        raise ValueError(f"images must be [N, H, W, C], got {images.shape}")
    if indices.min() < 0 or indices.max() >= len(images):
        raise ValueError(f"indices must lie in [0, {len(images)}), got range "
                         f"[{indices.min()}, {indices.max()}]")
    if np.dtype(logits_dtype) not in (np.dtype(np.float32), np.dtype(jnp.bfloat16)):
        raise ValueError(f"logits_dtype must be float32 or bfloat16, got {logits_dtype}")
    layers = _check_feature_layers(feature_layers)
    fdtype = _features_dtype_name(features_dtype)
    teacher_hash = variables_hash(teacher_variables)
    path = os.fspath(path)
    labelled = images[indices]
    expect = dict(dataset=dataset_name, indices=indices, teacher_name=teacher_name,
                  teacher_hash=teacher_hash, view=view, feature_layers=layers,
                  images_hash=images_hash(labelled), view_hash=view_hash(spec, view),
                  seed=int(seed))
    if os.path.exists(path) and not rebuild:
        return load_matching_table(path, rebuild_calls=len(indices), **expect), 0
    if os.path.exists(path):
        note(f"rebuilding logit table {path} ({REBUILD_FLAG}): {len(indices)} teacher calls")
    announce_teacher_pass(path, len(indices))
    counter = TeacherCallCounter(len(indices))
    logits, features = _teacher_pass(teacher_apply, teacher_variables, labelled, key=key,
                                     spec=spec, view=view, batch_size=batch_size,
                                     counter=counter, feature_layers=layers,
                                     features_dtype=fdtype)
    meta = {
        "dataset": dataset_name, "split": split, "teacher_name": teacher_name,
        "teacher_hash": teacher_hash, "view": view, "seed": int(seed),
        "num_classes": int(logits.shape[1]), "teacher_calls": counter.calls,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "format_version": FORMAT_VERSION, "images_hash": expect["images_hash"],
        "view_hash": expect["view_hash"],
    }
    if layers:
        meta["feature_layers"] = list(layers)
    if teacher_source is not None:
        meta["teacher_source_sha256"] = teacher_source
    table = LogitTable(logits.astype(logits_dtype), indices, meta, features)
    table.save(path)
    _remove_marker(path)
    return table, counter.calls


# A marker beside a table being built: the teacher pass is under way (or was killed). A rerun
# that finds it says that the calls of the lost pass are spent again, never silently.
_MARKER = "{}.building.json"


def announce_teacher_pass(path, calls: int) -> None:
    """Write the in-flight marker of `path` (noting a pass an earlier process lost)."""
    marker = _MARKER.format(os.fspath(path))
    if os.path.exists(marker):
        try:
            lost = read_json(marker).get("teacher_calls", "?")
        except (DamagedFile, OSError):
            lost = "?"
        note(f"an earlier run spent {lost} teacher calls on {os.fspath(path)} but stopped "
             f"before saving it; building it again costs {calls} more teacher calls")
    write_json(marker, {"table": os.path.basename(os.fspath(path)), "teacher_calls": calls,
                        "pid": os.getpid(),
                        "started": datetime.datetime.now(datetime.UTC).isoformat(
                            timespec="seconds")})


def _remove_marker(path) -> None:
    try:
        os.remove(_MARKER.format(os.fspath(path)))
    except FileNotFoundError:
        pass
