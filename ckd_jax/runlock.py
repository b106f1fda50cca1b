"""One process per run folder: `run_lock(folder)` owns a folder while a run writes into it.

The lock is `<folder>/run.lock`, holding the owner's pid, host, start time and command, and an
`fcntl.flock` on it that the kernel drops when the owner dies. A second process on the same
folder is refused in one line naming the owner (`RunLocked`, exit status 2 at the command
line); a lock file left by a killed process on this host is taken over with a note. The file is
removed when the run ends. `CKD_JAX_WAIT_LOCK=SECONDS` (or `inf`) makes a second process wait
that long for the owner to end instead of being refused at once. Runs that own distinct
folders (sweep `--jobs` workers, `--shard` processes: one cell folder each) never meet here.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys
import time

from ckd_jax.files import make_dirs, note, write_failed

LOCK_FILE = "run.lock"
WAIT_ENV = "CKD_JAX_WAIT_LOCK"


class RunLocked(ValueError):
    """Another live process owns the run folder."""


def _owner(fd: int) -> dict:
    os.lseek(fd, 0, os.SEEK_SET)
    try:
        info = json.loads(os.read(fd, 1 << 16).decode() or "{}")
    except (UnicodeDecodeError, ValueError):
        info = {}
    return info if isinstance(info, dict) else {}


def _describe(info: dict) -> str:
    cmd = f", running {info['command']}" if info.get("command") else ""
    return (f"process {info.get('pid', '?')} on {info.get('host', '?')} (since "
            f"{info.get('started', '?')}{cmd})")


def wait_seconds() -> float:
    """How long a run waits for a folder another process owns (`CKD_JAX_WAIT_LOCK`; unset or
    0: it is refused at once)."""
    raw = os.environ.get(WAIT_ENV, "").strip()
    try:
        seconds = float(raw or 0)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:  # also NaN
        raise ValueError(f"{WAIT_ENV}={raw!r} is not a number of seconds; accepted: 0 (refuse "
                         "at once, the default), a positive number, or inf (wait until the "
                         "owner ends)")
    return seconds


def _acquire(path: str, wait: float = 0.0) -> int:
    host = socket.gethostname()
    deadline = None
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        except OSError as e:
            raise write_failed(path, e) from e
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            info = _owner(fd)
            os.close(fd)
            if deadline is None:
                deadline = time.monotonic() + wait
                if wait:
                    note(f"{os.path.dirname(path)} is in use by {_describe(info)}: waiting "
                         f"for it to end (at most {wait:g} s, {WAIT_ENV})")
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            waited = f" (waited {wait:g} s)" if wait else ""
            raise RunLocked(f"{os.path.dirname(path)} is in use by {_describe(info)}{waited}: "
                            "two runs on one folder would corrupt it; wait for that run to end "
                            f"(or set {WAIT_ENV}=SECONDS to have this one wait) or use another "
                            "output folder") from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino
        except FileNotFoundError:
            same = False
        if not same:  # the owner removed it between our open and our lock: try again
            os.close(fd)
            continue
        info = _owner(fd)
        if info.get("host") not in (None, host):
            os.close(fd)
            raise RunLocked(f"{os.path.dirname(path)} is in use by {_describe(info)}, another "
                            f"machine (this one cannot tell whether it still runs); if it does "
                            f"not, delete {path} and rerun")
        if info.get("pid") not in (None, os.getpid()):
            note(f"{os.path.dirname(path)}: took over the lock of {_describe(info)}, which "
                 "ended without releasing it")
        me = {"pid": os.getpid(), "host": host,
              "started": datetime.datetime.now().isoformat(timespec="seconds"),
              "command": " ".join(os.path.basename(a) if i == 0 else a
                                  for i, a in enumerate(sys.argv))[:300]}
        os.ftruncate(fd, 0)
        os.lseek(fd, 0, os.SEEK_SET)
        os.write(fd, json.dumps(me).encode())
        return fd


@contextlib.contextmanager
def run_lock(folder):
    """Own `folder` (created if missing) for the block; see the module docstring."""
    folder = os.fspath(folder)
    wait = wait_seconds()  # a bad value is refused before the folder is made
    make_dirs(folder)
    path = os.path.join(folder, LOCK_FILE)
    fd = _acquire(path, wait)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # before the unlock: a waiting process then finds no stale file
        os.close(fd)
