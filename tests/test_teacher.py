"""Teacher training (ckd_jax.train.supervised), evaluation, loading and the CLI."""

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from experiments_support import run_main, user_env  # tests/ is on sys.path

from ckd_jax.data import DatasetSpec, ImageSet, dataset_spec, load_train_test
from ckd_jax.models import create_model
from ckd_jax.train.config import DistillConfig
from ckd_jax.train.evaluate import evaluate, make_eval_fn
from ckd_jax.train.methods import LossInputs, build_method
from ckd_jax.train.supervised import TeacherConfig, load_teacher, train_teacher

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def digits():
    return load_train_test("digits")


@pytest.fixture(scope="module")
def trained(digits, tmp_path_factory):
    """One short teacher run shared by several tests (digits, tiny_cnn, 4 epochs)."""
    out = tmp_path_factory.mktemp("teacher") / "run"
    cfg = TeacherConfig(dataset="digits", model="tiny_cnn", out=str(out), epochs=4,
                        batch_size=32, lr=0.05, progress=False)
    return cfg, train_teacher(cfg, train=digits[0], test=digits[1])


def test_training_learns_and_writes_run_dir(trained, digits):
    cfg, res = trained
    # 4 epochs x 44 steps on digits: far above chance (0.1)
    assert res.test_acc > 0.5, res.history
    assert len(res.history) == 4 and [r["epoch"] for r in res.history] == [1, 2, 3, 4]
    assert res.history[-1]["train_loss"] < res.history[0]["train_loss"]
    # the engine's pseudo-epoch: ceil(N / B) steps, the last batch filled from a 2nd permutation
    assert res.history[0]["step"] == -(-len(digits[0]) // 32)
    run = res.run_dir
    rows = [json.loads(x) for x in open(os.path.join(run, "log.jsonl"))]
    assert rows == res.history
    summary = json.load(open(os.path.join(run, "teacher.json")))
    assert summary["test_acc"] == pytest.approx(res.test_acc)
    assert summary["model"] == "tiny_cnn" and summary["num_classes"] == 10
    # the reported accuracy is what evaluate() gives for the returned variables
    model = create_model("tiny_cnn", 10)
    top1, top5 = evaluate(model, res.variables, digits[1].images, digits[1].labels,
                          dataset_spec("digits"), batch_size=100)
    assert top1 == pytest.approx(res.test_acc, abs=1e-6) and top5 >= top1


def test_lr_follows_paper_milestones(trained):
    cfg, res = trained
    c = cfg.resolved()
    assert c.milestones == (2, 3, 4)  # round(0.625*4), round(0.75*4), round(0.875*4)
    # the lr logged for an epoch is that of its last step; epochs are 0-based in the schedule:
    # epochs 0-1 at 0.05, epoch 2 (>= milestone 2) at 0.005, epoch 3 at 0.0005
    assert [r["lr"] for r in res.history] == pytest.approx([0.05, 0.05, 0.005, 0.0005],
                                                           rel=1e-5)


def test_load_teacher_last_and_best(trained):
    cfg, res = trained
    last = load_teacher(res.run_dir, "tiny_cnn", 10)
    for a, b in zip(jax.tree.leaves(last), jax.tree.leaves(res.variables)):
        np.testing.assert_array_equal(a, b)
    best = load_teacher(res.run_dir, "tiny_cnn", 10, which="best")
    assert jax.tree.structure(best) == jax.tree.structure(last)
    with pytest.raises(ValueError, match="tiny_cnn"):
        load_teacher(res.run_dir, "mlp", 10)
    with pytest.raises(ValueError, match="classes"):
        load_teacher(res.run_dir, "tiny_cnn", 7)
    with pytest.raises(FileNotFoundError):
        load_teacher(os.path.join(res.run_dir, "nope"), "tiny_cnn", 10)


def test_resume_of_finished_run_and_config_mismatch(trained, digits):
    cfg, res = trained
    import dataclasses

    again = train_teacher(dataclasses.replace(cfg, resume=True), train=digits[0], test=digits[1])
    assert again.test_acc == pytest.approx(res.test_acc) and len(again.history) == 4
    with pytest.raises(ValueError, match="lr"):
        train_teacher(dataclasses.replace(cfg, resume=True, lr=0.1), train=digits[0],
                      test=digits[1])
    with pytest.raises(FileExistsError, match="resume"):
        train_teacher(cfg, train=digits[0], test=digits[1])


def test_evaluate_matches_numpy_reference():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (37, 10, 10, 3), dtype=np.uint8)  # 37: not a batch multiple
    labels = rng.integers(0, 7, 37).astype(np.int32)
    spec = DatasetSpec((0.5, 0.4, 0.3), (0.2, 0.25, 0.3), 8, 0, False, eval_crop=8)
    model = create_model("mlp", 7)
    variables = model.init(jax.random.key(1), jnp.zeros((1, 8, 8, 3)))
    x = (images[:, 1:9, 1:9, :].astype(np.float32) / 255 - np.array(spec.mean)) / np.array(
        spec.std)
    logits = np.asarray(model.apply(variables, jnp.asarray(x, jnp.float32)))
    ref1 = np.mean(np.argmax(logits, 1) == labels)
    top5 = np.argsort(-logits, axis=1)[:, :5]
    ref5 = np.mean([labels[i] in top5[i] for i in range(37)])
    got1, got5 = evaluate(model, variables, images, labels, spec, batch_size=8)
    assert got1 == pytest.approx(ref1, abs=1e-6) and got5 == pytest.approx(ref5, abs=1e-6)
    assert ref5 > ref1  # the two metrics are distinguishable on this draw
    fn = make_eval_fn(lambda v, xx: model.apply(v, xx), spec, batch_size=64)
    assert float(fn(variables, jnp.asarray(images), jnp.asarray(labels))[0]) == pytest.approx(ref1)


