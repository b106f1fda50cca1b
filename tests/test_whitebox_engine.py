"""White-box methods in the student engine: FitNet hint, VID and CC, plain and on CKD's group
comparisons of features. Tiny TinyCNN student and teacher on digits, CPU.

Checks: every method trains; teacher features are cached in the one teacher call per sample
(B calls per seed, 0 on a rerun) and equal the teacher's features recomputed on the same views; a
plain logit table is refused; the white-box terms equal NumPy re-implementations.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from engine_support import CountingTeacher, tiny_config  # tests/ is on sys.path

from ckd_jax.data import dataset_spec, load_train_test
from ckd_jax.data.augment import random_crop_flip
from ckd_jax.logit_table import (
    LogitTable,
    TeacherCallCounter,
    teacher_pass_features,
)
from ckd_jax.models import create_model
from ckd_jax.train.config import DistillConfig
from ckd_jax.train.distill import run_distillation, table_filename
from ckd_jax.train.engine import make_mesh
from ckd_jax.train.methods import FeatureShapes, LossInputs, build_method

METHODS = ("fitnet", "vid", "cc", "ckd_fitnet", "ckd_vid", "ckd_cc")


def _cfg(**kw) -> DistillConfig:
    # TinyCNN's features: [block1 [8,8,4], block2 [4,4,8], pooled [8]]; hint on block2.
    return tiny_config(**{"method": "fitnet", "epochs": 1, "hint_layer": 1, **kw})


@pytest.fixture(scope="module")
def teacher():
    return CountingTeacher()


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    return str(tmp_path_factory.mktemp("wb_tables"))


def _run(cfg, teacher, **kw):
    return run_distillation(cfg, teacher_apply=teacher.apply,
                            teacher_variables=teacher.variables, mesh=make_mesh(1), **kw)


@pytest.mark.parametrize("method", METHODS)
def test_every_whitebox_method_trains(tables, teacher, method):
    s = _run(_cfg(method=method, logit_table_dir=tables), teacher)
    m = s["members"][0]
    assert s["method"] == method and 0.0 <= m["last_test_top1"] <= 1.0
    assert m["teacher_calls"] == 64
    params = s["_final"]["state"].params
    assert jax.tree.leaves(params["extra"]), "the white-box heads are trained with the student"
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(params))
    if method.endswith("fitnet"):  # the regressor's BatchNorm statistics moved (train mode)
        stats = s["_final"]["state"].extra_state["hint"]["BatchNorm_0"]["mean"]
        assert np.abs(np.asarray(stats)).max() > 0


@pytest.mark.slow
def test_teacher_called_exactly_b_times_per_seed(tmp_path):
    t = CountingTeacher(seed=3)
    cfg = _cfg(method="ckd_vid", seeds=(1, 2), out_dir=str(tmp_path / "run"))
    first = _run(cfg, t)
    assert first["budget"] == 64
    assert t.calls == 2 * 64 == first["teacher_calls_this_run"]
    names = sorted(os.listdir(tmp_path / "run" / "logit_tables"))
    assert names == [table_filename(cfg, "digits", 80, s, feature_layers=(1,)) for s in (1, 2)]
    assert "_feat1_" in names[0]
    again = _run(cfg.replace(out_dir=str(tmp_path / "run2"),
                             logit_table_dir=str(tmp_path / "run" / "logit_tables")), t)
    assert t.calls == 2 * 64 and again["teacher_calls_this_run"] == 0


def test_cached_features_equal_teacher_on_the_same_views(tables, teacher):
    cfg = _cfg(method="fitnet", logit_table_dir=tables)
    _run(cfg, teacher)  # builds the table if the test above did not
    table = LogitTable.load(os.path.join(tables, table_filename(cfg, "digits", 80, 1,
                                                                feature_layers=(1,))))
    assert table.feature_layers == (1,) and table.meta["feature_layers"] == [1]
    train, _ = load_train_test("digits")
    spec = dataset_spec(train.name)
    images = train.images[table.indices]
    # The engine's teacher pass: row i's view uses split(PRNGKey(10000 + seed), B)[i].
    keys = jax.random.split(jax.random.PRNGKey(10_000 + 1), len(images))
    crop = jax.jit(lambda k, x: random_crop_flip(k, x, crop_size=spec.crop_size,
                                                 padding=spec.padding, flip=spec.flip))
    views = np.stack([np.asarray(crop(keys[i], images[i:i + 1]))[0]
                      for i in range(len(images))])
    x = ((views.astype(np.float32) / 255.0 - np.asarray(spec.mean, np.float32))
         / np.asarray(spec.std, np.float32))
    feats, logits = teacher.model.apply(teacher.variables, x, train=False, return_features=True)
    np.testing.assert_allclose(table.logits, np.asarray(logits), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(table.features[1], np.asarray(feats[1]), rtol=1e-5, atol=1e-5)
    assert table.features[1].shape == (64, 4, 4, 8)
    # the views really are augmented: the clean images give other features
    clean = teacher.model.apply(teacher.variables, (images.astype(np.float32) / 255.0
                                                    - spec.mean[0]) / spec.std[0],
                                train=False, return_features=True)[0][1]
    assert not np.allclose(table.features[1], np.asarray(clean), atol=1e-3)


def test_plain_logit_table_is_refused(tmp_path, tables, teacher):
    cfg = _cfg(method="ckd_fitnet", logit_table_dir=tables)
    _run(cfg, teacher)
    name = table_filename(cfg, "digits", 80, 1, feature_layers=(1,))
    full = LogitTable.load(os.path.join(tables, name))
    plain = LogitTable(full.logits, full.indices, {k: v for k, v in full.meta.items()
                                                   if k != "feature_layers"})
    plain_dir = tmp_path / "plain"
    plain.save(plain_dir / name)  # a plain table where the white-box table should be
    out = tmp_path / "run"
    calls = teacher.calls
    with pytest.raises(ValueError, match=r"features mismatch.*layers \[1\].*none \(a plain "
                                         r"logit table\).*fresh logit_table_dir"):
        _run(cfg.replace(logit_table_dir=str(plain_dir), out_dir=str(out)), teacher)
    assert not out.exists() and teacher.calls == calls
    with pytest.raises(ValueError, match=r"layers \[1, 2\] but the table holds \[1\]"):
        full.check_matches(dataset="digits", indices=full.indices, teacher_name="tiny_cnn",
                           teacher_hash=full.meta["teacher_hash"], feature_layers=(1, 2))


def test_bad_layers_fail_before_any_output(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"hint_layer=3 is out of range.*-3\.\.2"):
        run_distillation(_cfg(hint_layer=3, out_dir=str(out)), mesh=make_mesh(1))
    with pytest.raises(ValueError, match="vid_layers"):
        run_distillation(_cfg(method="vid", vid_layers=(1, 1), out_dir=str(out)),
                         mesh=make_mesh(1))
    assert not out.exists()
    model = create_model("tiny_cnn", 10, width=4)
    v = model.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 1)))
    counter = TeacherCallCounter(5)
    with pytest.raises(ValueError, match="returns 3 features"):
        teacher_pass_features(model.apply, v, np.zeros((5, 8, 8, 1), np.uint8),
                              key=jax.random.PRNGKey(0), spec=dataset_spec("digits"),
                              feature_layers=(3,), counter=counter)
    assert counter.calls == 0


def test_plain_methods_request_no_features():
    for name in ("kd", "ckd", "crd", "mixup"):
        m = build_method(_cfg(method=name))
        assert not m.needs_features and m.student_layers == () == m.teacher_layers
    assert build_method(_cfg(method="vid")).student_layers == (1,)  # feat[1:-1] of 3
    assert build_method(_cfg(method="ckd_cc")).teacher_layers == (2,)


# ------------------------------------------------------------------------------------------
# the white-box terms against NumPy
# ------------------------------------------------------------------------------------------
def _np_ce(logits, labels):
    z = logits - logits.max(1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(1, keepdims=True))
    return -logp[np.arange(len(labels)), labels].mean()


def _np_kd(s, t, temp):
    def log_softmax(z):
        z = z / temp
        z = z - z.max(1, keepdims=True)
        return z - np.log(np.exp(z).sum(1, keepdims=True))
    pt = np.exp(log_softmax(t))
    return temp ** 2 * (pt * (log_softmax(t) - log_softmax(s))).sum(1).mean()


def _np_hint(s, t, params, stats, relu=True):
    """1x1 'valid' conv (same spatial size) + train-mode BatchNorm + ReLU, MSE to t."""
    conv = params["Conv_0"]
    y = np.einsum("nhwc,cd->nhwd", s, np.asarray(conv["kernel"])[0, 0]) + np.asarray(conv["bias"])
    mu, var = y.mean((0, 1, 2)), y.var((0, 1, 2))
    bn = params["BatchNorm_0"]
    y = (y - mu) / np.sqrt(var + 1e-5) * np.asarray(bn["scale"]) + np.asarray(bn["bias"])
    if relu:
        y = np.maximum(y, 0)
    new_mean = 0.9 * np.asarray(stats["BatchNorm_0"]["mean"]) + 0.1 * mu
    return ((y - t) ** 2).mean(), new_mean


def _inputs(rng, lead, n_cls, s_feat, t_feat, extra_params, extra_state):
    f32 = lambda a: jnp.asarray(a.astype(np.float32))
    logits = rng.normal(size=lead + (n_cls,))
    teacher = rng.normal(size=lead + (n_cls,)) * 2
    labels = rng.integers(0, n_cls, size=lead)
    s = rng.normal(size=lead + s_feat)
    t = np.maximum(rng.normal(size=lead + t_feat), 0)
    x = LossInputs(logits=f32(logits), teacher_logits=f32(teacher), labels=jnp.asarray(labels),
                   sample_idx=jnp.zeros(lead, jnp.int32), extra_params=extra_params,
                   extra_state=extra_state, data_aux={}, mix=None, key=jax.random.PRNGKey(0),
                   features={1: f32(s)}, teacher_features={1: f32(t)})
    return x, logits.astype(np.float32), teacher.astype(np.float32), labels, \
        s.astype(np.float32), t.astype(np.float32)


@pytest.mark.parametrize("relu", [True, False])
def test_fitnet_term_matches_numpy(relu):
    method = build_method(_cfg(method="fitnet", hint_relu=relu))
    shapes = FeatureShapes(student={1: (4, 4, 8)}, teacher={1: (4, 4, 6)})
    params, state = method.init_extra(jax.random.PRNGKey(1), 10, 64, shapes)
    # non-trivial BN affine parameters
    params = jax.tree.map(lambda p: p + 0.1 * jnp.arange(p.size).reshape(p.shape) / p.size,
                          params)
    rng = np.random.default_rng(0)
    x, logits, teacher, labels, s, t = _inputs(rng, (6,), 10, (4, 4, 8), (4, 4, 6), params, state)
    loss, new_state, metrics = method.loss(x)
    hint, new_mean = _np_hint(s, t, params["hint"], state["hint"], relu)
    want = _np_ce(logits, labels) + _np_kd(logits, teacher, 4.0) + 100.0 * hint
    np.testing.assert_allclose(float(metrics["fitnet"]), hint, rtol=1e-4)
    np.testing.assert_allclose(float(loss), want, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(new_state["hint"]["BatchNorm_0"]["mean"]), new_mean,
                               rtol=1e-4, atol=1e-6)


def test_ckd_fitnet_term_is_on_group_mean_differences():
    cfg = _cfg(method="ckd_fitnet", pos_and_neg=3)  # 2 positives vs 1 negative
    method = build_method(cfg)
    shapes = FeatureShapes(student={1: (2, 2, 3)}, teacher={1: (2, 2, 5)})
    params, state = method.init_extra(jax.random.PRNGKey(2), 10, 64, shapes)
    rng = np.random.default_rng(1)
    x, logits, teacher, labels, s, t = _inputs(rng, (5, 3), 10, (2, 2, 3), (2, 2, 5), params,
                                               state)
    loss, _, metrics = method.loss(x)
    d = lambda a: a[:, :2].mean(1) - a[:, 2]
    hint, _ = _np_hint(d(s), d(t), params["hint"], state["hint"])
    onehot = np.eye(10, dtype=np.float32)[labels]
    ds = d(logits)
    ckd = ((ds - d(onehot)) ** 2).mean() + ((ds - d(teacher)) ** 2).mean()  # WACV MSE form
    np.testing.assert_allclose(float(metrics["fitnet"]), hint, rtol=1e-4)
    np.testing.assert_allclose(float(loss), ckd + 100.0 * hint, rtol=1e-4)


def test_vid_and_cc_terms_match_numpy():
    rng = np.random.default_rng(2)
    # VID: student map 4x4 pooled to the teacher's 2x2, then 1x1 convs (no bias) and NLL
    method = build_method(_cfg(method="vid", vid_layers=(1,), w_extra=0.5))
    shapes = FeatureShapes(student={1: (4, 4, 3)}, teacher={1: (2, 2, 5)})
    params, state = method.init_extra(jax.random.PRNGKey(3), 10, 64, shapes)
    x, logits, teacher, labels, s, t = _inputs(rng, (4,), 10, (4, 4, 3), (2, 2, 5), params, state)
    _, _, metrics = method.loss(x)
    p = params["vid"][0]
    k = lambda name: np.asarray(p[name]["kernel"])[0, 0]
    sp = s.reshape(4, 2, 2, 2, 2, 3).mean((2, 4))
    h = np.maximum(sp @ k("Conv_0"), 0)
    h = np.maximum(h @ k("Conv_1"), 0)
    pred = h @ k("Conv_2")
    var = np.log1p(np.exp(np.asarray(p["log_scale"]))) + 1e-5
    want = (0.5 * ((pred - t) ** 2 / var + np.log(var))).mean()
    np.testing.assert_allclose(float(metrics["vid"]), want, rtol=1e-4)

    # CC on group differences: linear embeddings of P - N, products of consecutive residuals
    method = build_method(_cfg(method="ckd_cc", cc_feat_dim=7))
    shapes = FeatureShapes(student={2: (6,)}, teacher={2: (9,)})
    params, state = method.init_extra(jax.random.PRNGKey(4), 10, 64, shapes)
    f32 = lambda a: jnp.asarray(a.astype(np.float32))
    s, t = rng.normal(size=(5, 2, 6)), rng.normal(size=(5, 2, 9))
    x = LossInputs(logits=f32(rng.normal(size=(5, 2, 10))),
                   teacher_logits=f32(rng.normal(size=(5, 2, 10))),
                   labels=jnp.asarray(rng.integers(0, 10, (5, 2))),
                   sample_idx=jnp.zeros((5, 2), jnp.int32), extra_params=params,
                   extra_state=state, data_aux={}, mix=None, key=jax.random.PRNGKey(0),
                   features={2: f32(s)}, teacher_features={2: f32(t)})
    _, _, metrics = method.loss(x)
    lin = lambda q, a: a @ np.asarray(q["Dense_0"]["kernel"]) + np.asarray(q["Dense_0"]["bias"])
    es, et = lin(params["embed_s"], s[:, 0] - s[:, 1]), lin(params["embed_t"], t[:, 0] - t[:, 1])
    delta = np.abs(es - et)
    np.testing.assert_allclose(float(metrics["cc"]), (delta[:-1] * delta[1:]).sum(1).mean(),
                               rtol=1e-4)


def test_bf16_feature_table_joint_groups_on_eight_devices(tmp_path, teacher):
    cfg = _cfg(method="ckd_vid", teacher_feature_dtype="bfloat16", group_forward="joint",
               logit_table_dir=str(tmp_path / "t"))
    s = run_distillation(cfg, teacher_apply=teacher.apply, teacher_variables=teacher.variables,
                         mesh=make_mesh(8))
    assert s["devices"] == 8
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(s["_final"]["state"]))
    name = table_filename(cfg, "digits", 80, 1, feature_layers=(1,))
    assert name.endswith("_feat1_bf16_S80_seed1.npz")
    table = LogitTable.load(tmp_path / "t" / name)
    assert table.features[1].dtype == jnp.bfloat16 and table.logits.dtype == np.float32
