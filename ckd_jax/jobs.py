"""Independent work in N worker processes, each pinned to its own CPU core(s): the engine of
`experiments/sweep.py --jobs N` (`ckd_jax.sweep.run_sweep_jobs`).

Why processes and not threads: a cell of a sweep is independent of every other cell, and on
XLA:CPU a one-thread process per core does at least the work of one process on several cores
(626 against 644 core-seconds, with rows that do not depend on N: docs/performance.md, "A
sweep with one worker per core"). Each worker is a fresh Python process
started with a command line (the sweep's own command plus `--cell NAME`); it pins itself with
`os.sched_setaffinity` (`become_worker`) before jax starts, so XLA sizes its thread pool to its
own cores.

Same rows for any N: every worker gets the same number of cores (`cores_per_job`, default 1)
and a one-process sweep starts its backend with a pool of that size (`start_cpu_backend`),
because XLA:CPU's convolution reduction order depends on the pool's size.

Kill safety: workers die with the scheduler (Linux `PR_SET_PDEATHSIG`), so a killed sweep
leaves no orphan that could write a cell while a rerun resumes it; every cell resumes from
its own checkpoints as in a one-process sweep. Worker output goes to one log file per task.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

_PR_SET_PDEATHSIG = 1
_ACCELERATOR_PLUGINS = ("jax_cuda12_plugin", "jax_cuda13_plugin", "jax_rocm60_plugin",
                        "jax_rocm7_plugin", "libtpu")


def available_cores() -> list[int]:
    """The CPU cores this process may run on (its affinity mask), sorted."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return list(range(os.cpu_count() or 1))


def accelerator_installed() -> bool:
    """Whether a jax GPU/TPU plugin is installed (checked without importing jax, so that the
    scheduler never initialises, or takes memory on, an accelerator its workers need)."""
    import importlib.util

    return any(importlib.util.find_spec(name) is not None for name in _ACCELERATOR_PLUGINS)


