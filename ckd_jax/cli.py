"""The command-line convention of every `experiments/` script: a bad configuration or input is
reported as one line `<command>: error: <message>` on stderr with exit status 2 (the style of
argparse's `parser.error`), while a real crash keeps its traceback.

    if __name__ == "__main__":
        sys.exit(run_command(main))

What counts as a bad configuration or input: a `ValueError` (a damaged file is one,
`ckd_jax.files.DamagedFile`), a failed write (`ckd_jax.files.WriteFailed`: disk full,
permission) or an `OSError` of the file kind
(`FileNotFoundError`, `FileExistsError`, `IsADirectoryError`, `NotADirectoryError`) raised by
this project's own code (the library's validation or the command itself: the innermost frame of
the traceback is in `ckd_jax/` or in the command's folder), or `SystemExit` with a message. The
same exception types raised inside a dependency (NumPy, JAX, ...) are crashes and keep their
traceback, and so does everything else. `CKD_JAX_TRACEBACK=1` shows the traceback of every
error. Ctrl-C (KeyboardInterrupt) is one line too, exit status 130: training saves and says how
to resume (`ckd_jax.interrupt`).
The validation is written to fail before any output is created, so nothing is left behind.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

from ckd_jax.files import WriteFailed

USAGE_ERRORS = (ValueError, FileNotFoundError, FileExistsError, IsADirectoryError,
                NotADirectoryError, WriteFailed)
TRACEBACK_ENV = "CKD_JAX_TRACEBACK"
_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))


def _inside(path: str, folder: str) -> bool:
    path, folder = os.path.abspath(path), os.path.abspath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def raised_by_project(exc: BaseException, roots: tuple[str, ...] = ()) -> bool:
    """True when the innermost frame of `exc`'s traceback is in `ckd_jax/` or one of `roots`."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    filename = tb.tb_frame.f_code.co_filename
    return any(_inside(filename, root) for root in (_PACKAGE_DIR, *roots))


def one_line(message: object) -> str:
    """`message` as one line (inner line breaks become spaces)."""
    return " ".join(str(message).split()) or "(no message)"


def error_line(prog: str, message: object) -> str:
    return f"{prog}: error: {one_line(message)}"


def run_command(main: Callable[..., int | None], argv: list[str] | None = None,
                prog: str | None = None) -> int:
    """Call `main(argv)` (or `main()`) and return its exit status; a bad configuration or input
    becomes `<prog>: error: <message>` on stderr and status 2 (see the module docstring).

    `prog` defaults to the script's file name, as argparse names it.
    """
    prog = prog or os.path.basename(sys.argv[0]) or "command"
    code = getattr(main, "__code__", None)
    roots = (os.path.dirname(os.path.abspath(code.co_filename)),) if code is not None else ()
    verbose = os.environ.get(TRACEBACK_ENV, "") not in ("", "0")
    try:
        status = main() if argv is None else main(argv)
    except KeyboardInterrupt as e:  # Ctrl-C: what was saved and how to resume, not a trace
        if verbose:
            raise
        from ckd_jax.interrupt import RunInterrupted

        said = one_line(e) if isinstance(e, RunInterrupted) else (
            "interrupted: stopped at once; the last checkpoint (if any) is kept, and rerunning "
            "the same command resumes from it")
        print(f"{prog}: {said}", file=sys.stderr)
        return 130
    except SystemExit as e:
        if isinstance(e.code, str) and not verbose:
            print(error_line(prog, e.code), file=sys.stderr)
            return 2
        raise
    except USAGE_ERRORS as e:
        if verbose or not raised_by_project(e, roots):
            raise
        print(error_line(prog, e), file=sys.stderr)
        return 2
    return 0 if status is None else int(status)
