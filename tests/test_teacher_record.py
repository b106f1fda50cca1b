"""Teachers that describe themselves: a teacher run dir's teacher.json gives the defaults of
`teacher` / `teacher_kwargs`; a real mismatch is one line naming the key and both shapes."""

from __future__ import annotations

import json
import os

import pytest
from engine_support import tiny_config  # tests/ is on sys.path

from ckd_jax.data import load_train_test
from ckd_jax.train.config import DistillConfig, apply_overrides, teacher_record
from ckd_jax.train.distill import run_distillation
from ckd_jax.train.supervised import TeacherConfig, load_teacher, train_teacher


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory):
    """A 1-epoch width-4 TinyCNN teacher run dir on digits (teacher.json records width 4)."""
    out = tmp_path_factory.mktemp("rec") / "teacher"
    train, test = load_train_test("digits")
    train_teacher(TeacherConfig(dataset="digits", model="tiny_cnn", model_kwargs={"width": 4},
                                out=str(out), epochs=1, batch_size=64, lr=0.05,
                                progress=False), train=train, test=test)
    return str(out)


def test_record_fills_unset_teacher_fields(teacher_dir):
    path, info = teacher_record(teacher_dir)
    assert path == os.path.join(teacher_dir, "teacher.json") and info["model"] == "tiny_cnn"
    assert teacher_record(os.path.join(teacher_dir, "checkpoints"))[0] == path
    cfg = DistillConfig(teacher_checkpoint=teacher_dir).with_teacher()
    assert (cfg.teacher, cfg.teacher_kwargs) == ("tiny_cnn", {"width": 4})
    # no run dir: the old defaults
    assert DistillConfig().with_teacher().teacher == "tiny_cnn"
    assert DistillConfig().with_teacher().teacher_kwargs == {}
    # explicit values win where they do not clash
    assert DistillConfig(teacher_checkpoint=teacher_dir,
                         teacher_kwargs={"width": 8}).with_teacher().teacher_kwargs == {"width": 8}
    # --set of a dict field whose default is None
    cfg = apply_overrides(DistillConfig(), ['teacher_kwargs={"width": 4}', "teacher=mlp"])
    assert cfg.teacher_kwargs == {"width": 4} and cfg.teacher == "mlp"


def test_run_takes_teacher_from_its_run_dir(teacher_dir, tmp_path):
    cfg = tiny_config(teacher=None, teacher_kwargs=None, teacher_checkpoint=teacher_dir,
                      method="kd", epochs=1, out_dir=str(tmp_path / "run"))
    summary = run_distillation(cfg)
    assert summary["teacher"] == "tiny_cnn" and summary["teacher_calls_this_run"] == 64
    saved = json.load(open(tmp_path / "run" / "config.json"))
    assert saved["teacher"] == "tiny_cnn" and saved["teacher_kwargs"] == {"width": 4}
    # the unresolved config still matches the run it made (resume, sweeps)
    assert cfg.differs_from_saved(str(tmp_path / "run" / "config.json")) == []


def test_a_run_reads_teacher_json_once_and_builds_its_method_once(teacher_dir, tmp_path,
                                                                   monkeypatch):
    """One run_distillation call resolves its config once (`DistillConfig.resolve`): teacher.json
    is read once and the method built once, also when validation needs the method
    (calibration="table") and when the run resumes (its config.json checked)."""
    import ckd_jax.train.config as config_module
    import ckd_jax.train.methods as methods_module

    calls = {"record": 0, "method": 0}

    def counted(name, f):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return f(*args, **kwargs)
        return wrapper

    monkeypatch.setattr(config_module, "teacher_record",
                        counted("record", config_module.teacher_record))
    monkeypatch.setattr(methods_module, "build_method",
                        counted("method", methods_module.build_method))
    cfg = tiny_config(teacher=None, teacher_kwargs=None, teacher_checkpoint=teacher_dir,
                      method="kd", calibration="table", epochs=2, checkpoint_seconds=0.0,
                      out_dir=str(tmp_path / "run"))
    run_distillation(cfg, stop_after_epochs=1)
    assert calls == {"record": 1, "method": 1}
    summary = run_distillation(cfg)  # resumes: config.json checked against the resolved config
    assert summary["finished"] and calls == {"record": 2, "method": 2}


def test_conflicting_kwargs_name_key_and_shapes(teacher_dir, tmp_path):
    cfg = tiny_config(teacher="tiny_cnn", teacher_kwargs={"width": 8},
                      teacher_checkpoint=teacher_dir, method="kd", epochs=1,
                      out_dir=str(tmp_path / "run"),
                      logit_table_dir=str(tmp_path / "tables"))  # a table to build: a load
    with pytest.raises(ValueError) as e:
        run_distillation(cfg)
    msg = str(e.value)
    assert "\n" not in msg
    assert msg.startswith(f"teacher kwargs do not match {teacher_dir}/teacher.json: width: "
                          "checkpoint has params/Conv_0/kernel (3, 3, 1, 4), config builds "
                          "(3, 3, 1, 8)"), msg
    assert not (tmp_path / "run").exists()  # failed before writing anything


