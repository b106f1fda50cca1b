"""`experiments/slurm_sweep.sh`, the cluster path, run as SLURM runs it but without sbatch: from
another folder (it goes to the submit folder), its environment activated, its log folder made, N
taken from the array's size, and `sweep.py --shard I/N` given exactly its shard's cells.

The sweep runs with `--dry-run` (it lists the shard's cells and exits): what is tested here is
the script's wiring; running the cells of a shard is tests/test_sweep_shards.py's (a real run
of this tiny sweep costs about 18 s of CPU, the dry run 2 s)."""

from __future__ import annotations

import os
import subprocess
import sys

from experiments_support import ROOT

SCRIPT = os.path.join(ROOT, "experiments", "slurm_sweep.sh")
# The tiny digits sweep of the shard tests (tests/experiments_support.py), as command-line
# settings: two CE cells (no teacher), width-4 students, one cosine pseudo-epoch.
TINY = ["--config", "experiments/configs/digits_quickstart.py", "--methods", "ce",
        "--subset-sizes", "200,300", "--seeds", "1", "--lrs", "0.05",
        "--set", "epochs=1", "--set", 'student_kwargs={"width": 4}', "--set", "progress=false",
        "--set", "checkpoint_every=0", "--jobs", "1", "--dry-run"]


def _array_env(tmp_path, task: int, n: int) -> dict:
    venv = tmp_path / "venv"
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    # a stand-in for the project's venv: sourcing it leaves a mark
    (venv / "bin" / "activate").write_text(f"touch {tmp_path / 'activated'}\n")
    return {**os.environ, "SLURM_SUBMIT_DIR": ROOT, "SLURM_ARRAY_JOB_ID": "77",
            "SLURM_ARRAY_TASK_ID": str(task), "SLURM_ARRAY_TASK_MIN": "0",
            "SLURM_ARRAY_TASK_MAX": str(n - 1), "SLURM_ARRAY_TASK_COUNT": str(n),
            "VENV": str(venv), "PYTHON": sys.executable, "LOG_DIR": str(tmp_path / "logs")}


def test_slurm_array_task_runs_its_shard(tmp_path):
    out = tmp_path / "sweep"
    env = _array_env(tmp_path, task=1, n=2)
    proc = subprocess.run(["bash", SCRIPT, *TINY, "--out", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=600, check=False)
    log = tmp_path / "logs" / "sweep_77_1-of-2.log"
    assert proc.returncode == 0, proc.stderr + (log.read_text() if log.exists() else "")
    assert (tmp_path / "activated").exists()
    assert f"shard 1/2, log {log}" in proc.stdout
    text = log.read_text()
    assert "--shard 1/2" in text  # the command, traced into the log
    # cells sorted by name, shard 1 of 2 gets the second: ce_S300 only
    assert "shard 1/2: 1 of 2 cells" in text
    listed = [ln.split()[0] for ln in text.splitlines() if ln.startswith("ce_S")]
    assert listed == ["ce_S300"], text
    assert not out.exists()  # a dry run writes nothing


def test_slurm_script_refuses_a_bad_array_before_any_work(tmp_path):
    env = _array_env(tmp_path, task=1, n=2)
    env["SLURM_ARRAY_TASK_MIN"] = "1"  # --array=1-1: not 0..N-1
    proc = subprocess.run(["bash", SCRIPT, *TINY, "--out", str(tmp_path / "sweep")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert proc.returncode == 2
    assert proc.stderr.startswith("slurm_sweep.sh: error: --array must be 0-(N-1)"), proc.stderr
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "logs").exists()
