"""`experiments/sweep.py --jobs N`: cells in N worker processes pinned to their own cores give
the same results.jsonl rows and the same weights, bit for bit, as one process (XLA:CPU's
reduction order depends on its thread-pool size, so both must start it with the same size),
build each shared logit table once (teacher calls counted), and survive a SIGKILL of the sweep
in the middle (no orphan worker, the rerun ends with the same rows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from experiments_support import ROOT, load_experiment, user_env  # tests/ on sys.path

from ckd_jax import jobs as J
from ckd_jax import results as R
from ckd_jax.train.supervised import TeacherConfig, train_teacher

sweep = load_experiment("sweep")
SEEDS = (1, 2)
B = 160  # 0.8 x S = 200


def _argv(teacher_dir: str, out: str) -> list[str]:
    sets = {"dataset": "digits", "subset_size": 200, "schedule": "cosine", "epochs": 3,
            "batch_size": 32, "student_kwargs": '{"width": 4}', "teacher": "tiny_cnn",
            "teacher_kwargs": '{"width": 4}', "teacher_checkpoint": teacher_dir,
            "checkpoint_every": 1, "checkpoint_seconds": 0, "progress": False,
            "eval_batch_size": 400}
    argv = ["--methods", "kd,ckd,ce", "--seeds", ",".join(map(str, SEEDS)), "--lrs", "0.05",
            "--out", out]
    for k, v in sets.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _rows(out: str) -> list[dict]:
    rows = R.read_results(os.path.join(out, R.RESULTS_FILE))
    rows = [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]
    return sorted(rows, key=lambda r: (r["cell"], r["seed"], r["lr"]))


CELLS = ("kd_S200", "ckd_S200", "ce_S200")


def _best_weights(out: str) -> dict[str, np.ndarray]:
    """Every cell's selected student weights (all members), flattened per cell."""
    import jax

    from ckd_jax.checkpoint import Checkpointer

    got = {}
    for cell in CELLS:
        with Checkpointer(os.path.join(out, cell, "checkpoints"), keep_best=False) as ck:
            _, tree = ck.restore_latest()
        params, batch_stats, _ = tree["best"]
        got[cell] = np.concatenate([np.asarray(a, np.float32).ravel() for a in
                                    jax.tree_util.tree_leaves((params, batch_stats))])
    return got


def _sweep_cli(argv: list[str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "sweep.py"), *argv],
                          capture_output=True, text=True, timeout=600, env=user_env())


def _teacher_calls(out: str) -> int:
    return sum(R.read_cell(os.path.join(out, c))[1]["teacher_calls_this_run"]
               for c in ("kd_S200", "ckd_S200", "ce_S200"))


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("teacher") / "t")
    train_teacher(TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                                out=out, epochs=1, batch_size=64, lr=0.05, progress=False))
    return out


