"""Any image data, end to end: a spec derived from the data (or given), in-memory data for
run_distillation, `.npz` files through train_teacher.py / sweep.py / report.py / export.py, and
the docs/data.md own-data example run as written."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys

import numpy as np
import pytest
from engine_support import tiny_config  # tests/ is on sys.path
from experiments_support import ROOT, user_env

from ckd_jax.data import DatasetSpec, ImageSet, image_stats, resolve_spec
from ckd_jax.train.distill import run_distillation
from ckd_jax.train.engine import make_mesh


def _toy(n, h=12, w=12, seed=0, classes=3):
    """uint8 colour images whose mean colour depends on the class (learnable, tiny)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, classes, n)
    base = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200]])[labels % 3]
    x = base[:, None, None, :] + rng.normal(0, 40, size=(n, h, w, 3))
    return np.clip(x, 0, 255).astype(np.uint8), labels


def test_image_stats_match_numpy():
    x, _ = _toy(50, seed=1)
    mean, std = image_stats(x)
    ref = x.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(mean, ref.mean(0), atol=1e-6)
    np.testing.assert_allclose(std, ref.std(0), atol=1e-6)
    flat = np.full((3, 4, 4, 1), 7, np.uint8)  # a constant channel: std floored at 1/255
    assert image_stats(flat)[1] == (round(1 / 255, 6),)


def test_resolve_spec_defaults_overrides_and_errors():
    x, _ = _toy(20, h=10, w=12)
    spec = resolve_spec("npz:mine", x)
    assert (spec.crop_size, spec.padding, spec.flip, spec.eval_crop) == (10, 1, False, 10)
    assert spec.mean == image_stats(x)[0]
    spec = resolve_spec("npz:mine", x, {"flip": True, "mean": [0.5, 0.5, 0.5],
                                        "std": [0.25, 0.25, 0.25]})
    assert spec.flip and spec.mean == (0.5,) * 3 and spec.crop_size == 10
    # a registered dataset: given fields replace only themselves
    assert resolve_spec("cifar10", None, {"flip": False}) == DatasetSpec(
        (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), 32, 4, False, None)
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['crop'\]"):
        resolve_spec("npz:mine", x, {"crop": 8})
    with pytest.raises(ValueError, match="mean has 1 value"):
        resolve_spec("npz:mine", x, {"mean": [0.5], "std": [0.2]})
    with pytest.raises(ValueError, match="crop_size=40 is larger"):
        resolve_spec("npz:mine", x, {"crop_size": 40, "eval_crop": 10})


def test_run_distillation_on_in_memory_data(tmp_path):
    xtr, ytr = _toy(120, seed=2)
    xte, yte = _toy(60, seed=3)
    names = ("red", "green", "blue")
    train = ImageSet(xtr, ytr, names, "toy", "train")
    test = ImageSet(xte, yte, names, "toy", "test")
    cfg = tiny_config(method="ce", epochs=1, out_dir=str(tmp_path / "run"))
    summary = run_distillation(cfg, train=train, test=test, mesh=make_mesh(1))
    assert summary["dataset"] == "toy" and summary["finished"]
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert saved["dataset"] == "toy"
    # recorded once: the spec derived from the training split (numpy reference)
    ref = xtr.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(saved["data_spec"]["mean"], ref.mean(0), atol=1e-6)
    np.testing.assert_allclose(saved["data_spec"]["std"], ref.std(0), atol=1e-6)
    assert saved["data_spec"]["crop_size"] == 12 and saved["data_spec"]["padding"] == 1
    with pytest.raises(ValueError, match="both train= and test="):
        run_distillation(cfg, train=train)


def _blocks(lang: str) -> list[str]:
    text = open(os.path.join(ROOT, "docs", "data.md")).read()
    section = text.split("### A complete own-data example", 1)[1].split("\n## ", 1)[0]
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


# Tiny settings appended to each documented command (argparse and --set: the last one wins).
TINY = {
    "train_teacher.py": ["--epochs", "1", "--no-progress"],
    # one cell (the documented kd cell is the same code path) to keep the test short
    "sweep.py": ["--set", "epochs=1", "--seeds", "1", "--jobs", "1", "--set",
                 "progress=false", "--methods", "ckd_cal"],
    "distill.py": ["--set", "epochs=1", "--set", "seeds=1", "--set", "progress=false"],
}


@pytest.mark.slow
def test_own_data_example_runs_as_documented(tmp_path):
    (code,) = _blocks("python")
    (commands,) = _blocks("bash")
    exec(compile(code.replace('"my_data.npz"', repr(str(tmp_path / "my_data.npz"))),
                 "docs/data.md", "exec"), {})
    env = user_env(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT)
    lines = commands.replace("\\\n", " ").strip().splitlines()
    assert [shlex.split(ln)[1] for ln in lines] == [
        "experiments/train_teacher.py", "experiments/sweep.py", "experiments/report.py",
        "experiments/export.py"]
    for line in lines:
        argv = shlex.split(line)
        script = os.path.basename(argv[1])
        # the docs run from the repository root; here the files go to tmp_path
        repo = lambda a: os.path.join(ROOT, a) if a.startswith("experiments/") else a
        argv = [sys.executable, *map(repo, argv[1:]), *TINY.get(script, [])]
        r = subprocess.run(argv, cwd=tmp_path, env=env, capture_output=True, text=True,
                           timeout=600)
        assert r.returncode == 0, f"{line}\n{r.stderr[-3000:]}"
    teacher = json.load(open(tmp_path / "runs" / "my_teacher" / "teacher.json"))
    assert teacher["dataset"] == "npz" and teacher["data_spec"]["crop_size"] == 8
    cell = json.load(open(tmp_path / "runs" / "my_sweep" / "ckd_cal_S250" / "config.json"))
    assert cell["teacher"] == "tiny_cnn" and cell["teacher_kwargs"] == {"width": 32}
    assert cell["data_spec"]["mean"] == teacher["data_spec"]["mean"]  # one split, one answer
    assert (tmp_path / "runs" / "my_sweep" / "report" / "table.md").exists()
    assert (tmp_path / "my_student.msgpack").exists()