def default_jobs(tasks: int, cores_per_job: int = 1) -> int:
    """What fits the machine: as many `cores_per_job`-core workers as the cores allow on a
    CPU-only machine (at most one per task), one worker where an accelerator is installed (its
    members share the device in one vmapped program instead)."""
    if accelerator_installed():
        return 1
    return max(1, min(len(available_cores()) // max(1, cores_per_job), tasks))


def core_groups(jobs: int, cores: Sequence[int] | None = None, cores_per_job: int = 1
                ) -> list[list[int]]:
    """`jobs` disjoint, contiguous groups of exactly `cores_per_job` of the available cores.

    Every group has the same size on purpose: XLA:CPU's reduction order depends on the size of
    its thread pool, so workers with different core counts would train to different weights."""
    cores = list(available_cores() if cores is None else cores)
    if cores_per_job < 1:
        raise ValueError(f"--cores-per-job {cores_per_job} must be >= 1")
    if not 1 <= jobs * cores_per_job <= len(cores):
        raise ValueError(f"--jobs {jobs} x --cores-per-job {cores_per_job}: need 1 <= jobs x "
                         f"cores per job <= {len(cores)}, the number of CPU cores this process "
                         f"may use ({cores})")
    return [cores[j * cores_per_job:(j + 1) * cores_per_job] for j in range(jobs)]


def start_cpu_backend(threads: int) -> bool:
    """Start jax's CPU backend with an XLA:CPU thread pool of `threads` threads, then give this
    process back its whole affinity mask; True if done.

    Why: XLA:CPU sizes its thread pool from the affinity mask when the backend starts, and the
    pool's size sets the reduction order of convolutions, so a process on two cores trains to
    other weights (in the last bits, then visibly) than a `--jobs` worker pinned to one. A
    one-process sweep started this way computes exactly as its workers do. Returns False, doing
    nothing, where an accelerator plugin is installed (the CPU is not the compute device), where
    the mask already has `threads` cores or fewer, or where a jax backend has already started
    (its pool can no longer change)."""
    from ckd_jax._cpu_speed import backends_started

    cores = available_cores()
    if accelerator_installed() or len(cores) <= threads or backends_started():
        return False
    os.sched_setaffinity(0, cores[:threads])
    try:
        import jax

        jax.devices("cpu")  # the backend (and its thread pool) starts here
    finally:
        os.sched_setaffinity(0, cores)
    return True


WORKER_CORES_ENV = "CKD_JAX_WORKER_CORES"


def become_worker() -> None:
    """In a worker started by `run_tasks` (the environment names its cores): pin this process to
    them and ask Linux to kill it when the scheduler dies. Call before jax starts a backend
    (XLA:CPU sizes its thread pool from the affinity mask); a no-op in any other process.
    Done by the worker itself, not between fork and exec, which is unsafe in a threaded
    (jax) parent."""
    cores = os.environ.get(WORKER_CORES_ENV)
    if not cores:
        return
    os.sched_setaffinity(0, [int(c) for c in cores.split(",")])
    parent = int(os.environ.get(WORKER_CORES_ENV + "_PARENT", "0"))
    try:
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):  # not Linux: kill-safety then relies on reruns
        return
    if parent and os.getppid() != parent:  # the scheduler died before the tie was made
        os._exit(1)


@dataclass
class Task:
    """One unit of work: a name, the command that does it, how many population members it
    trains (for the progress line), and its log file."""

    name: str
    argv: list[str]
    members: int = 1
    log_path: str = ""


@dataclass
class _Running:
    task: Task
    proc: subprocess.Popen
    slot: int
    start: float
    log: object = field(repr=False, default=None)


def _fmt_seconds(s: float) -> str:
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


def run_tasks(tasks: list[Task], jobs: int, *, log=print, heartbeat_s: float = 60.0,
              poll_s: float = 0.2, env: dict | None = None, cores_per_job: int = 1
              ) -> dict[str, int]:
    """Run every task's command, at most `jobs` at once, worker j pinned to core group j
    (`cores_per_job` cores each).

    Prints one progress view for all of them: a line when a task starts or ends and every
    `heartbeat_s`: tasks done / total, members running, elapsed and estimated time left (mean
    task time so far x tasks left / jobs). A failing task does not stop the others; its log's
    last lines are printed. Returns {task name: exit status}.
    """
    groups = core_groups(jobs, cores_per_job=cores_per_job)
    pending, running, status = list(tasks), [], {}
    durations: list[float] = []
    t0 = last_beat = time.time()
    total = len(tasks)

    def view() -> str:
        done = len(status)
        left = total - done
        eta = "?"
        if durations:
            eta = _fmt_seconds(sum(durations) / len(durations) * left / jobs)
        members = sum(r.task.members for r in running)
        return (f"[jobs] {done}/{total} done, {len(running)} running ({members} member(s)), "
                f"elapsed {_fmt_seconds(time.time() - t0)}, about {eta} left")

    try:
        while pending or running:
            free = sorted(set(range(jobs)) - {r.slot for r in running})
            while pending and free:
                task, slot = pending.pop(0), free.pop(0)
                os.makedirs(os.path.dirname(task.log_path) or ".", exist_ok=True)
                f = open(task.log_path, "a")  # noqa: SIM115 (closed when the task ends)
                child_env = {**(os.environ if env is None else env),
                             WORKER_CORES_ENV: ",".join(map(str, groups[slot])),
                             WORKER_CORES_ENV + "_PARENT": str(os.getpid())}
                proc = subprocess.Popen(task.argv, stdout=f, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, env=child_env)
                running.append(_Running(task, proc, slot, time.time(), f))
                log(f"[jobs] start {task.name} on core(s) {groups[slot]} (log {task.log_path})")
            time.sleep(poll_s)
            for r in [r for r in running if r.proc.poll() is not None]:
                running.remove(r)
                r.log.close()
                rc = r.proc.returncode
                status[r.task.name] = rc
                took = time.time() - r.start
                durations.append(took)
                if rc == 0:
                    log(f"[jobs] done {r.task.name} in {_fmt_seconds(took)}; {view()}")
                else:
                    log(f"[jobs] FAILED {r.task.name} (exit status {rc}); last lines of "
                        f"{r.task.log_path}:")
                    for line in _tail(r.task.log_path, 8):
                        log(f"    {line}")
            if time.time() - last_beat >= heartbeat_s and running:
                log(view())
                last_beat = time.time()
    finally:  # an exception (Ctrl-C) in the scheduler: take the workers down with it
        for r in running:
            r.proc.kill()
            r.proc.wait()
            r.log.close()
    return status


def _tail(path: str, n: int) -> list[str]:
    try:
        with open(path, errors="replace") as f:
            lines = f.read().replace("\r", "\n").splitlines()
    except OSError:
        return ["(no log)"]
    return [line for line in lines if line.strip()][-n:]


def child_argv(script: str, argv: Sequence[str], drop: Sequence[str], add: Sequence[str]
               ) -> list[str]:
    """`python script <argv without the options in drop (with their values)> <add>`."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in drop:
            skip = True
            continue
        if any(a.startswith(d + "=") for d in drop):
            continue
        out.append(a)
    return [sys.executable, script, *out, *add]
