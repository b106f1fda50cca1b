"""Tuple sampling for CKD-style losses in your own training loop: the engine's draw, public.

CKD compares groups of k distinct samples (a tuple: `k - k // 2` positives, `k // 2`
negatives, `ckd_jax.losses.split_groups`). The training engine draws each step's tuples
uniformly at random: the top-k of i.i.d. uniforms over the n samples, per tuple, so every
tuple holds k distinct indices and every k-subset is equally likely. `sample_tuples` is that
draw: `epoch_indices` below is the one place the engine's per-epoch indices are drawn, so a
loop of yours samples as `run_distillation` does.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

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

      >>> idx = sample_tuples(jax.random.key(0), n=200, k=4, batch_size=32)
      >>> idx.shape, idx.dtype
      ((32, 4), dtype('int32'))
      >>> images = jnp.zeros((200, 8, 8, 3))
      >>> images[idx].shape        # [B, k, H, W, C]: the student's input, then ckd_loss(...)
      (32, 4, 8, 8, 3)
    """
    for name, v in (("n", n), ("k", k), ("batch_size", batch_size)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    if not 2 <= k <= n:
        raise ValueError(f"k={k} must be in [2, n={n}]: a tuple holds k distinct samples")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int)
                              or steps < 1):
        raise ValueError(f"steps must be None or a positive int, got {steps!r}")
    idx = epoch_indices(key, "tuple", steps=steps or 1, batch_size=batch_size, n=n, k=k)
    return idx if steps is not None else idx[0]


def epoch_indices(key: jax.Array, sampling: str, *, steps: int, batch_size: int, n: int,
                  k: int | None = None, pool: jax.Array | None = None) -> jax.Array:
    """The training engine's sample indices for one pseudo-epoch of `steps` steps.

    sampling "sample": [steps, batch_size], one shuffled pass over the n samples (like a
    DataLoader with shuffle); the last partial batch is filled from a second permutation so
    every step has a static shape. sampling "tuple": [steps, batch_size, k], k distinct samples
    per tuple drawn uniformly (top-k of i.i.d. uniforms), or, given a fixed `pool` [P, k] of
    tuples, rows of the pool drawn at random (with replacement only when P < steps*batch_size).
    """
    s, b = steps, batch_size
    if sampling == "sample":
        k1, k2 = jax.random.split(key)
        perm = jnp.concatenate([jax.random.permutation(k1, n), jax.random.permutation(k2, n)])
        return perm[: s * b].reshape(s, b).astype(jnp.int32)
    if pool is not None:
        sel = jax.random.choice(key, pool.shape[0], (s * b,), replace=pool.shape[0] < s * b)
        return pool[sel].reshape(s, b, k)
    keys = jax.random.split(key, s)
    draw = lambda kk: jax.lax.top_k(jax.random.uniform(kk, (b, n)), k)[1]  # noqa: E731
    return jax.vmap(draw)(keys).astype(jnp.int32)
