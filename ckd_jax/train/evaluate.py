"""Compiled top-1 / top-5 evaluation of a classifier on uint8 images held on the device.

The whole split is one jitted program: images are padded to a multiple of the batch size (the
padded rows are masked out), reshaped to [num_batches, batch, H, W, C] and mapped with
`lax.map`, so evaluating never returns to Python per batch and compiles once per
(model, spec, split size, batch size).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from ckd_jax.data.augment import center_crop, normalize

__all__ = ["evaluate", "make_eval_fn"]

ApplyFn = Callable[[Any, jax.Array], jax.Array]


def _eval_view(images_u8: jax.Array, spec: Any) -> jax.Array:
    """uint8 [B, H, W, C] -> normalised float32, centre-cropped to `spec.eval_crop` if set."""
    if spec.eval_crop is not None:
        images_u8 = center_crop(images_u8, spec.eval_crop)
    return normalize(images_u8, spec.mean, spec.std)


def _as_apply(model_or_apply: nn.Module | ApplyFn) -> ApplyFn:
    if isinstance(model_or_apply, nn.Module):
        return functools.partial(model_or_apply.apply, train=False)
    if not callable(model_or_apply):
        raise TypeError(f"expected a flax Module or apply_fn(variables, x) -> logits, got "
                        f"{type(model_or_apply).__name__}")
    return model_or_apply


def make_eval_fn(model_or_apply: nn.Module | ApplyFn, spec: Any, batch_size: int = 1000
                 ) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Build `eval_fn(variables, images_u8 [N,H,W,C], labels [N]) -> (top1, top5)` (jitted).

    Args:
      model_or_apply: a flax Module (evaluated with `train=False`) or
        `apply_fn(variables, x [B,h,w,C] float32) -> logits [B, K]`.
      spec: a `ckd_jax.data.DatasetSpec` (uses mean, std, eval_crop).
      batch_size: images per forward pass (the last batch is padded and masked).

    top1 / top5 are float32 fractions in [0, 1]; top5 uses min(5, K) classes and counts a hit
    when the label is among the k largest logits (`lax.top_k`, ties broken by lower index).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    apply_fn = _as_apply(model_or_apply)

    @jax.jit
    def eval_fn(variables, images_u8, labels):
        if images_u8.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C], got shape {images_u8.shape}")
        n = images_u8.shape[0]
        if n == 0 or labels.shape != (n,):
            raise ValueError(f"need N > 0 images and labels of shape [N]; got images "
                             f"{images_u8.shape}, labels {labels.shape}")
        bs = min(batch_size, n)
        nb = -(-n // bs)
        pad = nb * bs - n
        imgs = jnp.pad(images_u8, ((0, pad), (0, 0), (0, 0), (0, 0)))
        labs = jnp.pad(labels.astype(jnp.int32), (0, pad))
        mask = jnp.arange(nb * bs) < n
        imgs = imgs.reshape((nb, bs) + images_u8.shape[1:])
        labs = labs.reshape(nb, bs)
        mask = mask.reshape(nb, bs)

        def one_batch(batch):
            x, y, m = batch
            logits = apply_fn(variables, _eval_view(x, spec)).astype(jnp.float32)
            k = min(5, logits.shape[-1])
            top1 = (jnp.argmax(logits, -1) == y) & m
            _, topk = jax.lax.top_k(logits, k)
            top5 = jnp.any(topk == y[:, None], axis=-1) & m
            return jnp.sum(top1), jnp.sum(top5)

        c1, c5 = jax.lax.map(one_batch, (imgs, labs, mask))
        return jnp.sum(c1) / n, jnp.sum(c5) / n

    return eval_fn


@functools.lru_cache(maxsize=32)
def _cached_eval_fn(model_or_apply, spec, batch_size):
    return make_eval_fn(model_or_apply, spec, batch_size)


def evaluate(model_or_apply: nn.Module | ApplyFn, variables: Any, images_u8, labels,
             spec: Any, batch_size: int = 1000) -> tuple[float, float]:
    """Top-1 and top-5 accuracy (fractions) of a model on uint8 images [N, H, W, C].

    The compiled program is cached per (model or apply_fn, spec, batch_size), so calling this
    every epoch with the same Module does not recompile. For a per-call `functools.partial`,
    build the function once with `make_eval_fn` instead.
    """
    try:
        fn = _cached_eval_fn(model_or_apply, spec, batch_size)
    except TypeError:  # unhashable apply_fn or spec
        fn = make_eval_fn(model_or_apply, spec, batch_size)
    top1, top5 = fn(variables, jnp.asarray(images_u8), jnp.asarray(labels))
    return float(top1), float(top5)
