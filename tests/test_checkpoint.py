"""ckd_jax.checkpoint.Checkpointer: round trips, latest+best retention, and kill/resume."""

import os
import random
import signal
import subprocess
import sys
import textwrap

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiments_support import user_env  # tests/ is on sys.path

from ckd_jax.checkpoint import Checkpointer
from ckd_jax.train import optim

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _state(value=0.0):
    params = {"dense": {"kernel": jnp.full((3, 2), value), "bias": jnp.zeros(2)}}
    tx = optim.make_optimizer(lr_schedule=0.1)
    return {"params": params, "opt_state": tx.init(params), "batch_stats": {},
            "rng": jax.random.key(7), "legacy_rng": jax.random.PRNGKey(3),
            "epoch": jnp.asarray(value, jnp.int32), "host": np.arange(4)}


def test_round_trip_with_template(tmp_path):
    st = _state(1.5)
    st["opt_state"] = optim.set_lr(st["opt_state"], 0.0123)
    with Checkpointer(tmp_path / "c") as ck:
        assert ck.save(3, st, {"val_acc": 0.5}, extra={"note": "x", "hist": [1, 2]})
    ck = Checkpointer(tmp_path / "c")  # a new process would do this
    step, got = ck.restore_latest(_state(0.0))
    assert step == 3 and ck.extra(3) == {"note": "x", "hist": [1, 2]}
    assert jax.tree.structure(got) == jax.tree.structure(st)
    np.testing.assert_array_equal(got["params"]["dense"]["kernel"], 1.5)
    assert float(optim.get_lr(got["opt_state"])) == pytest.approx(0.0123)
    # the typed key comes back typed and draws the same numbers
    assert jax.dtypes.issubdtype(got["rng"].dtype, jax.dtypes.prng_key)
    np.testing.assert_array_equal(jax.random.normal(got["rng"], (4,)),
                                  jax.random.normal(st["rng"], (4,)))
    np.testing.assert_array_equal(got["legacy_rng"], st["legacy_rng"])
    np.testing.assert_array_equal(got["host"], np.arange(4))
    # without a template: plain containers, keys as raw uint32 data
    raw = ck.restore(3)
    np.testing.assert_array_equal(raw["rng"], jax.random.key_data(st["rng"]))
    ck.close()


def test_latest_and_best_both_survive(tmp_path):
    accs = [0.3, 0.9, 0.5, 0.4, float("nan"), 0.9, 0.2]
    with Checkpointer(tmp_path, max_to_keep=2) as ck:
        for step, a in enumerate(accs, start=1):
            ck.save(step, _state(step), {"val_acc": a})
        # 2 most recent (6, 7) and the best (0.9 first reached at step 2; tie at 6 loses)
        assert ck.all_steps() == [2, 6, 7]
        assert ck.best_step() == 2 and ck.latest_step() == 7
        assert ck.best_metrics() == {"val_acc": 0.9}
        step, got = ck.restore_best(_state())
        assert step == 2
        np.testing.assert_array_equal(got["params"]["dense"]["kernel"], 2.0)
        step, got = ck.restore_latest(_state())
        np.testing.assert_array_equal(got["params"]["dense"]["kernel"], 7.0)


def test_min_mode_and_nan_never_best(tmp_path):
    with Checkpointer(tmp_path, max_to_keep=1, best_metric="loss", best_mode="min") as ck:
        for step, loss in enumerate([float("nan"), 2.0, 1.0, 3.0], start=1):
            ck.save(step, _state(step), {"loss": loss})
        assert ck.best_step() == 3 and ck.all_steps() == [3, 4]


def test_save_every_skips_but_keeps_improvements(tmp_path):
    with Checkpointer(tmp_path, save_every=3, max_to_keep=5) as ck:
        written = [ck.save(s, _state(s), {"val_acc": a})
                   for s, a in [(1, 0.5), (2, 0.4), (3, 0.1), (4, 0.45), (5, 0.6)]]
        assert written == [True, False, True, False, True]  # 1, 5 improve; 3 is periodic
        assert ck.save(7, _state(7), {"val_acc": 0.0}, force=True)
        assert ck.all_steps() == [1, 3, 5, 7]


