"""Ctrl-C and SIGTERM during training: finish the pseudo-epoch, save, say how to resume.

`stop_request()` (a context manager) turns the first SIGINT/SIGTERM into a request that the
training loop reads between pseudo-epochs (`request.signal`), so the state it saves is whole
(the compiled epoch donates its input buffers: an exception inside it would leave nothing to
save). A second signal stops at once (KeyboardInterrupt). SLURM sends SIGTERM before it kills a
job. The loop then raises `RunInterrupted`, one line saying what was saved and the command that
resumes, which `ckd_jax.cli.run_command` prints with exit status 130.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading


class RunInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after saving; the message says what and how to resume."""


def resume_hint() -> str:
    """The command line that reruns this process (what resumes a stopped run)."""
    import os
    import shlex

    argv = list(sys.argv)
    if argv and argv[0].endswith(".py"):
        argv = ["python", os.path.relpath(argv[0])] + argv[1:]
    return " ".join(shlex.quote(a) for a in argv) if argv and argv[0] else "the same command"


class _Request:
    signal: str | None = None


@contextlib.contextmanager
def stop_request():
    """Yields a request whose `.signal` names the first SIGINT/SIGTERM received (None until
    then); outside the main thread signals cannot be caught and nothing is installed."""
    request = _Request()
    if threading.current_thread() is not threading.main_thread():
        yield request
        return
    old = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum, frame):
        if request.signal is not None:  # the second one: stop now
            raise KeyboardInterrupt
        request.signal = signal.Signals(signum).name
        print(f"\n{request.signal}: stopping after this pseudo-epoch and saving a checkpoint "
              "(send it again to stop at once)", file=sys.stderr, flush=True)

    for s in old:
        signal.signal(s, handler)
    try:
        yield request
    finally:
        for s, h in old.items():
            signal.signal(s, h)