def test_scan_and_python_epoch_loops_agree(digits):
    """The loop policy is the engine's (engine.make_train_epoch): both loops, same run."""
    tr, te = digits[0].subset(np.arange(96)), digits[1].subset(np.arange(40))
    out = {}
    for loop in ("scan", "python"):
        cfg = TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                            epochs=2, batch_size=32, lr=0.1, schedule="cosine", epoch_loop=loop,
                            progress=False)
        out[loop] = train_teacher(cfg, train=tr, test=te)
    a, b = out["scan"], out["python"]
    for x, y in zip(jax.tree.leaves(a.variables), jax.tree.leaves(b.variables)):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose([r["train_loss"] for r in a.history],
                               [r["train_loss"] for r in b.history], rtol=1e-5)


def test_one_ce_for_students_and_teachers():
    """The teacher's loss is the registry's "ce": label smoothing as its option (checked against
    NumPy), train accuracy as its metric; a student's ce keeps metrics {"ce"} and no hyper."""
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 5)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 4, 0])
    x = LossInputs(jnp.asarray(logits), None, jnp.asarray(labels), None, None, None, None, None,
                   None)
    logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
    onehot = np.eye(5)[labels]
    for eps in (0.0, 0.1):
        m = build_method(TeacherConfig(label_smoothing=eps))
        assert m.name == "ce" and not m.uses_teacher and m.hyper == {"label_smoothing": eps}
        ce, _, metrics = m.loss(x)
        want = -np.mean(np.sum((onehot * (1 - eps) + eps / 5) * logp, -1))
        np.testing.assert_allclose(float(ce), want, rtol=1e-6)
        assert float(metrics["acc"]) == pytest.approx(np.mean(logits.argmax(-1) == labels))
    student = build_method(DistillConfig(method="ce"))
    ce, _, metrics = student.loss(x)
    assert set(metrics) == {"ce"} and student.hyper == {}
    np.testing.assert_allclose(float(ce), -np.mean(np.sum(onehot * logp, -1)), rtol=1e-6)


def test_teacher_is_the_student_engine_with_one_ce_member(digits):
    """train_teacher = engine.make_train_epoch (method "ce", M = 1, full split) +
    engine.make_evaluate: rebuilding those pieces by hand gives the same weights, bitwise."""
    from ckd_jax.train import engine as S
    from ckd_jax.train import supervised as T

    tr, te = digits[0].subset(np.arange(80)), digits[1].subset(np.arange(30))
    cfg = TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                        epochs=2, batch_size=32, lr=0.05, progress=False)
    res = train_teacher(cfg, train=tr, test=te)
    c, spec = cfg.resolved(), dataset_spec("digits")
    step_spec = T.teacher_step_spec(c, spec, 80)
    assert step_spec.steps_per_epoch == 3 and step_spec.schedule == "multistep"
    assert step_spec.milestones == (3, 6)  # epochs (1, 2) x 3 steps (round(5/8*2)=1, 3/4*2=2)
    model = create_model("tiny_cnn", 10, width=4)
    mesh = S.make_mesh(1)
    method = build_method(c)  # the registry's "ce"
    state = S.init_state(model, method, jax.random.PRNGKey(c.seed)[None],
                         jnp.asarray([c.lr], jnp.float32), (8, 8, 1), 10, 80)
    epoch = S.make_train_epoch(model, method, step_spec, mesh)
    data = jax.device_put(T.teacher_data(tr.images, tr.labels, 10))
    for e in range(2):
        state, _ = epoch(state, data, T.epoch_keys(c.seed, e), jnp.ones(1, bool))
    got = {"params": state.params["student"], "batch_stats": state.batch_stats}
    for x, y in zip(jax.tree.leaves(got), jax.tree.leaves(res.variables)):
        np.testing.assert_array_equal(np.asarray(x)[0], y)
    ev = S.make_evaluate(model, step_spec, mesh, 30, shared_images=True)
    top1, _ = ev(state.params["student"], state.batch_stats, jnp.asarray(te.images),
                 jnp.asarray(te.labels))
    assert float(top1[0]) == pytest.approx(res.test_acc, abs=1e-7)


