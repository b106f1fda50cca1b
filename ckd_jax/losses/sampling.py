"""Tuple sampling for CKD-style losses in your own training loop: the engine's draw, public.

CKD compares groups of k distinct samples (a tuple: `k - k // 2` positives, `k // 2`
negatives, `ckd_jax.losses.split_groups`). The training engine draws each step's tuples
uniformly at random: the top-k of i.i.d. uniforms over the n samples, per tuple, so every
tuple holds k distinct indices and every k-subset is equally likely. `sample_tuples` is that
draw (it calls the engine's own code, so a loop of yours samples as `run_distillation` does).
"""

from __future__ import annotations

from types import SimpleNamespace

import jax

__all__ = ["sample_tuples"]


def sample_tuples(key: jax.Array, n: int, k: int, batch_size: int,
                  steps: int | None = None) -> jax.Array:
    """int32 indices of `batch_size` tuples of `k` distinct samples in [0, n).

    Args:
      key: a PRNG key.
      n: number of samples to draw from (e.g. the teacher-labelled split's size).
      k: tuple size (DistillConfig.pos_and_neg), 2 <= k <= n.
      batch_size: tuples per step (B).
      steps: None for one step's tuples [B, k]; S for a whole pseudo-epoch [S, B, k], exactly
        the engine's draw for that key (`ckd_jax.train.engine`, sampling "tuple" without a
        fixed pool).

    Example (jit-compatible; n, k, batch_size and steps are static):

      >>> idx = sample_tuples(jax.random.key(0), n=200, k=4, batch_size=32)   # [32, 4]
      >>> logits = student_apply(variables, images[idx].reshape(-1, *images.shape[1:]))
      >>> logits = logits.reshape(32, 4, -1)               # [B, k, C], then ckd_loss(...)
    """
    for name, v in (("n", n), ("k", k), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 2 <= k <= n:
        raise ValueError(f"k={k} must be in [2, n={n}]: a tuple holds k distinct samples")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ValueError(f"steps must be None or a positive int, got {steps!r}")
    from ckd_jax.train.engine import _epoch_indices  # lazy: the engine imports the losses

    method = SimpleNamespace(sampling="tuple", tuple_size=k)
    spec = SimpleNamespace(steps_per_epoch=steps or 1, batch_size=batch_size, n_train=n,
                           use_pool=False)
    idx = _epoch_indices(method, spec, None, key)
    return idx if steps is not None else idx[0]
