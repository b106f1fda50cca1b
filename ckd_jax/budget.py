"""The teacher-call budget: which training samples the teacher may label.

Protocol (Wilf et al., "Comparative Knowledge Distillation", and the authors' code alextxu/ckd,
`dataset/cifar100.py` + `dataset/util.py::train_val_split`):

1. Draw a subset of S = `subset_size` training indices uniformly without replacement:
   `random.sample(range(n_train), S)`.
2. Shuffle the positions 0..S-1 (`random.shuffle`); the first B = int(S * 0.8) positions are
   the teacher-labelled training split, the remaining S - B the validation split (ground truth
   only, used for early stopping). Note `int()` truncates: S = 2001 gives B = 1600.

Both steps use one `random.Random(seed)` in this order, which is the call sequence of the official
code after `random.seed(seed)`, so the same seed gives the same subset and split as that code as
long as nothing else drew from Python's global `random` in between there (we did not find such a
draw in the code, but third-party calls such as `wandb.init` were not audited).

One difference with the official code: it calls the teacher on all S subset images (the logit
cache is built before the train/validation split), although only the B training ones are used.
Here the teacher sees exactly the B `teacher_idx` images, so the budget is B calls.

"Labelled remainder" (a setting reviewers asked for): every training index outside the subset
keeps its ground-truth label for cross-entropy but is never shown to the teacher.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class BudgetSplit:
    """Index sets into the training ImageSet, pairwise disjoint.

    teacher_idx: int64 [B], teacher-labelled training samples (table row order).
    val_idx: int64 [V], validation samples (ground truth only; V = S - B).
    remainder_idx: int64 [R], sorted, training samples outside the subset (labelled-remainder
      setting only, else empty).
    seed: the seed that drew the split.
    subset_size: S = B + V.
    """

    teacher_idx: np.ndarray
    val_idx: np.ndarray
    remainder_idx: np.ndarray
    seed: int
    subset_size: int

    def __post_init__(self):
        for field in ("teacher_idx", "val_idx", "remainder_idx"):
            a = np.asarray(getattr(self, field))
            if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
                raise ValueError(f"{field} must be a 1-D integer array, got shape {a.shape} "
                                 f"dtype {a.dtype}")
            a = a.astype(np.int64)
            a.setflags(write=False)
            object.__setattr__(self, field, a)
        if len(self.teacher_idx) + len(self.val_idx) != self.subset_size:
            raise ValueError(f"teacher ({len(self.teacher_idx)}) + validation "
                             f"({len(self.val_idx)}) sizes must add up to subset_size "
                             f"{self.subset_size}")
        all_idx = np.concatenate([self.teacher_idx, self.val_idx, self.remainder_idx])
        if len(np.unique(all_idx)) != len(all_idx):
            raise ValueError("teacher_idx, val_idx and remainder_idx must be disjoint and "
                             "without repeats")

    @property
    def budget(self) -> int:
        """B: the number of teacher-labelled samples (= teacher calls)."""
        return len(self.teacher_idx)

    @property
    def labelled_idx(self) -> np.ndarray:
        """Every index whose ground-truth label training may use: teacher_idx then remainder."""
        return np.concatenate([self.teacher_idx, self.remainder_idx])

    def as_dict(self) -> dict:
        """JSON-friendly dict (lists of ints); `BudgetSplit(**d)` rebuilds it."""
        return {"teacher_idx": self.teacher_idx.tolist(), "val_idx": self.val_idx.tolist(),
                "remainder_idx": self.remainder_idx.tolist(), "seed": self.seed,
                "subset_size": self.subset_size}


def subset_size_for_budget(budget: int, train_fraction: float = 0.8) -> int:
    """Smallest S with int(S * train_fraction) == budget (S = budget / 0.8 when exact)."""
    s = max(1, int(budget / train_fraction) - 2)
    while int(s * train_fraction) < budget:
        s += 1
    return s


def select_budget(n_train: int, *, seed: int, subset_size: int | None = None,
                  budget: int | None = None, train_fraction: float = 0.8,
                  labelled_remainder: bool = False, labels=None) -> BudgetSplit:
    """Draw the seeded subset and its teacher/validation split (see the module docstring).

    Args:
      n_train: size of the training ImageSet.
      seed: Python int; the whole split is a function of (n_train, seed, S, train_fraction).
      subset_size: S, the samples drawn for training + validation. Exactly one of
        `subset_size` and `budget` must be given.
      budget: B, the teacher-call budget; then S = `subset_size_for_budget(B, train_fraction)`.
      train_fraction: share of the subset that is teacher-labelled (the paper: 0.8).
      labelled_remainder: if True, `remainder_idx` = all training indices outside the subset.
      labels: optional training labels [n_train]; only checked for length (catches passing the
        size of the wrong split).

    Returns:
      BudgetSplit with B = int(S * train_fraction) teacher indices and S - B validation indices.
    """
    if isinstance(n_train, bool) or not isinstance(n_train, (int, np.integer)) or n_train < 1:
        raise ValueError(f"n_train must be a positive int, got {n_train!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise ValueError(f"seed must be an int, got {seed!r}")
    if (subset_size is None) == (budget is None):
        raise ValueError(f"give exactly one of subset_size and budget (got subset_size="
                         f"{subset_size!r}, budget={budget!r})")
    if not 0.0 < train_fraction <= 1.0:
        raise ValueError(f"train_fraction must be in (0, 1], got {train_fraction!r}")
    if labels is not None and len(labels) != n_train:
        raise ValueError(f"labels has length {len(labels)} but n_train is {n_train}")
    if budget is not None:
        if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or budget < 1:
            raise ValueError(f"budget must be a positive int, got {budget!r}")
        subset_size = subset_size_for_budget(int(budget), train_fraction)
        if subset_size > n_train:
            raise ValueError(f"budget {budget} needs a subset of {subset_size} samples "
                             f"(budget / {train_fraction}), more than the {n_train} training "
                             f"samples")
    if (isinstance(subset_size, bool) or not isinstance(subset_size, (int, np.integer))
            or subset_size < 1):
        raise ValueError(f"subset_size must be a positive int, got {subset_size!r}")
    if subset_size > n_train:
        raise ValueError(f"subset_size {subset_size} is larger than the {n_train} training "
                         f"samples")
    n_teacher = int(subset_size * train_fraction)
    if n_teacher < 1:
        raise ValueError(f"subset_size {subset_size} x train_fraction {train_fraction} leaves "
                         f"no teacher-labelled sample")

    rng = random.Random(int(seed))
    subset = rng.sample(list(range(int(n_train))), int(subset_size))
    positions = list(range(int(subset_size)))
    rng.shuffle(positions)
    subset = np.asarray(subset, np.int64)
    positions = np.asarray(positions, np.int64)
    teacher_idx = subset[positions[:n_teacher]]
    val_idx = subset[positions[n_teacher:]]
    if labelled_remainder:
        remainder = np.setdiff1d(np.arange(int(n_train)), subset)
    else:
        remainder = np.zeros((0,), np.int64)
    return BudgetSplit(teacher_idx, val_idx, remainder, int(seed), int(subset_size))
