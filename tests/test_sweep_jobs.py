"""`experiments/sweep.py --jobs N`: cells in N worker processes pinned to their own cores give
the same results.jsonl rows as one process, build each shared logit table once (teacher calls
counted), and survive a SIGKILL of the sweep in the middle (no orphan worker, the rerun ends
with the same rows)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
from experiments_support import ROOT, load_experiment  # tests/ on sys.path

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
def one_process_rows(teacher_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("jobs1"))
    assert sweep.main(_argv(teacher_dir, out) + ["--jobs", "1"]) == 0
    assert _teacher_calls(out) == len(SEEDS) * B  # kd builds the tables, ckd reuses them
    return _rows(out)


def test_two_jobs_give_the_same_rows_and_pay_each_table_once(teacher_dir, one_process_rows,
                                                             tmp_path, capsys):
    out = str(tmp_path / "jobs2")
    assert sweep.main(_argv(teacher_dir, out) + ["--jobs", "2"]) == 0
    text = capsys.readouterr().out
    assert "[jobs] start kd_S200 on core(s) [" in text and "3/3 done" in text
    assert _rows(out) == one_process_rows
    # kd and ckd ran at the same time and need the same two tables: built once between them.
    assert _teacher_calls(out) == len(SEEDS) * B
    assert sorted(os.listdir(os.path.join(out, "logs"))) == [
        "ce_S200.log", "ckd_S200.log", "kd_S200.log"]


def test_kill_in_the_middle_leaves_no_worker_and_the_rerun_ends_the_same(
        teacher_dir, one_process_rows, tmp_path):
    out = str(tmp_path / "killed")
    cmd = [sys.executable, os.path.join(ROOT, "experiments", "sweep.py"),
           *_argv(teacher_dir, out), "--jobs", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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
                   timeout=300)
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
    assert J.core_groups(2, [0, 1, 2, 3, 4]) == [[0, 1, 2], [3, 4]]
    assert J.core_groups(1, [3, 5]) == [[3, 5]]
    with pytest.raises(ValueError, match=r"--jobs 3: need 1 <= N <= 2"):
        J.core_groups(3, [0, 1])
    cores = len(J.available_cores())
    argv = ["--methods", "ce", "--out", str(tmp_path / "s"), "--set", "dataset=digits"]
    for bad, match in (("0", "must be >= 1"), ("two", "whole number"),
                       (str(cores + 1), f"need 1 <= N <= {cores}")):
        with pytest.raises(ValueError, match=match):
            sweep.main(argv + ["--jobs", bad])
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
