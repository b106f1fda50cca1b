"""Data loaders on synthetic files in the official formats, the real shared images, and specs."""

import gzip
import io
import os
import pickle
import re
import stat
import struct
import tarfile
import time

import numpy as np
import pytest
from PIL import Image
from shared_data import shared_data_path  # tests/ is on sys.path

from ckd_jax.data import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DATASET_STATS,
    DatasetSpec,
    ImageSet,
    dataset_names,
    dataset_spec,
    decode_images,
    eval_view,
    load_dataset,
    load_train_test,
    records_to_arrays,
    sources,
    train_view,
)


def _rows(images_nhwc):
    """Independent NHWC -> official CIFAR row layout [N, 3072] (all R, then G, then B)."""
    return np.stack([np.concatenate([img[:, :, c].reshape(-1) for c in range(3)])
                     for img in images_nhwc]).astype(np.uint8)


def _rand_images(rng, n):
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)


def _pickle_to(path, obj):
    # bytes keys, protocol 2: what Python 3 sees of the Python 2 official pickles.
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def _tar_gz(folder, out):
    with tarfile.open(out, "w:gz") as t:
        t.add(folder, arcname=os.path.basename(folder))
    return out


@pytest.fixture(scope="module")
def cifar10_truth():
    rng = np.random.default_rng(0)
    train = [(_rand_images(rng, 3), rng.integers(0, 10, 3)) for _ in range(5)]
    test = (_rand_images(rng, 4), rng.integers(0, 10, 4))
    return train, test


def _write_cifar10_python(root, truth):
    train, test = truth
    d = os.path.join(root, "cifar-10-batches-py")
    os.makedirs(d)
    for i, (x, y) in enumerate(train, 1):
        _pickle_to(os.path.join(d, f"data_batch_{i}"),
                   {b"batch_label": b"x", b"labels": [int(v) for v in y], b"data": _rows(x)})
    x, y = test
    _pickle_to(os.path.join(d, "test_batch"), {b"labels": [int(v) for v in y], b"data": _rows(x)})
    _pickle_to(os.path.join(d, "batches.meta"),
               {b"label_names": [n.encode() for n in CIFAR10_CLASSES]})
    return d


def _write_cifar10_binary(root, truth):
    train, test = truth
    d = os.path.join(root, "cifar-10-batches-bin")
    os.makedirs(d)
    for name, (x, y) in [(f"data_batch_{i}.bin", b) for i, b in enumerate(train, 1)] + \
            [("test_batch.bin", test)]:
        with open(os.path.join(d, name), "wb") as f:
            for img, lab in zip(_rows(x), y):
                f.write(bytes([int(lab)]) + img.tobytes())
    with open(os.path.join(d, "batches.meta.txt"), "w") as f:
        f.write("\n".join(CIFAR10_CLASSES) + "\n\n")
    return d


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar10_official_archives(tmp_path, cifar10_truth, fmt, as_tar):
    writer = _write_cifar10_python if fmt == "python" else _write_cifar10_binary
    folder = writer(str(tmp_path), cifar10_truth)
    path = _tar_gz(folder, str(tmp_path / "cifar-10.tar.gz")) if as_tar else folder
    train, test = load_train_test("cifar10", path=path)
    want_x = np.concatenate([x for x, _ in cifar10_truth[0]])
    want_y = np.concatenate([y for _, y in cifar10_truth[0]])
    np.testing.assert_array_equal(train.images, want_x)
    np.testing.assert_array_equal(train.labels, want_y)
    np.testing.assert_array_equal(test.images, cifar10_truth[1][0])
    np.testing.assert_array_equal(test.labels, cifar10_truth[1][1])
    assert train.class_names == CIFAR10_CLASSES and train.num_classes == 10
    assert (train.name, train.split, test.split) == ("cifar10", "train", "test")
    assert train.labels.dtype == np.int32 and train.images.dtype == np.uint8


def test_cifar10_parent_folder_and_data_dir(tmp_path, cifar10_truth):
    _write_cifar10_python(str(tmp_path), cifar10_truth)
    test = load_dataset("cifar10", "test", data_dir=str(tmp_path))
    np.testing.assert_array_equal(test.images, cifar10_truth[1][0])


