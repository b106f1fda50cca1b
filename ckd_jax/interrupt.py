"""Ctrl-C and SIGTERM during training: finish the (pseudo-)epoch, save, say how to resume.

`stop_request()` (a context manager; `StopRequest` without one) turns the first SIGINT/SIGTERM
into a request that the training loop reads between (pseudo-)epochs (`request.signal`), so the
state it saves is whole (the compiled epoch donates its input buffers: an exception inside it
would leave nothing to save). A second signal stops at once (KeyboardInterrupt). SLURM sends
SIGTERM before it kills a job. The loop then raises `RunInterrupted` (`stopped(...)`), one line
saying what was saved and the command that resumes, which `ckd_jax.cli.run_command` prints with
exit status 130. A rerun says how far it resumed or that it starts over (`resume_line`).
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving; the message says what and how to resume."""


def resume_hint(*flags: str) -> str:
    """The command line that reruns this process (what resumes a stopped run), with `flags`
    it lacks appended (train_teacher.py continues a run only with --resume)."""
    import os
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv = ["python", os.path.relpath(argv[0])] + argv[1:]
    if not (argv and argv[0]):
        return "the same command" + "".join(f" {f}" for f in flags)
    argv += [f for f in flags if f not in argv]
    return " ".join(shlex.quote(a) for a in argv)


def stopped(signal_name: str, after: str, saved_in: str | None,
            flags: tuple[str, ...] = (), *,
            unsaved: str = "the run has no output folder") -> RunInterrupted:
    """The one line a loop raises after a stop request: the checkpoint of `after` (e.g.
    "epoch 3") saved in `saved_in` (None: nothing saved, for the reason `unsaved`) and the
    command that resumes (`flags` added to it)."""
    if saved_in is None:
        return RunInterrupted(f"stopped by {signal_name} after {after}: nothing saved "
                              f"({unsaved}), so a rerun starts over")
    return RunInterrupted(f"stopped by {signal_name} after {after}: checkpoint of {after} "
                          f"saved in {saved_in}; to resume, run {resume_hint(*flags)}")


def resume_line(run_dir: str, step: int | None, unit: str, total: int | None = None,
                why: str = "") -> str:
    """What a rerun says before it trains: how far it resumed (of `total`, when known), or that
    it starts over (`why`, e.g. " (resume off)", said after "no checkpoint to resume from")."""
    if step is None:
        return f"{run_dir}: no checkpoint to resume from{why}: starting over from {unit} 0"
    of = "" if total is None else f" of {total}"
    return f"{run_dir}: resumed from the checkpoint of {unit} {step}{of}"


class StopRequest:
    """`.signal` names the first SIGINT/SIGTERM received after `install()` (None until then);
    `restore()` puts the previous handlers back. Outside the main thread signals cannot be
    caught and nothing is installed."""

    def __init__(self):
        self.signal: str | None = None
        self._old: dict = {}

    def install(self) -> StopRequest:
        if threading.current_thread() is threading.main_thread():
            self._old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
            for s in self._old:
                signal.signal(s, self._handler)
        return self

    def _handler(self, signum, frame):
        if self.signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        print(f"\n{self.signal}: stopping after this epoch and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


@contextlib.contextmanager
def stop_request():
    """Yields a `StopRequest` installed for the duration of the block."""
    request = StopRequest().install()
    try:
        yield request
    finally:
        request.restore()
