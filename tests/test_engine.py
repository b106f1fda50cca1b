"""The student-training engine: data parallelism, populations, teacher calls, resume,
compilation count, methods, and configuration errors. Tiny models on digits, CPU."""

from __future__ import annotations

import json
import os

import jax
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path

from ckd_jax.train.config import DistillConfig
from ckd_jax.train.distill import run_distillation
from ckd_jax.train.engine import make_mesh


def _cfg(**kw) -> DistillConfig:
    return tiny_config(**{"method": "kd", "epochs": 2, "crd_negatives": 32, **kw})


@pytest.fixture(scope="module")
def teacher():
    return CountingTeacher()


def _run(cfg, teacher, **kw):
    return run_distillation(cfg, teacher_apply=teacher.apply,
                            teacher_variables=teacher.variables, **kw)


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def test_one_device_equals_eight_devices(tmp_path, teacher):
    assert len(jax.devices()) == 8, "conftest sets 8 fake CPU devices"
    cfg = _cfg(method="ckd", logit_table_dir=str(tmp_path / "tables"))
    one = _run(cfg, teacher, mesh=make_mesh(1))
    eight = _run(cfg, teacher, mesh=make_mesh(8))
    assert eight["devices"] == 8 and one["devices"] == 1
    final = lambda s: _leaves(s["_final"]["state"].params)
    for a, b in zip(final(one), final(eight)):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    assert one["members"][0]["last_val_top1"] == pytest.approx(
        eight["members"][0]["last_val_top1"], abs=1e-6)


def test_population_equals_separate_runs(tmp_path, teacher):
    tables = str(tmp_path / "tables")
    pop = _run(_cfg(seeds=(1, 2), learning_rates=(0.05, 0.1), logit_table_dir=tables), teacher,
               mesh=make_mesh(1))
    params = pop["_final"]["state"].params
    for i, (seed, lr) in enumerate([(1, 0.05), (1, 0.1), (2, 0.05), (2, 0.1)]):
        single = _run(_cfg(seeds=(seed,), learning_rates=(lr,), logit_table_dir=tables), teacher,
                      mesh=make_mesh(1))
        for a, b in zip(_leaves(params), _leaves(single["_final"]["state"].params)):
            np.testing.assert_allclose(a[i], b[0], rtol=1e-5, atol=1e-6)
        assert pop["members"][i]["last_test_top1"] == pytest.approx(
            single["members"][0]["last_test_top1"], abs=1e-6)


def test_teacher_calls_only_for_the_table(tmp_path):
    t = CountingTeacher(seed=3)
    cfg = _cfg(method="ckd", seeds=(1, 2), out_dir=str(tmp_path / "run"))
    first = _run(cfg, t, mesh=make_mesh(1))
    budget = first["budget"]
    assert budget == 64  # int(0.8 * 80)
    # exactly one call per budgeted sample and seed, none during student training
    assert t.calls == 2 * budget == first["teacher_calls_this_run"]
    assert all(m["teacher_calls"] == budget for m in first["members"])
    again = _run(cfg.replace(out_dir=str(tmp_path / "run2"),
                             logit_table_dir=str(tmp_path / "run" / "logit_tables")), t,
                 mesh=make_mesh(1))
    assert t.calls == 2 * budget and again["teacher_calls_this_run"] == 0


def test_ce_needs_no_teacher(tmp_path):
    s = run_distillation(_cfg(method="ce", out_dir=str(tmp_path / "ce")), mesh=make_mesh(1))
    assert s["members"][0]["teacher_calls"] == 0
    assert not os.path.exists(tmp_path / "ce" / "logit_tables")


def test_resume_equals_uninterrupted(tmp_path, teacher):
    tables = str(tmp_path / "tables")
    cfg = _cfg(epochs=4, logit_table_dir=tables, out_dir=str(tmp_path / "full"))
    full = _run(cfg, teacher, mesh=make_mesh(1))
    cut = cfg.replace(out_dir=str(tmp_path / "cut"))
    part = _run(cut, teacher, mesh=make_mesh(1), stop_after_epochs=2)
    assert not part["finished"]
    resumed = _run(cut, teacher, mesh=make_mesh(1))
    assert resumed["finished"]
    for a, b in zip(_leaves(full["_final"]["state"]), _leaves(resumed["_final"]["state"])):
        np.testing.assert_array_equal(a, b)
    rows = lambda d: [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert rows(str(tmp_path / "full")) == rows(str(tmp_path / "cut"))


def test_compiles_once_across_epochs_and_reloads(tmp_path, teacher):
    # plateau schedule with patience 1: reloads and LR drops happen between epochs
    cfg = _cfg(schedule="plateau", patience=1, max_lr_drops=3, max_epochs=6,
               logit_table_dir=str(tmp_path / "tables"))
    s = _run(cfg, teacher, mesh=make_mesh(1))
    assert s["_final"]["compiles"] == 1
    assert s["members"][0]["epochs_run"] >= 3


@pytest.mark.parametrize("overrides", [
    dict(method="ckd", pos_and_neg=3, ckd_form="kl"),
    dict(method="ckd", pos_and_neg=5, ckd_combine="interp", group_forward="joint"),
    dict(method="ckd", ckd_combine="add", tuple_pool=50),
    dict(method="mixup"), dict(method="mixup3"), dict(method="cutmix", mix_soft="kd"),
    dict(method="rkd"), dict(method="dist"), dict(method="crd"),
    dict(method="kd", labelled_remainder=True),
    dict(method="kd", compute_dtype="bfloat16"),
])
def test_every_method_trains(tmp_path, teacher, overrides):
    s = _run(_cfg(epochs=1, logit_table_dir=str(tmp_path / "t"), **overrides), teacher,
             mesh=make_mesh(1))
    m = s["members"][0]
    assert 0.0 <= m["last_test_top1"] <= 1.0
    leaves = _leaves(s["_final"]["state"].params)
    assert all(np.isfinite(x).all() for x in leaves)


@pytest.mark.parametrize("overrides, match", [
    (dict(method="nope"), "method='nope'"),
    (dict(student="resnet_nope"), "student='resnet_nope'"),
    (dict(subset_size=100000), "100000"),
    (dict(pos_and_neg=1, method="ckd"), "pos_and_neg=1"),
    (dict(batch_size=12), "divisible"),
])
def test_bad_configs_fail_before_any_output(tmp_path, overrides, match):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=match):
        run_distillation(_cfg(out_dir=str(out), **overrides), mesh=make_mesh(8),
                         teacher_apply=None, teacher_variables=None)
    assert not out.exists()