@pytest.mark.parametrize("fmt", ["python", "binary"])
@pytest.mark.parametrize("as_tar", [False, True])
def test_cifar100_official_archives(tmp_path, fmt, as_tar):
    rng = np.random.default_rng(1)
    data = {s: (_rand_images(rng, n), rng.integers(0, 100, n), rng.integers(0, 20, n))
            for s, n in [("train", 6), ("test", 3)]}
    # Make coarse and fine labels differ everywhere so swapping them would be caught.
    for _, fine, coarse in data.values():
        coarse[coarse == fine] = (coarse[coarse == fine] + 1) % 20
    if fmt == "python":
        d = tmp_path / "cifar-100-python"
        d.mkdir()
        for s, (x, fine, coarse) in data.items():
            _pickle_to(d / s, {b"filenames": [b"a"] * len(x), b"fine_labels": fine.tolist(),
                               b"coarse_labels": coarse.tolist(), b"data": _rows(x)})
        _pickle_to(d / "meta", {b"fine_label_names": [n.encode() for n in CIFAR100_CLASSES],
                                b"coarse_label_names": [b"c%d" % i for i in range(20)]})
    else:
        d = tmp_path / "cifar-100-binary"
        d.mkdir()
        for s, (x, fine, coarse) in data.items():
            with open(d / f"{s}.bin", "wb") as f:
                for img, fi, co in zip(_rows(x), fine, coarse):
                    f.write(bytes([int(co), int(fi)]) + img.tobytes())
        (d / "fine_label_names.txt").write_text("\n".join(CIFAR100_CLASSES) + "\n")
    path = _tar_gz(str(d), str(tmp_path / "c100.tar.gz")) if as_tar else str(d)
    for s, (x, fine, _) in data.items():
        got = load_dataset("cifar100", s, path=path)
        np.testing.assert_array_equal(got.images, x)
        np.testing.assert_array_equal(got.labels, fine)
        assert got.class_names == CIFAR100_CLASSES


def test_cifar100_class_names_alphabetical():
    assert len(CIFAR100_CLASSES) == 100 == len(set(CIFAR100_CLASSES))
    assert list(CIFAR100_CLASSES) == sorted(CIFAR100_CLASSES)
    assert (CIFAR100_CLASSES[0], CIFAR100_CLASSES[49], CIFAR100_CLASSES[99]) == \
        ("apple", "mountain", "worm")


def test_cifar100_real_first20_images(tmp_path):
    """The 20 real CIFAR-100 test PNGs, written into an official-layout test pickle."""
    folder = shared_data_path("cifar100_test_first20")
    files = sorted(os.listdir(folder), key=lambda f: int(f.split("_")[1]))
    assert len(files) == 20
    pngs, labels = [], []
    for f in files:
        m = re.fullmatch(r"cifar100_(\d+)_(\d+)\.png", f)
        labels.append(int(m.group(2)))
        with Image.open(os.path.join(folder, f)) as im:
            pngs.append(np.asarray(im.convert("RGB")))
    pngs = np.stack(pngs)
    d = tmp_path / "cifar-100-python"
    d.mkdir()
    _pickle_to(d / "test", {b"fine_labels": labels, b"coarse_labels": [0] * 20,
                            b"data": _rows(pngs)})
    got = load_dataset("cifar100", "test", path=str(tmp_path))
    np.testing.assert_array_equal(got.images, pngs)
    np.testing.assert_array_equal(got.labels, labels)
    assert got.labels[0] == 49 and got.class_names[got.labels[0]] == "mountain"


def test_cifar_pickle_refuses_code(tmp_path):
    d = tmp_path / "cifar-100-python"
    d.mkdir()

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    with open(d / "test", "wb") as f:
        pickle.dump({"data": Evil()}, f)
    with pytest.raises(ValueError, match="not a readable CIFAR python pickle"):
        load_dataset("cifar100", "test", path=str(d))


def test_cifar10_jpeg_real_sample():
    path = shared_data_path("cifar10_jpeg.npz")
    with np.load(path) as z:
        offsets, labels = z["train_offsets"], z["train_labels"]
        idx = np.arange(0, 50000, 125)  # sorted by class: 40 per class
        images = decode_images(z["train_jpeg"], offsets, idx)
        names = tuple(z["class_names"])
    assert images.shape == (400, 32, 32, 3) and images.dtype == np.uint8
    assert len(offsets) == 50001
    assert names == CIFAR10_CLASSES
    np.testing.assert_array_equal(np.bincount(labels[idx], minlength=10), [40] * 10)
    np.testing.assert_array_equal(np.bincount(labels, minlength=10), [5000] * 10)
    mean = images.reshape(-1, 3).mean(0) / 255.0
    np.testing.assert_allclose(mean, (0.4913, 0.4821, 0.4465), atol=0.03)


