"""The run loop around the epochs: one for teacher runs and student runs.

A teacher (`supervised.train_teacher`) and a student population (`distill._train`) each write
their own epoch body (train, evaluate, decide); what happens around it is here, once:

  - `RunFolder`: the run folder. `check_run_folder` (an earlier run's folder is continued only
    when asked: "exists and is not empty; pass resume"), the metrics log (one JSON line per row,
    appended after each epoch; rewritten or cut back to the checkpoint when a run resumes), the
    checkpoints (`<run>/checkpoints`, `ckd_jax.checkpoint.Checkpointer`: restore, save, the save
    on a stop request) and the summary file. Nothing is written without a folder.
  - `EpochLoop`: the progress bar and the stop request (SIGINT/SIGTERM ends the epoch; the loop
    then saves and raises the one line of `ckd_jax.interrupt.stopped`).

The line a rerun prints before it trains is `ckd_jax.interrupt.resume_line`. Each run keeps its
own file names, formats and checkpoint policy: a teacher log.jsonl, teacher.json and a
checkpoint every epoch (latest and best by test accuracy); a student config.json,
metrics.jsonl, summary.json and a checkpoint every `checkpoint_seconds` (docs/files.md).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

import numpy as np

from ckd_jax.files import append_lines, read_jsonl, write_atomic, write_json, write_jsonl
from ckd_jax.interrupt import StopRequest, stopped

CHECKPOINT_SUBDIR = "checkpoints"


def json_default(x):
    """NumPy scalars in a log row or summary as plain JSON numbers."""
    if isinstance(x, (np.floating, np.integer)):
        return x.item()
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def check_run_folder(run_dir: str | None, resume: bool) -> bool:
    """True when `run_dir` holds an earlier run (anything but the caller's own lock file);
    FileExistsError when it does and `resume` is off (a finished run is never overwritten by
    accident)."""
    from ckd_jax.runlock import LOCK_FILE  # the caller's own lock (run_lock) is no content

    if not (run_dir and os.path.isdir(run_dir) and set(os.listdir(run_dir)) - {LOCK_FILE}):
        return False
    if not resume:
        raise FileExistsError(f"run directory {run_dir} exists and is not empty; pass "
                              f"resume=True (--resume) to continue it or choose another out")
    return True


class RunFolder:
    """A run's folder: its metrics log, its checkpoints and its summary.

    run_dir None (or writes=False: a process other than 0 of a multi-process run): nothing is
    written and every method is a no-op. `checkpoints`: `Checkpointer` keyword arguments (None:
    the run keeps no checkpoints).
    """

    def __init__(self, run_dir: str | None, log_file: str, *, checkpoints: dict | None = None,
                 writes: bool = True):
        self.run_dir = run_dir if writes else None
        self.log_path = os.path.join(run_dir, log_file) if self.run_dir else None
        self.ckpt = None
        if self.run_dir and checkpoints is not None:
            from ckd_jax.checkpoint import Checkpointer

            self.ckpt = Checkpointer(os.path.join(run_dir, CHECKPOINT_SUBDIR), **checkpoints)
        self.last_save = (0, time.time())  # (step, wall time) of the newest checkpoint

    @property
    def writes(self) -> bool:
        return self.run_dir is not None

    # --- the metrics log: one JSON object per line ------------------------------------------
    def log(self, rows: list[dict]) -> None:
        """Append rows (one write; a killed append leaves at most a torn last line)."""
        if self.log_path is not None and rows:
            append_lines(self.log_path, [json.dumps(r, default=json_default) for r in rows])

    def write_log(self, rows: list[dict]) -> None:
        """The log is `rows` (a resumed teacher: the history its checkpoint holds)."""
        if self.log_path is not None:
            write_jsonl(self.log_path, rows, default=json_default)

    def remove_log(self) -> None:
        if self.log_path is not None and os.path.exists(self.log_path):
            os.remove(self.log_path)

    def has_log(self) -> bool:
        return self.log_path is not None and os.path.exists(self.log_path)

    def cut_log(self, epoch: int) -> None:
        """Keep the rows up to the checkpoint's epoch (a torn last row of a killed append is
        dropped; the epochs after the checkpoint are trained and logged again)."""
        if not self.has_log():
            return
        rows = read_jsonl(self.log_path, what="metrics file", appended=True,
                          next_step="delete it to log the run again from its checkpoint")
        keep = [r for r in rows if r.get("epoch", 0) <= epoch]
        write_atomic(self.log_path, "".join(json.dumps(r, default=json_default) + "\n"
                                            for r in keep))

    # --- checkpoints -----------------------------------------------------------------------
    def restore(self, step: int, template: Any) -> Any:
        return self.ckpt.restore(step, template)

    def restore_latest(self, template: Any) -> tuple[int, Any] | None:
        """(step, tree) of the newest intact checkpoint, or None (none, or no checkpoints)."""
        if self.ckpt is None:
            return None
        restored = self.ckpt.restore_latest(template)
        if restored is not None:
            self.last_save = (restored[0], time.time())
        return restored

    def save(self, step: int, tree: Any, metrics: dict | None = None, *,
             extra: dict | None = None, force: bool = False) -> None:
        if self.ckpt is None:
            return
        self.ckpt.save(step, tree, metrics, extra=extra, force=force)
        self.last_save = (step, time.time())

    def save_if_due(self, step: int, tree: Any, *, every: int, seconds: float,
                    finished: bool) -> None:
        """Save once at least `every` steps and `seconds` of wall time have passed since the
        last checkpoint, and when the run has `finished`."""
        if self.ckpt is None:
            return
        last_step, last_time = self.last_save
        if finished or (step - last_step >= every and time.time() - last_time >= seconds):
            self.save(step, tree, force=True)

    def save_on_stop(self, step: int, tree: Any) -> str | None:
        """A checkpoint of `step` now (unless it is the newest already); its folder, or None
        when the run keeps none."""
        if self.ckpt is None:
            return None
        if self.last_save[0] != step:
            self.save(step, tree, force=True)
        return self.ckpt.directory

    # --- the end ---------------------------------------------------------------------------
    def write_summary(self, name: str, summary: dict, **json_kwargs) -> None:
        if self.run_dir is not None:
            write_json(os.path.join(self.run_dir, name), summary, **json_kwargs)

    def close(self) -> None:
        if self.ckpt is not None:
            self.ckpt.close()


class EpochLoop:
    """The progress bar and the stop request around a run's epochs (a context manager that
    closes the bar and the folder's checkpointer and puts the signal handlers back).

    unit: what one step of the loop is called in the stop line ("epoch", "pseudo-epoch");
    bar: tqdm keyword arguments (total, initial, ...), the bar only when `progress`;
    resume_flags: what the command that resumes needs added (train_teacher.py: --resume);
    unsaved: why nothing is saved when the folder keeps no checkpoints.
    """

    def __init__(self, folder: RunFolder, *, unit: str, progress: bool, bar: dict,
                 resume_flags: tuple[str, ...] = (),
                 unsaved: str = "the run has no output folder"):
        self.folder, self.unit = folder, unit
        self._progress, self._bar_kwargs = progress, bar
        self._flags, self._unsaved = resume_flags, unsaved
        self.bar = None
        self._stop = StopRequest()

    def __enter__(self) -> EpochLoop:
        if self._progress:
            from tqdm.auto import tqdm

            self.bar = tqdm(**self._bar_kwargs)
        # SIGINT/SIGTERM: end the epoch (whole state: the compiled epoch donates its inputs),
        # then stop_if_requested saves and stops.
        self._stop.install()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.restore()
        self._close_bar()
        self.folder.close()

    def _close_bar(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def advance(self, **postfix) -> None:
        """One epoch done: the bar moves on and shows `postfix`."""
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(**postfix)

    def stop_if_requested(self, step: int, tree: Any) -> None:
        """After an epoch that did not end the run: on a stop request, save `tree` as the
        checkpoint of `step` and raise RunInterrupted (what was saved, how to resume)."""
        if self._stop.signal is None:
            return
        self._close_bar()
        saved_in = self.folder.save_on_stop(step, tree)
        raise stopped(self._stop.signal, f"{self.unit} {step}", saved_in, self._flags,
                      unsaved=self._unsaved)