def test_conflicting_model_is_one_line(teacher_dir):
    with pytest.raises(ValueError, match=r"teacher='mlp' does not match .*teacher.json: the "
                                         r"checkpoint holds a 'tiny_cnn' model"):
        DistillConfig(teacher="mlp", teacher_checkpoint=teacher_dir).validate()


def test_equivalent_kwargs_are_not_a_mismatch(teacher_dir):
    # width 4 given explicitly, plus a kwarg whose value is the default: same shapes, loads
    ref = load_teacher(teacher_dir, "tiny_cnn", 10)
    same = load_teacher(teacher_dir, "tiny_cnn", 10, model_kwargs={"width": 4})
    assert json.dumps(jax_shapes(ref)) == json.dumps(jax_shapes(same))
    with pytest.raises(ValueError, match="width: checkpoint has params/Conv_0/kernel"):
        load_teacher(teacher_dir, "tiny_cnn", 10, model_kwargs={})  # default width 16


def jax_shapes(tree):
    import jax

    return [list(x.shape) for x in jax.tree.leaves(tree)]


def test_runs_on_one_teacher_share_its_tables(teacher_dir, tmp_path):
    """Two runs on the same teacher and seed: the tables go beside the teacher run (config.json
    says where), so the second run makes no teacher call."""
    import shutil

    teacher = tmp_path / "teacher"
    shutil.copytree(teacher_dir, teacher, ignore=shutil.ignore_patterns("logit_tables"))
    cfg = tiny_config(teacher=None, teacher_kwargs=None, teacher_checkpoint=str(teacher),
                      method="kd", epochs=1, out_dir=str(tmp_path / "a"))
    assert run_distillation(cfg)["teacher_calls_this_run"] == 64
    assert os.listdir(teacher / "logit_tables") == ["digits_tiny_cnn_augmented_S80_seed1.npz"]
    assert not (tmp_path / "a" / "logit_tables").exists()
    saved = json.load(open(tmp_path / "a" / "config.json"))
    assert saved["logit_table_dir"] == str(teacher / "logit_tables")
    second = run_distillation(cfg.replace(out_dir=str(tmp_path / "b")))
    assert second["teacher_calls_this_run"] == 0


def test_table_folder_default_and_fallbacks(tmp_path, monkeypatch, capsys):
    from ckd_jax.logit_table import table_folder

    teacher, out = tmp_path / "teacher", str(tmp_path / "run")
    (teacher / "checkpoints").mkdir(parents=True)
    shared, own = str(teacher / "logit_tables"), os.path.join(out, "logit_tables")
    assert table_folder("mine", str(teacher), out) == "mine"  # an explicit folder wins
    assert table_folder(None, str(teacher), out) == shared
    assert table_folder(None, str(teacher / "checkpoints"), out) == shared
    assert table_folder(None, None, out) == own  # a teacher given in memory
    (tmp_path / "t.pth").write_bytes(b"x")
    assert table_folder(None, str(tmp_path / "t.pth"), out) == own
    assert table_folder(None, str(teacher), None) == shared
    os.makedirs(own)
    open(os.path.join(own, "x_seed1.npz"), "wb").close()  # a run made before this default
    assert table_folder(None, str(teacher), out) == own
    os.remove(os.path.join(own, "x_seed1.npz"))
    capsys.readouterr()
    monkeypatch.setattr(os, "access", lambda path, mode: False)  # a read-only teacher folder
    assert table_folder(None, str(teacher), out) == own
    assert f"the teacher's folder {teacher} is not writable: the logit tables go to {own}" in (
        capsys.readouterr().err)


_COMMITTED_TEACHERS = sorted(
    os.path.join(root, "teacher") for root in
    (os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "results", name)
     for name in ("cifar10", "cifar10_cnn", "fashion_mnist", "fashion_mnist_tinycnn_partial")))


@pytest.mark.parametrize("folder", _COMMITTED_TEACHERS, ids=lambda p: p.split(os.sep)[-2])
def test_committed_teacher_folders_still_load(folder):
    """Teacher folders written before TeacherConfig shared RunConfig (their config says "out",
    not "out_dir") give their config, fill a student's teacher fields and load their weights."""
    path, info = teacher_record(folder)
    saved = info["config"]
    assert "out" in saved and "out_dir" not in saved  # the old name, as committed
    cfg = TeacherConfig(**saved)
    assert cfg.out_dir == saved["out"] == cfg.out and cfg.model == info["model"]
    cfg.validate()
    student = DistillConfig(teacher_checkpoint=folder).with_teacher()
    assert student.teacher == info["model"]
    assert student.teacher_kwargs == (saved["model_kwargs"] or {})
    variables = load_teacher(folder, info["model"], info["num_classes"])
    assert set(variables) == {"params", "batch_stats"} and variables["params"]


def test_teacher_config_out_is_out_dir():
    """TeacherConfig(out=...) (its old field name) is TeacherConfig(out_dir=...); both is an
    error."""
    assert TeacherConfig(out="a") == TeacherConfig(out_dir="a")
    with pytest.raises(TypeError, match="out_dir or its old name out"):
        TeacherConfig(out="a", out_dir="b")
