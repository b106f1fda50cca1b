"""Shared pieces of the engine tests: a tiny digits configuration and a counting teacher."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ckd_jax.models import create_model
from ckd_jax.train.config import DistillConfig

# Width-4 TinyCNNs on digits, S = 80 (B = 64 teacher calls per seed), 4 steps per pseudo-epoch.
TINY = dict(dataset="digits", subset_size=80, student="tiny_cnn", student_kwargs={"width": 4},
            teacher="tiny_cnn", teacher_kwargs={"width": 4}, batch_size=16,
            learning_rates=(0.05,), seeds=(1,), schedule="cosine", eval_batch_size=120,
            progress=False, checkpoint_seconds=0.0)  # checkpoints by epoch count only


def tiny_config(**overrides) -> DistillConfig:
    return DistillConfig(**{**TINY, **overrides})


class CountingTeacher:
    """A randomly initialised TinyCNN teacher whose apply counts the samples it sees (also when
    asked for features)."""

    def __init__(self, seed=0):
        self.model = create_model("tiny_cnn", 10, width=4)
        self.variables = self.model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 8, 8, 1)),
                                         train=False)
        self.calls = 0

    def apply(self, variables, x, train=False, **kw):
        jax.debug.callback(self._count, x.shape[0])  # runs under jit: count executed calls
        return self.model.apply(variables, x, train=train, **kw)

    def _count(self, n):
        self.calls += int(n)
