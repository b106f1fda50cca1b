"""Comparative Knowledge Distillation (Wilf et al., arXiv 2311.02253 / WACV 2025).

A batch of B tuples, each of k samples; along axis 1 the first `n_pos` members form the group P
and the remaining `k - n_pos` the group N. Student logits, cached teacher logits and one-hot labels
are each reduced to one comparison per tuple (`compare_groups`), and the student's comparison is
regressed onto the teacher's and the labels' comparisons.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from ._checks import (
    check_choice,
    check_integer_dtype,
    check_labels_in_range,
    check_min_rank,
    check_positive,
    check_rank,
    check_same_shape,
    check_static_int,
    is_concrete,
    shape_of,
)
from .kd import _kl_rows

COMBINES = ("diff", "add", "interp")
FORMS = ("mse", "kl")


def split_groups(k: int) -> tuple[int, int]:
    """Default split of a k-tuple into (n_pos, n_neg), as the official code does.

    n_neg = k // 2, n_pos = k - n_neg: k=2 -> (1, 1), k=3 -> (2, 1), k=4 -> (2, 2).

    Example:

      >>> split_groups(2), split_groups(3), split_groups(4)
      ((1, 1), (2, 1), (2, 2))
    """
    k = check_static_int("k", k, 2, 1 << 30, " (tuple size, pos_and_neg)")
    n_neg = k // 2
    return k - n_neg, n_neg


def _check_combine(combine: str, lam) -> None:
    check_choice("combine", combine, COMBINES)
    if combine == "interp":
        if lam is None:
            raise ValueError(
                "combine='interp' needs lam (a scalar, e.g. jax.random.beta(key, 1.0, 1.0)); "
                "got lam=None"
            )
        if np.ndim(lam) != 0:
            raise ValueError(f"lam must be a scalar, got shape {shape_of(lam)}")
        if is_concrete(lam) and not 0.0 <= float(lam) <= 1.0:
            raise ValueError(f"lam must lie in [0, 1], got {float(lam)}")


def _combine(p: jax.Array, n: jax.Array, combine: str, lam) -> jax.Array:
    if combine == "diff":
        return p - n
    if combine == "add":
        return 0.5 * p + 0.5 * n
    return lam * p + (1.0 - lam) * n


def compare_groups(
    x: jax.Array, n_pos: int, combine: str = "diff", lam: jax.Array | float | None = None
) -> jax.Array:
    """Group comparison of a batch of tuples.

    Shapes: x [B, k, ...] (any trailing dims: logits [B, k, C], features [B, k, H, W, C]);
    returns [B, ...].

    P = mean(x[:, :n_pos], axis=1), N = mean(x[:, n_pos:], axis=1), then
      combine="diff":   P - N             (CKD)
      combine="add":    0.5 P + 0.5 N     (ablation "add")
      combine="interp": lam P + (1-lam) N (ablation "interp"; lam a scalar, Beta(1,1) per batch)
    (official code: ``CKDTrainHelpers.mix_func``). `n_pos` must be a static int in [1, k-1].

    Example:

      >>> x = jnp.array([[[1.0, 2.0], [3.0, 4.0], [10.0, 0.0]]])   # one tuple, k=3, 2 positives
      >>> compare_groups(x, n_pos=2).tolist()                      # mean(P) - mean(N)
      [[-8.0, 3.0]]
    """
    check_min_rank("x", x, 2, "[B, k, ...]")
    k = shape_of(x)[1]
    if k < 2:
        raise ValueError(f"x must hold tuples of k >= 2 members along axis 1, got shape "
                         f"{shape_of(x)}")
    n_pos = check_static_int("n_pos", n_pos, 1, k - 1, f" for k={k}")
    _check_combine(combine, lam)
    return _compare_jit(x, lam, n_pos=n_pos, combine=combine)


@functools.partial(jax.jit, static_argnames=("n_pos", "combine"))
def _compare_jit(x, lam, *, n_pos, combine):
    return _compare(x, n_pos, combine, lam)


def _compare(x, n_pos, combine, lam):
    p = jnp.mean(x[:, :n_pos], axis=1)
    n = jnp.mean(x[:, n_pos:], axis=1)
    return _combine(p, n, combine, lam)


def _check_ckd_args(student_logits, teacher_logits, labels, n_pos, form, temperature, combine,
                    lam) -> int:
    check_rank("student_logits", student_logits, 3, "[B, k, C]")
    check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    check_rank("labels", labels, 2, "[B, k]")
    check_integer_dtype("labels", labels)
    b, k, c = shape_of(student_logits)
    if shape_of(labels) != (b, k):
        raise ValueError(
            f"labels must have shape [B, k] = {(b, k)} to match student_logits "
            f"{shape_of(student_logits)}, got {shape_of(labels)}"
        )
    if k < 2:
        raise ValueError(f"tuples need k >= 2 members, got student_logits shape {(b, k, c)}")
    n_pos = check_static_int("n_pos", n_pos, 1, k - 1, f" for k={k}")
    check_choice("form", form, FORMS)
    check_positive("temperature", temperature)
    _check_combine(combine, lam)
    check_labels_in_range("labels", labels, c)
    return n_pos


def _ckd_tuple_terms(s, t, y, *, n_pos, form, temperature, combine, lam):
    """One tuple: s, t [k, C] logits, y [k] int. Returns (cls, rel) scalars for this tuple."""
    num_classes = s.shape[-1]
    onehot = jax.nn.one_hot(y, num_classes, dtype=s.dtype)
    stacked = jnp.stack([s, t, onehot])  # [3, k, C]: compare all three the same way
    ds, dt, dy = _compare(stacked, n_pos, combine, lam)
    if form == "mse":
        return jnp.mean((ds - dy) ** 2), jnp.mean((ds - dt) ** 2)
    # first release: criterion = DistillKL(T) with the comparisons as "teacher" targets
    scale = temperature**2
    return scale * _kl_rows(ds, dy, temperature), scale * _kl_rows(ds, dt, temperature)


def ckd_terms(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    *,
    n_pos: int,
    form: str = "mse",
    temperature: float = 4.0,
    combine: str = "diff",
    lam: jax.Array | float | None = None,
) -> dict[str, jax.Array]:
    """Unweighted CKD terms {"cls": D(dS, dY), "rel": D(dS, dT)} (scalars, batch means).

    See `ckd_loss` for shapes and formulas.

    Example:

      >>> logits = jax.random.normal(jax.random.key(0), (8, 4, 10))
      >>> labels = jnp.tile(jnp.array([0, 0, 1, 2]), (8, 1))
      >>> terms = ckd_terms(logits, logits, labels, n_pos=2)   # student = teacher: no rel term
      >>> sorted(terms), float(terms["rel"])
      (['cls', 'rel'], 0.0)
    """
    n_pos = _check_ckd_args(student_logits, teacher_logits, labels, n_pos, form, temperature,
                            combine, lam)
    return _ckd_terms(student_logits, teacher_logits, labels, temperature, lam, n_pos=n_pos,
                      form=form, combine=combine)


@functools.partial(jax.jit, static_argnames=("n_pos", "form", "combine"))
def _ckd_terms(student_logits, teacher_logits, labels, temperature, lam, *, n_pos, form,
               combine):
    per_tuple = jax.vmap(
        lambda s, t, y: _ckd_tuple_terms(s, t, y, n_pos=n_pos, form=form,
                                         temperature=temperature, combine=combine, lam=lam)
    )
    cls, rel = per_tuple(student_logits, teacher_logits, labels)
    return {"cls": jnp.mean(cls), "rel": jnp.mean(rel)}


def ckd_loss(
    student_logits: jax.Array,
    teacher_logits: jax.Array,
    labels: jax.Array,
    *,
    n_pos: int,
    form: str = "mse",
    temperature: float = 4.0,
    w_cls: float = 1.0,
    w_rel: float = 1.0,
    combine: str = "diff",
    lam: jax.Array | float | None = None,
) -> jax.Array:
    """Comparative Knowledge Distillation loss.

    Shapes: student_logits [B, k, C] (student logits of the k members of each tuple),
    teacher_logits [B, k, C] (cached teacher logits of the same members), labels int [B, k].
    Along axis 1 the first `n_pos` members are the group P, the rest N (1 <= n_pos < k, k >= 2;
    `split_groups(k)` gives the official split). Returns a scalar.

    dS, dT, dY = compare_groups(.) of student logits, teacher logits, one_hot(labels); then
      loss = w_cls * D(dS, dY) + w_rel * D(dS, dT)
    with
      form="mse" (WACV 2025 release, default): D = mean over batch and classes of (a - b)^2;
      form="kl"  (first release / arXiv): D(a, b) = T^2 * mean_b KL(softmax(b/T) || softmax(a/T)).
    No per-sample cross-entropy: labels enter only through dY. The per-tuple computation is
    written once and vmapped over the B tuples. `n_pos`, `form`, `combine` must be static.
    Default weights w_cls = w_rel = 1 (both releases). Label range is checked only for concrete
    labels; under jit an out-of-range label becomes an all-zero one-hot row. Reference: alextxu/ckd
    ``helper/CKDTrainHelpers.py`` with ``nn.MSELoss`` / ``DistillKL``.

    Example:

      >>> k_s, k_t = jax.random.split(jax.random.key(0))
      >>> student = jax.random.normal(k_s, (8, 4, 10))       # 8 tuples of k=4 samples, 10 classes
      >>> teacher = jax.random.normal(k_t, (8, 4, 10))
      >>> labels = jnp.tile(jnp.array([0, 0, 1, 2]), (8, 1))
      >>> n_pos, n_neg = split_groups(4)
      >>> loss = ckd_loss(student, teacher, labels, n_pos=n_pos)
      >>> loss.shape, bool(loss > 0)
      ((), True)
    """
    terms = ckd_terms(student_logits, teacher_logits, labels, n_pos=n_pos, form=form,
                      temperature=temperature, combine=combine, lam=lam)
    return w_cls * terms["cls"] + w_rel * terms["rel"]