def test_shared_data_missing_skips_or_fails_naming_the_path(tmp_path, monkeypatch):
    import shared_data

    monkeypatch.setattr(shared_data, "SHARED_DATA", str(tmp_path))
    (tmp_path / "here.npz").write_bytes(b"")
    monkeypatch.delenv(shared_data.REQUIRE_ENV, raising=False)
    assert shared_data.shared_data_path("here.npz") == str(tmp_path / "here.npz")
    missing = str(tmp_path / "absent.npz")
    with pytest.raises(pytest.skip.Exception, match=re.escape(missing)):
        shared_data.shared_data_path("absent.npz")
    monkeypatch.setenv(shared_data.REQUIRE_ENV, "1")
    with pytest.raises(pytest.fail.Exception, match=re.escape(missing)):
        shared_data.shared_data_path("absent.npz")
    assert shared_data.shared_data_path("here.npz") == str(tmp_path / "here.npz")
    monkeypatch.setenv(shared_data.REQUIRE_ENV, "yes")
    with pytest.raises(ValueError, match="'yes'.*expected 1"):
        shared_data.shared_data_path("absent.npz")


def _make_readonly_jpeg_npz(folder, rng, n=6):
    # Smooth images (8x8 blocks): JPEG keeps them close to the source pixels.
    images = {s: np.kron(rng.integers(0, 256, (n, 4, 4, 3)), np.ones((1, 8, 8, 1))).astype(
        np.uint8) for s in ("train", "test")}
    arrays = {"class_names": np.asarray(CIFAR10_CLASSES)}
    decoded = {}
    for s, x in images.items():
        blobs = []
        for img in x:
            b = io.BytesIO()
            Image.fromarray(img).save(b, format="JPEG", quality=95)
            blobs.append(np.frombuffer(b.getvalue(), np.uint8))
        arrays[f"{s}_jpeg"] = np.concatenate(blobs)
        arrays[f"{s}_offsets"] = np.cumsum([0] + [len(b) for b in blobs]).astype(np.int64)
        arrays[f"{s}_labels"] = np.arange(n, dtype=np.uint8) % 10
        decoded[s] = np.stack([np.asarray(Image.open(io.BytesIO(b.tobytes())).convert("RGB"))
                               for b in blobs])
    os.makedirs(folder)
    path = os.path.join(folder, "cifar10_jpeg.npz")
    np.savez(path, **arrays)
    os.chmod(path, stat.S_IRUSR)
    os.chmod(folder, stat.S_IRUSR | stat.S_IXUSR)
    return path, images, decoded


def test_cifar10_jpeg_loader_caches_from_readonly_source(tmp_path, monkeypatch):
    path, truth, decoded = _make_readonly_jpeg_npz(str(tmp_path / "ro"),
                                                   np.random.default_rng(2))
    cache = tmp_path / "cache"
    monkeypatch.setenv("CKD_JAX_CACHE", str(cache))
    first = load_dataset("cifar10_jpeg", "train", path=path)
    # Each image is its own JPEG decoded; JPEG is lossy: close to the source, not equal.
    np.testing.assert_array_equal(first.images, decoded["train"])
    assert np.abs(first.images.astype(int) - truth["train"]).mean() < 10
    np.testing.assert_array_equal(first.labels, np.arange(6) % 10)
    cached = list((cache / "cifar10_jpeg").glob("*_train_images.npy"))
    assert len(cached) == 1
    # Second load must come from the cache: decoding is now an error.
    monkeypatch.setattr(sources, "decode_images",
                        lambda *a, **k: (_ for _ in ()).throw(AssertionError("decoded again")))
    again = load_dataset("cifar10_jpeg", "train", path=path)
    np.testing.assert_array_equal(again.images, first.images)
    # An explicit cache_dir wins over the environment.
    other = tmp_path / "other"
    monkeypatch.setattr(sources, "decode_images", decode_images)
    load_dataset("cifar10_jpeg", "test", path=path, cache_dir=str(other))
    assert list((other / "cifar10_jpeg").glob("*_test_images.npy"))


