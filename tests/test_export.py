"""Export: `fold_offset_into_head` with any apply_fn, `experiments/export.py` round trip (the
exported network's plain predictions are the run's calibrated ones), `load_exported`, and the
docs/calibration.md snippet run as written."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path
from experiments_support import ROOT, run_main, user_env

from ckd_jax.data import dataset_spec, eval_view, load_train_test
from ckd_jax.export import load_exported, read_exported, select_member
from ckd_jax.losses import fold_offset_into_head
from ckd_jax.models import create_model
from ckd_jax.train.distill import run_distillation


class _Plain(nn.Module):  # a flax module whose __call__ has no `train` keyword
    @nn.compact
    def __call__(self, x):
        x = nn.relu(nn.Dense(6)(x.reshape((x.shape[0], -1))))
        return nn.Dense(4)(x)


@pytest.mark.parametrize("how", ["module.apply", "function"])
def test_fold_works_without_a_train_keyword(how):
    m = _Plain()
    x = jnp.asarray(np.random.default_rng(0).normal(size=(5, 3, 3, 1)), jnp.float32)
    v = m.init(jax.random.key(0), x)
    apply = m.apply if how == "module.apply" else (lambda variables, inp: m.apply(variables, inp))
    c = jnp.asarray([0.5, -1.0, 2.0, 0.25])
    folded = fold_offset_into_head(apply, v, c, x[:2])
    np.testing.assert_allclose(m.apply(folded, x), m.apply(v, x) - c, atol=1e-5)
    # only the head bias changed: Dense_1/bias - c; the hidden bias (6,) is untouched
    np.testing.assert_allclose(folded["params"]["Dense_1"]["bias"],
                               v["params"]["Dense_1"]["bias"] - c, atol=1e-7)
    np.testing.assert_array_equal(folded["params"]["Dense_0"]["bias"],
                                  v["params"]["Dense_0"]["bias"])


@pytest.fixture(scope="module")
def calibrated_run(tmp_path_factory):
    """A finished 2-member calibrated CKD run on digits (width-4 TinyCNNs, 2 pseudo-epochs)."""
    out = tmp_path_factory.mktemp("export") / "run"
    t = CountingTeacher()
    cfg = tiny_config(method="ckd", calibration="table", epochs=2, seeds=(1, 2),
                      out_dir=str(out))
    summary = run_distillation(cfg, teacher_apply=t.apply, teacher_variables=t.variables)
    return cfg, summary, str(out)


def _cli(*args):
    env = user_env(JAX_PLATFORMS="cpu")
    return subprocess.run([sys.executable, os.path.join(ROOT, "experiments", "export.py"),
                           *args], capture_output=True, text=True, env=env, timeout=300,
                          cwd=ROOT)


def test_export_round_trip_equals_calibrated_predictions(calibrated_run, tmp_path):
    cfg, summary, run_dir = calibrated_run
    path = tmp_path / "student.msgpack"
    r = _cli(run_dir, "--out", str(path))
    assert r.returncode == 0, r.stderr[-3000:]
    i = select_member(summary)
    assert f"exported member {i}" in r.stdout

    # the reference: the run's best weights of member i (in memory), calibrated by hand
    params, batch_stats, offsets = summary["_final"]["best"]
    best = {"params": jax.tree.map(lambda a: a[i], params["student"]),
            "batch_stats": jax.tree.map(lambda a: a[i], batch_stats)}
    offset = np.asarray(summary["members"][i]["logit_offset"], np.float32)
    np.testing.assert_array_equal(offset, np.asarray(offsets[i]))  # summary == checkpoint
    _, test = load_train_test("digits")
    x = eval_view(test.images, dataset_spec("digits"))
    ref_model = create_model(cfg.student, 10, **cfg.student_kwargs)
    calibrated = np.asarray(ref_model.apply(best, x, train=False)) - offset

    # the three documented lines
    model, variables = load_exported(path)
    logits = np.asarray(model.apply(variables, x, train=False))
    # Tolerance: folding moves the subtraction of the offset into the bias addition, a float32
    # reassociation: |error| <= a few ulps of the logits (~1e-6 here); 1e-5 leaves margin.
    np.testing.assert_allclose(logits, calibrated, atol=1e-5)
    np.testing.assert_array_equal(logits.argmax(-1), calibrated.argmax(-1))
    # ... and the run's own figure: calibrated test top-1 of the selected weights
    acc = float(np.mean(logits.argmax(-1) == test.labels))
    assert acc == pytest.approx(summary["members"][i]["test_top1_at_best_val"], abs=1e-6)

    header, _ = read_exported(path)
    assert header["model"] == "tiny_cnn" and header["model_kwargs"] == {"width": 4}
    assert header["num_classes"] == 10 and header["logit_offset_folded"] is True
    assert header["input"]["mean"] == list(dataset_spec("digits").mean)
    assert header["source"]["member"] == i and header["source"]["seed"] == cfg.seeds[i]


def test_export_member_choice_and_errors(calibrated_run, tmp_path, capsys):
    cfg, summary, run_dir = calibrated_run
    from ckd_jax.export import export_run

    path, header = export_run(run_dir, member=1)
    assert path == os.path.join(run_dir, "exported", "student_member1.msgpack")
    assert header["source"]["seed"] == 2
    with pytest.raises(ValueError, match="member=5 is out of range: the run has 2"):
        export_run(run_dir, member=5)
    with pytest.raises(FileNotFoundError, match="summary"):
        export_run(tmp_path)  # not a run dir
    (tmp_path / "junk.msgpack").write_bytes(b"\x00\x01 not msgpack")
    with pytest.raises(ValueError, match="not a ckd_jax export"):
        read_exported(tmp_path / "junk.msgpack")
    status, _, err = run_main("export", [str(tmp_path / "missing")], capsys)  # in-process
    assert status == 2 and "does not exist" in err


def _doc_snippet() -> str:
    text = open(os.path.join(ROOT, "docs", "calibration.md")).read()
    section = text.split("## Exporting a calibrated student", 1)[1]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert blocks, "no python block in the export section"
    return blocks[0]


@pytest.mark.slow
def test_calibration_doc_snippet_runs_as_written(tmp_path, monkeypatch):
    """The snippet names runs/teacher_digits (made by the documented train_teacher.py command):
    a 1-epoch teacher there, then the snippet itself, unchanged, in that folder."""
    from ckd_jax.train.supervised import TeacherConfig, train_teacher

    monkeypatch.chdir(tmp_path)
    train_teacher(TeacherConfig(dataset="digits", model="tiny_cnn", epochs=1, batch_size=64,
                                lr=0.05, out="runs/teacher_digits", progress=False))
    code = _doc_snippet()
    assert "import" in code and "num_classes" in code and "student_kwargs" in code
    scope: dict = {}
    exec(compile(code, "docs/calibration.md", "exec"), scope)  # noqa: S102
    assert os.path.exists(tmp_path / "runs" / "digits_ckd_cal" / "summary.json")
    assert json.load(open(tmp_path / "runs" / "digits_ckd_cal" / "config.json"))[
        "teacher"] == "tiny_cnn"
