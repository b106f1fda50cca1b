"""The engine over several processes (`jax.distributed` on 127.0.0.1, CPU devices, gloo
collectives): 2 processes x 4 devices train the same tiny distillation as 1 process x 8 devices
and end with the same parameters and accuracies; only process 0 writes the run directory."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest
from engine_support import CountingTeacher  # tests/ is on sys.path
from experiments_support import user_env
from multiprocess_worker import config

from ckd_jax.train.distill import run_distillation
from ckd_jax.train.engine import make_mesh

TESTS = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(TESTS)
WORKER = os.path.join(TESTS, "multiprocess_worker.py")
TIMEOUT_S = 300


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_processes(n, devices_each, table_dir, out_dir, result_dir):
    env = user_env(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env["XLA_FLAGS"] += f" --xla_force_host_platform_device_count={devices_each}"
    port = _free_port()
    procs = [subprocess.Popen(
        [sys.executable, WORKER, str(i), str(n), str(port), table_dir, out_dir,
         os.path.join(result_dir, f"p{i}")], env=env, cwd=ROOT,
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for i in range(n)]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=TIMEOUT_S)[0])
    finally:
        for p in procs:  # stop whatever is left (a hung collective): the test ends by itself
            if p.poll() is None:
                p.kill()
                p.wait()
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log[-4000:]
    return [os.path.join(result_dir, f"p{i}") for i in range(n)]


@pytest.mark.slow
def test_two_processes_equal_one_process(tmp_path):
    assert len(jax.devices()) == 8, "conftest sets 8 fake CPU devices"
    tables = str(tmp_path / "tables")
    teacher = CountingTeacher()
    one = run_distillation(config(tables, str(tmp_path / "one")), mesh=make_mesh(8),
                           teacher_apply=teacher.apply, teacher_variables=teacher.variables)
    assert teacher.calls == 64  # the reference builds the tables, the processes load them
    ref = [np.asarray(x) for x in jax.tree.leaves(one["_final"]["state"].params)]

    out = tmp_path / "two"
    results = _run_processes(2, 4, tables, str(out), str(tmp_path))
    for i, path in enumerate(results):
        with open(path + ".json") as f:
            info = json.load(f)
        assert (info["process_index"], info["process_count"]) == (i, 2)
        assert (info["global_devices"], info["local_devices"], info["devices"]) == (8, 4, 8)
        assert info["teacher_calls"] == 0
        with np.load(path + ".npz") as z:
            got = [z[f"arr_{k}"] for k in range(len(z.files))]
        assert len(got) == len(ref)
        for a, b in zip(ref, got):
            np.testing.assert_allclose(b, a, rtol=2e-4, atol=2e-5)
        for m_ref, m in zip(one["members"], info["members"]):
            for key in ("last_val_top1", "best_val_top1", "test_top1_at_best_val",
                        "last_test_top1"):
                assert m[key] == pytest.approx(m_ref[key], abs=1e-6), key
            assert m["best_epoch"] == m_ref["best_epoch"]

    # process 0 alone wrote the run directory: one metrics row per member and pseudo-epoch
    assert sorted(os.listdir(out)) == ["config.json", "metrics.jsonl", "summary.json"]
    with open(out / "metrics.jsonl") as f:
        rows = [json.loads(line) for line in f]
    assert [r["epoch"] for r in rows] == [1, 2]
    with open(out / "summary.json") as f:
        summary = json.load(f)
    assert summary["devices"] == 8 and summary["finished"]
    assert summary["members"][0]["test_top1_at_best_val"] == pytest.approx(
        one["members"][0]["test_top1_at_best_val"], abs=1e-6)


def test_multi_process_limits_are_clear_errors(tmp_path, monkeypatch):
    monkeypatch.setattr(jax, "process_count", lambda: 2)
    with pytest.raises(ValueError, match="with 2 processes the mesh spans all 8 devices"):
        make_mesh(4)
    cfg = config(str(tmp_path / "tables"), str(tmp_path / "run")).replace(checkpoint_every=1)
    with pytest.raises(ValueError, match="checkpoint_every=1 with 2 processes.*checkpoint_every=0"):
        run_distillation(cfg, mesh=make_mesh(8))
    assert not os.listdir(tmp_path)
