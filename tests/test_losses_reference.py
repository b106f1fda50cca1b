"""ckd_jax.losses against independent PyTorch re-implementations and hand-computed values.

The torch functions below are written from the official formulas (alextxu/ckd, RepDistiller,
DIST); they run in float64 and the JAX side runs under `jax.enable_x64` so the comparison is
at 1e-9 relative rather than limited by float32 rounding.
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from ckd_jax import losses as L

RTOL = 1e-9  # float64 on both sides; the task's requirement is 1e-5


@pytest.fixture(autouse=True)
def x64():
    # float64 on both sides, restored afterwards: torch's default dtype is process-global and
    # other test files (the model zoo's PyTorch references) need float32.
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        with jax.enable_x64(True):
            yield
    finally:
        torch.set_default_dtype(old)


J_RKD = jax.jit(L.rkd_loss)
J_RKD_GRAD = jax.jit(jax.grad(L.rkd_loss))
J_DIST = jax.jit(L.dist_loss)
J_DIST_GRAD = jax.jit(jax.grad(L.dist_loss))
J_CRD = jax.jit(L.crd_loss)
J_BOX = jax.jit(jax.vmap(lambda lam, cx, cy, h, w: L.cutmix_box_mask(None, h, w, lam, (cx, cy)),
                         in_axes=(0, 0, 0, None, None)), static_argnums=(3, 4))


def rng(seed):
    return np.random.default_rng(seed)


def tt(x):
    return torch.as_tensor(np.array(x))


def close(a, b, rtol=RTOL, atol=1e-12):
    if isinstance(b, torch.Tensor):
        b = b.detach().numpy()
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# torch references


def t_kd(s, t, T):
    return F.kl_div(F.log_softmax(s / T, 1), F.softmax(t / T, 1), reduction="sum") * T**2 / len(s)


def t_ckd(s, t, y, n_pos, form, T, w_cls, w_rel, combine, lam):
    """As CKDSample + CKDTrainHelpers: group means, label vectors accumulate 1/|group|."""
    b, k, c = s.shape
    n_neg = k - n_pos
    lab_p = torch.zeros(b, c).scatter_add_(1, y[:, :n_pos], torch.full((b, n_pos), 1 / n_pos))
    lab_n = torch.zeros(b, c).scatter_add_(1, y[:, n_pos:], torch.full((b, n_neg), 1 / n_neg))

    def mix(x, z):
        if combine == "diff":
            return x - z
        if combine == "add":
            return 0.5 * x + 0.5 * z
        return lam * x + (1 - lam) * z

    ds = mix(s[:, :n_pos].mean(1), s[:, n_pos:].mean(1))
    dt = mix(t[:, :n_pos].mean(1), t[:, n_pos:].mean(1))
    dy = mix(lab_p, lab_n)
    crit = torch.nn.MSELoss() if form == "mse" else (lambda a, z: t_kd(a, z, T))
    return w_cls * crit(ds, dy) + w_rel * crit(ds, dt)


def t_mix(s, y, t, idx_rows, weights, soft, T):
    """As Mixup(Three)TrainHelpers / CutMixHelpers with w_cls = w_rel = 1."""
    total = 0
    for rows, w in zip(idx_rows, weights):
        cls = F.cross_entropy(s, y[rows])
        if soft == "ce":
            rel = F.cross_entropy(s, F.softmax(t[rows], 1))
        else:
            rel = t_kd(s, t[rows], T)
        total = total + w * (cls + rel)
    return total


def t_pdist(e, eps=1e-12):
    sq = e.pow(2).sum(1)
    res = (sq[:, None] + sq[None] - 2 * e @ e.t()).clamp(min=eps).sqrt().clone()
    res[range(len(e)), range(len(e))] = 0
    return res


def t_rkd(s, t, wd=25.0, wa=50.0):
    td = t_pdist(t)
    td = td / td[td > 0].mean()
    sd = t_pdist(s)
    sd = sd / sd[sd > 0].mean()
    ld = F.smooth_l1_loss(sd, td)

    def ang(e):
        d = F.normalize(e.unsqueeze(0) - e.unsqueeze(1), p=2, dim=2)
        return torch.bmm(d, d.transpose(1, 2)).view(-1)

    return wd * ld + wa * F.smooth_l1_loss(ang(s), ang(t))


def t_dist(zs, zt, tau=4.0, beta=1.0, gamma=1.0):
    def pearson(a, b, eps=1e-8):
        a = a - a.mean(1, keepdim=True)
        b = b - b.mean(1, keepdim=True)
        return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)

    ys, yt = (zs / tau).softmax(1), (zt / tau).softmax(1)
    inter = tau**2 * (1 - pearson(ys, yt).mean())
    intra = tau**2 * (1 - pearson(ys.t(), yt.t()).mean())
    return beta * inter + gamma * intra


def t_crd(ws, bs, wt, bt, mem_s, mem_t, z_s, z_t, fs, ft, idx, cidx, T, mom):
    """RepDistiller CRDLoss / ContrastMemory / ContrastLoss (v1 = student, v2 = teacher)."""
    eps = 1e-7
    n_data = mem_s.shape[0]

    def embed(x, w, b):
        z = x @ w + b
        return z / z.pow(2).sum(1, keepdim=True).pow(0.5)

    v1, v2 = embed(fs, ws, bs), embed(ft, wt, bt)
    bsz, k1 = cidx.shape
    w_v1 = mem_s.index_select(0, cidx.view(-1)).view(bsz, k1, -1)
    out_v2 = torch.exp(torch.bmm(w_v1, v2.unsqueeze(2)).squeeze(2) / T)
    w_v2 = mem_t.index_select(0, cidx.view(-1)).view(bsz, k1, -1)
    out_v1 = torch.exp(torch.bmm(w_v2, v1.unsqueeze(2)).squeeze(2) / T)
    if z_s < 0:
        z_s = (out_v1.mean() * n_data).item()
    if z_t < 0:
        z_t = (out_v2.mean() * n_data).item()

    def contrast(x):
        m = x.size(1) - 1
        pn = 1 / float(n_data)
        p_pos = x[:, 0]
        log_d1 = torch.log(p_pos / (p_pos + m * pn + eps))
        p_neg = x[:, 1:]
        log_d0 = torch.log(torch.full_like(p_neg, m * pn) / (p_neg + m * pn + eps))
        return -(log_d1.sum() + log_d0.sum()) / x.shape[0]

    loss = contrast(out_v1 / z_s) + contrast(out_v2 / z_t)
    with torch.no_grad():
        new_s, new_t = mem_s.clone(), mem_t.clone()
        for mem, v in ((new_s, v1), (new_t, v2)):
            pos = mem.index_select(0, idx) * mom + v * (1 - mom)
            mem.index_copy_(0, idx, pos / pos.pow(2).sum(1, keepdim=True).pow(0.5))
    return loss, new_s, new_t, z_s, z_t


# ---------------------------------------------------------------------------------------------
# per-sample losses


@pytest.mark.parametrize("b,c,T", [(1, 2, 1.0), (5, 7, 2.5)])
def test_ce_softce_kd_match_torch(b, c, T):
    r = rng(b * c)
    s, t = r.normal(size=(b, c)) * 3, r.normal(size=(b, c)) * 3
    y = r.integers(0, c, size=b)
    p = r.dirichlet(np.ones(c), size=b)
    close(L.cross_entropy(jnp.asarray(s), jnp.asarray(y)), F.cross_entropy(tt(s), tt(y)))
    close(L.soft_cross_entropy(jnp.asarray(s), jnp.asarray(p)), F.cross_entropy(tt(s), tt(p)))
    close(L.kd_loss(jnp.asarray(s), jnp.asarray(t), T), t_kd(tt(s), tt(t), T))
    # gradient of KD w.r.t. student logits
    st = tt(s).requires_grad_()
    t_kd(st, tt(t), T).backward()
    close(jax.grad(L.kd_loss)(jnp.asarray(s), jnp.asarray(t), T), st.grad)


def test_per_sample_hand_values():
    # softmax([0, ln 3]) = [1/4, 3/4]
    logits = jnp.array([[0.0, math.log(3.0)]])
    close(L.cross_entropy(logits, jnp.array([1])), math.log(4 / 3))
    close(L.cross_entropy(logits, jnp.array([0])), math.log(4))
    close(L.soft_cross_entropy(jnp.zeros((1, 2)), jnp.array([[0.3, 0.7]])), math.log(2))
    # KD at T=1 of uniform student vs p = [1/4, 3/4]: KL = 1/4 ln(1/2) + 3/4 ln(3/2)
    close(L.kd_loss(jnp.zeros((1, 2)), logits, 1.0), 0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    # T = 2 multiplies by 4 and uses t/2: p = softmax([0, ln 3 / 2]) = [1, sqrt3] / (1 + sqrt3)
    p1 = math.sqrt(3) / (1 + math.sqrt(3))
    kl = (1 - p1) * math.log(2 * (1 - p1)) + p1 * math.log(2 * p1)
    close(L.kd_loss(jnp.zeros((1, 2)), logits, 2.0), 4 * kl)


# ---------------------------------------------------------------------------------------------
# CKD


FORMS, COMBINES = ("mse", "kl"), ("diff", "add", "interp")


def _ckd_configs(k):
    """(form, combine, n_pos): every form x combine at the official split, plus the other
    extreme splits n_pos = 1 and k - 1 with combine="diff"."""
    default = L.split_groups(k)[0]
    for form in FORMS:
        for combine in COMBINES:
            yield form, combine, default
        for n_pos in sorted({1, k - 1} - {default}):
            yield form, "diff", n_pos


def _ckd_all(s, t, y, lam):
    """Value and d/ds of every configuration for one k, as one compiled program (XLA compile
    time, not arithmetic, dominates these tests on a CPU)."""
    out = {}
    for form, combine, n_pos in _ckd_configs(s.shape[1]):
        loss = functools.partial(
            L.ckd_loss, w_cls=0.7, w_rel=1.3, n_pos=n_pos, form=form,
            temperature=4.0 if form == "kl" else 1.0, combine=combine,
            lam=lam if combine == "interp" else None)
        if combine == "diff":  # gradients for CKD proper; values for every configuration
            out[f"{form}-{combine}-{n_pos}"] = jax.value_and_grad(loss)(s, t, y)
        else:
            out[f"{form}-{combine}-{n_pos}"] = (loss(s, t, y), None)
    return out


@pytest.mark.parametrize("k", [2, 3, 4, 5, 6])
def test_ckd_matches_torch(k):
    """Both forms, all three combines and several splits: values, and gradients for "diff"."""
    r = rng(100 * k)
    s, t = r.normal(size=(5, k, 7)) * 2, r.normal(size=(5, k, 7)) * 2
    y = r.integers(0, 7, size=(5, k))
    lam = float(r.uniform())
    got = jax.jit(_ckd_all)(jnp.asarray(s), jnp.asarray(t), jnp.asarray(y), lam)
    for form, combine, n_pos in _ckd_configs(k):
        value, grad = got[f"{form}-{combine}-{n_pos}"]
        T = 4.0 if form == "kl" else 1.0
        st = tt(s).requires_grad_()
        want = t_ckd(st, tt(t), tt(y), n_pos, form, T, 0.7, 1.3, combine, lam)
        want.backward()
        close(value, want)
        if grad is not None:
            close(grad, st.grad)


@pytest.mark.parametrize("form", FORMS)
def test_ckd_eager_calls_and_terms_match_torch(form):
    r = rng(1)
    s, t, y = r.normal(size=(5, 3, 7)), r.normal(size=(5, 3, 7)), r.integers(0, 7, size=(5, 3))
    s, t, y = jnp.asarray(s), jnp.asarray(t), jnp.asarray(y)
    ts, tt_, ty = tt(s), tt(t), tt(y)
    terms = L.ckd_terms(s, t, y, n_pos=2, form=form, combine="add")
    close(terms["cls"], t_ckd(ts, tt_, ty, 2, form, 4.0, 1.0, 0.0, "add", None))
    close(terms["rel"], t_ckd(ts, tt_, ty, 2, form, 4.0, 0.0, 1.0, "add", None))
    close(L.ckd_loss(s, t, y, n_pos=2, form=form, combine="add"),
          t_ckd(ts, tt_, ty, 2, form, 4.0, 1.0, 1.0, "add", None))


def test_split_groups_official():
    assert [L.split_groups(k) for k in (2, 3, 4, 5, 6)] == [(1, 1), (2, 1), (2, 2), (3, 2),
                                                            (3, 3)]


def test_compare_groups_hand_and_features():
    x = jnp.array([[[1.0], [3.0], [10.0]]])  # P = {1, 3} -> 2, N = {10}
    close(L.compare_groups(x, 2, "diff"), [[-8.0]])
    close(L.compare_groups(x, 2, "add"), [[6.0]])
    close(L.compare_groups(x, 2, "interp", lam=0.25), [[0.25 * 2 + 0.75 * 10]])
    feats = rng(0).normal(size=(2, 4, 3, 3, 5))
    want = feats[:, :1].mean(1) - feats[:, 1:].mean(1)
    close(L.compare_groups(jnp.asarray(feats), 1), want)


def test_ckd_hand_values():
    # one pair (k=2), C=2: s members [1,0],[0,1] -> dS=[1,-1]; t [3,0],[0,0] -> dT=[3,0];
    # labels (0, 1) -> dY = [1,-1]
    s = jnp.array([[[1.0, 0.0], [0.0, 1.0]]])
    t = jnp.array([[[3.0, 0.0], [0.0, 0.0]]])
    y = jnp.array([[0, 1]])
    # MSE: cls = 0, rel = ((1-3)^2 + (-1-0)^2)/2 = 2.5
    close(L.ckd_loss(s, t, y, n_pos=1), 2.5)
    close(L.ckd_loss(s, t, y, n_pos=1, w_rel=2.0, w_cls=5.0), 5.0)
    # KL at T=1: cls = 0 (dS = dY); rel = KL(softmax([3,0]) || softmax([1,-1]) = softmax([2,0]))
    p = math.exp(3) / (math.exp(3) + 1)
    q = math.exp(2) / (math.exp(2) + 1)
    kl = p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))
    close(L.ckd_loss(s, t, y, n_pos=1, form="kl", temperature=1.0), kl)
    terms = L.ckd_terms(s, t, y, n_pos=1, form="kl", temperature=1.0)
    close(terms["cls"], 0.0)


# ---------------------------------------------------------------------------------------------
# mixing


@pytest.mark.parametrize("m", [2, 3])
@pytest.mark.parametrize("soft", ["ce", "kd"])
def test_mix_distill_matches_torch(m, soft):
    r = rng(m + 10 * len(soft))
    b, c = 6, 9
    s, t = r.normal(size=(b, c)) * 2, r.normal(size=(b, c)) * 2
    y = r.integers(0, c, size=b)
    partners = np.stack([r.permutation(b) for _ in range(m - 1)])
    w = r.uniform(size=m)
    w = w / w.sum()
    rows = [np.arange(b)] + list(partners)
    want = t_mix(tt(s), tt(y), tt(t), [tt(x) for x in rows], list(w), soft, 4.0)
    got = L.mix_distill_loss(jnp.asarray(s), jnp.asarray(y), jnp.asarray(t),
                             jnp.asarray(partners), jnp.asarray(w), soft=soft)
    close(got, want)
    if m == 2:  # short form: partner [B] + scalar lam
        got2 = L.mix_distill_loss(jnp.asarray(s), jnp.asarray(y), jnp.asarray(t),
                                  jnp.asarray(partners[0]), float(w[0]), soft=soft)
        close(got2, want)


def test_mix_hand_value():
    # uniform student: every CE / soft CE term is ln 2; weights sum to 1 -> 2 ln 2
    got = L.mix_distill_loss(jnp.zeros((2, 2)), jnp.array([0, 1]), jnp.array([[1.0, 0], [0, 3]]),
                             jnp.array([1, 0]), 0.3)
    close(got, 2 * math.log(2))


def np_rand_bbox(h, w, lam, cx, cy):
    """CutMix reference rand_bbox with a given centre."""
    cut_rat = np.sqrt(1.0 - lam)
    cut_w, cut_h = int(w * cut_rat), int(h * cut_rat)
    x1, x2 = np.clip(cx - cut_w // 2, 0, w), np.clip(cx + cut_w // 2, 0, w)
    y1, y2 = np.clip(cy - cut_h // 2, 0, h), np.clip(cy + cut_h // 2, 0, h)
    mask = np.ones((h, w))
    mask[y1:y2, x1:x2] = 0
    return mask, 1 - (x2 - x1) * (y2 - y1) / (h * w)


def test_cutmix_box_matches_reference():
    r = rng(3)
    for h, w in ((8, 8), (5, 11)):
        lams = r.uniform(size=20)
        cxs, cys = r.integers(w, size=20), r.integers(h, size=20)
        got = J_BOX(jnp.asarray(lams), jnp.asarray(cxs), jnp.asarray(cys), h, w)
        for i in range(20):
            want, lam_adj = np_rand_bbox(h, w, lams[i], cxs[i], cys[i])
            close(got[i], want)
            close(jnp.mean(got[i]), lam_adj)


# ---------------------------------------------------------------------------------------------
# relational


@pytest.mark.parametrize("b,d", [(2, 3), (7, 10)])
def test_rkd_dist_match_torch(b, d):
    r = rng(b + d)
    s, t = r.normal(size=(b, d)) * 3, r.normal(size=(b, d)) * 3
    js, jt = jnp.asarray(s), jnp.asarray(t)
    close(J_RKD(js, jt, 25.0, 50.0), t_rkd(tt(s), tt(t)), rtol=1e-8)
    close(J_RKD(js, jt, 2.0, 3.0), t_rkd(tt(s), tt(t), 2.0, 3.0), rtol=1e-8)
    close(J_DIST(js, jt, 4.0, 1.0, 1.0), t_dist(tt(s), tt(t)))
    close(J_DIST(js, jt, 2.0, 0.5, 3.0), t_dist(tt(s), tt(t), 2.0, 0.5, 3.0))
    for grad_fn, ref in ((J_RKD_GRAD, t_rkd), (J_DIST_GRAD, t_dist)):
        st = tt(s).requires_grad_()
        ref(st, tt(t)).backward()
        close(grad_fn(js, jt), st.grad, rtol=1e-7, atol=1e-10)


def test_rkd_hand_value():
    # student collinear (0,0),(1,0),(2,0); teacher (0,0),(1,0),(0,1); distance term only
    s = jnp.array([[0.0, 0], [1, 0], [2, 0]])
    t = jnp.array([[0.0, 0], [1, 0], [0, 1]])
    r2 = math.sqrt(2)
    sd = [0.75, 1.5, 0.75]  # d01, d02, d12 over mean 4/3
    td = [3 / (2 + r2), 3 / (2 + r2), 3 * r2 / (2 + r2)]  # over mean (2 + sqrt2) / 3
    want = 25 * 2 * sum(0.5 * (a - b) ** 2 for a, b in zip(sd, td)) / 9
    close(J_RKD(s, t, 25.0, 0.0), want, rtol=1e-7)
    close(J_RKD(t, t, 25.0, 50.0), 0.0)


def test_dist_hand_value():
    # rows: sample 0 correlates -1, sample 1 +1 -> inter = tau^2; columns both +1 -> intra = 0
    s = jnp.array([[1.0, 0.0], [0.0, 1.0]])
    t = jnp.array([[0.0, 2.0], [0.0, 3.0]])
    close(J_DIST(s, t, 1.0, 1.0, 1.0), 1.0, rtol=1e-6)
    close(J_DIST(s, t, 4.0, 2.0, 1.0), 32.0, rtol=1e-5)


def _crd_case(seed, b=4, n_data=30, n_cls=5, k=9, s_dim=7, t_dim=11, feat=6):
    r = rng(seed)
    params, state = L.crd_init(jax.random.key(seed), s_dim, t_dim, n_data, feat)
    labels = r.integers(0, n_cls, size=n_data)
    labels[:n_cls] = np.arange(n_cls)
    idx = r.choice(n_data, size=b, replace=False)
    cidx = L.crd_sample_negatives(jax.random.key(seed + 1), jnp.asarray(labels[idx]),
                                  jnp.asarray(idx), *L.crd_class_index(labels), n_neg=k)
    fs, ft = r.normal(size=(b, s_dim)), r.normal(size=(b, t_dim))
    return params, state, labels, idx, cidx, fs, ft


def test_crd_matches_torch_two_steps():
    params, state, _, idx, cidx, fs, ft = _crd_case(0)
    p = jax.tree.map(np.asarray, params)
    mem_s, mem_t = tt(state["memory_s"]), tt(state["memory_t"])
    z_s = z_t = -1.0
    for step in range(2):  # step 0 estimates Z, step 1 reuses it and the updated memory
        fs_step, ft_step = fs + step, ft - step
        loss, state = J_CRD(params, state, jnp.asarray(fs_step), jnp.asarray(ft_step),
                            jnp.asarray(idx), cidx, 0.07, 0.5)
        want, mem_s, mem_t, z_s, z_t = t_crd(
            tt(p["embed_s"]["kernel"]), tt(p["embed_s"]["bias"]), tt(p["embed_t"]["kernel"]),
            tt(p["embed_t"]["bias"]), mem_s, mem_t, z_s, z_t, tt(fs_step), tt(ft_step),
            tt(idx), tt(cidx), 0.07, 0.5)
        close(loss, want, rtol=1e-8)
        close(state["memory_s"], mem_s)
        close(state["memory_t"], mem_t)
        close(state["z_s"], z_s, rtol=1e-6)  # z is stored as float32
        close(state["z_t"], z_t, rtol=1e-6)


def test_crd_hand_value():
    # identity embeddings, feat 2, two data points, one negative, T = 1, Z fixed at 2
    params = {"embed_s": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)},
              "embed_t": {"kernel": jnp.eye(2), "bias": jnp.zeros(2)}}
    state = {"memory_s": jnp.eye(2), "memory_t": jnp.eye(2), "z_s": jnp.asarray(2.0),
             "z_t": jnp.asarray(2.0)}
    s = jnp.array([[3.0, 0.0]])  # e_s = (1, 0): scores vs memory rows (1,0),(0,1) are e, 1
    loss, new = J_CRD(params, state, s, s, jnp.array([0]), jnp.array([[0, 1]]), 1.0)
    e, mpn, eps = math.e, 0.5, 1e-7
    one_side = -(math.log((e / 2) / (e / 2 + mpn + eps)) + math.log(mpn / (0.5 + mpn + eps)))
    close(loss, 2 * one_side)
    close(new["memory_s"], jnp.eye(2))  # normalise(0.5 (1,0) + 0.5 (1,0)) = (1,0)
    close(new["z_s"], 2.0)


def test_crd_negatives_are_other_class():
    _, _, labels, idx, cidx, _, _ = _crd_case(7, b=6, k=400)
    cidx = np.asarray(cidx)
    assert (cidx[:, 0] == idx).all()
    neg_labels = labels[cidx[:, 1:]]
    assert (neg_labels != labels[idx][:, None]).all()
    # uniform over other-class samples: every such sample of batch item 0 gets drawn
    others = np.nonzero(labels != labels[idx[0]])[0]
    assert set(cidx[0, 1:].tolist()) == set(others.tolist())


def test_crd_class_index():
    order, start, count = L.crd_class_index(np.array([2, 0, 2, 1, 0]), num_classes=4)
    assert order.tolist() == [1, 4, 3, 0, 2]
    assert start.tolist() == [0, 2, 3, 5] and count.tolist() == [2, 1, 2, 0]


# ---------------------------------------------------------------------------------------------
# white-box


def _copy_conv(w):  # torch OIHW -> flax HWIO
    return jnp.asarray(w.detach().numpy().transpose(2, 3, 1, 0))


@pytest.mark.parametrize("s_shape,t_shape", [
    ((3, 8, 8, 4), (4, 4, 6)),    # stride-2 conv
    ((3, 4, 4, 4), (8, 8, 6)),    # transposed conv
    ((3, 6, 6, 4), (4, 4, 6)),    # valid conv 3x3
    ((3, 5, 5, 4), (5, 5, 6)),    # 1x1
])
def test_hint_regressor_matches_torch_convreg(s_shape, t_shape):
    n, sh, sw, sc = s_shape
    th, tw, tc = t_shape
    torch.manual_seed(0)
    if sh == 2 * th:
        conv = torch.nn.Conv2d(sc, tc, 3, stride=2, padding=1)
    elif 2 * sh == th:
        conv = torch.nn.ConvTranspose2d(sc, tc, 4, stride=2, padding=1)
    else:
        conv = torch.nn.Conv2d(sc, tc, (1 + sh - th, 1 + sw - tw))
    bn = torch.nn.BatchNorm2d(tc)
    x = rng(1).normal(size=s_shape)
    want = torch.relu(bn(conv(tt(x).permute(0, 3, 1, 2)))).permute(0, 2, 3, 1)  # train mode

    model = L.HintRegressor(t_shape)
    # structure from a trace of init (no compile); values copied from the torch layers
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x))
    conv_name = next(k for k in shapes["params"] if k != "BatchNorm_0")
    if isinstance(conv, torch.nn.ConvTranspose2d):
        # torch [in, out, kh, kw] is the forward conv's OIHW kernel -> HWIO = [kh, kw, out, in]
        kernel = jnp.asarray(conv.weight.detach().numpy().transpose(2, 3, 1, 0))
    else:
        kernel = _copy_conv(conv.weight)
    assert shapes["params"][conv_name]["kernel"].shape == kernel.shape
    variables = {
        "params": {conv_name: {"kernel": kernel, "bias": jnp.asarray(conv.bias.detach().numpy())},
                   "BatchNorm_0": {"scale": jnp.ones(tc), "bias": jnp.zeros(tc)}},
        "batch_stats": {"BatchNorm_0": {"mean": jnp.zeros(tc), "var": jnp.ones(tc)}},
    }
    assert jax.tree.structure(variables) == jax.tree.structure(shapes)
    apply = jax.jit(functools.partial(model.apply, train=True, mutable=["batch_stats"]))
    got, upd = apply(variables, jnp.asarray(x))
    assert got.shape == (n, th, tw, tc)
    close(got, want.detach(), rtol=1e-7, atol=1e-9)
    close(upd["batch_stats"]["BatchNorm_0"]["mean"], bn.running_mean, rtol=1e-7, atol=1e-9)
    close(L.fitnet_loss(got, jnp.zeros_like(got)), F.mse_loss(want, torch.zeros_like(want)))


def test_vid_matches_torch():
    x = rng(2).normal(size=(2, 4, 4, 3))
    target = rng(3).normal(size=(2, 4, 4, 5))
    model = L.VIDRegressor(mid_channels=5, out_channels=5)
    shapes = jax.eval_shape(model.init, jax.random.key(0), jnp.asarray(x))["params"]
    torch.manual_seed(0)
    convs = [torch.nn.Conv2d(3, 5, 1, bias=False), torch.nn.Conv2d(5, 5, 1, bias=False),
             torch.nn.Conv2d(5, 5, 1, bias=False)]
    init = np.log(np.exp(5.0 - 1e-5) - 1.0)  # RepDistiller's log_scale initialisation
    close(L.vid_log_scale_init(5.0, 1e-5), init)
    params = {f"Conv_{i}": {"kernel": _copy_conv(conv.weight)} for i, conv in enumerate(convs)}
    params["log_scale"] = jnp.full(5, init)
    assert jax.tree.structure(params) == jax.tree.structure(shapes)
    pred, log_scale = jax.jit(model.apply)({"params": params}, jnp.asarray(x))
    h = tt(x).permute(0, 3, 1, 2)
    h = convs[2](torch.relu(convs[1](torch.relu(convs[0](h)))))
    var = torch.log(1.0 + torch.exp(tt(log_scale))) + 1e-5
    tgt = tt(target).permute(0, 3, 1, 2)
    want = torch.mean(0.5 * ((h - tgt) ** 2 / var.view(1, -1, 1, 1) + torch.log(var.view(1, -1,
                                                                                          1, 1))))
    close(L.vid_loss(pred, log_scale, jnp.asarray(target)), want.detach(), rtol=1e-8)
    # hand: prediction == target leaves 0.5 log(var), var = 5 at initialisation
    close(L.vid_loss(jnp.zeros((1, 1, 1, 5)), log_scale, jnp.zeros((1, 1, 1, 5))),
          0.5 * math.log(5.0), rtol=1e-8)


def test_match_spatial_is_adaptive_avg_pool():
    a = rng(4).normal(size=(2, 8, 8, 3))
    b = rng(5).normal(size=(2, 4, 4, 3))
    pa, pb = L.match_spatial(jnp.asarray(a), jnp.asarray(b))
    want = F.adaptive_avg_pool2d(tt(a).permute(0, 3, 1, 2), (4, 4)).permute(0, 2, 3, 1)
    close(pa, want)
    close(pb, b)
    pb2, pa2 = L.match_spatial(jnp.asarray(b), jnp.asarray(a))
    close(pa2, want)


def test_cc_matches_torch_and_hand():
    r = rng(6)
    s, t = r.normal(size=(6, 8)), r.normal(size=(6, 8))
    d = (tt(s) - tt(t)).abs()
    close(L.cc_loss(jnp.asarray(s), jnp.asarray(t)), torch.mean((d[:-1] * d[1:]).sum(1)))
    close(L.cc_loss(jnp.array([[1.0, 0], [2, 0]]), jnp.zeros((2, 2))), 2.0)
    emb = L.CCEmbed(feat_dim=4)
    v = emb.init(jax.random.key(0), jnp.zeros((2, 3, 5)))
    out = emb.apply(v, jnp.asarray(r.normal(size=(2, 3, 5))))
    assert out.shape == (2, 4)