def test_bfloat16_compute_runs(digits):
    tr, te = digits[0].subset(np.arange(128)), digits[1].subset(np.arange(64))
    cfg = TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                        recipe="fast", epochs=1, batch_size=32, compute_dtype="bfloat16",
                        label_smoothing=0.1, progress=False)
    res = train_teacher(cfg, train=tr, test=te)
    assert np.isfinite(res.history[0]["train_loss"])
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(res.variables))


@pytest.mark.parametrize("kw,match", [
    (dict(model="resnet9999"), "unknown model"),
    (dict(dataset="imagenet"), "unknown dataset"),
    (dict(batch_size=0), "batch_size"),
    (dict(batch_size=100000), "larger than the training set"),
    (dict(recipe="slow"), "recipe"),
    (dict(schedule="linear"), "schedule"),
    (dict(lr=-1.0), "lr"),
    (dict(label_smoothing=1.0), "label_smoothing"),
])
def test_bad_config_fails_before_any_work(tmp_path, kw, match):
    out = tmp_path / "run"
    cfg = TeacherConfig(**{**dict(dataset="digits", model="tiny_cnn", out=str(out), epochs=1,
                                  progress=False), **kw})
    with pytest.raises(ValueError, match=match):
        train_teacher(cfg)
    assert not out.exists()


def test_bad_split_inputs(tmp_path):
    bad = ImageSet(np.zeros((4, 8, 8, 1), np.uint8), np.zeros(4, np.int32), ("a", "b"),
                   "digits", "train")
    cfg = TeacherConfig(model="tiny_cnn", batch_size=2, epochs=1, out=str(tmp_path / "r"))
    with pytest.raises(ValueError, match="both"):
        train_teacher(cfg, train=bad)
    other = ImageSet(np.zeros((4, 9, 9, 1), np.uint8), np.zeros(4, np.int32), ("a", "b"),
                     "digits", "test")
    with pytest.raises(ValueError, match="shapes differ"):
        train_teacher(cfg, train=bad, test=other)
    assert not (tmp_path / "r").exists()


def _cli(*args, timeout=600):
    env = user_env(JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "train_teacher.py"),
                           *args], capture_output=True, text=True, env=env, timeout=timeout,
                          cwd=ROOT)


@pytest.mark.slow
def test_cli_end_to_end_on_digits(tmp_path):
    out = tmp_path / "cli_run"
    r = _cli("--dataset", "digits", "--model", "tiny_cnn", "--epochs", "2", "--batch-size",
             "64", "--lr", "0.1", "--out", str(out), "--no-progress")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "final test accuracy" in r.stdout and "wall time" in r.stdout
    summary = json.load(open(out / "teacher.json"))
    assert summary["epochs"] == 2 and 0.0 <= summary["test_acc"] <= 1.0
    assert len(open(out / "log.jsonl").read().splitlines()) == 2
    assert f"{summary['test_acc']:.4f}" in r.stdout


@pytest.mark.parametrize("args,match", [
    (["--model", "nope"], "unknown model"),
    (["--batch-size", "-3"], "batch_size"),
    (["--dataset", "nope"], "unknown dataset"),
])
def test_cli_bad_arguments_exit_2_without_run_dir(tmp_path, args, match, capsys):
    out = tmp_path / "bad_run"
    base = {"--dataset": "digits", "--model": "tiny_cnn"}
    for flag, val in zip(args[::2], args[1::2]):
        base[flag] = val
    argv = [x for kv in base.items() for x in kv] + ["--out", str(out), "--epochs", "1"]
    # in this process (no fresh jax): the command's start-up is test_cli_end_to_end_on_digits
    status, _, err = run_main("train_teacher", argv, capsys)
    assert status == 2 and match in err, err[-2000:]
    assert not out.exists()


def test_load_teacher_delegates_pth_files(tmp_path, monkeypatch):
    import ckd_jax.models

    calls = []
    monkeypatch.setattr(ckd_jax.models, "load_torch_checkpoint",
                        lambda src, name, n: calls.append((src, name, n)) or {"params": {}})
    pth = tmp_path / "ckpt_epoch_240.pth"
    pth.write_bytes(b"not really torch")
    assert load_teacher(pth, "tiny_cnn", 10) == {"params": {}}
    assert calls == [(str(pth), "tiny_cnn", 10)]
    txt = tmp_path / "weights.txt"
    txt.write_text("x")
    with pytest.raises(ValueError, match="not a PyTorch checkpoint"):
        load_teacher(txt, "tiny_cnn", 10)
    with pytest.raises(ValueError, match="which"):
        load_teacher(pth, "tiny_cnn", 10, which="first")
