"""experiments/make_cifar10_jpeg.py: a cifar10_jpeg file from an official-format archive reads
back through the `cifar10_jpeg` loader with the archive's labels, in class order, and pixels
within JPEG's error."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
from experiments_support import load_experiment

from ckd_jax.data import CIFAR10_CLASSES, load_train_test


def _smooth(rng, n):  # smooth images: JPEG's error on them is small and predictable
    yy, xx = np.mgrid[0:32, 0:32]
    base = rng.uniform(0, 1, (n, 1, 1, 3)) * 120 + (xx + yy)[None, :, :, None] * 2
    return np.clip(base, 0, 255).astype(np.uint8)


def _write_archive(root, rng):
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    rows = lambda x: x.transpose(0, 3, 1, 2).reshape(len(x), -1)  # official CHW rows
    truth = {}
    for name, n in [(f"data_batch_{i}", 4) for i in range(1, 6)] + [("test_batch", 6)]:
        x, y = _smooth(rng, n), rng.integers(0, 10, n)
        truth[name] = (x, y)
        with open(os.path.join(d, name), "wb") as f:
            pickle.dump({b"labels": [int(v) for v in y], b"data": rows(x)}, f, protocol=2)
    with open(os.path.join(d, "batches.meta"), "wb") as f:
        pickle.dump({b"label_names": [c.encode() for c in CIFAR10_CLASSES]}, f, protocol=2)
    return d, truth


def test_round_trip_through_the_loader(tmp_path):
    archive, truth = _write_archive(str(tmp_path), np.random.default_rng(0))
    out = tmp_path / "c10.npz"
    assert load_experiment("make_cifar10_jpeg").main([archive, "--out", str(out)]) == 0
    train, test = load_train_test("cifar10_jpeg", path=str(out),
                                  cache_dir=str(tmp_path / "cache"))
    xs = np.concatenate([truth[f"data_batch_{i}"][0] for i in range(1, 6)])
    ys = np.concatenate([truth[f"data_batch_{i}"][1] for i in range(1, 6)])
    order = np.lexsort((np.arange(len(ys)), ys))  # by class, then archive index
    np.testing.assert_array_equal(train.labels, ys[order])
    err = np.abs(train.images.astype(int) - xs[order].astype(int))
    assert err.mean() < 3 and err.max() <= 16, (err.mean(), err.max())
    assert len(test) == 6 and train.class_names == CIFAR10_CLASSES
    cached = sorted(os.listdir(tmp_path / "cache" / "cifar10_jpeg"))  # written atomically
    assert len(cached) == 2 and all(n.endswith("_images.npy") for n in cached), cached
    (tmp_path / "blocked").write_text("a file where the cache folder should be")
    with pytest.warns(UserWarning, match="could not write the decoded-image cache"):
        again = load_train_test("cifar10_jpeg", path=str(out), cache_dir=str(tmp_path / "blocked"))
    np.testing.assert_array_equal(again[0].images, train.images)
