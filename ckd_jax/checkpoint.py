"""Checkpoints: one small class over orbax's `CheckpointManager` (orbax-checkpoint 0.12.x).

A checkpoint is a step directory `directory/<step>/` holding
  - `state`:   any pytree of arrays (`ocp.args.StandardSave`), e.g. params, batch statistics,
               optimizer state, PRNG key, step counters;
  - `extra`:   an optional small JSON dict (`ocp.args.JsonSave`): history, config, ...;
  - `metrics`: the JSON metrics dict passed to `save` (orbax's own metrics item).

Which checkpoints survive: the `max_to_keep` most recent ones *and* the best one by
`best_metric` (mode "max" or "min"), so a long run of non-improving epochs never deletes the best
checkpoint and a new best never deletes the latest. (Orbax's `BestN` alone would drop the latest;
we prune after each save ourselves, see `_prune`.) Ties go to the earliest step ("improvement"
means strictly better, as in the paper's early-stopping protocol); NaN metrics never count as best.

Saves are atomic (orbax writes into a temporary directory and renames it when complete) and
synchronous: when `save` returns, the checkpoint is committed on disk.

Damage: every step directory written here also holds `ckd_sha256.json` (size and sha256 of each
of its files), checked before a restore, so truncated or changed bytes are found before orbax
reads them. `restore_latest` (and `latest_intact_step`) fall back to the newest intact older step
with one line saying so; when none is intact, or a named step is damaged, the error is one line
(`ckd_jax.files.DamagedFile`) naming the step directory. A failed save (disk full, permission)
is `ckd_jax.files.WriteFailed` and leaves the earlier steps as they were.

PRNG keys: new-style typed keys (`jax.random.key`) are stored as their raw `uint32` key data
(`jax.random.key_data`) and re-wrapped on restore when the template holds a typed key at that
position; legacy `uint32[2]` keys round-trip unchanged.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import shutil
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

from ckd_jax.files import DamagedFile, note, write_atomic, write_failed

__all__ = ["Checkpointer"]

_STATE = "state"
_EXTRA = "extra"
_MANIFEST = "ckd_sha256.json"


def _step_files(step_dir: str) -> dict[str, dict]:
    """{relative path: {size, sha256}} of every file in a step directory but the manifest."""
    out = {}
    for root, dirs, files in os.walk(step_dir):
        dirs.sort()
        for name in sorted(files):
            full = os.path.join(root, name)
            rel = os.path.relpath(full, step_dir)
            if rel == _MANIFEST:
                continue
            h = hashlib.sha256()
            with open(full, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
            out[rel] = {"size": os.path.getsize(full), "sha256": h.hexdigest()}
    return out


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if len(text) <= 160 else text[:157] + "..."


def _is_typed_key(x: Any) -> bool:
    dtype = getattr(x, "dtype", None)
    return dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key)


def _keys_to_data(tree: Any) -> Any:
    """Replace every typed PRNG key leaf by its raw uint32 key data (storable by orbax)."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_typed_key(x) else x, tree)


def _abstract(tree: Any) -> Any:
    """Template -> tree of `jax.ShapeDtypeStruct` (keys as key data), keeping shardings."""

    def one(x):
        if _is_typed_key(x):
            x = jax.random.key_data(x)
        if isinstance(x, jax.Array):
            return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.ShapeDtypeStruct):
            return x
        return np.asarray(x)  # numpy arrays / Python scalars restore as numpy

    return jax.tree.map(one, tree)


def _rewrap_keys(template: Any, restored: Any) -> Any:
    """Wrap restored key data back into typed keys wherever the template had a typed key."""
    return jax.tree.map(
        lambda t, r: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
        if _is_typed_key(t) else r,
        template, restored)


def _to_json_metrics(metrics: dict | None) -> dict | None:
    """Metrics as plain Python floats/ints/strings (numpy and jax scalars are converted)."""
    if metrics is None:
        return None
    if not isinstance(metrics, dict):
        raise TypeError(f"metrics must be a dict, got {type(metrics).__name__}")
    out = {}
    for k, v in metrics.items():
        if isinstance(v, (str, bool)) or v is None:
            out[str(k)] = v
        elif isinstance(v, (int, np.integer)):
            out[str(k)] = int(v)
        else:
            try:
                out[str(k)] = float(v)
            except (TypeError, ValueError) as e:
                raise TypeError(f"metric {k!r} must be a scalar, got {v!r}") from e
    return out


_DELETING_PREFIX = ".deleting-"
_SET_ASIDE_PREFIX = ".set-aside-"