def test_cifar10_jpeg_unwritable_cache_warns(tmp_path):
    path, _, _ = _make_readonly_jpeg_npz(str(tmp_path / "ro"), np.random.default_rng(3))
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.warns(UserWarning, match="could not write"):
        got = load_dataset("cifar10_jpeg", "test", path=path, cache_dir=str(blocker))
    assert got.images.shape == (6, 32, 32, 3)


def _write_idx(path, array, gz):
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(
        f">{array.ndim}I", *array.shape)
    data = header + array.astype(np.uint8).tobytes()
    with open(path, "wb") as f:
        f.write(gzip.compress(data) if gz else data)


@pytest.mark.parametrize("gz", [True, False])
def test_fashion_mnist_idx(tmp_path, gz, monkeypatch):
    rng = np.random.default_rng(4)
    truth = {}
    for prefix, n in (("train", 7), ("t10k", 3)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = rng.integers(0, 10, n).astype(np.uint8)
        suffix = ".gz" if gz else ""
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", x, gz)
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", y, gz)
        truth[prefix] = (x, y)
    # The default folder is used when no path is given.
    monkeypatch.setattr(sources, "FASHION_MNIST_DEFAULT_DIR", str(tmp_path))
    train, test = load_train_test("fashion_mnist")
    np.testing.assert_array_equal(train.images[..., 0], truth["train"][0])
    np.testing.assert_array_equal(train.labels, truth["train"][1])
    np.testing.assert_array_equal(test.images[..., 0], truth["t10k"][0])
    assert train.images.shape == (7, 28, 28, 1) and train.class_names[9] == "Ankle boot"
    mnist = load_dataset("mnist", "test", path=str(tmp_path))
    assert mnist.name == "mnist" and mnist.class_names == tuple("0123456789")


def test_fashion_mnist_missing_default_folder(tmp_path, monkeypatch):
    missing = str(tmp_path / "nope")
    monkeypatch.setattr(sources, "FASHION_MNIST_DEFAULT_DIR", missing)
    with pytest.raises(FileNotFoundError, match="nope"):
        load_dataset("fashion_mnist", "train")
    with pytest.raises(FileNotFoundError, match="t10k-images-idx3-ubyte"):
        load_dataset("mnist", "test", path=str(tmp_path))


def test_idx_bad_header():
    with pytest.raises(ValueError, match="IDX"):
        sources.read_idx(b"\x00\x00\x0d\x01\x00\x00\x00\x01\x00")


def test_digits_split_and_stats():
    train, test = load_train_test("digits")
    assert train.images.shape == (1437, 8, 8, 1) and test.images.shape == (360, 8, 8, 1)
    assert train.images.max() == 255 and train.num_classes == 10
    tr_idx, te_idx = sources.digits_split_indices()
    assert len(np.intersect1d(tr_idx, te_idx)) == 0 and len(tr_idx) + len(te_idx) == 1797
    from sklearn.datasets import load_digits

    raw = load_digits()
    np.testing.assert_array_equal(test.labels, raw.target[te_idx])
    np.testing.assert_allclose(test.images[..., 0] / 255.0, raw.images[te_idx] / 16.0,
                               atol=0.5 / 255 + 1e-9)
    x = train.images.astype(np.float64) / 255.0
    mean, std = DATASET_STATS["digits"]
    np.testing.assert_allclose([x.mean()], mean, atol=1e-3)
    np.testing.assert_allclose([x.std()], std, atol=1e-3)
    again = load_dataset("digits", "train")
    np.testing.assert_array_equal(again.images, train.images)


def test_npz_generic_and_shape_mismatch(tmp_path):
    rng = np.random.default_rng(5)
    p = tmp_path / "toy.npz"
    np.savez(p, train_images=rng.integers(0, 256, (5, 6, 6), dtype=np.uint8),
             train_labels=np.array([0, 1, 2, 1, 0]),
             test_images=rng.integers(0, 256, (2, 6, 6), dtype=np.uint8),
             test_labels=np.array([2, 2]), class_names=np.array(["a", "b", "c"]))
    train, test = load_train_test("npz", path=str(p))
    assert train.images.shape == (5, 6, 6, 1) and train.class_names == ("a", "b", "c")
    assert train.name == "npz:toy"
    bad = tmp_path / "bad.npz"
    np.savez(bad, train_images=np.zeros((2, 6, 6, 3), np.uint8), train_labels=[0, 1],
             test_images=np.zeros((2, 5, 5, 3), np.uint8), test_labels=[0, 1])
    with pytest.raises(ValueError, match=r"\(6, 6, 3\).*\(5, 5, 3\)"):
        load_train_test("npz", path=str(bad))
    single = tmp_path / "single.npz"
    np.savez(single, images=np.zeros((3, 4, 4, 3), np.uint8), labels=[0, 1, 1])
    assert load_dataset("npz", "train", path=str(single)).num_classes == 2
    wrong = tmp_path / "wrong.npz"
    np.savez(wrong, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"wrong\.npz.*\['x'\]"):
        load_dataset("npz", "train", path=str(wrong))


def test_registry_and_path_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown dataset 'cifar1000'.*cifar100.*digits"):
        load_dataset("cifar1000", "train")
    assert {"tfds:cifar100", "cifar100", "cifar10_jpeg", "digits"} <= set(dataset_names())
    with pytest.raises(ValueError, match="needs path="):
        load_dataset("cifar100", "train")
    with pytest.raises(FileNotFoundError, match="missing_dir.*cifar-100-python"):
        load_dataset("cifar100", "train", path=str(tmp_path / "missing_dir"))
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "readme.txt").write_text("x")
    with pytest.raises(ValueError, match="junk.*cifar-10-python.*readme.txt"):
        load_dataset("cifar10", "train", path=str(tmp_path / "junk"))
    not_tar = tmp_path / "x.tar.gz"
    not_tar.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="x.tar.gz.*neither a folder nor"):
        load_dataset("cifar10", "test", path=str(not_tar))
    with pytest.raises(ValueError, match="split must be one of"):
        load_dataset("digits", "validation")
    with pytest.raises(ValueError, match="no path"):
        load_dataset("digits", "train", path="x")


