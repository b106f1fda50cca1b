"""The one home of how this project writes and reads its small files (docs/files.md).

Writes cannot half-happen: `write_atomic` writes a temporary file beside the target, fsyncs it
and renames it over the target, so a kill or a full disk leaves the previous file (or none);
`append_lines` appends whole lines with one `write` and fsync, and `read_jsonl` drops a torn last
line (the only damage a killed append can leave).

Failures are one line for the user: a damaged file raises `DamagedFile` (a ValueError naming
the file, what is wrong and the safe next step), a failed write raises `WriteFailed` (an OSError
naming the file, the OS's reason and that the previous file is intact). `ckd_jax.cli` prints
both as `<command>: error: ...`, exit status 2.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable

import numpy as np


class DamagedFile(ValueError):
    """A file this project wrote is missing a part, truncated, corrupted or of another version."""


class WriteFailed(OSError):
    """A write failed (disk full, permission, ...); the previous file is left as it was."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def note(message: str) -> None:
    """One line on stderr about a recovery or a cost the user should know of (never silent)."""
    print(f"note: {' '.join(str(message).split())}", file=sys.stderr, flush=True)


_REASONS = {errno.ENOSPC: "the disk is full", errno.EACCES: "permission denied",
            errno.EROFS: "the file system is read-only", errno.EDQUOT: "the disk quota is full",
            errno.EPERM: "operation not permitted"}


def write_failed(path: str, err: OSError) -> WriteFailed:
    """The one-line error of a failed write of `path`."""
    why = _REASONS.get(err.errno, err.strerror or str(err))
    code = errno.errorcode.get(err.errno, type(err).__name__) if err.errno else type(err).__name__
    out = WriteFailed(f"cannot write {path}: {why} ({code}); the previous state is left as it "
                      "was; free space or fix the permissions, then rerun the same command")
    out.errno, out.filename = err.errno, path
    return out


def _fsync_dir(folder: str) -> None:
    with contextlib.suppress(OSError):  # not every file system lets a directory be fsynced
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def write_atomic(path: str | os.PathLike, write: Callable | bytes | str) -> None:
    """Replace `path` by new content in one step: temporary file in the same folder, fsync,
    rename. `write` is bytes, a str (UTF-8) or `f(binary_file)`. On any failure the temporary
    file is removed and the old `path` is untouched; an OSError becomes `WriteFailed`."""
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(folder, exist_ok=True)
        _remove_stale_tmp(path)
        fd, tmp = tempfile.mkstemp(prefix=f"{os.path.basename(path)}.{os.getpid()}.",
                                   suffix=".tmp", dir=folder)
        os.fchmod(fd, 0o666 & ~_umask())  # mkstemp makes 0600; a plain open() would not
        with os.fdopen(fd, "wb") as f:
            if isinstance(write, str):
                f.write(write.encode())
            elif isinstance(write, bytes):
                f.write(write)
            else:
                write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        tmp = None
        _fsync_dir(folder)
    except OSError as e:
        if isinstance(e, WriteFailed):
            raise
        raise write_failed(path, e) from e
    finally:
        if tmp is not None and os.path.exists(tmp):
            with contextlib.suppress(OSError):
                os.remove(tmp)


def _umask() -> int:
    mask = os.umask(0)  # the only way to read it; set back at once
    os.umask(mask)
    return mask


def make_dirs(path: str | os.PathLike) -> None:
    """`os.makedirs(path, exist_ok=True)`; a refusal (read-only folder, permission, full disk)
    is `WriteFailed`, one line naming the folder."""
    try:
        os.makedirs(path, exist_ok=True)
    except FileExistsError as e:  # a file where the folder should be
        raise FileExistsError(f"cannot create the folder {os.fspath(path)}: a file of that "
                              "name is in the way") from e
    except OSError as e:
        raise write_failed(os.fspath(path), e) from e


