"""`experiments/sweep.py --split-members`: a cell's members (seeds x learning rates) run as
separate one-member runs, merged into the cell once all have finished, give the same rows,
metrics and selection as the cell run whole. In process: the `--jobs` scheduler is replaced by
one that runs each worker's command line here (the pinning of real workers is
tests/test_sweep_jobs.py's subject)."""

from __future__ import annotations

import json
import os
import shutil

import jax
import jax.numpy as jnp
import pytest
from experiments_support import ROOT, TINY_SWEEP_BASE, load_experiment  # tests/ on sys.path

from ckd_jax import jobs as J
from ckd_jax import results as R
from ckd_jax import sweep
from ckd_jax.models import create_model
from ckd_jax.train.engine import make_mesh

sweep_cli = load_experiment("sweep")  # the command line: main

# One kd cell, two seeds (two members), under the plateau protocol so that the members take
# their own decisions (reloads, LR drops, different lengths).
SETS = {"dataset": "digits", "subset_size": 200, "schedule": "plateau", "patience": 1,
        "max_lr_drops": 1, "max_epochs": 6, "epochs": 2, "batch_size": 32,
        "student_kwargs": '{"width": 4}',
        "teacher": "tiny_cnn", "teacher_kwargs": '{"width": 4}', "checkpoint_every": 0,
        "eval_test_every": 1, "progress": False, "eval_batch_size": 400}
BASE = TINY_SWEEP_BASE.replace(schedule="plateau", patience=1, max_lr_drops=1, max_epochs=6,
                               teacher="tiny_cnn", teacher_kwargs={"width": 4},
                               eval_test_every=1)
LR = 0.5  # seed 1 stops after 2 pseudo-epochs, seed 2 after 3


def _argv(out: str) -> list[str]:
    argv = ["--methods", "kd", "--seeds", "1,2", "--lrs", str(LR), "--out", out, "--devices",
            "1"]
    for k, v in SETS.items():
        argv += ["--set", f"{k}={v}"]
    return argv


def _rows(out: str) -> list[dict]:
    rows = R.read_results(os.path.join(out, R.RESULTS_FILE))
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


@pytest.fixture(scope="module")
def whole(tmp_path_factory):
    """The cell run whole, in one process (it builds the two seeds' logit tables)."""
    out = str(tmp_path_factory.mktemp("whole"))
    teacher = create_model("tiny_cnn", 10, width=4)
    tvars = teacher.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)), train=False)
    cells = sweep.plan_cells(BASE, ["kd"], [200], [1, 2], [LR], out)
    sweep.run_sweep(cells, mesh=make_mesh(1), teacher_apply=teacher.apply,
                    teacher_variables=tvars, log=lambda _: None)
    return out


def test_members_run_apart_give_the_cell_s_rows(whole, tmp_path, monkeypatch):
    out = str(tmp_path / "split")
    shutil.copytree(os.path.join(whole, "logit_tables"), os.path.join(out, "logit_tables"))
    ran = []

    def run_here(tasks, jobs, **kw):  # the scheduler, minus processes and pinning
        for task in tasks:
            ran.append(task.name)
            # a worker reruns the sweep script (not the library module)
            assert task.argv[1] == os.path.join(ROOT, "experiments", "sweep.py")
            assert sweep_cli.main(task.argv[2:]) == 0
        return {task.name: 0 for task in tasks}

    monkeypatch.setattr(J, "run_tasks", run_here)
    monkeypatch.setattr(J, "available_cores", lambda: [0, 1])
    monkeypatch.setattr(J, "accelerator_installed", lambda: False)
    with pytest.raises(ValueError, match=r"--member 2: cell kd_S200 has members 0\.\.1"):
        sweep_cli.main(_argv(out) + ["--jobs", "1", "--cell", "kd_S200", "--member", "2"])
    # A sweep killed after member 1's worker finished: its command, alone.
    assert sweep_cli.main(_argv(out) + ["--jobs", "1", "--cell", "kd_S200", "--member", "1"]) == 0
    assert not R.cell_finished(os.path.join(out, "kd_S200"))  # a worker never merges
    # The rerun, one cell on two cores: auto splits it and runs the member left.
    assert sweep_cli.main(_argv(out) + ["--jobs", "2"]) == 0
    assert ran == [f"kd_S200.s1_lr{LR}"]
    assert _rows(out) == _rows(whole)
    cell_whole, cell_split = (os.path.join(d, "kd_S200") for d in (whole, out))
    epochs = [m["epochs_run"] for m in R.read_summary(cell_split)["members"]]
    assert len(set(epochs)) == 2, f"members should stop at different epochs: {epochs}"
    # Every logged figure (the test curves too), line for line; the config but for its paths.
    with open(os.path.join(cell_whole, "metrics.jsonl")) as a, \
            open(os.path.join(cell_split, "metrics.jsonl")) as b:
        assert a.read() == b.read()
    configs = [json.load(open(os.path.join(d, "config.json"))) for d in (cell_whole, cell_split)]
    for c in configs:
        del c["out_dir"], c["logit_table_dir"]
    assert configs[0] == configs[1]
    summary = R.read_summary(cell_split)
    assert summary["members_run_apart"] and summary["teacher_calls_this_run"] == 0
    assert R.read_test_curves(out) == R.read_test_curves(whole)
    # The same command again: the merged cell is finished, nothing runs.
    ran.clear()
    assert sweep_cli.main(_argv(out) + ["--jobs", "2"]) == 0
    assert ran == [] and _rows(out) == _rows(whole)


def test_when_cells_are_split(tmp_path, monkeypatch):
    cells = sweep.plan_cells(BASE, ["kd", "ce"], [200], [1, 2], [0.05], str(tmp_path))
    one_member = sweep.plan_cells(BASE, ["kd"], [200], [1], [0.05], str(tmp_path / "one"))
    monkeypatch.setattr(J, "accelerator_installed", lambda: False)
    assert sweep.cells_to_split(cells, "auto", 2) == set()  # as many cells as jobs
    assert sweep.cells_to_split(cells, "auto", 3) == {"kd_S200", "ce_S200"}
    assert sweep.cells_to_split(cells, "no", 8) == set()
    assert sweep.cells_to_split(cells, "yes", 1) == {"kd_S200", "ce_S200"}
    assert sweep.cells_to_split(one_member, "yes", 4) == set()  # nothing to split
    # A cell already training whole keeps going whole.
    os.makedirs(os.path.join(tmp_path, "kd_S200", "checkpoints", "3"))
    assert sweep.cells_to_split(cells, "auto", 3) == {"ce_S200"}
    monkeypatch.setattr(J, "accelerator_installed", lambda: True)  # one vmapped program
    assert sweep.cells_to_split(cells, "auto", 3) == set()
    with pytest.raises(SystemExit):  # argparse: one line, exit status 2
        sweep_cli.main(["--methods", "kd", "--out", str(tmp_path), "--split-members", "maybe"])
