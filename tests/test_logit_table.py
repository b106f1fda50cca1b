"""Teacher pass, call counting and the LogitTable file."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ckd_jax.data.augment import random_crop_flip
from ckd_jax.data.specs import DatasetSpec
from ckd_jax.logit_table import (
    LogitTable,
    TeacherBudgetExceeded,
    TeacherCallCounter,
    build_or_load_logit_table,
    teacher_pass,
    variables_hash,
)
from ckd_jax.models import create_model

SPEC = DatasetSpec(mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3), crop_size=8, padding=2, flip=True,
                   eval_crop=6)
N_CLASSES = 5


@pytest.fixture(scope="module")
def teacher():
    model = create_model("tiny_cnn", N_CLASSES, width=4)
    variables = jax.jit(lambda k: model.init(k, jnp.zeros((1, 8, 8, 3)), train=False))(
        jax.random.key(0))
    # Non-trivial BatchNorm statistics, so train-mode and eval-mode outputs differ.
    variables = {**variables, "batch_stats": jax.tree_util.tree_map(
        lambda v: v + 0.3, variables["batch_stats"])}
    return model, variables


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3), dtype=np.uint8)


def _counting_apply(model):
    """apply_fn that records, at run time, each call's batch rows and asserts eval mode."""
    calls = []

    def apply_fn(variables, x, train):
        assert train is False
        jax.debug.callback(lambda b: calls.append(b.shape[0]), x)
        return model.apply(variables, x, train=train)

    return apply_fn, calls


def _np_normalize(x_u8, spec):
    return ((x_u8.astype(np.float32) / 255.0 - np.array(spec.mean, np.float32))
            / np.array(spec.std, np.float32))


def test_counter():
    c = TeacherCallCounter(10)
    c.charge(4)
    c.charge(6)
    assert (c.calls, c.remaining) == (10, 0)
    with pytest.raises(TeacherBudgetExceeded, match=r"11.*budget of 10"):
        c.charge(1)
    assert c.calls == 10  # a refused charge records nothing
    c.charge(0)
    with pytest.raises(ValueError, match="non-negative"):
        c.charge(-1)
    with pytest.raises(ValueError, match="non-negative int"):
        TeacherCallCounter(-3)


def test_teacher_pass_clean_matches_direct_eval(teacher, images):
    model, variables = teacher
    apply_fn, calls = _counting_apply(model)
    counter = TeacherCallCounter(10)
    got = teacher_pass(apply_fn, variables, images, key=jax.random.key(1), spec=SPEC,
                       view="clean", batch_size=4, counter=counter)
    # Centre 6x6 crop of 8x8 starts at 1; NumPy normalisation; one eval-mode call on all rows.
    x = _np_normalize(images[:, 1:7, 1:7, :], SPEC)
    want = np.asarray(jax.jit(model.apply, static_argnames="train")(variables, x, train=False))
    assert got.shape == (10, N_CLASSES) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert counter.calls == 10  # padded rows of the last batch are not counted
    assert calls == [4, 4, 4]   # three batches, the last one padded to the same shape
    train_mode, _ = jax.jit(lambda v, x: model.apply(v, x, train=True,
                                                     mutable=["batch_stats"]))(variables, x)
    assert not np.allclose(got, np.asarray(train_mode), atol=1e-3)


def test_teacher_pass_augmented_per_sample_views(teacher, images):
    model, variables = teacher
    key = jax.random.key(3)
    a = teacher_pass(model.apply, variables, images, key=key, spec=SPEC, view="augmented",
                     batch_size=3, counter=TeacherCallCounter(10))
    b = teacher_pass(model.apply, variables, images, key=key, spec=SPEC, view="augmented",
                     batch_size=16, counter=TeacherCallCounter(10))
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)  # independent of batching
    legacy = teacher_pass(model.apply, variables, images, key=jax.random.PRNGKey(3), spec=SPEC,
                          batch_size=16, counter=TeacherCallCounter(10))  # raw uint32 keys work
    np.testing.assert_allclose(legacy, b, rtol=1e-5, atol=1e-5)
    # Reference: row i's view is random_crop_flip with the i-th split key, normalised in NumPy.
    keys = jax.random.split(key, 10)
    crop = jax.jit(lambda k, x: random_crop_flip(k, x, crop_size=8, padding=2, flip=True))
    views = np.stack([np.asarray(crop(keys[i], images[i:i + 1]))[0] for i in range(10)])
    want = np.asarray(jax.jit(model.apply, static_argnames="train")(
        variables, _np_normalize(views, SPEC), train=False))
    np.testing.assert_allclose(a, want, rtol=1e-5, atol=1e-5)
    clean = teacher_pass(model.apply, variables, images, key=key,
                         spec=SPEC._replace(eval_crop=None), view="clean", batch_size=16,
                         counter=TeacherCallCounter(10))
    assert not np.allclose(a, clean, atol=1e-4)  # the views really are augmented
    c = teacher_pass(model.apply, variables, images, key=jax.random.key(4), spec=SPEC,
                     batch_size=16, counter=TeacherCallCounter(10))
    assert not np.allclose(a, c, atol=1e-4)


