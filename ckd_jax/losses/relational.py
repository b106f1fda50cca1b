"""Relational baselines on logits: RKD, DIST and CRD (with explicit memory-bank state).

As in alextxu/ckd, these are applied to the logits ("on logits") of the student and the cached
teacher; the paper adds CE + KD to each (see docs/losses.md for the default weights).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (
    check_integer_dtype,
    check_labels_in_range,
    check_nonneg,
    check_positive,
    check_rank,
    check_same_shape,
    check_static_int,
    is_concrete,
    shape_of,
)

# ---------------------------------------------------------------------------------------------
# helpers


def _safe_norm(x: jax.Array, axis: int = -1, keepdims: bool = False) -> jax.Array:
    """Euclidean norm whose gradient is 0 (not NaN) at the zero vector."""
    sq = jnp.sum(x * x, axis=axis, keepdims=keepdims)
    pos = sq > 0
    return jnp.where(pos, jnp.sqrt(jnp.where(pos, sq, 1.0)), 0.0)


def _smooth_l1(a: jax.Array, b: jax.Array) -> jax.Array:
    """PyTorch ``F.smooth_l1_loss`` with beta = 1 (Huber, delta 1), mean over all entries."""
    d = jnp.abs(a - b)
    return jnp.mean(jnp.where(d < 1.0, 0.5 * d * d, d - 0.5))


def _pdist(e: jax.Array, eps: float = 1e-12) -> jax.Array:
    """Pairwise Euclidean distances [B, B] with a zero diagonal (RepDistiller ``RKDLoss.pdist``)."""
    sq = jnp.sum(e * e, axis=1)
    d2 = jnp.maximum(sq[:, None] + sq[None, :] - 2.0 * (e @ e.T), eps)
    d = jnp.sqrt(d2)
    return jnp.where(jnp.eye(e.shape[0], dtype=bool), 0.0, d)


def _mean_normalised_distances(e: jax.Array) -> jax.Array:
    d = _pdist(e)
    pos = d > 0
    mean = jnp.sum(jnp.where(pos, d, 0.0)) / jnp.maximum(jnp.sum(pos), 1)
    return d / mean


def _angles(e: jax.Array) -> jax.Array:
    """Cosines of all triplet angles [B, B, B]: <n_ij, n_ik>, n_ij = unit(e_j - e_i)."""
    diff = e[None, :, :] - e[:, None, :]  # [B, B, D], diff[i, j] = e_j - e_i
    unit = diff / jnp.maximum(_safe_norm(diff, axis=2, keepdims=True), 1e-12)
    return jnp.einsum("ijd,ikd->ijk", unit, unit)


# ---------------------------------------------------------------------------------------------
# RKD


def rkd_loss(
    student: jax.Array, teacher: jax.Array, w_dist: float = 25.0, w_angle: float = 50.0
) -> jax.Array:
    """Relational Knowledge Distillation (Park et al., CVPR 2019), RepDistiller ``RKDLoss``.

    Shapes: student [B, D], teacher [B, D'] (D may differ from D'; here both are logits), B >= 2.
    Returns a scalar.

    Distance term: d_ij = ||x_i - x_j|| divided by the mean of the non-zero d_ij, for student and
    teacher; SmoothL1 (Huber delta 1, mean over B^2 entries).
    Angle term: cos angle(x_j - x_i, x_k - x_i) for all (i, j, k); SmoothL1 mean over B^3.
    loss = w_dist * L_dist + w_angle * L_angle (defaults 25, 50). Teacher terms carry no
    gradient (``torch.no_grad`` in the reference).

    Example:

      >>> x = jax.random.normal(jax.random.key(0), (6, 10))
      >>> abs(float(rkd_loss(x, 2 * x))) < 1e-5      # distances and angles ignore the scale
      True
    """
    check_rank("student", student, 2, "[B, D]")
    check_rank("teacher", teacher, 2, "[B, D]")
    bs, bt = shape_of(student)[0], shape_of(teacher)[0]
    if bs != bt:
        raise ValueError(f"student {shape_of(student)} and teacher {shape_of(teacher)} must "
                         "share the batch dimension")
    if bs < 2:
        raise ValueError(f"rkd_loss needs a batch of at least 2, got shape {shape_of(student)}")
    return _rkd_loss(student, teacher, w_dist, w_angle)


@jax.jit
def _rkd_loss(student, teacher, w_dist, w_angle):
    teacher = jax.lax.stop_gradient(teacher)
    loss_d = _smooth_l1(_mean_normalised_distances(student), _mean_normalised_distances(teacher))
    loss_a = _smooth_l1(_angles(student), _angles(teacher))
    return w_dist * loss_d + w_angle * loss_a


# ---------------------------------------------------------------------------------------------
# DIST


def _pearson_rows(a: jax.Array, b: jax.Array, eps: float = 1e-8) -> jax.Array:
    """Pearson correlation of each row of a with the same row of b: [N]."""
    a = a - jnp.mean(a, axis=1, keepdims=True)
    b = b - jnp.mean(b, axis=1, keepdims=True)
    return jnp.sum(a * b, axis=1) / (_safe_norm(a, axis=1) * _safe_norm(b, axis=1) + eps)


def dist_loss(
    student: jax.Array,
    teacher: jax.Array,
    tau: float = 4.0,
    beta: float = 1.0,
    gamma: float = 1.0,
) -> jax.Array:
    """DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher").

    Shapes: student [B, C], teacher [B, C] logits. Returns a scalar.

    y_s = softmax(s / tau), y_t = softmax(t / tau) (rows);
      inter = tau^2 * (1 - mean_b pearson(y_s[b, :], y_t[b, :]))   (per sample, across classes)
      intra = tau^2 * (1 - mean_c pearson(y_s[:, c], y_t[:, c]))   (per class, across the batch)
      loss = beta * inter + gamma * intra,
    pearson(a, b) = <a - mean a, b - mean b> / (|a - mean a| |b - mean b| + 1e-8).
    Defaults tau = 4 (CIFAR-100), beta = gamma = 1; the paper's weight for this loss is 2.
    Reference: alextxu/ckd ``distiller_zoo/DIST.py``.

    Example:

      >>> logits = jax.random.normal(jax.random.key(0), (8, 10))
      >>> round(float(dist_loss(logits, logits)), 2)    # perfectly correlated: no loss
      0.0
    """
    check_rank("student", student, 2, "[B, C]")
    check_same_shape("student", student, "teacher", teacher)
    check_positive("tau", tau)
    return _dist_loss(student, teacher, tau, beta, gamma)


@jax.jit
def _dist_loss(student, teacher, tau, beta, gamma):
    y_s = jax.nn.softmax(student / tau, axis=1)
    y_t = jax.nn.softmax(teacher / tau, axis=1)
    inter = tau**2 * (1.0 - jnp.mean(_pearson_rows(y_s, y_t)))
    intra = tau**2 * (1.0 - jnp.mean(_pearson_rows(y_s.T, y_t.T)))
    return beta * inter + gamma * intra


# ---------------------------------------------------------------------------------------------
# CRD

_CRD_EPS = 1e-7  # RepDistiller crd/criterion.py


def _linear_init(key, fan_in: int, fan_out: int) -> dict[str, jax.Array]:
    # PyTorch nn.Linear default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for weight and bias.
    bound = 1.0 / math.sqrt(fan_in)
    kw, kb = jax.random.split(key)
    return {
        "kernel": jax.random.uniform(kw, (fan_in, fan_out), minval=-bound, maxval=bound),
        "bias": jax.random.uniform(kb, (fan_out,), minval=-bound, maxval=bound),
    }


def crd_init(key: jax.Array, s_dim: int, t_dim: int, n_data: int, feat_dim: int = 128):
    """Parameters and state of the CRD loss (Tian et al., ICLR 2020; RepDistiller ``CRDLoss``).

    Returns (params, state):
      params = {"embed_s": {"kernel": [s_dim, feat_dim], "bias": [feat_dim]},
                "embed_t": {"kernel": [t_dim, feat_dim], "bias": [feat_dim]}}
        linear embeddings (followed by L2 normalisation in `crd_embed`), PyTorch Linear init;
      state = {"memory_s": [n_data, feat_dim], "memory_t": [n_data, feat_dim],
               "z_s": scalar, "z_t": scalar}
        memory banks of student / teacher embeddings, initialised as RepDistiller's
        ``ContrastMemory``: U(-stdv, stdv), stdv = 1 / sqrt(feat_dim / 3) (not normalised until
        a row is first updated); z_* = -1 means "normalisation constant not yet estimated".
    Train `params` with the student; thread `state` through steps (it is not trained).

    Example:

      >>> params, state = crd_init(jax.random.key(0), s_dim=10, t_dim=12, n_data=50, feat_dim=8)
      >>> params["embed_t"]["kernel"].shape, state["memory_s"].shape
      ((12, 8), (50, 8))
    """
    for name, v in (("s_dim", s_dim), ("t_dim", t_dim), ("n_data", n_data),
                    ("feat_dim", feat_dim)):
        check_static_int(name, v, 1, 1 << 40)
    k_s, k_t, k_ms, k_mt = jax.random.split(key, 4)
    stdv = 1.0 / math.sqrt(feat_dim / 3.0)
    params = {"embed_s": _linear_init(k_s, s_dim, feat_dim),
              "embed_t": _linear_init(k_t, t_dim, feat_dim)}
    state = {
        "memory_s": jax.random.uniform(k_ms, (n_data, feat_dim), minval=-stdv, maxval=stdv),
        "memory_t": jax.random.uniform(k_mt, (n_data, feat_dim), minval=-stdv, maxval=stdv),
        "z_s": jnp.asarray(-1.0, jnp.float32),
        "z_t": jnp.asarray(-1.0, jnp.float32),
    }
    return params, state


def crd_embed(embed_params: dict[str, jax.Array], x: jax.Array) -> jax.Array:
    """Flatten, linear, L2 normalise (RepDistiller ``Embed``): [B, ...] -> [B, feat_dim].

    Example:

      >>> params, state = crd_init(jax.random.key(0), s_dim=10, t_dim=12, n_data=50, feat_dim=8)
      >>> e = crd_embed(params["embed_s"], jnp.ones((4, 10)))
      >>> e.shape, bool(jnp.allclose(jnp.linalg.norm(e, axis=1), 1.0))
      ((4, 8), True)
    """
    x = jnp.reshape(x, (x.shape[0], -1))
    z = jnp.dot(x, embed_params["kernel"], precision=jax.lax.Precision.HIGHEST)
    z = z + embed_params["bias"]
    return z / _safe_norm(z, axis=1, keepdims=True)


def crd_class_index(labels, num_classes: int | None = None):
    """NumPy helper: class-sorted sample index for `crd_sample_negatives`.

    labels int [n] -> (class_sorted_index int32 [n], class_start int32 [K], class_count int32 [K])
    with K = num_classes (default max(labels) + 1): class_sorted_index lists the samples of
    class 0, then class 1, ...; class c occupies positions [class_start[c],
    class_start[c] + class_count[c]).

    Example:

      >>> index, start, count = crd_class_index(np.array([1, 0, 1, 2]))
      >>> index.tolist(), start.tolist(), count.tolist()
      ([1, 0, 2, 3], [0, 1, 3], [1, 2, 1])
    """
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must have rank 1 [n], got shape {labels.shape}")
    if not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}")
    k = int(labels.max()) + 1 if num_classes is None else int(num_classes)
    if labels.size and (labels.min() < 0 or labels.max() >= k):
        raise ValueError(f"labels must lie in [0, {k - 1}] (num_classes={k}), got values in "
                         f"[{labels.min()}, {labels.max()}]")
    order = np.argsort(labels, kind="stable").astype(np.int32)
    count = np.bincount(labels, minlength=k).astype(np.int32)
    start = (np.cumsum(count) - count).astype(np.int32)
    return order, start, count


def crd_sample_negatives(
    key: jax.Array,
    labels_of_batch: jax.Array,
    sample_idx: jax.Array,
    class_sorted_index: jax.Array,
    class_start: jax.Array,
    class_count: jax.Array,
    n_neg: int = 16384,
) -> jax.Array:
    """Contrast indices for CRD: column 0 the positive, then `n_neg` other-class samples.

    Shapes: labels_of_batch int [B], sample_idx int [B] (dataset indices of the batch),
    class_sorted_index [n], class_start [K], class_count [K] (from `crd_class_index`).
    Returns int32 [B, n_neg + 1].

    Negatives are uniform over the samples of other classes, with replacement (CRD "exact" mode;
    RepDistiller draws without replacement only when there are >= n_neg negatives, never the case
    for the paper's budgets). Trick: r ~ U{0, ..., n - count_y - 1}; r += count_y if
    r >= start_y (skip class y's block); negative = class_sorted_index[r].
    Every class must have at least one sample of another class (K >= 2 non-empty classes).

    Example:

      >>> labels = np.array([0, 0, 1, 1, 1])
      >>> batch = jnp.array([0, 2])
      >>> idx = crd_sample_negatives(jax.random.key(0), jnp.asarray(labels)[batch], batch,
      ...                            *crd_class_index(labels), n_neg=3)
      >>> idx.shape, idx[:, 0].tolist()           # column 0: the positive itself
      ((2, 4), [0, 2])
      >>> bool((labels[np.asarray(idx[:, 1:])] != labels[np.asarray(batch)][:, None]).all())
      True
    """
    check_rank("labels_of_batch", labels_of_batch, 1, "[B]")
    check_rank("sample_idx", sample_idx, 1, "[B]")
    check_integer_dtype("labels_of_batch", labels_of_batch)
    check_integer_dtype("sample_idx", sample_idx)
    check_same_shape("labels_of_batch", labels_of_batch, "sample_idx", sample_idx)
    check_rank("class_sorted_index", class_sorted_index, 1, "[n]")
    check_rank("class_start", class_start, 1, "[K]")
    check_same_shape("class_start", class_start, "class_count", class_count)
    n_neg = check_static_int("n_neg", n_neg, 1, 1 << 30)
    n = shape_of(class_sorted_index)[0]
    check_labels_in_range("labels_of_batch", labels_of_batch, shape_of(class_start)[0])
    if is_concrete(class_count) and is_concrete(labels_of_batch):
        counts = np.asarray(class_count)[np.asarray(labels_of_batch)]
        if np.any(counts >= n):
            raise ValueError("crd_sample_negatives: a batch label has no other-class samples "
                             f"(class_count {int(counts.max())} == n {n})")
    return _sample_negatives(key, labels_of_batch, sample_idx, jnp.asarray(class_sorted_index),
                             jnp.asarray(class_start), jnp.asarray(class_count), n_neg=n_neg)


@functools.partial(jax.jit, static_argnames="n_neg")
def _sample_negatives(key, labels_of_batch, sample_idx, class_sorted_index, class_start,
                      class_count, *, n_neg):
    n = class_sorted_index.shape[0]
    start = jnp.asarray(class_start)[labels_of_batch][:, None]
    count = jnp.asarray(class_count)[labels_of_batch][:, None]
    r = jax.random.randint(key, (labels_of_batch.shape[0], n_neg), 0, n - count)
    r = jnp.where(r >= start, r + count, r)
    neg = jnp.asarray(class_sorted_index)[r]
    return jnp.concatenate([sample_idx[:, None], neg], axis=1).astype(jnp.int32)


def _contrast_loss(x: jax.Array, n_data: int) -> jax.Array:
    """RepDistiller ``ContrastLoss`` (CRD eq. 18): x [B, K+1] normalised scores, column 0 positive.

    -(sum_b log(x_b0 / (x_b0 + K/n + eps)) + sum_{b, j>0} log((K/n) / (x_bj + K/n + eps))) / B
    """
    m = x.shape[1] - 1
    mpn = m / float(n_data)
    log_d1 = jnp.log(x[:, 0] / (x[:, 0] + mpn + _CRD_EPS))
    log_d0 = jnp.log(mpn / (x[:, 1:] + mpn + _CRD_EPS))
    return -(jnp.sum(log_d1) + jnp.sum(log_d0)) / x.shape[0]


def _update_memory(memory, idx, v, momentum):
    rows = memory[idx] * momentum + v * (1.0 - momentum)
    rows = rows / _safe_norm(rows, axis=1, keepdims=True)
    return memory.at[idx].set(rows)


def crd_loss(
    params: dict,
    state: dict,
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    sample_idx: jax.Array,
    contrast_idx: jax.Array,
    nce_t: float = 0.07,
    momentum: float = 0.5,
):
    """Contrastive Representation Distillation loss with memory banks (RepDistiller ``CRDLoss``).

    Shapes: student_logits [B, s_dim], teacher_logits [B, t_dim], sample_idx int [B] (dataset
    indices, distinct within the batch), contrast_idx int [B, K+1] (column 0 = sample_idx, from
    `crd_sample_negatives`). Returns (loss scalar, new_state).

    e_s = embed_s(s), e_t = embed_t(t) (linear + L2 norm);
    out_s[b, j] = exp(<memory_t[contrast_idx[b, j]], e_s[b]> / nce_t) / Z_s   (student anchor)
    out_t[b, j] = exp(<memory_s[contrast_idx[b, j]], e_t[b]> / nce_t) / Z_t   (teacher anchor)
    Z_* = mean(exp(...)) * n_data, estimated on the first call (state z_* < 0) then fixed.
    loss = ContrastLoss(out_s) + ContrastLoss(out_t)  (`_contrast_loss`, noise prob 1/n_data).
    Memory update (after scoring, no gradient): memory_s[idx] <- normalise(momentum *
    memory_s[idx] + (1 - momentum) * e_s), memory_t likewise with e_t.
    Defaults nce_t = 0.07, momentum = 0.5; paper weight 0.8.

    Example:

      >>> labels = np.array([0, 1] * 25)                          # 50 training samples
      >>> params, state = crd_init(jax.random.key(0), s_dim=10, t_dim=12, n_data=50, feat_dim=8)
      >>> batch = jnp.array([0, 1, 2, 3])
      >>> contrast = crd_sample_negatives(jax.random.key(1), jnp.asarray(labels)[batch], batch,
      ...                                 *crd_class_index(labels), n_neg=16)
      >>> loss, state = crd_loss(params, state, jnp.ones((4, 10)), jnp.ones((4, 12)), batch,
      ...                        contrast)
      >>> loss.shape, bool(jnp.isfinite(loss))
      ((), True)
    """
    check_rank("student_logits", student_logits, 2, "[B, s_dim]")
    check_rank("teacher_logits", teacher_logits, 2, "[B, t_dim]")
    check_rank("sample_idx", sample_idx, 1, "[B]")
    check_rank("contrast_idx", contrast_idx, 2, "[B, K+1]")
    check_integer_dtype("sample_idx", sample_idx)
    check_integer_dtype("contrast_idx", contrast_idx)
    b = shape_of(student_logits)[0]
    for name, arr in (("teacher_logits", teacher_logits), ("sample_idx", sample_idx),
                      ("contrast_idx", contrast_idx)):
        if shape_of(arr)[0] != b:
            raise ValueError(f"{name} {shape_of(arr)} must share the batch dimension with "
                             f"student_logits {shape_of(student_logits)}")
    if shape_of(contrast_idx)[1] < 2:
        raise ValueError(f"contrast_idx needs >= 1 negative column, got {shape_of(contrast_idx)}")
    s_dim = shape_of(params["embed_s"]["kernel"])[0]
    t_dim = shape_of(params["embed_t"]["kernel"])[0]
    if shape_of(student_logits)[1] != s_dim or shape_of(teacher_logits)[1] != t_dim:
        raise ValueError(
            f"student_logits {shape_of(student_logits)} / teacher_logits {shape_of(teacher_logits)}"
            f" do not match the embeddings' input dims s_dim={s_dim}, t_dim={t_dim}"
        )
    n_data = shape_of(state["memory_s"])[0]
    check_labels_in_range("contrast_idx", contrast_idx, n_data, "n_data")
    check_labels_in_range("sample_idx", sample_idx, n_data, "n_data")
    check_positive("nce_t", nce_t)
    check_nonneg("momentum", momentum)
    return _crd_loss(params, state, student_logits, teacher_logits, sample_idx, contrast_idx,
                     nce_t, momentum)


@jax.jit
def _crd_loss(params, state, student_logits, teacher_logits, sample_idx, contrast_idx, nce_t,
              momentum):
    n_data = state["memory_s"].shape[0]
    e_s = crd_embed(params["embed_s"], student_logits)
    e_t = crd_embed(params["embed_t"], teacher_logits)
    mem_s = jax.lax.stop_gradient(state["memory_s"])
    mem_t = jax.lax.stop_gradient(state["memory_t"])
    # full fp32 dots: scores are divided by nce_t = 0.07 then exponentiated, so TF32 rounding
    # on recent GPUs would be amplified (PyTorch's bmm in the reference is plain fp32)
    hi = jax.lax.Precision.HIGHEST
    out_s = jnp.exp(jnp.einsum("bkd,bd->bk", mem_t[contrast_idx], e_s, precision=hi) / nce_t)
    out_t = jnp.exp(jnp.einsum("bkd,bd->bk", mem_s[contrast_idx], e_t, precision=hi) / nce_t)
    z_s = jnp.where(state["z_s"] < 0, jax.lax.stop_gradient(jnp.mean(out_s)) * n_data,
                    state["z_s"])
    z_t = jnp.where(state["z_t"] < 0, jax.lax.stop_gradient(jnp.mean(out_t)) * n_data,
                    state["z_t"])
    loss = _contrast_loss(out_s / z_s, n_data) + _contrast_loss(out_t / z_t, n_data)

    new_state = jax.lax.stop_gradient({
        "memory_s": _update_memory(mem_s, sample_idx, e_s, momentum),
        "memory_t": _update_memory(mem_t, sample_idx, e_t, momentum),
        "z_s": z_s.astype(state["z_s"].dtype),
        "z_t": z_t.astype(state["z_t"].dtype),
    })
    return loss, new_state