def test_table_from_another_teacher_or_split_is_refused(tmp_path):
    t1, t2 = CountingTeacher(seed=1), CountingTeacher(seed=2)
    tables = str(tmp_path / "tables")
    _run(_cfg(logit_table_dir=tables, epochs=1), t1, mesh=make_mesh(1))
    out = tmp_path / "run"
    with pytest.raises(ValueError, match="teacher_hash"):
        _run(_cfg(logit_table_dir=tables, out_dir=str(out)), t2, mesh=make_mesh(1))
    assert not out.exists()
    # another split: the seed-1 table renamed to seed 2 (its recorded seed is checked before
    # its indices, which test_logit_table.py covers)
    name = sorted(os.listdir(tables))[0]
    other = _cfg(seeds=(2,), logit_table_dir=tables, out_dir=str(out))
    os.replace(os.path.join(tables, name), os.path.join(tables, name.replace("seed1", "seed2")))
    with pytest.raises(ValueError, match="seed mismatch: the table was built for seed 1, the "
                                         "run expects seed 2"):
        _run(other, t1, mesh=make_mesh(1))
    assert not out.exists()
    assert t2.calls == 0


def test_missing_teacher_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="teacher_checkpoint"):
        run_distillation(_cfg(out_dir=str(tmp_path / "r")), mesh=make_mesh(1))
    assert not (tmp_path / "r").exists()


def test_scan_and_python_epoch_loops_agree(tmp_path, teacher):
    tables = str(tmp_path / "tables")
    runs = {loop: _run(_cfg(method="ckd", seeds=(1, 2), epoch_loop=loop, logit_table_dir=tables),
                       teacher, mesh=make_mesh(1))
            for loop in ("scan", "python")}
    for a, b in zip(_leaves(runs["scan"]["_final"]["state"]),
                    _leaves(runs["python"]["_final"]["state"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert runs["scan"]["_final"]["compiles"] == runs["python"]["_final"]["compiles"] == 1


def test_kill_between_checkpoints_replays_to_the_same_result(tmp_path, teacher):
    """Checkpoints every 2 pseudo-epochs, killed after 3: the rerun restores epoch 2, drops the
    metrics row of epoch 3 and recomputes it, and ends exactly where an uninterrupted run does."""
    tables = str(tmp_path / "tables")
    cfg = _cfg(epochs=4, logit_table_dir=tables, out_dir=str(tmp_path / "full"),
               checkpoint_every=2)
    full = _run(cfg, teacher, mesh=make_mesh(1))
    cut = cfg.replace(out_dir=str(tmp_path / "cut"))
    _run(cut, teacher, mesh=make_mesh(1), stop_after_epochs=3)
    rows = lambda d: [json.loads(x) for x in open(os.path.join(d, "metrics.jsonl"))]
    assert [r["epoch"] for r in rows(cut.out_dir)] == [1, 2, 3]
    assert sorted(os.listdir(os.path.join(cut.out_dir, "checkpoints"))) == ["2"]
    resumed = _run(cut, teacher, mesh=make_mesh(1))
    for a, b in zip(_leaves((full["_final"]["state"], full["_final"]["best"])),
                    _leaves((resumed["_final"]["state"], resumed["_final"]["best"]))):
        np.testing.assert_array_equal(a, b)
    assert rows(cfg.out_dir) == rows(cut.out_dir)
    assert full["members"] == resumed["members"]


def test_results_dict_ignores_only_result_invariant_fields():
    base = _cfg()
    same = base.replace(progress=not base.progress, checkpoint_seconds=5.0, eval_test_every=3,
                        checkpoint_every=4)
    assert base.results_dict() == same.results_dict()
    assert base.results_dict() != base.replace(calibration="table").results_dict()
    assert base.results_dict() != base.replace(epochs=base.epochs + 1).results_dict()