def test_teacher_pass_refuses_over_budget_before_any_call(teacher, images):
    model, variables = teacher
    apply_fn, calls = _counting_apply(model)
    counter = TeacherCallCounter(9)
    with pytest.raises(TeacherBudgetExceeded, match=r"10 teacher calls.*9 of the budget of 9"):
        teacher_pass(apply_fn, variables, images, key=jax.random.key(0), spec=SPEC,
                     counter=counter)
    assert calls == [] and counter.calls == 0
    with pytest.raises(ValueError, match="view must be one of"):
        teacher_pass(apply_fn, variables, images, key=jax.random.key(0), spec=SPEC,
                     view="noisy", counter=TeacherCallCounter(10))
    with pytest.raises(ValueError, match="uint8"):
        teacher_pass(apply_fn, variables, images.astype(np.float32), key=jax.random.key(0),
                     spec=SPEC, counter=TeacherCallCounter(10))


def _table(dtype=np.float32):
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, 4)).astype(np.float32).astype(dtype)
    meta = {"dataset": "cifar100", "split": "train", "teacher_name": "resnet110",
            "teacher_hash": "abc", "view": "augmented", "seed": 1, "num_classes": 4,
            "teacher_calls": 6, "created": "2026-01-01T00:00:00+00:00"}
    return LogitTable(logits, np.array([5, 3, 9, 0, 7, 1]), meta)


@pytest.mark.parametrize("dtype", [np.float32, jnp.bfloat16])
def test_roundtrip(tmp_path, dtype):
    t = _table(dtype)
    path = tmp_path / "sub" / "table.npz"
    t.save(path)
    back = LogitTable.load(path)
    assert back.logits.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(back.logits.view(np.uint8), t.logits.view(np.uint8))
    np.testing.assert_array_equal(back.indices, t.indices)
    assert back.meta == t.meta and len(back) == 6 and back.num_classes == 4
    assert os.listdir(tmp_path / "sub") == ["table.npz"]
    # The file is a plain npz readable without ckd_jax.
    with np.load(path, allow_pickle=False) as z:
        assert set(z.files) == {"logits", "indices", "meta_json"}


def test_check_matches_names_field_and_values():
    t = _table()
    t.check_matches(dataset="cifar100", indices=[5, 3, 9, 0, 7, 1], teacher_name="resnet110",
                    teacher_hash="abc", view="augmented")
    good = dict(dataset="cifar100", indices=t.indices, teacher_name="resnet110",
                teacher_hash="abc")
    cases = [("dataset", "cifar10", r"dataset mismatch.*'cifar100'.*'cifar10'"),
             ("teacher_name", "wrn_40_2", r"teacher_name mismatch.*'resnet110'.*'wrn_40_2'"),
             ("teacher_hash", "abd", r"teacher_hash mismatch.*'abc'.*'abd'"),
             ("view", "clean", r"view mismatch.*'augmented'.*'clean'"),
             ("indices", [5, 3, 9], r"indices mismatch.*6 rows.*3 indices"),
             ("indices", [5, 3, 9, 0, 1, 7], r"indices mismatch.*2 rows differ.*row 4.*7.*1")]
    for field, value, pattern in cases:
        with pytest.raises(ValueError, match=pattern):
            t.check_matches(**{**good, field: value})


