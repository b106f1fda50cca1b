"""Top-1 / top-5 accuracy of one classifier: a thin convenience wrapper over the engine's
evaluation (`ckd_jax.train.engine.make_evaluate`, vmapped over population members), called
with a population of one (M = 1) on one device.

There is one evaluation implementation in the package: eval mode (running statistics), the
clean view (centre crop to `spec.eval_crop` if set, then `(x/255 - mean)/std`), the split
padded to whole chunks of `batch_size` with the padding masked out, the chunks mapped by
`lax.scan` inside one jitted program (no return to Python per batch). This module only adds the
member axis and accepts a bare `apply_fn` as well as a flax Module.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

__all__ = ["evaluate", "make_eval_fn"]

ApplyFn = Callable[[Any, jax.Array], jax.Array]


@dataclass(frozen=True)
class _EvalView:
    """The fields of a StepSpec the evaluation reads, from a DatasetSpec (float32)."""

    mean: tuple
    std: tuple
    eval_crop: int | None
    compute_dtype: str = "float32"


class _ApplyModel:
    """`apply_fn(variables, x) -> logits` behind the `model.apply(..., train=False)` the
    engine's evaluation calls."""

    def __init__(self, apply_fn: ApplyFn):
        self._apply = apply_fn

    def apply(self, variables, x, train=False):
        del train
        return self._apply(variables, x)


def _as_model(model_or_apply: nn.Module | ApplyFn):
    if isinstance(model_or_apply, nn.Module):
        return model_or_apply
    if not callable(model_or_apply):
        raise TypeError(f"expected a flax Module or apply_fn(variables, x) -> logits, got "
                        f"{type(model_or_apply).__name__}")
    return _ApplyModel(model_or_apply)


def make_eval_fn(model_or_apply: nn.Module | ApplyFn, spec: Any, batch_size: int = 1000
                 ) -> Callable[[Any, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]:
    """Build `eval_fn(variables, images_u8 [N,H,W,C], labels [N]) -> (top1, top5)`.

    Args:
      model_or_apply: a flax Module (evaluated with `train=False`) or
        `apply_fn(variables, x [B,h,w,C] float32) -> logits [B, K]`.
      spec: a `ckd_jax.data.DatasetSpec` (uses mean, std, eval_crop).
      batch_size: images per forward pass (the last batch is padded and masked).

    top1 / top5 are float32 fractions in [0, 1]; top5 uses min(5, K) classes and counts a hit
    when the label is among the k largest logits (`lax.top_k`, ties broken by lower index).
    One program is compiled per (split size, min(batch_size, N)).
    """
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    from ckd_jax.train.engine import make_evaluate, make_mesh

    model = _as_model(model_or_apply)
    view = _EvalView(tuple(spec.mean), tuple(spec.std), spec.eval_crop)
    mesh = make_mesh(1)
    built: dict[int, Callable] = {}
    one = lambda tree: jax.tree.map(lambda x: jnp.asarray(x)[None], tree)  # M = 1

    def eval_fn(variables, images_u8, labels):
        images_u8, labels = jnp.asarray(images_u8), jnp.asarray(labels)
        if images_u8.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C], got shape {images_u8.shape}")
        n = images_u8.shape[0]
        if n == 0 or labels.shape != (n,):
            raise ValueError(f"need N > 0 images and labels of shape [N]; got images "
                             f"{images_u8.shape}, labels {labels.shape}")
        bs = min(batch_size, n)
        if bs not in built:
            built[bs] = make_evaluate(model, view, mesh, bs, shared_images=True)
        stats = variables.get("batch_stats", {}) if hasattr(variables, "get") else {}
        top1, top5 = built[bs](one(variables["params"]), one(stats), images_u8,
                               labels.astype(jnp.int32))
        return top1[0], top5[0]

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
    top1, top5 = fn(variables, images_u8, labels)
    return float(top1), float(top5)
