"""Properties of ckd_jax.losses: invariances, extreme logits, jit / vmap / grad, input errors."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax import losses as L

B, K, C = 4, 3, 5


def arr(seed, shape, scale=1.0):
    return jnp.asarray(np.random.default_rng(seed).normal(size=shape) * scale, jnp.float32)


def ints(seed, shape, high):
    return jnp.asarray(np.random.default_rng(seed).integers(0, high, size=shape), jnp.int32)


def _crd_setup():
    params, state = L.crd_init(jax.random.key(0), C, C, n_data=20, feat_dim=8)
    labels = np.arange(20) % 4
    idx = jnp.array([0, 5, 10, 15], jnp.int32)
    cidx = L.crd_sample_negatives(jax.random.key(1), jnp.asarray(labels[np.asarray(idx)]), idx,
                                  *L.crd_class_index(labels), n_neg=6)
    return params, state, idx, cidx


CRD_PARAMS, CRD_STATE, CRD_IDX, CRD_CIDX = _crd_setup()
PARTNER = jnp.array([2, 3, 0, 1], jnp.int32)
PARTNERS3 = jnp.array([[1, 2, 3, 0], [3, 0, 1, 2]], jnp.int32)
W3 = jnp.array([0.5, 0.3, 0.2], jnp.float32)


def _vid(pred, target):
    return L.vid_loss(pred, jnp.full((C,), 0.3), target)


# name -> (loss of (student, *rest), builder of the inputs from a seed and a scale)
CASES = {
    "cross_entropy": (L.cross_entropy, lambda sd, sc: (arr(sd, (B, C), sc), ints(sd, (B,), C))),
    "soft_cross_entropy": (
        L.soft_cross_entropy,
        lambda sd, sc: (arr(sd, (B, C), sc), jax.nn.softmax(arr(sd + 1, (B, C), sc)))),
    "kd_loss": (L.kd_loss, lambda sd, sc: (arr(sd, (B, C), sc), arr(sd + 1, (B, C), sc))),
    "ckd_mse": (lambda s, t, y: L.ckd_loss(s, t, y, n_pos=2),
                lambda sd, sc: (arr(sd, (B, K, C), sc), arr(sd + 1, (B, K, C), sc),
                                ints(sd, (B, K), C))),
    "ckd_kl": (lambda s, t, y: L.ckd_loss(s, t, y, n_pos=2, form="kl"),
               lambda sd, sc: (arr(sd, (B, K, C), sc), arr(sd + 1, (B, K, C), sc),
                               ints(sd, (B, K), C))),
    "ckd_interp_traced_lam": (
        lambda s, t, y, lam: L.ckd_loss(s, t, y, n_pos=1, combine="interp", lam=lam),
        lambda sd, sc: (arr(sd, (B, K, C), sc), arr(sd + 1, (B, K, C), sc), ints(sd, (B, K), C),
                        jnp.float32(0.3))),
    "compare_groups_features": (
        lambda x: jnp.sum(L.compare_groups(x, 1) ** 2),
        lambda sd, sc: (arr(sd, (B, 2, 3, 3, 2), sc),)),
    "mix_ce_pair": (
        lambda s, y, t, lam: L.mix_distill_loss(s, y, t, PARTNER, lam),
        lambda sd, sc: (arr(sd, (B, C), sc), ints(sd, (B,), C), arr(sd + 1, (B, C), sc),
                        jnp.float32(0.3))),
    "mix_kd_three": (
        lambda s, y, t: L.mix_distill_loss(s, y, t, PARTNERS3, W3, soft="kd"),
        lambda sd, sc: (arr(sd, (B, C), sc), ints(sd, (B,), C), arr(sd + 1, (B, C), sc))),
    "rkd_loss": (L.rkd_loss, lambda sd, sc: (arr(sd, (B, C), sc), arr(sd + 1, (B, C), sc))),
    "dist_loss": (L.dist_loss, lambda sd, sc: (arr(sd, (B, C), sc), arr(sd + 1, (B, C), sc))),
    "crd_loss": (
        lambda s, t: L.crd_loss(CRD_PARAMS, CRD_STATE, s, t, CRD_IDX, CRD_CIDX)[0],
        lambda sd, sc: (arr(sd, (B, C), sc), arr(sd + 1, (B, C), sc))),
    "fitnet_loss": (L.fitnet_loss,
                    lambda sd, sc: (arr(sd, (B, 3, 3, C), sc), arr(sd + 1, (B, 3, 3, C), sc))),
    "vid_loss": (_vid, lambda sd, sc: (arr(sd, (B, 2, 2, C), sc), arr(sd + 1, (B, 2, 2, C), sc))),
    "cc_loss": (L.cc_loss, lambda sd, sc: (arr(sd, (B, C), sc), arr(sd + 1, (B, C), sc))),
}


def _all_at_once(fn):
    """value, gradient w.r.t. the student input and the vmapped value, in one program."""

    def run(a, stacked):
        return fn(*a), jax.grad(fn)(*a), jax.vmap(fn)(*stacked)

    return jax.jit(run)


# one compiled program per case, shared by the two tests below (correctness of the values
# against PyTorch is covered in test_losses_reference.py)
COMPILED = {name: _all_at_once(fn) for name, (fn, _) in CASES.items()}


def _inputs(build, seed, scale):
    a, b = build(seed, scale), build(seed + 10, scale)
    return a, jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)


@pytest.mark.parametrize("name", sorted(CASES))
def test_jit_vmap_grad(name):
    fn, build = CASES[name]
    a, stacked = _inputs(build, 0, 1.0)
    value, grad, batched = COMPILED[name](a, stacked)
    assert value.shape == () and np.isfinite(value)
    np.testing.assert_allclose(batched[0], value, rtol=1e-5, atol=1e-6)
    b = jax.tree.map(lambda u: u[1], stacked)
    np.testing.assert_allclose(batched[1], fn(*b), rtol=1e-5, atol=1e-6)  # eager call
    assert float(batched[1]) != float(batched[0])
    assert grad.shape == a[0].shape and np.isfinite(grad).all()
    assert np.abs(grad).max() > 0  # the student input really receives gradient


@pytest.mark.parametrize("name", sorted(CASES))
def test_grad_finite_for_huge_logits(name):
    _, build = CASES[name]
    value, grad, batched = COMPILED[name](*_inputs(build, 3, 1e4))
    assert np.isfinite(value) and np.isfinite(grad).all() and np.isfinite(batched).all()


def test_crd_grad_wrt_params_and_state_threading():
    s, t = arr(0, (B, C)), arr(1, (B, C))

    @jax.jit
    def step(params, state):
        (loss, new_state), g = jax.value_and_grad(
            lambda p: L.crd_loss(p, state, s, t, CRD_IDX, CRD_CIDX), has_aux=True)(params)
        return loss, new_state, g

    loss, state1, g = step(CRD_PARAMS, CRD_STATE)
    assert all(np.isfinite(x).all() and np.abs(x).max() > 0 for x in jax.tree.leaves(g))
    assert float(state1["z_s"]) > 0 and float(state1["z_t"]) > 0  # Z estimated in-graph
    rows = np.asarray(state1["memory_s"])[np.asarray(CRD_IDX)]
    np.testing.assert_allclose(np.linalg.norm(rows, axis=1), 1.0, rtol=1e-5)
    untouched = np.setdiff1d(np.arange(20), np.asarray(CRD_IDX))
    np.testing.assert_array_equal(np.asarray(state1["memory_t"])[untouched],
                                  np.asarray(CRD_STATE["memory_t"])[untouched])
    _, state2, _ = step(CRD_PARAMS, state1)
    assert float(state2["z_s"]) == float(state1["z_s"])  # Z fixed after the first batch
    # the returned state carries no gradient path back to the embeddings
    gz = jax.grad(lambda p: jnp.sum(L.crd_loss(p, CRD_STATE, s, t, CRD_IDX,
                                               CRD_CIDX)[1]["memory_s"]))(CRD_PARAMS)
    assert all(np.abs(x).max() == 0 for x in jax.tree.leaves(gz))


def test_crd_negative_sampling_jits():
    labels = np.arange(20) % 4
    fn = jax.jit(L.crd_sample_negatives, static_argnames="n_neg")
    out = fn(jax.random.key(0), jnp.asarray(labels[:4]), jnp.arange(4), *L.crd_class_index(labels),
             n_neg=50)
    assert out.shape == (4, 51)
    assert (labels[np.asarray(out[:, 1:])] != labels[:4, None]).all()


IMG = arr(7, (B, 6, 6, 3))
KEYS = jax.random.split(jax.random.key(1), 400)


def _is_perm(p):
    return sorted(np.asarray(p).tolist()) == list(range(len(p)))


def test_mixup_inputs_consistent():
    mixed, partner, lam = L.mixup_inputs(KEYS[0], IMG)
    assert _is_perm(partner) and 0 < float(lam) < 1
    np.testing.assert_allclose(mixed, lam * IMG + (1 - lam) * IMG[partner], rtol=1e-6, atol=1e-6)
    mixed, partners, w = L.mixup3_inputs(KEYS[0], IMG)
    assert partners.shape == (2, B) and w.shape == (3,) and _is_perm(partners[0])
    assert _is_perm(partners[1]) and (np.asarray(w) > 0).all()
    np.testing.assert_allclose(jnp.sum(w), 1.0, rtol=1e-6)
    np.testing.assert_allclose(mixed, w[0] * IMG + w[1] * IMG[partners[0]] + w[2] *
                               IMG[partners[1]], rtol=1e-6, atol=1e-6)


def test_cutmix_inputs_consistent():
    x = np.asarray(IMG)
    for i in range(5):
        mixed, partner, lam = L.cutmix_inputs(KEYS[i], IMG)
        assert _is_perm(partner)
        own = np.isclose(np.asarray(mixed), x).all(axis=(0, 3))
        other = np.isclose(np.asarray(mixed), x[np.asarray(partner)]).all(axis=(0, 3))
        # every pixel comes from the sample or (inside one rectangle) from its partner
        assert (own | other).all()
        box = ~own
        if box.any():
            ys, xs = np.nonzero(box)
            assert box[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
        np.testing.assert_allclose(lam, 1 - box.mean(), rtol=1e-6)


def test_mixing_weight_distributions():
    # 400 draws from the single compiled programs (a vmapped sampler would be a second compile)
    lams = np.array([float(L.mixup_inputs(k, IMG)[2]) for k in KEYS[:400]])
    assert abs(lams.mean() - 0.5) < 0.05 and abs(lams.var() - 1 / 12) < 0.02  # Beta(1,1) = U(0,1)
    lams = np.array([float(L.mixup_inputs(k, IMG, 0.2)[2]) for k in KEYS[:400]])
    assert abs(lams.var() - 0.25 / 1.4) < 0.04  # Beta(a, a): var = 1 / (4 (2a + 1))
    w = np.array([np.asarray(L.mixup3_inputs(k, IMG)[2]) for k in KEYS[:400]])
    assert abs(w[:, 0].mean() - 1 / 3) < 0.03  # symmetric in the three members


def test_cutmix_vmap_matches_single_calls():
    keys = KEYS[:16]
    batched = jax.vmap(L.cutmix_inputs, in_axes=(0, None))(keys, IMG)
    assert batched[0].shape == (16,) + IMG.shape
    for i in (0, 15):
        for u, v in zip(L.cutmix_inputs(keys[i], IMG), batched):
            np.testing.assert_allclose(u, v[i], rtol=1e-5, atol=1e-6)
    assert len(np.unique(np.asarray(batched[2]))) > 3  # box size varies in one program


def test_regressor_modules_init_jit_and_grad():
    xs, t_hint, t_vid = arr(0, (2, 8, 8, 3)), arr(1, (2, 4, 4, 5)), arr(2, (2, 8, 8, 5))
    hint = L.HintRegressor((4, 4, 5))
    vid = L.VIDRegressor(mid_channels=4, out_channels=5)
    cc = L.CCEmbed(feat_dim=6)

    @jax.jit
    def run(key):
        k1, k2, k3 = jax.random.split(key, 3)
        vh, pv, pc = hint.init(k1, xs), vid.init(k2, xs)["params"], cc.init(k3, xs)["params"]

        def hint_loss(params):
            out, _ = hint.apply({"params": params, "batch_stats": vh["batch_stats"]}, xs,
                                train=True, mutable=["batch_stats"])
            return L.fitnet_loss(out, t_hint)

        def cc_loss(params):
            embed = lambda x: cc.apply({"params": params}, x)
            return L.cc_loss(embed(xs), embed(xs[::-1]))

        g_vid = jax.grad(lambda p: L.vid_loss(*vid.apply({"params": p}, xs), t_vid))(pv)
        return jax.grad(hint_loss)(vh["params"]), g_vid, jax.grad(cc_loss)(pc), pv["log_scale"]

    g_hint, g_vid, g_cc, log_scale = run(jax.random.key(0))
    for g in (g_hint, g_vid, g_cc):
        assert all(np.isfinite(x).all() for x in jax.tree.leaves(g))
    # (the hint conv's bias gets exactly zero gradient: the train-mode BatchNorm removes it)
    for kernel in (g_hint["Conv_0"]["kernel"], g_vid["Conv_0"]["kernel"], g_vid["log_scale"],
                   g_cc["Dense_0"]["kernel"]):
        assert np.abs(kernel).max() > 0
    np.testing.assert_allclose(log_scale, np.full(5, np.log(np.expm1(5.0 - 1e-5))), rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# invariances


@pytest.mark.parametrize("form", ["mse", "kl"])
@pytest.mark.parametrize("combine", ["diff", "add", "interp"])
@pytest.mark.parametrize("k", [2, 5])
def test_ckd_rel_zero_when_student_equals_teacher(form, combine, k):
    s = arr(k, (B, k, C), 3.0)
    y = ints(k, (B, k), C)
    n_pos, _ = L.split_groups(k)
    lam = 0.4 if combine == "interp" else None
    terms = L.ckd_terms(s, s, y, n_pos=n_pos, form=form, combine=combine, lam=lam)
    np.testing.assert_allclose(terms["rel"], 0.0, atol=1e-6)
    assert float(terms["cls"]) > 1e-3  # ... while the label term is not


@pytest.mark.parametrize("combine", ["diff", "add", "interp"])
def test_kl_forms_invariant_to_per_vector_shift(combine):
    s, t = arr(0, (B, K, C), 2.0), arr(1, (B, K, C), 2.0)
    y = ints(0, (B, K), C)
    shift_s, shift_t = arr(2, (B, K, 1), 50.0), arr(3, (B, K, 1), 50.0)
    lam = 0.7 if combine == "interp" else None
    kw = dict(n_pos=2, form="kl", combine=combine, lam=lam)
    np.testing.assert_allclose(L.ckd_loss(s + shift_s, t + shift_t, y, **kw),
                               L.ckd_loss(s, t, y, **kw), rtol=1e-4)
    s2, t2 = s[:, 0], t[:, 0]
    c_s, c_t = shift_s[:, 0], shift_t[:, 0]
    for fn in (L.kd_loss, L.dist_loss):
        np.testing.assert_allclose(fn(s2 + c_s, t2 + c_t), fn(s2, t2), rtol=1e-4)
    for soft in ("ce", "kd"):
        np.testing.assert_allclose(
            L.mix_distill_loss(s2 + c_s, y[:, 0], t2 + c_t, PARTNER, 0.3, soft=soft),
            L.mix_distill_loss(s2, y[:, 0], t2, PARTNER, 0.3, soft=soft), rtol=1e-4)
    np.testing.assert_allclose(L.cross_entropy(s2 + c_s, y[:, 0]), L.cross_entropy(s2, y[:, 0]),
                               rtol=1e-4)


def test_mse_form_is_not_shift_invariant():
    # sanity check that the invariance test can fail: MSE CKD changes under a shift
    s, t, y = arr(0, (B, K, C)), arr(1, (B, K, C)), ints(0, (B, K), C)
    shift = arr(2, (B, K, 1), 5.0)
    assert abs(float(L.ckd_loss(s + shift, t, y, n_pos=2) - L.ckd_loss(s, t, y, n_pos=2))) > 1e-2


def test_labels_range_check_skipped_under_jit():
    s, y = arr(0, (B, C)), jnp.array([0, 1, 2, C + 3])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 4\]"):
        L.cross_entropy(s, y)
    # documented: not checked under jit; the out-of-range gather then yields NaN
    assert np.isnan(jax.jit(L.cross_entropy)(s, y))


# ---------------------------------------------------------------------------------------------
# errors (raised before any computation, naming the bad value / shapes)

s2, t2 = arr(0, (B, C)), arr(1, (B, C))
s3, t3, y3 = arr(0, (B, K, C)), arr(1, (B, K, C)), ints(0, (B, K), C)
img = arr(0, (B, 6, 6, 3))

ERRORS = [
    (lambda: L.kd_loss(s2[0], t2[0]),
     r"student_logits must have rank 2 \[B, C\], got shape \(5,\)"),
    (lambda: L.kd_loss(s2, t2[:, :3]), r"same shape, got \(4, 5\) and \(4, 3\)"),
    (lambda: L.kd_loss(s2, t2, temperature=0.0), r"temperature must be a finite number > 0, got 0"),
    (lambda: L.kd_loss(s2, t2, temperature=-1), r"temperature .* got -1"),
    (lambda: L.cross_entropy(s2, jnp.zeros((B + 1,), jnp.int32)), r"batch dimension"),
    (lambda: L.cross_entropy(s2, jnp.zeros((B,))), r"labels must be an integer array"),
    (lambda: L.cross_entropy(s2, jnp.array([0, 1, 5, 0])), r"\[0, 4\].*got values in \[0, 5\]"),
    (lambda: L.soft_cross_entropy(s2, t2[:2]), r"\(4, 5\) and \(2, 5\)"),
    (lambda: L.ckd_loss(s3[:, 0], t3[:, 0], y3, n_pos=1),
     r"rank 3 \[B, k, C\], got shape \(4, 5\)"),
    (lambda: L.ckd_loss(s3, t3[:, :2], y3, n_pos=1), r"\(4, 3, 5\) and \(4, 2, 5\)"),
    (lambda: L.ckd_loss(s3, t3, y3[:, :2], n_pos=1), r"labels must have shape \[B, k\] = \(4, 3\)"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=0), r"n_pos must be in \[1, 2\] for k=3, got 0"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=3), r"n_pos must be in \[1, 2\] for k=3, got 3"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1.0), r"n_pos must be a static Python int"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1, form="l2"),
     r"unknown form 'l2'; accepted: 'mse', 'kl'"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1, combine="sub"),
     r"unknown combine 'sub'; accepted: 'diff', 'add', 'interp'"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1, combine="interp"), r"combine='interp' needs lam"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1, combine="interp", lam=1.5), r"\[0, 1\], got 1.5"),
    (lambda: L.ckd_loss(s3, t3, y3, n_pos=1, form="kl", temperature=0), r"temperature"),
    (lambda: L.ckd_loss(s3, t3, y3 + C, n_pos=1), r"labels must lie in \[0, 4\]"),
    (lambda: L.ckd_terms(s3, t3, y3.astype(jnp.float32), n_pos=1), r"integer array"),
    (lambda: L.compare_groups(s2[0], 1), r"x must have rank >= 2"),
    (lambda: L.compare_groups(s3[:, :1], 1), r"k >= 2"),
    (lambda: L.compare_groups(s3, 1, lam=None, combine="interp"), r"needs lam"),
    (lambda: L.split_groups(1), r"k must be in \[2,"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2, PARTNERS3, 0.3),
     r"scalar lam describes a 2-sample mix .* shape \(2, 4\) \(m=3\)"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2, PARTNERS3, W3[:2]),
     r"weights must have shape \[3\] .* got \(2,\)"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2, PARTNER[:3], 0.3), r"batch size B=4"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2, PARTNER + 4, 0.3),
     r"partners must lie in \[0, 3\]"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2, PARTNER, 0.3, soft="kl"),
     r"unknown soft 'kl'; accepted: 'ce', 'kd'"),
    (lambda: L.mix_distill_loss(s2, y3[:, 0], t2[:, :2], PARTNER, 0.3), r"\(4, 5\) and \(4, 2\)"),
    (lambda: L.mixup_inputs(jax.random.key(0), img[0]), r"images must have rank 4"),
    (lambda: L.cutmix_inputs(jax.random.key(0), img.astype(jnp.uint8)), r"images must be float"),
    (lambda: L.mixup_inputs(jax.random.key(0), img, alpha=0), r"alpha must be"),
    (lambda: L.rkd_loss(s2, t2[:3]), r"share the batch dimension"),
    (lambda: L.rkd_loss(s2[:1], t2[:1]), r"at least 2"),
    (lambda: L.dist_loss(s2, t2[:, :2]), r"\(4, 5\) and \(4, 2\)"),
    (lambda: L.dist_loss(s2, t2, tau=-2.0), r"tau must be a finite number > 0, got -2.0"),
    (lambda: L.crd_loss(CRD_PARAMS, CRD_STATE, s2, t2, CRD_IDX, CRD_CIDX[:2]),
     r"contrast_idx \(2, 7\) must share the batch dimension"),
    (lambda: L.crd_loss(CRD_PARAMS, CRD_STATE, s2[:, :3], t2, CRD_IDX, CRD_CIDX),
     r"s_dim=5, t_dim=5"),
    (lambda: L.crd_loss(CRD_PARAMS, CRD_STATE, s2, t2, CRD_IDX, CRD_CIDX, nce_t=0.0), r"nce_t"),
    (lambda: L.crd_loss(CRD_PARAMS, CRD_STATE, s2, t2, CRD_IDX, CRD_CIDX + 20),
     r"contrast_idx must lie in \[0, 19\] \(n_data=20\)"),
    (lambda: L.crd_sample_negatives(jax.random.key(0), jnp.array([0]), jnp.array([0]),
                                    *L.crd_class_index(np.zeros(5, int))), r"no other-class"),
    (lambda: L.crd_class_index(np.array([0.5, 1.0])), r"integers"),
    (lambda: L.fitnet_loss(arr(0, (2, 4, 4, 3)), arr(0, (2, 4, 4, 2))),
     r"\(2, 4, 4, 3\) and \(2, 4, 4, 2\)"),
    (lambda: L.HintRegressor((8, 8, 4)).init(jax.random.key(0), arr(0, (1, 3, 3, 2))),
     r"cannot map student spatial size \(3, 3\) to teacher \(8, 8\)"),
    (lambda: L.vid_loss(arr(0, (1, 2, 2, 3)), jnp.zeros(4), arr(0, (1, 2, 2, 3))),
     r"log_scale \(4,\) must have one entry per channel"),
    (lambda: L.match_spatial(arr(0, (1, 6, 6, 2)), arr(0, (1, 4, 4, 2))), r"divide evenly"),
    (lambda: L.cc_loss(s2[:1], t2[:1]), r"at least 2"),
]


@pytest.mark.parametrize("case", range(len(ERRORS)))
def test_bad_inputs_raise(case):
    fn, pattern = ERRORS[case]
    with pytest.raises(ValueError, match=pattern):
        fn()


def test_errors_raised_at_trace_time_under_jit():
    with pytest.raises(ValueError, match=r"n_pos must be in \[1, 2\]"):
        jax.jit(lambda s, t, y: L.ckd_loss(s, t, y, n_pos=5))(s3, t3, y3)
    with pytest.raises(ValueError, match=r"n_pos must be a static Python int"):
        jax.jit(lambda s, t, y, n: L.ckd_loss(s, t, y, n_pos=n))(s3, t3, y3, 1)
