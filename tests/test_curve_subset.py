"""The logged test curve on a fixed subset of the test split (`eval_test_curve_images`): its
points are the accuracy of that epoch's weights on exactly those images (recomputed here with
the model outside the engine), its rows say how many images they used, the subset is the same
for every run, and nothing else a run reports or decides changes."""

from __future__ import annotations

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path

from ckd_jax.data import dataset_spec, eval_view, load_train_test
from ckd_jax.models import create_model
from ckd_jax.train.distill import curve_test_indices, run_distillation
from ckd_jax.train.engine import make_mesh

K = 50  # of digits' test images


def _rows(out_dir):
    with open(os.path.join(out_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def test_curve_indices_are_a_fixed_sorted_subset():
    idx = curve_test_indices(1000, 37)
    assert len(idx) == 37 and len(set(idx.tolist())) == 37
    assert np.all(np.diff(idx) > 0) and idx.min() >= 0 and idx.max() < 1000
    np.testing.assert_array_equal(idx, curve_test_indices(1000, 37))  # every run, every point
    assert not np.array_equal(idx, np.arange(37))  # drawn, not the first 37 (class order)
    np.testing.assert_array_equal(curve_test_indices(1000, 0), np.arange(1000))
    np.testing.assert_array_equal(curve_test_indices(1000, 1000), np.arange(1000))


def test_curve_on_a_subset_changes_only_the_curve(tmp_path):
    teacher = CountingTeacher(seed=3)
    tables = str(tmp_path / "tables")
    runs, rows = {}, {}
    for name, k in (("full", 0), ("subset", K)):
        cfg = tiny_config(method="kd", epochs=3, eval_test_every=1, eval_test_curve_images=k,
                          logit_table_dir=tables, out_dir=str(tmp_path / name))
        runs[name] = run_distillation(cfg, teacher_apply=teacher.apply,
                                      teacher_variables=teacher.variables, mesh=make_mesh(1))
        rows[name] = _rows(cfg.out_dir)
    full, sub = runs["full"], runs["subset"]
    # Everything reported and decided is the same (the final test uses the whole split).
    assert full["members"] == sub["members"]
    test_keys = {k for k in rows["full"][0] if k.startswith("test_")}
    assert test_keys and all(k in r for r in rows["full"] for k in test_keys)
    for a, b in zip(rows["full"], rows["subset"], strict=True):
        assert {k: v for k, v in a.items() if k not in test_keys} == \
               {k: v for k, v in b.items() if k not in test_keys | {"test_images"}}
        assert "test_images" not in a and b["test_images"] == K
    # The last point: the final weights' accuracy on the K images, recomputed outside.
    train, test = load_train_test("digits")
    idx = curve_test_indices(len(test.labels), K)
    model = create_model("tiny_cnn", train.num_classes, width=4)
    params, stats = sub["_final"]["state"].params, sub["_final"]["state"].batch_stats
    v = {"params": jax.tree.map(lambda a: a[0], params["student"]),
         "batch_stats": jax.tree.map(lambda a: a[0], stats)}
    logits = np.asarray(model.apply(v, eval_view(jnp.asarray(test.images[idx]),
                                                 dataset_spec(train.name)), train=False))
    want = float(np.mean(logits.argmax(-1) == test.labels[idx]))
    got = rows["subset"][-1]["test_top1"]
    assert got == pytest.approx(want, abs=1e-6)
    assert got * K == pytest.approx(round(got * K), abs=1e-6)  # a count of K images


@pytest.mark.parametrize("k, match", [(-1, "eval_test_curve_images=-1 must be >= 0"),
                                      (10**6, "eval_test_curve_images=1000000 exceeds the "
                                              "test split's")])
def test_bad_curve_size_is_refused_before_any_write(tmp_path, k, match):
    out = tmp_path / "run"
    cfg = tiny_config(method="ce", epochs=1, eval_test_every=1, eval_test_curve_images=k,
                      out_dir=str(out))
    with pytest.raises(ValueError, match=match):
        run_distillation(cfg, mesh=make_mesh(1))
    assert not out.exists()
