"""Mixing baselines: mixup, mixup3 and CutMix input transforms plus their one distillation loss.

Convention shared by the transforms and `mix_distill_loss`: a mixed batch is described by
`indices` int [m, B] and `weights` [m], where row 0 of `indices` is arange(B) (the sample itself)
and row j > 0 the partner whose image/label/teacher logits enter with weight `weights[j]`.
The transforms return the short forms the baselines are known by (`partner` [B] + `lam` for
mixup/CutMix, `partners` [m-1, B] + `weights` [m] for mixup3); `mix_distill_loss` accepts both
and normalises them with `mix_indices_weights`.

Pairing differs from the authors' code in one respect: alextxu/ckd draws each pair (i, j) from a
fixed pool of distinct ordered pairs of the teacher-labelled set (``MixupSample``), so a batch
holds 2B images; here partners are a random permutation of the batch (the usual mixup/CutMix
formulation; the paper says "pairs (i, j)", docs/method.md). Each image is still mixed
with a uniformly random other sample and every target is a cached teacher output, so no
extra teacher call is made.
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
    check_positive,
    check_rank,
    check_same_shape,
    shape_of,
)
from .kd import _kl_rows

SOFT_TERMS = ("ce", "kd")


def _check_images(images) -> None:
    check_rank("images", images, 4, "[B, H, W, C] (NHWC float)")
    if not jnp.issubdtype(jnp.result_type(images), jnp.floating):
        raise ValueError(
            f"images must be float (normalise uint8 images first), got dtype "
            f"{jnp.result_type(images)}"
        )


def mixup_inputs(key: jax.Array, images: jax.Array, alpha: float = 1.0):
    """mixup (Zhang et al. 2018) on a batch, one lam per batch.

    Shapes: images float [B, H, W, C] -> (mixed [B, H, W, C], partner int32 [B], lam scalar).
    lam ~ Beta(alpha, alpha) (alpha = 1 in the paper: uniform), partner = a random permutation of
    the batch, mixed = lam * images + (1 - lam) * images[partner].
    Reference: alextxu/ckd ``helper/MixupTrainHelpers.py`` (``lam*pos + (1-lam)*neg``).

    Example:

      >>> images = jax.random.uniform(jax.random.key(1), (4, 8, 8, 3))
      >>> mixed, partner, lam = mixup_inputs(jax.random.key(0), images)
      >>> bool(jnp.allclose(mixed, lam * images + (1 - lam) * images[partner]))
      True
    """
    _check_images(images)
    check_positive("alpha", alpha)
    return _mixup(key, images, alpha)


@jax.jit
def _mixup(key, images, alpha):
    k_lam, k_perm = jax.random.split(key)
    b = images.shape[0]
    lam = jax.random.beta(k_lam, alpha, alpha).astype(images.dtype)
    partner = jax.random.permutation(k_perm, b).astype(jnp.int32)
    mixed = lam * images + (1.0 - lam) * images[partner]
    return mixed, partner, lam


def mixup3_inputs(key: jax.Array, images: jax.Array):
    """Three-sample mixup ("mixup3", first release only).

    Shapes: images float [B, H, W, C] -> (mixed [B, H, W, C], partners int32 [2, B], weights [3]).
    weights = u / sum(u), u ~ U(0, 1)^3 (= Beta(1, 1)^3 as in ``MixupThreeTrainHelpers``);
    member 0 is the sample itself, members 1 and 2 are two independent random permutations:
    mixed = w0 * x + w1 * x[partners[0]] + w2 * x[partners[1]].

    Example:

      >>> mixed, partners, weights = mixup3_inputs(jax.random.key(0), jnp.ones((4, 8, 8, 3)))
      >>> mixed.shape, partners.shape, round(float(weights.sum()), 4)
      ((4, 8, 8, 3), (2, 4), 1.0)
    """
    _check_images(images)
    return _mixup3(key, images)


@jax.jit
def _mixup3(key, images):
    k_w, k_p1, k_p2 = jax.random.split(key, 3)
    b = images.shape[0]
    u = jax.random.uniform(k_w, (3,), dtype=images.dtype)
    weights = u / jnp.sum(u)
    partners = jnp.stack(
        [jax.random.permutation(k_p1, b), jax.random.permutation(k_p2, b)]
    ).astype(jnp.int32)
    mixed = (weights[0] * images + weights[1] * images[partners[0]]
             + weights[2] * images[partners[1]])
    return mixed, partners, weights


def cutmix_box_mask(key: jax.Array | None, height: int, width: int, lam: jax.Array,
                    centre: tuple | None = None) -> jax.Array:
    """Keep-mask [H, W] of CutMix: 0 inside one random box, 1 elsewhere.

    As the CutMix reference (``rand_bbox``): cut_rat = sqrt(1 - lam), cut_w = floor(W cut_rat),
    cut_h = floor(H cut_rat), centre (cx, cy) uniform over pixels (drawn from `key` unless
    `centre=(cx, cy)` is given), box [cx - cut_w // 2, cx + cut_w // 2) x
    [cy - cut_h // 2, cy + cut_h // 2) clipped to the image. Built with comparisons on iota
    grids, since the box size is data dependent under jit.

    Example:

      >>> cutmix_box_mask(None, 4, 4, jnp.float32(0.75), centre=(2, 2)).astype(int).tolist()
      [[1, 1, 1, 1], [1, 0, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]]
    """
    if centre is None:
        k_x, k_y = jax.random.split(key)
        cx = jax.random.randint(k_x, (), 0, width)
        cy = jax.random.randint(k_y, (), 0, height)
    else:
        cx, cy = (jnp.asarray(v, jnp.int32) for v in centre)
    cut_rat = jnp.sqrt(1.0 - lam)
    cut_w = jnp.floor(width * cut_rat).astype(jnp.int32)
    cut_h = jnp.floor(height * cut_rat).astype(jnp.int32)
    x1 = jnp.clip(cx - cut_w // 2, 0, width)
    x2 = jnp.clip(cx + cut_w // 2, 0, width)
    y1 = jnp.clip(cy - cut_h // 2, 0, height)
    y2 = jnp.clip(cy + cut_h // 2, 0, height)
    rows = jax.lax.broadcasted_iota(jnp.int32, (height, width), 0)
    cols = jax.lax.broadcasted_iota(jnp.int32, (height, width), 1)
    inside = (rows >= y1) & (rows < y2) & (cols >= x1) & (cols < x2)
    return jnp.where(inside, 0.0, 1.0)


def cutmix_inputs(key: jax.Array, images: jax.Array, alpha: float = 1.0):
    """CutMix (Yun et al. 2019) on a batch, one box per batch.

    Shapes: images float [B, H, W, C] -> (mixed [B, H, W, C], partner int32 [B], lam scalar).
    lam0 ~ Beta(alpha, alpha); the box (see `cutmix_box_mask`) is filled with the partner's
    pixels: mixed = mask * x + (1 - mask) * x[partner]; lam is then reset to the kept area
    fraction mean(mask), the weight of the sample itself in the loss.
    Reference: alextxu/ckd ``helper/CutMixHelpers.py`` (after clovaai/CutMix-PyTorch).

    Example:

      >>> mixed, partner, lam = cutmix_inputs(jax.random.key(0), jnp.ones((4, 8, 8, 3)))
      >>> mixed.shape, partner.shape, bool(0 <= lam <= 1)
      ((4, 8, 8, 3), (4,), True)
    """
    _check_images(images)
    check_positive("alpha", alpha)
    return _cutmix(key, images, alpha)


@jax.jit
def _cutmix(key, images, alpha):
    k_lam, k_box, k_perm = jax.random.split(key, 3)
    b, h, w, _ = images.shape
    lam0 = jax.random.beta(k_lam, alpha, alpha)
    mask = cutmix_box_mask(k_box, h, w, lam0).astype(images.dtype)
    partner = jax.random.permutation(k_perm, b).astype(jnp.int32)
    m = mask[None, :, :, None]
    mixed = m * images + (1.0 - m) * images[partner]
    lam = jnp.mean(mask)
    return mixed, partner, lam


def mix_indices_weights(partners: jax.Array, weights, batch_size: int):
    """Normalise the mixing description to (indices int [m, B], weights [m]).

    Accepted: partners [B] with weights a scalar lam (or [2]) -> m = 2, weights (lam, 1 - lam);
    partners [m-1, B] with weights [m]. Row 0 of `indices` is arange(B).

    Example:

      >>> indices, weights = mix_indices_weights(jnp.array([1, 0]), 0.25, batch_size=2)
      >>> indices.tolist(), weights.tolist()
      ([[0, 1], [1, 0]], [0.25, 0.75])
    """
    check_rank("partners", partners, (1, 2), "([B] or [m-1, B])")
    check_integer_dtype("partners", partners)
    pshape = shape_of(partners)
    if pshape[-1] != batch_size:
        raise ValueError(
            f"partners {pshape} must end in the batch size B={batch_size} of student_logits"
        )
    check_labels_in_range("partners", partners, batch_size, "batch size")
    partners = jnp.reshape(jnp.asarray(partners), (-1, batch_size))
    m = partners.shape[0] + 1
    weights = jnp.asarray(weights)
    if weights.ndim == 0:
        if m != 2:
            raise ValueError(
                f"a scalar lam describes a 2-sample mix (partners [B]), but partners has shape "
                f"{pshape} (m={m}); pass weights of shape [{m}]"
            )
        weights = jnp.stack([weights, 1.0 - weights])
    elif weights.shape != (m,):
        raise ValueError(
            f"weights must have shape [{m}] for partners {pshape} (or be a scalar lam when "
            f"partners is [B]), got {weights.shape}"
        )
    own = jnp.arange(batch_size, dtype=partners.dtype)[None]
    return jnp.concatenate([own, partners], axis=0), weights


def mix_distill_loss(
    student_logits: jax.Array,
    labels: jax.Array,
    teacher_logits: jax.Array,
    partners: jax.Array,
    weights,
    *,
    soft: str = "ce",
    temperature: float = 4.0,
    w_cls: float = 1.0,
    w_soft: float = 1.0,
) -> jax.Array:
    """Loss of the mixing baselines (mixup, mixup3, CutMix) on a mixed batch.

    Shapes: student_logits [B, C] (student on the mixed images), labels int [B] and
    teacher_logits [B, C] of the *unmixed* batch (cached), partners [B] or [m-1, B] int,
    weights a scalar lam (with partners [B]) or [m]. Returns a scalar.

    With indices [m, B] (row 0 = arange(B)) from `mix_indices_weights`:
      loss = sum_j w_j * ( w_cls * CE(s, y[idx_j]) + w_soft * soft(s, t[idx_j]) )
    soft="ce": mean_b -sum_c softmax(t)_c log softmax(s)_c (soft CE at T = 1; official default
    ``loss_fn=0``); soft="kd": kd_loss(s, t, T) (``loss_fn=1``). Defaults w_cls = w_soft = 1.
    Reference: alextxu/ckd ``helper/MixupTrainHelpers.py``, ``CutMixHelpers.py``,
    ``MixupThreeTrainHelpers.py`` (first release).

    Example:

      >>> loss = mix_distill_loss(jnp.zeros((2, 4)), jnp.array([0, 1]), jnp.zeros((2, 4)),
      ...                         partners=jnp.array([1, 0]), weights=1.0)
      >>> round(float(loss), 4)    # lam = 1: CE + soft CE, log 4 each
      2.7726
    """
    check_rank("student_logits", student_logits, 2, "[B, C]")
    check_same_shape("student_logits", student_logits, "teacher_logits", teacher_logits)
    check_rank("labels", labels, 1, "[B]")
    check_integer_dtype("labels", labels)
    b, c = shape_of(student_logits)
    if shape_of(labels) != (b,):
        raise ValueError(f"labels must have shape [B] = {(b,)}, got {shape_of(labels)}")
    check_choice("soft", soft, SOFT_TERMS)
    check_positive("temperature", temperature)
    check_labels_in_range("labels", labels, c)
    if np.ndim(weights) not in (0, 1):
        raise ValueError(f"weights must be a scalar lam or [m], got shape {shape_of(weights)}")
    indices, w = mix_indices_weights(partners, weights, b)
    return _mix_distill(student_logits, labels, teacher_logits, indices, w, temperature, w_cls,
                        w_soft, soft=soft)


@functools.partial(jax.jit, static_argnames="soft")
def _mix_distill(student_logits, labels, teacher_logits, indices, w, temperature, w_cls, w_soft,
                 *, soft):
    logp = jax.nn.log_softmax(student_logits, axis=-1)  # [B, C]
    y = labels[indices]  # [m, B]
    ce = -jnp.mean(jnp.take_along_axis(logp[None], y[..., None], axis=-1)[..., 0], axis=-1)
    t = teacher_logits[indices]  # [m, B, C]
    if soft == "ce":
        soft_term = -jnp.mean(jnp.sum(jax.nn.softmax(t, axis=-1) * logp[None], axis=-1), axis=-1)
    else:
        rows = jax.vmap(lambda tj: _kl_rows(student_logits, tj, temperature))(t)  # [m, B]
        soft_term = temperature**2 * jnp.mean(rows, axis=-1)
    return jnp.sum(w * (w_cls * ce + w_soft * soft_term))