def _remove_stale_tmp(path: str) -> None:
    """Remove the temporary files of `path` that a killed process left (their pid is gone);
    no reader ever opens them, this only reclaims the space."""
    folder, base = os.path.split(os.path.abspath(path))
    prefix = base + "."
    for name in os.listdir(folder):
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid = name[len(prefix):].split(".", 1)[0]
        if not pid.isdigit() or _alive(int(pid)):
            continue
        with contextlib.suppress(OSError):
            os.remove(os.path.join(folder, name))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def write_json(path: str | os.PathLike, obj, *, indent: int | None = 1, default=None) -> None:
    """`obj` as JSON, atomically (see `write_atomic`)."""
    write_atomic(path, json.dumps(obj, indent=indent, default=default, sort_keys=False) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict], *, default=None) -> None:
    """Rows as JSON lines, atomically."""
    write_atomic(path, "".join(json.dumps(r, default=default) + "\n" for r in rows))


def append_lines(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Append whole lines (each ending in a newline) with one write, then fsync. A failed or
    killed append can leave at most a torn last line, which `read_jsonl` drops."""
    path = os.fspath(path)
    data = "".join(line if line.endswith("\n") else line + "\n" for line in lines).encode()
    if not data:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            size = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    view = view[os.write(fd, view):]
                os.fsync(fd)
            except OSError:
                os.ftruncate(fd, size)  # take back a partly appended block
                raise
        finally:
            os.close(fd)
    except OSError as e:
        raise write_failed(path, e) from e


def read_json(path: str | os.PathLike, *, what: str = "file", next_step: str = "") -> dict:
    """A JSON object from `path`; `DamagedFile` (one line, naming the file and `next_step`)
    when it is empty, truncated, not JSON or not an object. FileNotFoundError when missing."""
    path = os.fspath(path)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError as e:
        raise FileNotFoundError(f"{what} {path} is missing; {next_step}".rstrip("; ")) from e
    except OSError as e:
        raise DamagedFile(f"{what} {path} cannot be read ({e.strerror or e}); {next_step}"
                          .rstrip("; ")) from e
    try:
        obj = json.loads(data.decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        why = "empty" if not data.strip() else f"not valid JSON ({e})"
        raise DamagedFile(f"{what} {path} is damaged: {why}; {next_step}".rstrip("; ")) from e
    if not isinstance(obj, dict):
        raise DamagedFile(f"{what} {path} is damaged: a JSON {type(obj).__name__}, not an "
                          f"object; {next_step}".rstrip("; "))
    return obj


def read_jsonl(path: str | os.PathLike, *, what: str = "file", next_step: str = "",
               appended: bool = False, repair: bool = False) -> list[dict]:
    """The rows of a JSON-lines file; a bad line raises `DamagedFile` naming the file and line.

    For a file grown by `append_lines` (`appended=True`) a torn last line (no final newline
    and not JSON: what a killed append leaves) is dropped instead, and with `repair` cut off
    the file, so it ends at its last whole row. A file written whole (`write_atomic`) cannot
    be torn, so there a torn line is damage."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    rows, pos = [], 0
    for n, line in enumerate(data.split(b"\n"), 1):
        end = pos + len(line)
        torn = end == len(data) and line != b""  # the last line, without its newline
        if line.strip():
            try:
                row = json.loads(line.decode())
                if not isinstance(row, dict):
                    raise ValueError(f"a JSON {type(row).__name__}, not an object")
            except (UnicodeDecodeError, ValueError) as e:
                if not (torn and appended):
                    raise DamagedFile(f"{what} {path} is damaged: line {n} is not a JSON "
                                      f"object ({e}); {next_step}".rstrip("; ")) from e
                if repair:
                    try:
                        os.truncate(path, pos)
                    except OSError as err:
                        raise write_failed(path, err) from err
                break
            rows.append(row)
            if torn and repair:  # a whole row that lost only its newline
                append_lines(path, [""])
        pos = end + 1
    return rows


def hash_arrays(*arrays, extra: object = None) -> str:
    """sha256 hex digest of arrays (dtype, shape and bytes of each) and a JSON-able `extra`."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}|{a.shape}|".encode())
        h.update(memoryview(a).cast("B"))
    if extra is not None:
        h.update(json.dumps(extra, sort_keys=True).encode())
    return h.hexdigest()

