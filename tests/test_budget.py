"""Budget selection: sizes, disjointness, determinism, equality with the official code's draw."""

import random

import numpy as np
import pytest

from ckd_jax.budget import BudgetSplit, select_budget, subset_size_for_budget


def _official_split(n_train, subset_size, seed, train_percent=0.8):
    """The authors' code (alextxu/ckd dataset/cifar100.py + dataset/util.py), re-typed as the
    sequence of Python `random` calls it makes after `random.seed(seed)`."""
    random.seed(seed)
    subset_indices = random.sample(list(range(n_train)), subset_size)
    train_len = int(len(subset_indices) * train_percent)
    shuffled = list(range(len(subset_indices)))
    random.shuffle(shuffled)
    train = [subset_indices[i] for i in shuffled[:train_len]]
    val = [subset_indices[i] for i in shuffled[train_len:]]
    return train, val


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("subset_size", [2000, 3500, 6000])
def test_matches_official_code_sequence(seed, subset_size):
    split = select_budget(50000, seed=seed, subset_size=subset_size)
    train, val = _official_split(50000, subset_size, seed)
    np.testing.assert_array_equal(split.teacher_idx, train)
    np.testing.assert_array_equal(split.val_idx, val)


@pytest.mark.parametrize("subset_size,budget", [(2000, 1600), (2500, 2000), (6000, 4800),
                                                (2001, 1600), (2004, 1603), (5, 4), (1, 0)])
def test_sizes_follow_int_truncation(subset_size, budget):
    if budget == 0:
        with pytest.raises(ValueError, match="no teacher-labelled sample"):
            select_budget(100000, seed=0, subset_size=subset_size)
        return
    split = select_budget(100000, seed=0, subset_size=subset_size)
    assert split.budget == budget == len(split.teacher_idx)
    assert len(split.val_idx) == subset_size - budget
    assert split.subset_size == subset_size and split.remainder_idx.size == 0


def test_properties_disjoint_in_range_unique():
    s = select_budget(1000, seed=7, subset_size=300, labelled_remainder=True)
    all_idx = np.concatenate([s.teacher_idx, s.val_idx, s.remainder_idx])
    assert len(all_idx) == 1000 and np.array_equal(np.sort(all_idx), np.arange(1000))
    assert len(s.teacher_idx) == 240 and len(s.val_idx) == 60 and len(s.remainder_idx) == 700
    assert np.all(np.diff(s.remainder_idx) > 0)
    np.testing.assert_array_equal(s.labelled_idx, np.concatenate([s.teacher_idx,
                                                                  s.remainder_idx]))
    # The remainder option does not change the subset or its split.
    plain = select_budget(1000, seed=7, subset_size=300)
    np.testing.assert_array_equal(plain.teacher_idx, s.teacher_idx)
    np.testing.assert_array_equal(plain.val_idx, s.val_idx)


def test_deterministic_per_seed_and_seeds_differ():
    a = select_budget(50000, seed=1, subset_size=2000)
    b = select_budget(50000, seed=1, subset_size=2000)
    c = select_budget(50000, seed=2, subset_size=2000)
    np.testing.assert_array_equal(a.teacher_idx, b.teacher_idx)
    np.testing.assert_array_equal(a.val_idx, b.val_idx)
    assert len(np.intersect1d(a.teacher_idx, c.teacher_idx)) < 200  # ~ 1600 * 0.04 expected
    # Global random state is neither used nor disturbed.
    random.seed(123)
    expected = random.random()
    random.seed(123)
    select_budget(100, seed=5, subset_size=10)
    assert random.random() == expected


def test_budget_argument_gives_subset_budget_over_0p8():
    for b in (1600, 1601, 1603, 4000, 1):
        s = select_budget(50000, seed=0, budget=b)
        assert s.budget == b
        assert int(s.subset_size * 0.8) == b and int((s.subset_size - 1) * 0.8) < b
    assert select_budget(50000, seed=0, budget=1600).subset_size == 2000
    assert subset_size_for_budget(4800) == 6000
    assert subset_size_for_budget(10, train_fraction=0.5) == 20
    np.testing.assert_array_equal(select_budget(50000, seed=3, budget=2000).teacher_idx,
                                  select_budget(50000, seed=3, subset_size=2500).teacher_idx)


def test_errors():
    with pytest.raises(ValueError, match="exactly one of subset_size and budget"):
        select_budget(100, seed=0)
    with pytest.raises(ValueError, match="exactly one of subset_size and budget"):
        select_budget(100, seed=0, subset_size=10, budget=8)
    with pytest.raises(ValueError, match="subset_size 101 is larger than the 100"):
        select_budget(100, seed=0, subset_size=101)
    with pytest.raises(ValueError, match="budget 81 needs a subset of 102 .* 100 training"):
        select_budget(100, seed=0, budget=81)
    for bad in (0, -5):
        with pytest.raises(ValueError, match="must be a positive int"):
            select_budget(100, seed=0, subset_size=bad)
        with pytest.raises(ValueError, match="must be a positive int"):
            select_budget(100, seed=0, budget=bad)
    with pytest.raises(ValueError, match="n_train"):
        select_budget(0, seed=0, subset_size=1)
    with pytest.raises(ValueError, match="seed must be an int"):
        select_budget(100, seed=1.5, subset_size=10)
    with pytest.raises(ValueError, match="labels has length 99 but n_train is 100"):
        select_budget(100, seed=0, subset_size=10, labels=np.zeros(99))
    with pytest.raises(ValueError, match="train_fraction"):
        select_budget(100, seed=0, subset_size=10, train_fraction=0.0)
    # The whole training set as the subset is allowed.
    assert select_budget(100, seed=0, subset_size=100).budget == 80


def test_budgetsplit_validation_and_roundtrip():
    s = select_budget(200, seed=4, subset_size=50, labelled_remainder=True)
    again = BudgetSplit(**s.as_dict())
    np.testing.assert_array_equal(again.teacher_idx, s.teacher_idx)
    assert again.budget == 40 and again.seed == 4
    with pytest.raises(ValueError, match="disjoint"):
        BudgetSplit(np.array([1, 2]), np.array([2]), np.array([], int), 0, 3)
    with pytest.raises(ValueError, match="add up to subset_size"):
        BudgetSplit(np.array([1, 2]), np.array([3]), np.array([], int), 0, 4)
    with pytest.raises(ValueError):
        s.teacher_idx[0] = 5  # read-only arrays