def test_imageset_validation():
    x = np.zeros((3, 4, 4, 1), np.uint8)
    s = ImageSet(x, np.array([0, 1, 1], np.int64), ["a", "b"], "t", "train")
    assert s.labels.dtype == np.int32 and s.class_names == ("a", "b") and len(s) == 3
    assert s.subset([2, 0]).labels.tolist() == [1, 0]
    with pytest.raises(ValueError, match="uint8"):
        ImageSet(x.astype(np.float32), np.zeros(3, int), ("a",), "t", "train")
    with pytest.raises(ValueError, match=r"\[N, H, W, C\]"):
        ImageSet(x[..., 0], np.zeros(3, int), ("a",), "t", "train")
    with pytest.raises(ValueError, match="3 images but 2 labels"):
        ImageSet(x, np.zeros(2, int), ("a",), "t", "train")
    with pytest.raises(ValueError, match=r"\[0, 2\).*\[0, 2\]"):
        ImageSet(x, np.array([0, 1, 2]), ("a", "b"), "t", "train")


# ---------------------------------------------------------------------------------------------
# tensorflow-datasets: a real prepared (array_record) dataset, written without TensorFlow by
# subclassing the registered builder and feeding it synthetic examples.


def _png(a):
    b = io.BytesIO()
    Image.fromarray(a).save(b, format="PNG")
    b.seek(0)
    return b


def _prepare_fake_tfds(data_dir, name, examples, label_names=None):
    import tensorflow_datasets as tfds

    base = tfds.builder_cls(name)

    def _split_generators(self, dl_manager):
        if label_names is not None:  # as the real CIFAR builders do, from the archive's file
            self.info.features["label"].names = label_names
        return {s: self._generate_examples(s) for s in examples}

    def _generate_examples(self, split):
        for i, ex in enumerate(examples[split]):
            yield f"{split}_{i}", dict(ex, image=_png(ex["image"]))

    cls = type(base.__name__, (base,), {"_split_generators": _split_generators,
                                        "_generate_examples": _generate_examples},
               skip_registration=True)
    cls(data_dir=data_dir, file_format="array_record").download_and_prepare()