class Checkpointer:
    """Latest-plus-best checkpointing of a training state pytree.

    Args:
      directory: where step directories go (created on the first save).
      save_every: save only steps that are multiples of this (None: every `save` call); a step
        that improves the best metric, or `force=True`, is saved regardless.
      keep_best: also keep the best checkpoint by `best_metric` (it may be older than the latest).
      best_metric: key of the metrics dict used to rank checkpoints.
      best_mode: "max" (accuracy) or "min" (loss).
      max_to_keep: how many of the most recent checkpoints to keep (>= 1).

    Example:
      >>> ckpt = Checkpointer("runs/x/checkpoints", best_metric="val_acc")
      >>> ckpt.save(step, {"params": params, "opt_state": opt_state}, {"val_acc": 0.91})
      >>> restored = ckpt.restore_latest(template)   # (step, state) or None
      >>> ckpt.close()
    """

    def __init__(self, directory: str | os.PathLike, *, save_every: int | None = None,
                 keep_best: bool = True, best_metric: str = "val_acc", best_mode: str = "max",
                 max_to_keep: int = 2):
        if save_every is not None and (not isinstance(save_every, int) or save_every < 1):
            raise ValueError(f"save_every must be None or a positive int, got {save_every!r}")
        if not isinstance(max_to_keep, int) or max_to_keep < 1:
            raise ValueError(f"max_to_keep must be an int >= 1, got {max_to_keep!r}")
        if best_mode not in ("max", "min"):
            raise ValueError(f"best_mode must be 'max' or 'min', got {best_mode!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        self.save_every = save_every
        self.keep_best = keep_best
        self.best_metric = best_metric
        self.best_mode = best_mode
        self.max_to_keep = max_to_keep

        self._remove_leftover_deletions()
        options = ocp.CheckpointManagerOptions(
            enable_async_checkpointing=False,  # a returned save is a committed save
            # orbax deletes nothing; `_prune` removes what is neither recent nor best. (Orbax's own
            # deleter raced with its commit of the previous step in our tests: FileNotFoundError
            # on '<step>.orbax-checkpoint-tmp'.)
            max_to_keep=None,
            # best_fn is only set so that orbax writes the metrics item; it decides nothing.
            # Without keep_best no metrics are saved, and a best_fn would make orbax warn
            # "Requested tracked_metric; did not provide metrics." at every save.
            best_fn=self._metric_value_or_worst if keep_best else None,
            best_mode=best_mode,
            cleanup_tmp_directories=True,  # remove half-written saves of a killed process
        )
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    # ------------------------------------------------------------------------------ pruning
    def _remove_leftover_deletions(self) -> None:
        if os.path.isdir(self.directory):
            for name in os.listdir(self.directory):
                if name.startswith(_DELETING_PREFIX):
                    shutil.rmtree(os.path.join(self.directory, name), ignore_errors=True)

    def _prune(self) -> None:
        """Delete every step that is neither among the `max_to_keep` newest nor the best.

        A step directory is first renamed out of orbax's step namespace (atomic), then removed,
        so a process killed mid-deletion never leaves a half-deleted step that looks valid.
        """
        steps = self.all_steps()
        keep = set(steps[-self.max_to_keep:])
        if self.keep_best:
            best = self.best_step()
            if best is not None:
                keep.add(best)
        doomed = [s for s in steps if s not in keep]
        for step in doomed:
            src = os.path.join(self.directory, str(step))
            dst = os.path.join(self.directory, f"{_DELETING_PREFIX}{step}-{os.getpid()}")
            os.rename(src, dst)
            shutil.rmtree(dst, ignore_errors=True)
        if doomed:
            self._manager.reload()

    # ----------------------------------------------------------------------------- ranking
    def _metric_value(self, metrics: dict | None) -> float | None:
        if not metrics or self.best_metric not in metrics:
            return None
        v = metrics[self.best_metric]
        try:
            v = float(v)
        except (TypeError, ValueError):
            return None
        return None if math.isnan(v) else v

    def _metric_value_or_worst(self, metrics: dict | None) -> float:
        v = self._metric_value(metrics)
        if v is None:
            return -math.inf if self.best_mode == "max" else math.inf
        return v

    def _best_of(self, step_metrics: list[tuple[int, dict | None]]) -> int | None:
        """The best step; ties go to the earliest step."""
        best_step, best_val = None, None
        for step, metrics in sorted(step_metrics, key=lambda sm: sm[0]):
            v = self._metric_value(metrics)
            if v is None:
                continue
            better = best_val is None or (v > best_val if self.best_mode == "max"
                                          else v < best_val)
            if better:
                best_step, best_val = step, v
        return best_step

    # ------------------------------------------------------------------------------ queries
    def all_steps(self) -> list[int]:
        """Steps currently on disk, ascending."""
        return sorted(self._manager.all_steps())

    def latest_step(self) -> int | None:
        """The most recent saved step, or None."""
        return self._manager.latest_step()

    def metrics(self, step: int) -> dict | None:
        """The metrics dict saved with `step` (None if it was saved without metrics, or if
        they cannot be read: a damaged step never counts as best)."""
        try:
            return self._manager.metrics(step)
        except Exception:  # damaged metrics item; check_step reports the step itself
            return None

    def best_step(self) -> int | None:
        """The step with the best `best_metric` (earliest among ties), or None."""
        return self._best_of([(s, self.metrics(s)) for s in self.all_steps()])

    def best_metrics(self) -> dict | None:
        """Metrics of the best step, or None when no saved step has `best_metric`."""
        step = self.best_step()
        return None if step is None else self.metrics(step)

    def _would_improve(self, metrics: dict | None) -> bool:
        v = self._metric_value(metrics)
        if v is None:
            return False
        best = self.best_metrics()
        b = self._metric_value(best)
        return b is None or (v > b if self.best_mode == "max" else v < b)

    # -------------------------------------------------------------------------------- save
    def save(self, step: int, state: Any, metrics: dict | None = None, *,
             extra: dict | None = None, force: bool = False) -> bool:
        """Save `state` (any pytree of arrays) at `step`; returns whether a checkpoint was written.

        A step is written when `force`, when `save_every` is None or divides `step`, or when
        `keep_best` and `metrics[best_metric]` improves on every saved checkpoint. Saving a step
        that already exists raises orbax's `StepAlreadyExistsError`.
        """
        step = int(step)
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        metrics = _to_json_metrics(metrics)
        if self.keep_best and metrics is not None and self.best_metric not in metrics:
            raise ValueError(f"metrics has no {self.best_metric!r} (best_metric); got keys "
                             f"{sorted(metrics)}")
        periodic = self.save_every is None or step % self.save_every == 0
        if not (force or periodic or (self.keep_best and self._would_improve(metrics))):
            return False
        items = {_STATE: ocp.args.StandardSave(_keys_to_data(state))}
        if extra is not None:
            items[_EXTRA] = ocp.args.JsonSave(extra)
        step_dir = os.path.join(self.directory, str(step))
        self._clear_way(step)
        try:
            saved = self._manager.save(step, args=ocp.args.Composite(**items), metrics=metrics,
                                       force=True)
            if saved:
                write_atomic(os.path.join(step_dir, _MANIFEST),
                             json.dumps(_step_files(step_dir), sort_keys=True))
        except OSError as e:
            if saved_partly := os.path.isdir(step_dir):
                # a step without its manifest would look intact to older readers: take it out
                shutil.rmtree(step_dir, ignore_errors=True)
                self._manager.reload()
            raise write_failed(step_dir if saved_partly else self.directory, e) from e
        if saved:
            self._prune()
        return bool(saved)

    def _clear_way(self, step: int) -> None:
        """Set aside (rename `.set-aside-<step>-<pid>`, kept for inspection) what stands in
        the way of saving `step`: a damaged step `step`, and every step newer than it. Those
        exist only when a run went back to an older step (a damaged newest one, or a fresh
        start); left in place, the newest-first pruning would keep them and delete the steps
        the run now makes."""
        for old in self.all_steps():
            if old < step:
                continue
            if old == step:
                try:
                    self.check_step(old)
                    continue  # intact: orbax refuses the duplicate as before
                except DamagedFile as e:
                    why = str(e)
            else:
                why = f"checkpoint {os.path.join(self.directory, str(old))} is newer than " \
                      f"the step {step} being saved"
            dst = os.path.join(self.directory, f"{_SET_ASIDE_PREFIX}{old}-{os.getpid()}")
            os.rename(os.path.join(self.directory, str(old)), dst)
            self._manager.reload()
            note(f"{why}; set aside as {dst} (delete it when no longer needed)")

    # ----------------------------------------------------------------------------- restore
    def check_step(self, step: int) -> None:
        """Raise `DamagedFile` (one line) when a file of step `step` is missing, truncated or
        changed against the manifest written with it (steps saved before manifests existed
        pass unchecked)."""
        step_dir = os.path.join(self.directory, str(step))
        path = os.path.join(step_dir, _MANIFEST)
        if not os.path.exists(path):
            return
        try:
            with open(path) as f:
                want = json.load(f)
        except (OSError, ValueError) as e:
            raise DamagedFile(f"checkpoint {step_dir} is damaged: its {_MANIFEST} cannot be "
                              f"read ({_one_line(e)})") from e
        have = _step_files(step_dir)
        for rel, info in sorted(want.items()):
            got = have.get(rel)
            if got is None:
                raise DamagedFile(f"checkpoint {step_dir} is damaged: {rel} is missing")
            if got["size"] != info["size"]:
                raise DamagedFile(f"checkpoint {step_dir} is damaged: {rel} has {got['size']} "
                                  f"bytes, {info['size']} were written (truncated?)")
            if got["sha256"] != info["sha256"]:
                raise DamagedFile(f"checkpoint {step_dir} is damaged: the bytes of {rel} "
                                  "changed since it was written")

    def restore(self, step: int, template: Any = None) -> Any:
        """Restore the state saved at `step`.

        `template` (a pytree like the saved state: concrete arrays or `jax.ShapeDtypeStruct`)
        fixes structure, dtypes and shardings (typed PRNG keys are re-wrapped). Without it the
        saved tree comes back as nested dicts/lists of arrays on this process's first device
        (whatever device count wrote it), keys as raw uint32 data.
        A damaged step is `DamagedFile` (one line naming its directory), never orbax's trace.
        """
        if step not in self._manager.all_steps():
            raise FileNotFoundError(f"no checkpoint for step {step} in {self.directory}; "
                                    f"available: {self.all_steps()}")
        self.check_step(step)
        if template is None:
            # Every array onto this process's first device: a checkpoint written on another
            # number of devices (an 8-GPU run read on a laptop) restores too.
            args = ocp.args.StandardRestore(self._local_template(step))
        else:
            args = ocp.args.StandardRestore(_abstract(template))
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(**{_STATE: args}))
        except Exception as e:  # orbax / TensorStore errors on damaged data, of many types
            if template is not None and os.path.exists(os.path.join(
                    self.directory, str(step), _MANIFEST)) and isinstance(e, ValueError):
                raise  # an intact step that does not fit the template: the caller's error
            raise DamagedFile(f"checkpoint {os.path.join(self.directory, str(step))} is "
                              f"damaged: it cannot be read ({_one_line(e)})") from e
        state = out[_STATE]
        return state if template is None else _rewrap_keys(template, state)

    def _local_template(self, step: int) -> Any:
        """The saved tree's shapes and dtypes on one local device (from orbax's metadata);
        None when the metadata cannot be read (orbax's own restore then decides)."""
        from etils import epath

        try:
            meta = ocp.StandardCheckpointHandler().metadata(
                epath.Path(self.directory) / str(step) / _STATE)
            device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
            return jax.tree.map(lambda m: jax.ShapeDtypeStruct(tuple(m.shape), m.dtype,
                                                               sharding=device), meta)
        except Exception:  # an old or damaged layout: no template, as before
            return None

    def extra(self, step: int) -> dict | None:
        """The JSON `extra` dict saved with `step` (None if none was saved)."""
        if not os.path.isdir(os.path.join(self.directory, str(step), _EXTRA)):
            return None
        try:
            out = self._manager.restore(step, args=ocp.args.Composite(
                **{_EXTRA: ocp.args.JsonRestore()}))
        except Exception as e:
            raise DamagedFile(f"checkpoint {os.path.join(self.directory, str(step))} is "
                              f"damaged: its extra item cannot be read ({_one_line(e)})") from e
        return out[_EXTRA]

    def latest_intact_step(self) -> int | None:
        """The newest step that passes `check_step` and whose extra item reads; an older one
        is used with one line saying so. None when there is no step; `DamagedFile` when every
        step is damaged."""
        found = self._newest_intact(lambda step: (self.check_step(step), self.extra(step)))
        return None if found is None else found[0]

    def _newest_intact(self, load):
        """(step, load(step)) of the newest step that `load` reads without DamagedFile, saying
        in one line when older than the newest; None without steps; `DamagedFile` when every
        step is damaged. The one fallback rule of `latest_intact_step` and `restore_latest`."""
        errors = []
        for step in reversed(self.all_steps()):
            try:
                value = load(step)
            except DamagedFile as e:
                errors.append(str(e))
                continue
            if errors:
                note(f"{errors[0]}; using the older intact step {step} instead (its epochs "
                     "after that are run again)")
            return step, value
        if errors:
            raise self._all_damaged(errors)
        return None

    def _all_damaged(self, errors: list[str]) -> DamagedFile:
        return DamagedFile(f"no intact checkpoint in {self.directory} ({errors[0]}"
                           f"{f'; and {len(errors) - 1} older' if len(errors) > 1 else ''}); "
                           f"delete {self.directory} to start that run from the beginning "
                           "(cached logit tables are kept: no teacher call)")

    def restore_latest(self, template: Any = None) -> tuple[int, Any] | None:
        """(step, state) of the most recent intact checkpoint, or None when there is none; a
        damaged newest step falls back to an older intact one, saying so in one line."""
        return self._newest_intact(lambda step: self.restore(step, template))

    def restore_best(self, template: Any = None) -> tuple[int, Any] | None:
        """(step, state) of the best checkpoint by `best_metric`, or None when there is none."""
        step = self.best_step()
        return None if step is None else (step, self.restore(step, template))

    # ------------------------------------------------------------------------------ close
    def close(self) -> None:
        """Release orbax resources (saves are synchronous, nothing is pending)."""
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
