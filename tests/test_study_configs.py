"""The real-data study configs (experiments/configs/*_study.py): each loads, and the commands in
its docstring agree with it (methods that exist, the config's learning rates and seeds), and the
student is smaller than the teacher, as the docstring claims. Nothing is trained here."""

from __future__ import annotations

import glob
import json
import os
import re
import shlex

import pytest
from experiments_support import ROOT  # tests/ on sys.path

from ckd_jax.models import param_count
from ckd_jax.train.config import load_config_file
from ckd_jax.train.methods import VARIANTS

STUDIES = sorted(glob.glob(os.path.join(ROOT, "experiments", "configs", "*_study.py")))
SHAPES = {"fashion_mnist": (28, 28, 1), "cifar10_jpeg": (32, 32, 3)}


def _docstring_command(path: str, script: str) -> list[str]:
    """The argv of the docstring's `python experiments/<script>` command (continuations joined)."""
    with open(path) as f:
        text = f.read()
    doc = text.split('"""')[1].replace("\\\n", " ")
    lines = [ln for ln in doc.splitlines()
             if f"python experiments/{script}" in ln and not ln.strip().startswith("#")]
    assert len(lines) == 1, f"{path}: expected one {script} command, found {len(lines)}"
    return shlex.split(lines[0].strip())


def _flag(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


# Each study's method list (the issue's, in its order) and the seeds of its sweep command.
METHODS = {
    "cifar10_study.py": (["ce", "kd", "ckd", "ckd_cal", "ckd_kl3", "mixup", "cutmix", "rkd",
                          "dist", "crd"], (1, 2, 3)),
    "fashion_mnist_study.py": (["ce", "kd", "ckd", "ckd_cal", "ckd_kl3", "mixup", "cutmix",
                                "rkd", "dist", "crd"], (1, 2, 3)),
    # the CNN study's command is its learning-rate pilot (seed 1; ckd is read off ckd_cal)
    "cifar10_cnn_study.py": (["ce", "kd", "ckd_cal", "ckd_kd_cal", "ckd_anchor", "mixup",
                              "mixup_kd", "crd"], (1,)),
}


def test_every_study_is_listed():
    assert sorted(os.path.basename(p) for p in STUDIES) == sorted(METHODS)


@pytest.mark.parametrize("path", STUDIES, ids=os.path.basename)
def test_study_docstring_commands_match_the_config(path):
    config = load_config_file(path).with_teacher()  # teacher_kwargs None: {}
    sweep = _docstring_command(path, "sweep.py")
    methods = _flag(sweep, "--methods").split(",")
    unknown = [m for m in methods if m not in VARIANTS]
    assert not unknown, f"unknown variants in the docstring: {unknown}"
    want_methods, want_seeds = METHODS[os.path.basename(path)]
    assert methods == want_methods
    assert tuple(float(v) for v in _flag(sweep, "--lrs").split(",")) == config.learning_rates
    assert tuple(int(v) for v in _flag(sweep, "--seeds").split(",")) == want_seeds
    assert config.seeds == (1, 2, 3)
    teacher = _docstring_command(path, "train_teacher.py")
    assert _flag(teacher, "--model") == config.teacher
    assert _flag(teacher, "--dataset") == config.dataset
    kwargs = json.loads(_flag(teacher, "--model-kwargs")) if "--model-kwargs" in teacher else {}
    assert kwargs == config.teacher_kwargs
    out = _flag(teacher, "--out")
    if "--set" in sweep and _flag(sweep, "--set").startswith("teacher_checkpoint="):
        assert _flag(sweep, "--set") == f"teacher_checkpoint={out}"
    else:  # the config names its committed teacher
        assert config.teacher_checkpoint == out
    report = _docstring_command(path, "report.py")
    if want_seeds == (1, 2, 3):  # the report reads the sweep's own folder
        assert report[2] == _flag(sweep, "--out")
    assert re.fullmatch(r"results/\w+", _flag(report, "--out"))


@pytest.mark.parametrize("path", STUDIES, ids=os.path.basename)
def test_study_student_is_smaller_than_its_teacher(path):
    config = load_config_file(path).with_teacher()  # teacher_kwargs None: {}
    shape = SHAPES[config.dataset]
    n_student = param_count(config.student, 10, input_shape=shape, **config.student_kwargs)
    n_teacher = param_count(config.teacher, 10, input_shape=shape, **config.teacher_kwargs)
    assert n_student < 0.6 * n_teacher, (n_student, n_teacher)