def test_tfds_cifar10_prepared(tmp_path):
    rng = np.random.default_rng(6)
    examples = {s: [{"id": f"{s}{i}", "image": rng.integers(0, 256, (32, 32, 3), np.uint8),
                     "label": int(i % 10)} for i in range(n)]
                for s, n in (("train", 7), ("test", 3))}
    _prepare_fake_tfds(str(tmp_path), "cifar10", examples, list(CIFAR10_CLASSES))
    train, test = load_train_test("tfds:cifar10", data_dir=str(tmp_path))
    assert train.name == "cifar10" and train.class_names == CIFAR10_CLASSES
    assert train.images.shape == (7, 32, 32, 3) and test.images.shape == (3, 32, 32, 3)
    # TFDS shuffles on write: compare as a set of (label, pixels).
    want = sorted((e["label"], e["image"].tobytes()) for e in examples["train"])
    got = sorted((int(y), x.tobytes()) for x, y in zip(train.images, train.labels))
    assert got == want


def test_tfds_cars196_resized_to_64(tmp_path):
    import tensorflow_datasets as tfds

    colours = [(10, 200, 30), (250, 0, 120), (5, 5, 5)]
    sizes = [(40, 70), (81, 50), (64, 64)]
    examples = {"train": [{"id": str(i), "label": 3 * i,
                           "image": np.full(sz + (3,), c, np.uint8),
                           "bbox": tfds.features.BBox(0.1, 0.1, 0.9, 0.9)}
                          for i, (sz, c) in enumerate(zip(sizes, colours))]}
    _prepare_fake_tfds(str(tmp_path), "cars196", examples)
    cars = load_dataset("tfds:cars196", "train", data_dir=str(tmp_path))
    assert cars.images.shape == (3, 64, 64, 3) and cars.num_classes == 196
    assert cars.name == "cars196"
    for x, y in zip(cars.images, cars.labels):  # a flat colour stays that colour when resized
        np.testing.assert_array_equal(x.reshape(-1, 3), np.tile(colours[y // 3], (64 * 64, 1)))
    spec = dataset_spec("tfds:cars196")
    assert (spec.crop_size, spec.padding, spec.flip, spec.eval_crop) == (56, 0, True, 56)


def test_records_to_arrays_resize_and_shape_errors():
    recs = [{"image": np.zeros((10, 20, 3), np.uint8), "label": 1},
            {"image": np.zeros((30, 5, 3), np.uint8), "label": 2}]
    x, y = records_to_arrays(recs, resize=8)
    assert x.shape == (2, 8, 8, 3) and y.tolist() == [1, 2]
    with pytest.raises(ValueError, match="different shapes"):
        records_to_arrays(recs)


def test_tfds_unprepared_fails_fast_naming_data_dir(tmp_path):
    t0 = time.time()
    with pytest.raises(FileNotFoundError, match=f"{tmp_path}.*never downloads"):
        load_dataset("tfds:cifar100", "train", data_dir=str(tmp_path))
    assert time.time() - t0 < 5
    v = tmp_path / "cifar100" / "3.0.2"
    v.mkdir(parents=True)
    (v / "dataset_info.json").write_text("{}")
    (v / "cifar100-train.tfrecord-00000-of-00001").write_bytes(b"")
    with pytest.raises(ValueError, match="array_record"):
        load_dataset("tfds:cifar100", "train", data_dir=str(tmp_path))


# ---------------------------------------------------------------------------------------------
# Preprocessing specs


def test_dataset_specs():
    c100 = dataset_spec("cifar100")
    assert c100 == DatasetSpec((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761), 32, 4, True,
                               None)
    assert dataset_spec("tfds:cifar100") == c100
    d = dataset_spec("digits")
    assert (d.crop_size, d.padding, d.flip) == (8, 1, False)
    assert not dataset_spec("mnist").flip and len(dataset_spec("mnist").mean) == 1
    with pytest.raises(ValueError, match="no preprocessing spec.*cifar100"):
        dataset_spec("imagenet")
    for name in ("cifar10", "cifar100", "cars196", "digits", "mnist", "fashion_mnist"):
        mean, std = DATASET_STATS[name]
        assert len(mean) == len(std) and all(s > 0 for s in std)


def test_train_and_eval_views():
    import jax

    rng = np.random.default_rng(7)
    cars = rng.integers(0, 256, (4, 64, 64, 3), dtype=np.uint8)
    spec = dataset_spec("cars196")
    tv = train_view(jax.random.key(0), cars, spec)
    ev = np.asarray(eval_view(cars, spec))
    assert tv.shape == (4, 56, 56, 3) and tv.dtype == np.float32
    want = (cars[:, 4:60, 4:60, :] / 255.0 - np.array(spec.mean)) / np.array(spec.std)
    np.testing.assert_allclose(ev, want, rtol=1e-5, atol=1e-5)
