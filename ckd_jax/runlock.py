"""One process per run folder: `run_lock(folder)` owns a folder while a run writes into it.

The lock is `<folder>/run.lock`, holding the owner's pid, host, start time and command, and an
`fcntl.flock` on it that the kernel drops when the owner dies. A second process on the same
folder is refused in one line naming the owner (`RunLocked`, exit status 2 at the command
line); a lock file left by a killed process on this host is taken over with a note. The file is
removed when the run ends. Runs that own distinct folders (sweep `--jobs` workers, `--shard`
processes: one cell folder each) never meet here.
"""

from __future__ import annotations

import contextlib
import datetime
import fcntl
import json
import os
import socket
import sys

from ckd_jax.files import make_dirs, note, write_failed

LOCK_FILE = "run.lock"


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


def _acquire(path: str) -> int:
    host = socket.gethostname()
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
            raise RunLocked(f"{os.path.dirname(path)} is in use by {_describe(info)}: two "
                            "runs on one folder would corrupt it; wait for that run to end or "
                            "use another output folder") from None
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
    make_dirs(folder)
    path = os.path.join(folder, LOCK_FILE)
    fd = _acquire(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.remove(path)  # before the unlock: a waiting process then finds no stale file
        os.close(fd)