def test_errors(tmp_path):
    ck = Checkpointer(tmp_path)
    with pytest.raises(ValueError, match="val_acc"):
        ck.save(1, _state(), {"acc": 0.3})
    with pytest.raises(FileNotFoundError, match="step 5"):
        ck.restore(5)
    assert ck.restore_latest() is None and ck.restore_best() is None
    ck.close()
    with pytest.raises(ValueError, match="max_to_keep"):
        Checkpointer(tmp_path, max_to_keep=0)
    with pytest.raises(ValueError, match="best_mode"):
        Checkpointer(tmp_path, best_mode="up")


def test_partial_saves_are_ignored(tmp_path):
    with Checkpointer(tmp_path) as ck:
        ck.save(2, _state(2), {"val_acc": 0.1})
    # what a killed process can leave behind: an uncommitted orbax tmp dir, a half-pruned step
    os.makedirs(tmp_path / "5.orbax-checkpoint-tmp-1234" / "state")
    os.makedirs(tmp_path / ".deleting-1-999" / "state")
    ck = Checkpointer(tmp_path)
    assert ck.all_steps() == [2]
    assert not (tmp_path / ".deleting-1-999").exists()
    ck.close()


_CHILD = textwrap.dedent("""
    import os, sys
    import jax
    jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)
    import numpy as np
    from ckd_jax.data import load_train_test
    from ckd_jax.train.supervised import TeacherConfig, train_teacher

    out, resume = sys.argv[1], sys.argv[2] == "1"
    train, test = load_train_test("digits")
    train, test = train.subset(np.arange(384)), test.subset(np.arange(100))
    cfg = TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4}, out=out,
                        epochs=5, batch_size=64, lr=0.05, resume=resume, progress=False)
    res = train_teacher(cfg, train=train, test=test,
                        on_epoch_end=lambda row: print("SAVED", row["epoch"], flush=True))
    leaves = jax.tree_util.tree_leaves_with_path(res.variables)
    np.savez(os.path.join(out, "final.npz"),
             **{jax.tree_util.keystr(k): np.asarray(v) for k, v in leaves})
    print("DONE", flush=True)
""")


def _child_cmd(script, out, resume):
    return [sys.executable, str(script), str(out), "1" if resume else "0"]


def _env():
    env = user_env(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    env.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".jax_cache"))
    return env


@pytest.mark.slow
def test_sigkill_then_resume_equals_uninterrupted(tmp_path):
    script = tmp_path / "child.py"
    script.write_text(_CHILD)
    env = _env()
    full = subprocess.run(_child_cmd(script, tmp_path / "full", False), env=env,
                          capture_output=True, text=True, timeout=600)
    assert full.returncode == 0, full.stderr[-3000:]

    kill_after = random.randint(1, 3)  # a random epoch of the 5
    proc = subprocess.Popen(_child_cmd(script, tmp_path / "cut", False), env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    killed = False
    for line in proc.stdout:
        if line.strip() == f"SAVED {kill_after}":
            proc.send_signal(signal.SIGKILL)
            killed = True
            break
    proc.wait(timeout=600)
    assert killed and proc.returncode == -signal.SIGKILL, f"kill_after={kill_after}"
    assert not (tmp_path / "cut" / "final.npz").exists()

    resumed = subprocess.run(_child_cmd(script, tmp_path / "cut", True), env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    saved = [int(s.split()[1]) for s in resumed.stdout.splitlines() if s.startswith("SAVED")]
    assert saved and saved[0] > kill_after and saved[-1] == 5, (kill_after, saved)

    a = np.load(tmp_path / "full" / "final.npz")
    b = np.load(tmp_path / "cut" / "final.npz")
    assert sorted(a.files) == sorted(b.files) and len(a.files) > 0
    for k in a.files:
        np.testing.assert_array_equal(a[k], b[k], err_msg=f"{k} (killed after {kill_after})")
    # the resumed run's log is the uninterrupted run's log (timings aside)
    def log(d):
        import json
        rows = [json.loads(x) for x in open(d / "log.jsonl")]
        return [{k: v for k, v in r.items() if k != "epoch_time_s"} for r in rows]
    assert log(tmp_path / "cut") == log(tmp_path / "full")