@pytest.fixture(scope="module")
def one_process(teacher_dir, tmp_path_factory):
    """The one-process sweep as a user starts it (the command line: a fresh jax backend)."""
    out = str(tmp_path_factory.mktemp("jobs1"))
    done = _sweep_cli(_argv(teacher_dir, out) + ["--jobs", "1"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    if len(J.available_cores()) > 1:
        assert "CPU backend started with 1 XLA thread(s)" in done.stdout
    assert _teacher_calls(out) == len(SEEDS) * B  # kd builds the tables, ckd reuses them
    return out


@pytest.fixture(scope="module")
def one_process_rows(one_process):
    return _rows(one_process)


@pytest.mark.slow
def test_two_jobs_give_the_same_rows_and_pay_each_table_once(teacher_dir, one_process,
                                                             one_process_rows, tmp_path):
    out = str(tmp_path / "jobs2")
    done = _sweep_cli(_argv(teacher_dir, out) + ["--jobs", "2"])
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    text = done.stdout
    assert "[jobs] start kd_S200 on core(s) [" in text and "3/3 done" in text
    assert _rows(out) == one_process_rows
    # Not only the rounded accuracies: every weight, bit for bit (CNN students, whose
    # convolution gradients XLA:CPU reduces in a thread-count-dependent order).
    ours, theirs = _best_weights(out), _best_weights(one_process)
    for cell in CELLS:
        assert np.array_equal(ours[cell], theirs[cell]), cell
    # kd and ckd ran at the same time and need the same two tables: built once between them.
    assert _teacher_calls(out) == len(SEEDS) * B
    assert sorted(os.listdir(os.path.join(out, "logs"))) == [
        "ce_S200.log", "ckd_S200.log", "kd_S200.log"]


@pytest.mark.slow
def test_kill_in_the_middle_leaves_no_worker_and_the_rerun_ends_the_same(
        teacher_dir, one_process_rows, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
           *_argv(teacher_dir, out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env=user_env())
    # Kill the scheduler once a worker has written a checkpoint of its cell.
    deadline = time.time() + 120
    while time.time() < deadline:
        ckpts = [d for d in ("kd_S200", "ckd_S200", "ce_S200")
                 if os.path.isdir(os.path.join(out, d, "checkpoints"))
                 and os.listdir(os.path.join(out, d, "checkpoints"))]
        if ckpts:
            break
        time.sleep(0.2)
    assert ckpts, "no worker wrote a checkpoint within 120 s"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)
    assert not _workers_of(out), "a worker outlived the killed sweep"
    assert not os.path.exists(os.path.join(out, R.RESULTS_FILE))
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                   timeout=300, env=user_env())
    assert _rows(out) == one_process_rows


def _workers_of(out: str) -> list[int]:
    """Pids of live processes whose command line names `out` (the sweep's workers)."""
    pids = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().decode(errors="replace")
        except OSError:
            continue
        if out in cmd and "sweep.py" in cmd:
            pids.append(int(pid))
    return pids


def test_jobs_arguments_and_core_groups(tmp_path):
    # Groups of exactly cores_per_job cores: every worker's XLA pool has the same size.
    assert J.core_groups(2, [0, 1, 2, 3, 4]) == [[0], [1]]
    assert J.core_groups(2, [0, 1, 2, 3, 4], cores_per_job=2) == [[0, 1], [2, 3]]
    assert J.core_groups(1, [3, 5]) == [[3]]
    with pytest.raises(ValueError, match=r"--jobs 3 x --cores-per-job 1: need 1 <= jobs x "
                                         r"cores per job <= 2"):
        J.core_groups(3, [0, 1])
    with pytest.raises(ValueError, match=r"--cores-per-job 0 must be >= 1"):
        J.core_groups(1, [0, 1], cores_per_job=0)
    cores = len(J.available_cores())
    argv = ["--methods", "ce", "--out", str(tmp_path / "s"), "--set", "dataset=digits"]
    for extra, match in ((["--jobs", "0"], "must be >= 1"), (["--jobs", "two"], "whole number"),
                         (["--jobs", str(cores + 1)], f"cores per job <= {cores}"),
                         (["--cores-per-job", str(cores + 1)], f"cores per job <= {cores}")):
        with pytest.raises(ValueError, match=match):
            sweep.main(argv + extra)
    assert not os.path.exists(tmp_path / "s")  # refused before any work
    assert J.child_argv("s.py", ["--jobs", "2", "--out", "o", "--cell=x", "--shard", "0/2"],
                        drop=("--jobs", "--cell", "--shard"), add=["--cell", "c"]) == [
        sys.executable, "s.py", "--out", "o", "--cell", "c"]


def test_worker_failure_is_reported_and_the_others_finish(tmp_path):
    ok = J.Task("ok", [sys.executable, "-c", "print('fine')"], log_path=str(tmp_path / "ok.log"))
    bad = J.Task("bad", [sys.executable, "-c", "import sys; print('boom'); sys.exit(3)"],
                 log_path=str(tmp_path / "bad.log"))
    lines = []
    status = J.run_tasks([bad, ok], 1, log=lines.append)
    assert status == {"bad": 3, "ok": 0}
    text = "\n".join(lines)
    assert "FAILED bad (exit status 3)" in text and "boom" in text and "2/2 done" in text
    assert json.dumps(status)  # plain ints


_GRAD_HASH = r"""
import hashlib, os, sys
mode = sys.argv[1]
if mode == "pinned":
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
from ckd_jax import jobs as J
if mode == "started":
    assert J.start_cpu_backend(1)
    assert len(os.sched_getaffinity(0)) == len(J.available_cores()) > 1  # mask given back
import jax, jax.numpy as jnp, numpy as np
from ckd_jax.models import create_model
m = create_model("tiny_cnn", num_classes=10, width=8)
x = jax.random.normal(jax.random.PRNGKey(0), (32, 8, 8, 1))
v = m.init(jax.random.PRNGKey(1), x[:2], train=False)
def loss(p):
    out, _ = m.apply({**v, "params": p}, x, train=True, mutable=["batch_stats"])
    return jnp.mean(jax.nn.log_softmax(out)[:, 0])
g = jax.jit(jax.grad(loss))(v["params"])
flat = np.concatenate([np.asarray(a).ravel() for a in jax.tree_util.tree_leaves(g)])
print(hashlib.sha256(flat.tobytes()).hexdigest())
"""


@pytest.mark.slow
def test_a_backend_started_with_one_thread_computes_as_a_one_core_process():
    """The mechanism behind `--jobs 1` == `--jobs N`: a process that keeps both cores but
    started XLA with a 1-thread pool computes a CNN gradient bit for bit as a pinned one."""
    if len(J.available_cores()) < 2:
        assert J.start_cpu_backend(1) is False  # nothing to narrow on one core
        return
    env = {**user_env(), "PYTHONPATH": ROOT}
    got = {mode: subprocess.run([sys.executable, "-c", _GRAD_HASH, mode], env=env, check=True,
                                capture_output=True, text=True, timeout=300).stdout.strip()
           for mode in ("pinned", "started")}
    assert len(got["pinned"]) == 64 and got["started"] == got["pinned"]
