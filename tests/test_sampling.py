"""The public tuple-sampling helper: shapes, distinct members, the engine's exact draw, and
uniformity over k-subsets against the exact probabilities."""

from __future__ import annotations

import itertools
from types import SimpleNamespace

import jax
import numpy as np
import pytest

from ckd_jax.losses import sample_tuples
from ckd_jax.train.engine import _epoch_indices


def test_shapes_range_and_distinct_members():
    idx = np.asarray(sample_tuples(jax.random.key(0), n=10, k=4, batch_size=64))
    assert idx.shape == (64, 4) and idx.dtype == np.int32
    assert idx.min() >= 0 and idx.max() < 10
    assert all(len(set(row)) == 4 for row in idx)
    epoch = np.asarray(sample_tuples(jax.random.key(0), n=10, k=4, batch_size=8, steps=3))
    assert epoch.shape == (3, 8, 4)


def test_is_the_engines_draw():
    key = jax.random.key(7)
    method = SimpleNamespace(sampling="tuple", tuple_size=3)
    spec = SimpleNamespace(steps_per_epoch=5, batch_size=16, n_train=50, use_pool=False)
    np.testing.assert_array_equal(sample_tuples(key, n=50, k=3, batch_size=16, steps=5),
                                  _epoch_indices(method, spec, None, key))
    jitted = jax.jit(lambda kk: sample_tuples(kk, 50, 3, 16))
    np.testing.assert_array_equal(jitted(key), sample_tuples(key, 50, 3, 16))


def test_every_k_subset_is_equally_likely():
    # n = 5, k = 2: 10 unordered pairs, each with probability 1/10 (exact reference).
    idx = np.asarray(sample_tuples(jax.random.key(1), n=5, k=2, batch_size=20000))
    counts = {p: 0 for p in itertools.combinations(range(5), 2)}
    for a, b in idx:
        counts[tuple(sorted((int(a), int(b))))] += 1
    freq = np.array(list(counts.values())) / len(idx)
    # binomial std of one frequency: sqrt(0.1 * 0.9 / 20000) = 0.0021; 5 sigma = 0.011
    np.testing.assert_allclose(freq, 0.1, atol=0.011)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"k=6 must be in \[2, n=5\]"):
        sample_tuples(jax.random.key(0), 5, 6, 4)
    with pytest.raises(ValueError, match="batch_size must be a positive int"):
        sample_tuples(jax.random.key(0), 5, 2, 0)
    with pytest.raises(ValueError, match="steps"):
        sample_tuples(jax.random.key(0), 5, 2, 4, steps=0)
