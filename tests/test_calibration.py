"""Logit-offset calibration: the pure functions (hand values, shift invariance, no-op, export
by folding into the head bias) and the engine's use of it (diagnostic under "none", selection
under "table", offset with the best weights, resume, CE config error, two best slots in one
run)."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path

from ckd_jax.budget import select_budget
from ckd_jax.data import dataset_spec, eval_view, load_train_test
from ckd_jax.logit_table import LogitTable
from ckd_jax.losses import (
    apply_logit_offset,
    estimate_logit_offset,
    find_head_bias,
    fold_offset_into_head,
)
from ckd_jax.models import create_model
from ckd_jax.train.config import DistillConfig
from ckd_jax.train.distill import run_distillation, table_filename
from ckd_jax.train.engine import make_mesh
from ckd_jax.train.methods import VARIANTS, variant_overrides


# ----------------------------------------------------------------------------- pure functions
def test_offset_hand_values():
    s = jnp.array([[1.0, 2.0, 3.0], [3.0, 0.0, 1.0]])
    t = jnp.array([[0.0, 1.0, 1.0], [2.0, 1.0, 1.0]])
    # mean(s) = [2, 1, 2], mean(t) = [1, 1, 1]
    np.testing.assert_allclose(estimate_logit_offset(s, t), [1.0, 0.0, 1.0])
    # mask keeps row 0 only: s0 - t0 = [1, 1, 2]
    np.testing.assert_allclose(estimate_logit_offset(s, t, mask=jnp.array([True, False])),
                               [1.0, 1.0, 2.0])
    np.testing.assert_allclose(apply_logit_offset(s, jnp.array([1.0, 0.0, 1.0])),
                               [[0.0, 2.0, 2.0], [2.0, 0.0, 0.0]])


def test_offset_is_the_least_squares_shift():
    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
    c = np.asarray(estimate_logit_offset(jnp.asarray(s), jnp.asarray(t)))
    loss = lambda cc: np.sum((s - cc - t) ** 2)
    for _ in range(5):  # any other shift fits worse
        assert loss(c) < loss(c + rng.normal(scale=0.1, size=7))


def test_calibrated_predictions_ignore_any_shared_shift():
    rng = np.random.default_rng(1)
    s_train, t_train = rng.normal(size=(40, 10)), rng.normal(size=(40, 10))
    s_test = rng.normal(size=(30, 10))
    shift = rng.normal(scale=20.0, size=10)  # large enough to flip raw predictions
    pred = lambda tr, te: np.asarray(apply_logit_offset(
        jnp.asarray(te), estimate_logit_offset(jnp.asarray(tr), jnp.asarray(t_train)))
    ).argmax(-1)
    np.testing.assert_array_equal(pred(s_train, s_test), pred(s_train + shift, s_test + shift))
    assert (s_test.argmax(-1) != (s_test + shift).argmax(-1)).any()  # raw ones do change


def test_student_matching_teacher_is_a_noop():
    t = jnp.asarray(np.random.default_rng(2).normal(size=(20, 5)), jnp.float32)
    c = estimate_logit_offset(t, t)
    np.testing.assert_array_equal(np.asarray(c), np.zeros(5))
    np.testing.assert_array_equal(np.asarray(apply_logit_offset(t, c)), np.asarray(t))


def test_bad_shapes_are_clear_errors():
    with pytest.raises(ValueError, match="same shape"):
        estimate_logit_offset(jnp.zeros((3, 4)), jnp.zeros((3, 5)))
    with pytest.raises(ValueError, match=r"\[N, C\]"):
        estimate_logit_offset(jnp.zeros((3,)), jnp.zeros((3,)))
    with pytest.raises(ValueError, match="offset must be"):
        apply_logit_offset(jnp.zeros((3, 4)), jnp.zeros(5))


@pytest.mark.parametrize("name,kwargs,shape", [("tiny_cnn", {"width": 4}, (8, 8, 1)),
                                               ("mlp", {"width": 16}, (8, 8, 1)),
                                               ("resnet8", {}, (32, 32, 3))])
def test_fold_offset_into_head_gives_the_calibrated_network(name, kwargs, shape):
    model = create_model(name, 10, **kwargs)
    x = jax.random.normal(jax.random.PRNGKey(0), (6,) + shape)
    variables = model.init(jax.random.PRNGKey(1), x[:1], train=False)
    offset = jax.random.normal(jax.random.PRNGKey(2), (10,)) * 5.0
    exported = fold_offset_into_head(model.apply, variables, offset, x[:2])
    want = apply_logit_offset(model.apply(variables, x, train=False), offset)
    np.testing.assert_allclose(model.apply(exported, x, train=False), want, atol=1e-4)
    # only the head bias changed
    keys = find_head_bias(model.apply, variables, x[:2])
    flat = lambda v: dict(jax.tree_util.tree_flatten_with_path(v["params"])[0])
    changed = [p for p, a in flat(variables).items()
               if not np.array_equal(np.asarray(a), np.asarray(flat(exported)[p]))]
    assert len(changed) == 1 and tuple(str(k.key) for k in changed[0]) == keys


def test_shift_of_the_head_bias_leaves_calibrated_predictions_unchanged():
    model = create_model("tiny_cnn", 10, width=4)
    x = jax.random.normal(jax.random.PRNGKey(3), (12, 8, 8, 1))
    variables = model.init(jax.random.PRNGKey(4), x[:1], train=False)
    teacher = jax.random.normal(jax.random.PRNGKey(5), (8, 10))
    shifted = fold_offset_into_head(model.apply, variables, -30.0 * jnp.arange(10.0), x[:2])

    def calibrated(v):
        c = estimate_logit_offset(model.apply(v, x[:8], train=False), teacher)
        return np.asarray(apply_logit_offset(model.apply(v, x[8:], train=False), c))

    np.testing.assert_allclose(calibrated(variables), calibrated(shifted), atol=1e-3)


# ----------------------------------------------------------------------------------- config
def test_ce_with_table_calibration_is_a_config_error():
    with pytest.raises(ValueError, match="calibration='table' needs a logit table"):
        DistillConfig(method="ce", calibration="table").validate()
    with pytest.raises(ValueError, match="calibration='tabel' is not supported; accepted: "
                                         "none, table"):
        DistillConfig(method="ckd", calibration="tabel").validate()
    with pytest.raises(ValueError, match="w_anchor"):
        DistillConfig(method="kd", w_anchor=1.0).validate()
    with pytest.raises(ValueError, match="w_sample=1.0 applies to method='ckd' only"):
        DistillConfig(method="kd", w_sample=1.0).validate()
    with pytest.raises(ValueError, match="w_sample=-1.0 must be >= 0"):
        DistillConfig(method="ckd", w_sample=-1.0).validate()


def test_named_variants():
    assert variant_overrides("ckd_cal") == {**VARIANTS["ckd"], "calibration": "table"}
    assert variant_overrides("ckd_kd_cal") == {**VARIANTS["ckd_cal"], "w_sample": 1.0}
    assert DistillConfig(**variant_overrides("ckd_anchor")).validate().w_anchor > 0


# ----------------------------------------------------------------------------------- engine
@pytest.fixture(scope="module")
def teacher():
    return CountingTeacher()


def _cfg(tmp_path, **kw):
    return tiny_config(**{"method": "ckd", "epochs": 3, "seeds": (1, 2),
                          "logit_table_dir": str(tmp_path / "tables"), **kw})


def _run(cfg, teacher, **kw):
    return run_distillation(cfg, teacher_apply=teacher.apply,
                            teacher_variables=teacher.variables, mesh=make_mesh(1), **kw)


def _rows(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(x) for x in f]


def _numpy_offset(cfg, summary, member):
    """The offset of the best weights recomputed outside the engine (NumPy means)."""
    train, _ = load_train_test(cfg.dataset)
    spec = dataset_spec(train.name)
    model = create_model(cfg.student, 10, **cfg.student_kwargs)
    params, stats, _ = summary["_final"]["best"]
    v = {"params": jax.tree.map(lambda a: a[member], params["student"]),
         "batch_stats": jax.tree.map(lambda a: a[member], stats)}
    seed = cfg.members()[member][0]
    split = select_budget(len(train.labels), seed=seed, subset_size=cfg.subset_size)
    table = LogitTable.load(os.path.join(cfg.logit_table_dir, table_filename(
        cfg, train.name, split.subset_size, seed)))
    s = np.asarray(model.apply(v, eval_view(jnp.asarray(train.images[split.teacher_idx]), spec),
                               train=False), np.float64)
    return s.mean(0) - np.asarray(table.logits, np.float64).mean(0)


@pytest.mark.slow
def test_diagnostic_under_none_and_selection_under_table(tmp_path, teacher):
    cfgs = {c: _cfg(tmp_path, out_dir=str(tmp_path / c), calibration=c, eval_test_every=1)
            for c in ("none", "table")}
    cfgs["table"] = cfgs["table"].replace(also_select_raw=True)  # two best slots
    none, table = (_run(cfgs[c], teacher) for c in ("none", "table"))
    # Calibration never touches training: same final weights (cosine, no reloads).
    for a, b in zip(jax.tree.leaves(none["_final"]["state"].params),
                    jax.tree.leaves(table["_final"]["state"].params)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for summary, out, sel in ((none, "none", ""), (table, "table", "_calibrated")):
        rows = _rows(str(tmp_path / out))
        assert all(np.isfinite(r["val_top1_calibrated"]) and np.isfinite(r["test_top1"])
                   for r in rows)
        assert summary["calibration"] == out
        for i, m in enumerate(summary["members"]):
            mine = [r for r in rows if r["member"] == i]
            best = max(mine, key=lambda r: (r[f"val_top1{sel}"], -r["epoch"]))  # first max
            assert m["best_epoch"] == best["epoch"]
            assert m["test_top1_at_best_val"] == pytest.approx(best[f"test_top1{sel}"])
            assert m["test_top1_at_best_val_raw"] == pytest.approx(best["test_top1"])
            assert m["test_top1_at_best_val_calibrated"] == pytest.approx(
                best["test_top1_calibrated"])
            assert m["logit_offset_norm"] == pytest.approx(best["logit_offset_norm"], rel=1e-5)
            np.testing.assert_allclose(m["logit_offset"], _numpy_offset(cfgs[out], summary, i),
                                       atol=2e-4)
    with open(tmp_path / "table" / "summary.json") as f:
        assert json.load(f)["members"][0]["selected_on"] == "calibrated"

    # The second slot of the calibrated run is the raw run: same epoch, validation, test
    # figures and weights, bit for bit (one run answers for ckd and ckd_cal).
    for m_none, m_table in zip(none["members"], table["members"]):
        second = m_table["raw_selection"]
        for key in ("best_epoch", "best_val_top1", "test_top1_at_best_val",
                    "test_top5_at_best_val", "test_top1_at_best_val_calibrated",
                    "last_test_top1", "last_test_top5", "last_val_top1"):
            assert second[key] == m_none[key], key
    assert "raw_selection" not in none["members"][0]
    for a, b in zip(jax.tree.leaves(none["_final"]["best"][:2]),
                    jax.tree.leaves(table["_final"]["best_raw"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    from ckd_jax import results as R

    rows = R.rows_from_summary(json.load(open(tmp_path / "table" / "summary.json")),
                               "ckd_cal", "ckd_cal_S200")
    plain = R.rows_from_summary(json.load(open(tmp_path / "none" / "summary.json")),
                                "ckd", "ckd_S200")
    assert [r["variant"] for r in rows] == ["ckd_cal"] * 2 + ["ckd_cal@raw"] * 2
    assert all("raw_selection" not in r for r in rows)
    for mine, theirs in zip(rows[2:], plain):
        assert mine["calibration"] == "none" and mine["selected_on"] == "raw"
        for key in ("seed", "lr", "best_epoch", "best_val_top1", "test_top1_at_best_val",
                    "test_top1_at_best_val_raw", "test_top1_at_best_val_calibrated"):
            assert mine[key] == theirs[key], key
    (agg,) = R.aggregate([r for r in rows if r["variant"] == "ckd_cal@raw"])
    (agg_plain,) = R.aggregate(plain)
    assert (agg["lr"], agg["mean"]) == (agg_plain["lr"], agg_plain["mean"])


def test_two_best_slots_resume_and_config_errors(tmp_path, teacher):
    cfg = _cfg(tmp_path, epochs=4, calibration="table", also_select_raw=True,
               out_dir=str(tmp_path / "full"))
    full = _run(cfg, teacher)
    cut = cfg.replace(out_dir=str(tmp_path / "cut"))
    assert not _run(cut, teacher, stop_after_epochs=2)["finished"]
    resumed = _run(cut, teacher)
    assert [m["raw_selection"] for m in full["members"]] == [
        m["raw_selection"] for m in resumed["members"]]
    for a, b in zip(jax.tree.leaves(full["_final"]["best_raw"]),
                    jax.tree.leaves(resumed["_final"]["best_raw"])):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for bad, match in (({"calibration": "none"}, "calibration='none', schedule='cosine'"),
                       ({"schedule": "plateau"}, "calibration='table', schedule='plateau'")):
        with pytest.raises(ValueError, match=match):
            DistillConfig(method="ckd", **{"calibration": "table", "schedule": "cosine",
                                           **bad}, also_select_raw=True).validate()


def test_ce_has_no_calibrated_figure(tmp_path):
    s = run_distillation(tiny_config(method="ce", epochs=1, out_dir=str(tmp_path / "ce")),
                         mesh=make_mesh(1))
    assert s["members"][0]["test_top1_at_best_val_calibrated"] is None
    assert s["members"][0]["logit_offset"] is None
    assert s["members"][0]["test_top1_at_best_val"] is not None


def test_resume_with_calibration_equals_uninterrupted(tmp_path, teacher):
    cfg = _cfg(tmp_path, epochs=4, calibration="table", schedule="plateau", patience=1,
               max_epochs=4, out_dir=str(tmp_path / "full"))
    full = _run(cfg, teacher)
    assert any(m["plateaus"] > 0 for m in full["members"])  # a reload happened
    cut = cfg.replace(out_dir=str(tmp_path / "cut"))
    assert not _run(cut, teacher, stop_after_epochs=2)["finished"]
    resumed = _run(cut, teacher)
    for a, b in zip(jax.tree.leaves((full["_final"]["state"], full["_final"]["best"])),
                    jax.tree.leaves((resumed["_final"]["state"], resumed["_final"]["best"]))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert _rows(str(tmp_path / "full")) == _rows(str(tmp_path / "cut"))
    strip = lambda s: {k: v for k, v in s.items() if k not in ("_final", "train_seconds",
                                                           "teacher_calls_this_run")}
    assert strip(full) == strip(resumed)


# ----------------------------------------------------------------------------------- report
def test_report_marks_calibrated_rows(tmp_path):
    import csv

    from experiments_support import load_experiment

    report = load_experiment("report")
    rows = []
    for variant, calibration, acc in (("ckd", "none", 0.4), ("ckd_cal", "table", 0.8)):
        for seed in (1, 2):
            rows.append({"variant": variant, "method": "ckd", "subset_size": 250, "budget": 200,
                         "teacher_calls": 200, "seed": seed, "lr": 0.05, "best_val_top1": acc,
                         "test_top1_at_best_val": acc + 0.01 * seed,
                         "calibration": calibration})
    path = tmp_path / "results.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    rep = report.make_report(str(path), str(tmp_path / "rep"))
    lines = {}
    for line in rep["table"].splitlines():  # the main table comes first
        if line.startswith("| ckd"):
            lines.setdefault(line.split(" | ")[0].strip("| "), line)
    assert "| raw |" in lines["ckd"] and "| calibrated |" in lines["ckd_cal"]
    assert "calibrated* = validation and test on logits minus one offset" in rep["table"]
    with open(rep["paths"]["table.csv"]) as f:
        got = {r["variant"]: r["logits"] for r in csv.DictReader(f)}
    assert got == {"ckd": "raw", "ckd_cal": "calibrated"}


def test_ckd_with_per_sample_terms_adds_ce_and_kd_of_every_tuple_member():
    """w_sample adds w_sample * (CE + T^2 KL at T) over all B*k tuple members to CKD's loss;
    reference: NumPy formulas written here."""
    from ckd_jax.train.methods import LossInputs, build_method

    rng = np.random.default_rng(0)
    s, t = rng.normal(size=(5, 2, 10)) * 3, rng.normal(size=(5, 2, 10)) * 3
    y = rng.integers(0, 10, (5, 2))
    x = LossInputs(logits=jnp.asarray(s, jnp.float32), teacher_logits=jnp.asarray(t, jnp.float32),
                   labels=jnp.asarray(y), sample_idx=jnp.zeros((5, 2), jnp.int32),
                   extra_params={}, extra_state={}, data_aux={}, mix=None,
                   key=jax.random.PRNGKey(0))
    plain = DistillConfig(**VARIANTS["ckd"])
    both = DistillConfig(**{**VARIANTS["ckd"], "w_sample": 0.5})
    base, _, _ = build_method(plain).loss(x)
    total, _, metrics = build_method(both).loss(x)

    def log_softmax(a):
        a = a - a.max(-1, keepdims=True)
        return a - np.log(np.exp(a).sum(-1, keepdims=True))

    s2, t2, y2 = s.reshape(10, 10), t.reshape(10, 10), y.reshape(10)
    ce = -log_softmax(s2)[np.arange(10), y2].mean()
    T = 4.0
    lp, lq = log_softmax(t2 / T), log_softmax(s2 / T)
    kd = T * T * (np.exp(lp) * (lp - lq)).sum(-1).mean()
    np.testing.assert_allclose(float(metrics["ce"]), ce, rtol=1e-5)
    np.testing.assert_allclose(float(metrics["kd"]), kd, rtol=1e-5)
    np.testing.assert_allclose(float(total), float(base) + 0.5 * (ce + kd), rtol=1e-5)