def test_atomic_save_leaves_no_partial_file(tmp_path, monkeypatch):
    path = tmp_path / "table.npz"
    old = _table()
    old.save(path)
    before = path.read_bytes()

    def broken_savez(f, **arrays):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full (injected)")

    monkeypatch.setattr(np, "savez", broken_savez)
    new = LogitTable(old.logits + 1, old.indices, old.meta)
    with pytest.raises(OSError, match="injected"):
        new.save(path)
    with pytest.raises(OSError, match="injected"):
        new.save(tmp_path / "fresh.npz")
    assert sorted(os.listdir(tmp_path)) == ["table.npz"]  # no temp files, no fresh.npz
    assert path.read_bytes() == before
    monkeypatch.undo()
    np.testing.assert_array_equal(LogitTable.load(path).logits, old.logits)


def test_logit_table_validation(tmp_path):
    with pytest.raises(ValueError, match="float32 or bfloat16"):
        LogitTable(np.zeros((2, 3), np.float64), np.arange(2))
    with pytest.raises(ValueError, match="2 logit rows but 3 indices"):
        LogitTable(np.zeros((2, 3), np.float32), np.arange(3))
    with pytest.raises(FileNotFoundError, match="no logit table"):
        LogitTable.load(tmp_path / "missing.npz")
    np.savez(tmp_path / "other.npz", a=np.zeros(2))
    with pytest.raises(ValueError, match="not a logit table"):
        LogitTable.load(tmp_path / "other.npz")


def test_variables_hash(teacher):
    _, variables = teacher
    h = variables_hash(variables)
    assert len(h) == 64 and h == variables_hash(jax.tree_util.tree_map(np.asarray, variables))
    reordered = {k: variables[k] for k in reversed(list(variables))}
    assert variables_hash(reordered) == h
    leaves, treedef = jax.tree_util.tree_flatten(variables)
    bumped = [np.asarray(leaves[0]).copy()] + leaves[1:]
    bumped[0].flat[0] = np.nextafter(bumped[0].flat[0], np.float32(np.inf))
    assert variables_hash(jax.tree_util.tree_unflatten(treedef, bumped)) != h
    assert variables_hash({"a": np.zeros(2, np.float32)}) != \
        variables_hash({"b": np.zeros(2, np.float32)})


def test_build_or_load_makes_no_calls_on_rerun(tmp_path, teacher):
    model, variables = teacher
    data = np.random.default_rng(1).integers(0, 256, (30, 8, 8, 3), dtype=np.uint8)
    idx = np.array([29, 3, 17, 8, 0, 11, 5])
    kw = dict(teacher_variables=variables, teacher_name="tiny_cnn", dataset_name="toy",
              images=data, indices=idx, key=jax.random.key(9), spec=SPEC, view="augmented",
              seed=9, batch_size=4)
    path = tmp_path / "run" / "logits.npz"
    apply1, calls1 = _counting_apply(model)
    table, made = build_or_load_logit_table(path, teacher_apply=apply1, **kw)
    assert made == 7 and sum(calls1) == 8 and len(calls1) == 2  # 4 + (3 real + 1 pad)
    assert table.meta["teacher_calls"] == 7 and table.meta["teacher_hash"] == \
        variables_hash(variables)
    np.testing.assert_array_equal(table.indices, idx)
    direct = teacher_pass(model.apply, variables, data[idx], key=jax.random.key(9), spec=SPEC,
                          batch_size=4, counter=TeacherCallCounter(7))
    np.testing.assert_allclose(table.logits, direct, rtol=1e-6, atol=1e-6)

    apply2, calls2 = _counting_apply(model)
    again, made2 = build_or_load_logit_table(path, teacher_apply=apply2, **kw)
    assert made2 == 0 and calls2 == []
    np.testing.assert_array_equal(again.logits, table.logits)

    other = jax.tree_util.tree_map(lambda v: v * 1.01, variables)
    with pytest.raises(ValueError, match="teacher_hash mismatch"):
        build_or_load_logit_table(path, teacher_apply=apply2, **{**kw, "teacher_variables": other})
    with pytest.raises(ValueError, match="indices mismatch"):
        build_or_load_logit_table(path, teacher_apply=apply2, **{**kw, "indices": idx[::-1]})
    assert calls2 == []
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 30\)"):
        build_or_load_logit_table(tmp_path / "x.npz", teacher_apply=apply2,
                                  **{**kw, "indices": np.array([1, 30])})

    bf, made3 = build_or_load_logit_table(tmp_path / "bf16.npz", teacher_apply=model.apply,
                                          logits_dtype=jnp.bfloat16, **kw)
    assert made3 == 7 and LogitTable.load(tmp_path / "bf16.npz").logits.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(bf.logits, np.float32), table.logits, rtol=1e-2,
                               atol=1e-2)
