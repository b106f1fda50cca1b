"""Dataset loaders: every source ends as an in-memory uint8 `ImageSet` (NHWC).

`load_dataset(name, split, *, data_dir=None, path=None, cache_dir=None)` dispatches on `name`:

  name            source                                                      needs
  --------------  ----------------------------------------------------------  --------------------
  tfds:cifar10    tensorflow-datasets, prepared (array_record) in data_dir     data_dir (or default)
  tfds:cifar100   idem                                                        idem
  tfds:cars196    idem; images resized to 64x64 (bilinear) at load time       idem
  cifar10         official cifar-10-python or cifar-10-binary, folder/.tar.gz  path (or data_dir)
  cifar100        official cifar-100-python or cifar-100-binary               path (or data_dir)
  cifar10_jpeg    the encoded-JPEG npz of the project's shared data folder    path
  npz             generic .npz: images [N,H,W(,C)] uint8, labels [N]          path
  fashion_mnist   IDX files (gzip or raw)                                     path (default below)
  mnist           IDX files (gzip or raw)                                     path (or data_dir)
  digits          scikit-learn's bundled 8x8 digits, seeded 80/20 split        nothing

Nothing here downloads: a missing or unprepared source raises an error that names the place
looked at and what was expected there.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
import warnings
from collections.abc import Callable, Iterable

import numpy as np

from ckd_jax.data.imageset import ImageSet

SPLITS = ("train", "test")

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse",
                   "ship", "truck")
# Fine labels, alphabetical: the index is the label of the official archives (apple=0 ... worm=99).
CIFAR100_CLASSES = (
    "apple", "aquarium_fish", "baby", "bear", "beaver", "bed", "bee", "beetle", "bicycle",
    "bottle", "bowl", "boy", "bridge", "bus", "butterfly", "camel", "can", "castle",
    "caterpillar", "cattle", "chair", "chimpanzee", "clock", "cloud", "cockroach", "couch",
    "crab", "crocodile", "cup", "dinosaur", "dolphin", "elephant", "flatfish", "forest", "fox",
    "girl", "hamster", "house", "kangaroo", "keyboard", "lamp", "lawn_mower", "leopard", "lion",
    "lizard", "lobster", "man", "maple_tree", "motorcycle", "mountain", "mouse", "mushroom",
    "oak_tree", "orange", "orchid", "otter", "palm_tree", "pear", "pickup_truck", "pine_tree",
    "plain", "plate", "poppy", "porcupine", "possum", "rabbit", "raccoon", "ray", "road",
    "rocket", "rose", "sea", "seal", "shark", "shrew", "skunk", "skyscraper", "snail", "snake",
    "spider", "squirrel", "streetcar", "sunflower", "sweet_pepper", "table", "tank",
    "telephone", "television", "tiger", "tractor", "train", "trout", "tulip", "turtle",
    "wardrobe", "whale", "willow_tree", "wolf", "woman", "worm")
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                         "Sneaker", "Bag", "Ankle boot")
DIGIT_CLASSES = tuple(str(d) for d in range(10))

FASHION_MNIST_DEFAULT_DIR = "/usr/share/datasets/fashion-mnist/"
# Seed and fraction of the fixed train/test split of scikit-learn's digits (1797 images ->
# 1437 train / 360 test): np.random.default_rng(0).permutation, first 80% train, both sorted.
DIGITS_SPLIT_SEED = 0
DIGITS_TRAIN_FRACTION = 0.8
CARS_IMAGE_SIZE = 64


# --------------------------------------------------------------------------------------------
# Small helpers


def _check_split(name: str, split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"dataset {name!r}: split must be one of {SPLITS}, got {split!r}")


def _require_path(name: str, path, data_dir, expected: str) -> str:
    """The folder or file to read: `path`, else `data_dir`; error if neither or missing."""
    where = path if path is not None else data_dir
    if where is None:
        raise ValueError(f"dataset {name!r} needs path= (or data_dir=) pointing at {expected}")
    where = os.fspath(where)
    if not os.path.exists(where):
        raise FileNotFoundError(f"dataset {name!r}: {where!r} does not exist; expected {expected}")
    return where


def default_cache_dir() -> str:
    """`$CKD_JAX_CACHE` if set, else `~/.cache/ckd_jax`."""
    return os.environ.get("CKD_JAX_CACHE") or os.path.join(os.path.expanduser("~"), ".cache",
                                                           "ckd_jax")


class _RestrictedUnpickler(pickle.Unpickler):
    """Unpickles only what the official CIFAR pickles contain (dicts, lists, bytes, str, numbers
    and NumPy arrays), so a hostile file cannot run code."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
        ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
        ("copyreg", "_reconstructor"), ("builtins", "object"),
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name} from a CIFAR pickle")
        return super().find_class(module, name)


def _load_pickle(data: bytes, where: str) -> dict:
    # latin1: the official pickles were written by Python 2 (str keys, NumPy arrays).
    try:
        obj = _RestrictedUnpickler(io.BytesIO(data), encoding="latin1").load()
    except Exception as e:  # re-raised with the file named
        raise ValueError(f"{where}: not a readable CIFAR python pickle ({e})") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a dict pickle, got {type(obj).__name__}")
    return {(k.decode("latin1") if isinstance(k, bytes) else k): v for k, v in obj.items()}


def _as_str(x) -> str:
    return x.decode("utf-8") if isinstance(x, bytes) else str(x)


class _Files:
    """Files by base name, from a folder tree (two levels deep) or a .tar/.tar.gz archive."""

    def __init__(self, where: str):
        self.where = where
        self._paths: dict[str, str] = {}
        self._tar: tarfile.TarFile | None = None
        self._members: dict[str, tarfile.TarInfo] = {}
        if os.path.isdir(where):
            base_depth = where.rstrip(os.sep).count(os.sep)
            for root, dirs, files in os.walk(where):
                dirs.sort()
                if root.rstrip(os.sep).count(os.sep) - base_depth >= 2:
                    dirs[:] = []
                for f in sorted(files):
                    self._paths.setdefault(f, os.path.join(root, f))
        elif tarfile.is_tarfile(where):
            self._tar = tarfile.open(where, "r:*")
            for m in self._tar.getmembers():
                if m.isfile():
                    self._members.setdefault(os.path.basename(m.name), m)
        else:
            raise ValueError(f"{where!r} is neither a folder nor a .tar/.tar.gz archive")

    def names(self) -> set[str]:
        return set(self._paths) | set(self._members)

    def has(self, *names: str) -> bool:
        return all(n in self.names() for n in names)

    def read(self, name: str) -> bytes:
        if name in self._paths:
            with open(self._paths[name], "rb") as f:
                return f.read()
        return self._tar.extractfile(self._members[name]).read()

    def close(self):
        if self._tar is not None:
            self._tar.close()


# --------------------------------------------------------------------------------------------
# Official CIFAR archives


def _chw_rows_to_nhwc(rows: np.ndarray) -> np.ndarray:
    """[N, 3072] rows (1024 R, 1024 G, 1024 B, each row-major 32x32) -> [N, 32, 32, 3] uint8."""
    return np.ascontiguousarray(rows.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))


def _cifar_python(files: _Files, batch_names: list[str], label_key: str, meta_name: str,
                  names_key: str, default_names) -> tuple[np.ndarray, np.ndarray, tuple]:
    images, labels = [], []
    for b in batch_names:
        d = _load_pickle(files.read(b), f"{files.where}:{b}")
        if "data" not in d or label_key not in d:
            raise ValueError(f"{files.where}:{b}: expected keys 'data' and {label_key!r}, "
                             f"found {sorted(d)}")
        data = np.asarray(d["data"], dtype=np.uint8)
        if data.ndim != 2 or data.shape[1] != 3072:
            raise ValueError(f"{files.where}:{b}: 'data' must be [N, 3072], got {data.shape}")
        images.append(_chw_rows_to_nhwc(data))
        labels.append(np.asarray(d[label_key], dtype=np.int64))
    class_names = tuple(default_names)
    if files.has(meta_name):
        meta = _load_pickle(files.read(meta_name), f"{files.where}:{meta_name}")
        if names_key in meta:
            class_names = tuple(_as_str(n) for n in meta[names_key])
    return np.concatenate(images), np.concatenate(labels), class_names


def _cifar_binary(files: _Files, batch_names: list[str], header: int, label_col: int,
                  names_file: str, default_names) -> tuple[np.ndarray, np.ndarray, tuple]:
    rec = header + 3072
    images, labels = [], []
    for b in batch_names:
        raw = np.frombuffer(files.read(b), dtype=np.uint8)
        if raw.size % rec:
            raise ValueError(f"{files.where}:{b}: size {raw.size} is not a multiple of the "
                             f"{rec}-byte CIFAR binary record")
        raw = raw.reshape(-1, rec)
        images.append(_chw_rows_to_nhwc(raw[:, header:]))
        labels.append(raw[:, label_col].astype(np.int64))
    class_names = tuple(default_names)
    if files.has(names_file):
        lines = [s.strip() for s in files.read(names_file).decode("utf-8").splitlines()]
        class_names = tuple(s for s in lines if s)
    return np.concatenate(images), np.concatenate(labels), class_names


def _load_cifar(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    del cache_dir
    _check_split(name, split)
    ten = name == "cifar10"
    expected = ("a folder or .tar.gz of cifar-10-python (data_batch_1..5, test_batch) or "
                "cifar-10-binary (data_batch_1.bin..5.bin, test_batch.bin)" if ten else
                "a folder or .tar.gz of cifar-100-python (train, test, meta) or "
                "cifar-100-binary (train.bin, test.bin)")
    where = _require_path(name, path, data_dir, expected)
    files = _Files(where)
    try:
        if ten:
            py = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
            binary = [f + ".bin" for f in py]
            if files.has(*py):
                x, y, cn = _cifar_python(files, py, "labels", "batches.meta", "label_names",
                                         CIFAR10_CLASSES)
            elif files.has(*binary):
                x, y, cn = _cifar_binary(files, binary, 1, 0, "batches.meta.txt",
                                         CIFAR10_CLASSES)
            else:
                raise ValueError(f"dataset {name!r}: no {split} batches in {where!r}; expected "
                                 f"{expected}; found files {sorted(files.names())[:20]}")
        else:
            if files.has(split):
                x, y, cn = _cifar_python(files, [split], "fine_labels", "meta",
                                         "fine_label_names", CIFAR100_CLASSES)
            elif files.has(split + ".bin"):
                # cifar-100-binary record: <coarse label byte><fine label byte><3072 pixels>.
                x, y, cn = _cifar_binary(files, [split + ".bin"], 2, 1, "fine_label_names.txt",
                                         CIFAR100_CLASSES)
            else:
                raise ValueError(f"dataset {name!r}: no {split} file in {where!r}; expected "
                                 f"{expected}; found files {sorted(files.names())[:20]}")
    finally:
        files.close()
    return ImageSet(x, y, cn, name, split)


# --------------------------------------------------------------------------------------------
# The encoded-JPEG CIFAR-10 npz


def decode_images(encoded: np.ndarray, offsets: np.ndarray, indices=None,
                  mode: str = "RGB") -> np.ndarray:
    """Decode concatenated encoded images (JPEG/PNG bytes) with Pillow.

    Args:
      encoded: uint8 [total_bytes], all files back to back.
      offsets: int [N + 1]; image i is `encoded[offsets[i]:offsets[i + 1]]`.
      indices: which images to decode (default all), in output order.
      mode: Pillow mode to convert to ("RGB" -> C = 3, "L" -> C = 1).

    Returns:
      uint8 [n, H, W, C]; every image must have the same size.
    """
    from PIL import Image

    offsets = np.asarray(offsets)
    idx = np.arange(len(offsets) - 1) if indices is None else np.asarray(indices)
    out = None
    for row, i in enumerate(idx):
        with Image.open(io.BytesIO(encoded[offsets[i]:offsets[i + 1]].tobytes())) as im:
            a = np.asarray(im.convert(mode), dtype=np.uint8)
        if a.ndim == 2:
            a = a[..., None]
        if out is None:
            out = np.empty((len(idx),) + a.shape, np.uint8)
        elif a.shape != out.shape[1:]:
            raise ValueError(f"image {i} has shape {a.shape}, the first had {out.shape[1:]}")
        out[row] = a
    return np.empty((0, 0, 0, 3 if mode == "RGB" else 1), np.uint8) if out is None else out


def _file_digest(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def _load_cifar10_jpeg(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    _check_split(name, split)
    expected = "the cifar10_jpeg.npz file ({split}_jpeg, {split}_offsets, {split}_labels, " \
               "class_names)"
    where = _require_path(name, path, None if data_dir is None else
                          os.path.join(data_dir, "cifar10_jpeg.npz"), expected)
    if not os.path.isfile(where):
        raise ValueError(f"dataset {name!r}: {where!r} is not a file; expected {expected}")
    import zipfile

    if not zipfile.is_zipfile(where):
        raise ValueError(f"dataset {name!r}: {where!r} is not an .npz file (not a zip archive: "
                         f"another format, or truncated); expected {expected}")
    with np.load(where, allow_pickle=False) as z:
        keys = set(z.files)
        need = {f"{split}_jpeg", f"{split}_offsets", f"{split}_labels", "class_names"}
        if not need <= keys:
            raise ValueError(f"dataset {name!r}: {where!r} lacks {sorted(need - keys)}; "
                             f"expected {expected}, found {sorted(keys)}")
        labels = z[f"{split}_labels"].astype(np.int32)
        class_names = tuple(str(c) for c in z["class_names"])
        # Decoding 60k JPEGs takes seconds; cache the pixels, keyed by the file's content hash.
        cache = os.path.join(cache_dir or default_cache_dir(), "cifar10_jpeg")
        cache_file = os.path.join(cache, f"{_file_digest(where)}_{split}_images.npy")
        images = None
        if os.path.isfile(cache_file):
            try:
                images = np.load(cache_file, allow_pickle=False)
                if images.dtype != np.uint8 or len(images) != len(labels):
                    images = None
            except (OSError, ValueError):
                images = None
        if images is None:
            images = decode_images(z[f"{split}_jpeg"], z[f"{split}_offsets"])
            _write_cache(cache_file, images)
    return ImageSet(images, labels, class_names, name, split)


def _write_cache(cache_file: str, array: np.ndarray) -> None:
    """Atomically write a .npy cache file; warn (never fail) when the cache is not writable."""
    from ckd_jax.files import write_atomic

    try:
        write_atomic(cache_file, lambda f: np.save(f, array))
    except OSError as e:  # WriteFailed included: the cache is an optimisation only
        warnings.warn(f"could not write the decoded-image cache {cache_file!r} ({e}); set "
                      f"CKD_JAX_CACHE or cache_dir= to a writable folder", stacklevel=3)


# --------------------------------------------------------------------------------------------
# Generic npz


def _read_npz(name: str, where: str, expected: str) -> dict[str, np.ndarray]:
    """Every array of the .npz at `where`; a file that is not one (another format, truncated,
    an object array that needs pickle) is a one-line ValueError naming it and what is wrong."""
    import zipfile
    import zlib

    if not zipfile.is_zipfile(where):
        raise ValueError(f"dataset {name!r}: {where!r} is not an .npz file (not a zip archive: "
                         f"another format, or truncated); expected {expected}")
    out = {}
    try:
        with np.load(where, allow_pickle=False) as z:
            for key in z.files:
                try:
                    out[key] = z[key]
                except ValueError as e:
                    if "pickle" not in str(e):
                        raise
                    raise ValueError(
                        f"dataset {name!r}: {key} in {where!r} is an object array (it needs "
                        f"pickle, which is not loaded); save it as plain arrays, e.g. "
                        f"class_names=np.array(names, dtype=str)") from None
    except (OSError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise ValueError(f"dataset {name!r}: {where!r} is damaged (cannot be read: "
                         f"{' '.join(str(e).split()) or type(e).__name__}); expected "
                         f"{expected}") from e
    return out


def _npz_class_names(name: str, where: str, split: str, z: dict, labels: np.ndarray):
    """The class names of an .npz without `class_names`: "0".."C-1", where the training
    labels must be exactly 0..C-1, every class present (1-based labels would otherwise train
    silently as a C+1-class problem), and the other split's labels lie in that range."""
    train = np.asarray(z.get("train_labels", labels))
    if train.ndim != 1 or train.size == 0 or not np.issubdtype(train.dtype, np.integer):
        return tuple(str(k) for k in range(int(labels.max()) + 1)) if labels.size else ("0",)
    lo, hi = int(train.min()), int(train.max())
    present = np.unique(train)
    if lo != 0 or len(present) != hi + 1:
        absent = sorted(set(range(lo, hi + 1)) - set(present.tolist()))
        why = (f"the lowest is {lo}, not 0" if lo != 0 else
               f"classes {absent[:10]} have no training image")
        raise ValueError(
            f"dataset {name!r}: the training labels in {where!r} run from {lo} to {hi} "
            f"({len(present)} distinct) but must be 0..C-1 with every class present: {why}; "
            + ("renumber them from 0 (e.g. labels - labels.min())" if lo != 0 else
               "renumber them to 0..C-1 (np.unique(labels, return_inverse=True)[1])")
            + ", or save class_names (one per class, label k named class_names[k])")
    if labels.size and (labels.min() < 0 or labels.max() > hi):
        raise ValueError(
            f"dataset {name!r}: the {split} labels in {where!r} run from {int(labels.min())} "
            f"to {int(labels.max())}, outside the training labels' range 0..{hi}; every "
            "class must have training images (the same numbering in both splits)")
    return tuple(str(k) for k in range(hi + 1))


def _load_npz(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    del cache_dir
    expected = ("an .npz with `{split}_images`/`{split}_labels` (or `images`/`labels`) and "
                "optionally `class_names`; images uint8 [N, H, W] or [N, H, W, C]")
    where = _require_path(name, path, data_dir, expected)
    if not os.path.isfile(where):
        raise ValueError(f"dataset {name!r}: {where!r} is not a file; expected {expected}")
    z = _read_npz(name, where, expected)
    keys = set(z)
    if {f"{split}_images", f"{split}_labels"} <= keys:
        images, labels = z[f"{split}_images"], z[f"{split}_labels"]
    elif {"images", "labels"} <= keys:
        images, labels = z["images"], z["labels"]
    else:
        raise ValueError(f"dataset {name!r}: {where!r} has keys {sorted(keys)}; expected "
                         f"{expected}")
    if "class_names" in keys:
        class_names = tuple(str(c) for c in np.atleast_1d(z["class_names"]))
    elif labels.ndim == 1 and np.issubdtype(labels.dtype, np.integer):
        class_names = _npz_class_names(name, where, split, z, labels)
    else:
        class_names = ("0",)  # ImageSet names the bad labels
    if images.dtype != np.uint8:
        raise ValueError(f"dataset {name!r}: images in {where!r} must be uint8, got {images.dtype}")
    if images.ndim == 3:
        images = images[..., None]
    stem = os.path.splitext(os.path.basename(where))[0]
    return ImageSet(images, labels, class_names, f"npz:{stem}", split)


# --------------------------------------------------------------------------------------------
# IDX (MNIST / Fashion-MNIST)


def read_idx(data: bytes) -> np.ndarray:
    """Parse an IDX file (already gunzipped): magic 0x0000 <type 0x08=ubyte> <ndim>, then ndim
    big-endian uint32 sizes, then the uint8 data."""
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise ValueError(f"not an unsigned-byte IDX file (magic {data[:4].hex()})")
    ndim = data[3]
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    body = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise ValueError(f"IDX header says {dims} ({int(np.prod(dims))} values) but the file has "
                         f"{body.size}")
    return body.reshape(dims)


def _find_idx(folder: str, prefix: str, kind: str) -> str | None:
    """train-images-idx3-ubyte(.gz) and the dotted variant train-images.idx3-ubyte, up to two
    folder levels down."""
    dim = 3 if kind == "images" else 1
    for sep in ("-", "."):
        base = f"{prefix}-{kind}{sep}idx{dim}-ubyte"
        for pattern in (base, base + ".gz", os.path.join("*", base),
                        os.path.join("*", base + ".gz")):
            hits = sorted(glob.glob(os.path.join(glob.escape(folder), pattern)))
            if hits:
                return hits[0]
    return None


def _read_maybe_gz(path: str) -> bytes:
    with open(path, "rb") as f:
        data = f.read()
    return gzip.decompress(data) if data[:2] == b"\x1f\x8b" else data


def _load_idx(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    del cache_dir
    _check_split(name, split)
    if path is None and data_dir is None and name == "fashion_mnist":
        path = FASHION_MNIST_DEFAULT_DIR
    prefix = "train" if split == "train" else "t10k"
    expected = (f"a folder with {prefix}-images-idx3-ubyte[.gz] and "
                f"{prefix}-labels-idx1-ubyte[.gz]")
    folder = _require_path(name, path, data_dir, expected)
    img_file, lab_file = _find_idx(folder, prefix, "images"), _find_idx(folder, prefix, "labels")
    if img_file is None or lab_file is None:
        raise FileNotFoundError(f"dataset {name!r}: {folder!r} lacks the {split} IDX files; "
                                f"expected {expected}")
    images = read_idx(_read_maybe_gz(img_file))
    labels = read_idx(_read_maybe_gz(lab_file))
    if images.ndim != 3 or labels.ndim != 1:
        raise ValueError(f"dataset {name!r}: IDX shapes {images.shape} / {labels.shape}; "
                         f"expected [N, H, W] images and [N] labels")
    names = FASHION_MNIST_CLASSES if name == "fashion_mnist" else DIGIT_CLASSES
    return ImageSet(np.ascontiguousarray(images[..., None]), labels, names, name, split)


# --------------------------------------------------------------------------------------------
# scikit-learn digits


def digits_split_indices() -> tuple[np.ndarray, np.ndarray]:
    """The fixed (train, test) index split of the 1797 digits, each sorted."""
    n = 1797
    perm = np.random.default_rng(DIGITS_SPLIT_SEED).permutation(n)
    n_train = int(n * DIGITS_TRAIN_FRACTION)
    return np.sort(perm[:n_train]), np.sort(perm[n_train:])


def _load_digits(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    del cache_dir
    _check_split(name, split)
    if path is not None or data_dir is not None:
        raise ValueError("dataset 'digits' is bundled with scikit-learn and takes no path/data_dir")
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixel values are 0..16; scale to 0..255 so the uint8 pipeline treats it like any image.
    images = np.round(d.images * (255.0 / 16.0)).astype(np.uint8)[..., None]
    train_idx, test_idx = digits_split_indices()
    idx = train_idx if split == "train" else test_idx
    return ImageSet(images[idx], d.target[idx], DIGIT_CLASSES, name, split)


# --------------------------------------------------------------------------------------------
# tensorflow-datasets


def records_to_arrays(records: Iterable[dict], *, resize: int | None = None
                      ) -> tuple[np.ndarray, np.ndarray]:
    """TFDS example dicts ({'image': uint8 [H, W, C], 'label': int, ...}) -> (images uint8
    [N, H, W, C], labels int64 [N]). With `resize`, every image is resized to resize x resize
    (Pillow bilinear, as torchvision's `Resize((s, s))` on PIL images), which also lets images of
    different sizes (Stanford Cars) be stacked."""
    from PIL import Image

    images, labels = [], []
    for r in records:
        img = np.asarray(r["image"], dtype=np.uint8)
        if img.ndim == 2:
            img = img[..., None]
        if resize is not None and img.shape[:2] != (resize, resize):
            pil = Image.fromarray(img[..., 0] if img.shape[-1] == 1 else img)
            img = np.asarray(pil.resize((resize, resize), Image.BILINEAR), dtype=np.uint8)
            img = img[..., None] if img.ndim == 2 else img
        images.append(img)
        labels.append(int(r["label"]))
    if not images:
        raise ValueError("no records")
    shapes = {i.shape for i in images}
    if len(shapes) > 1:
        raise ValueError(f"images have different shapes {sorted(shapes)[:5]}; pass resize=")
    return np.stack(images), np.asarray(labels, np.int64)


def default_tfds_data_dir() -> str:
    return os.environ.get("TFDS_DATA_DIR") or os.path.join(os.path.expanduser("~"),
                                                           "tensorflow_datasets")


def _load_tfds(name: str, split: str, data_dir, path, cache_dir) -> ImageSet:
    del cache_dir
    if path is not None:
        raise ValueError(f"dataset {name!r} reads a prepared TFDS data_dir; pass data_dir=, "
                         f"not path=")
    tfds_name = name[len("tfds:"):]
    data_dir = os.fspath(data_dir) if data_dir is not None else default_tfds_data_dir()
    ds_dir = os.path.join(data_dir, tfds_name)
    # Check on disk first: asked for a dataset that is not there, TFDS may try the network.
    prepared = sorted(glob.glob(os.path.join(glob.escape(ds_dir), "*", "dataset_info.json")))
    if not prepared:
        raise FileNotFoundError(
            f"TFDS dataset {tfds_name!r} is not prepared in data_dir {data_dir!r} (no "
            f"{ds_dir}/<version>/dataset_info.json). ckd_jax never downloads: prepare it where "
            f"there is internet and TensorFlow with tfds.builder({tfds_name!r}, data_dir=..., "
            f"file_format='array_record').download_and_prepare(), then copy the folder here.")
    if not glob.glob(os.path.join(glob.escape(ds_dir), "*", f"{tfds_name}-*.array_record*")):
        raise ValueError(
            f"TFDS dataset {tfds_name!r} in {ds_dir!r} is not in array_record format, which "
            f"tfds.data_source (random access without TensorFlow) needs; re-prepare it with "
            f"file_format='array_record'.")
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(tfds_name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # re-raised with the place named
        raise RuntimeError(f"could not open TFDS dataset {tfds_name!r} split {split!r} from "
                           f"{data_dir!r}: {e}") from e
    class_names = tuple(source.dataset_info.features["label"].names)
    builtin = {"cifar10": CIFAR10_CLASSES, "cifar100": CIFAR100_CLASSES}.get(tfds_name)
    if builtin and class_names == tuple(str(k) for k in range(len(builtin))):
        class_names = builtin  # prepared without the archive's label-name files
    n = len(source)

    def chunks():
        for start in range(0, n, 1024):
            keys = list(range(start, min(n, start + 1024)))
            yield from (source.__getitems__(keys) if hasattr(source, "__getitems__")
                        else [source[k] for k in keys])

    resize = CARS_IMAGE_SIZE if tfds_name == "cars196" else None
    images, labels = records_to_arrays(chunks(), resize=resize)
    return ImageSet(images, labels, class_names, tfds_name, split)


# --------------------------------------------------------------------------------------------
# Registry and public entry points

_Loader = Callable[[str, str, object, object, object], ImageSet]
_REGISTRY: dict[str, _Loader] = {
    "tfds:cifar10": _load_tfds,
    "tfds:cifar100": _load_tfds,
    "tfds:cars196": _load_tfds,
    "cifar10": _load_cifar,
    "cifar100": _load_cifar,
    "cifar10_jpeg": _load_cifar10_jpeg,
    "npz": _load_npz,
    "fashion_mnist": _load_idx,
    "mnist": _load_idx,
    "digits": _load_digits,
}


def dataset_names() -> list[str]:
    """Every name `load_dataset` accepts, sorted."""
    return sorted(_REGISTRY)


def load_dataset(name: str, split: str, *, data_dir=None, path=None,
                 cache_dir=None) -> ImageSet:
    """Load one split of dataset `name` into memory as a uint8 `ImageSet`.

    Args:
      name: one of `dataset_names()` (see the module docstring for what each reads).
      split: "train" or "test" (TFDS names also accept TFDS split strings, e.g. "train[:10%]").
      data_dir: TFDS data_dir (default $TFDS_DATA_DIR or ~/tensorflow_datasets); for the other
        file sources, a folder to search when `path` is not given.
      path: the file or folder to read (archive, folder, .npz, IDX folder).
      cache_dir: where decoded JPEG pixels are cached (default $CKD_JAX_CACHE or
        ~/.cache/ckd_jax); only `cifar10_jpeg` uses it.

    Example:
      >>> train = load_dataset("digits", "train")
      >>> train.images.shape, train.num_classes
      ((1437, 8, 8, 1), 10)
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown dataset {name!r}; accepted: {', '.join(dataset_names())}")
    if not isinstance(split, str) or not split:
        raise ValueError(f"split must be a non-empty str, got {split!r}")
    return _REGISTRY[name](name, split, data_dir, path, cache_dir)


def load_train_test(name: str, **kwargs) -> tuple[ImageSet, ImageSet]:
    """(train, test) splits of `name` (keyword arguments as `load_dataset`); checks that both
    have the same image shape and class names."""
    train = load_dataset(name, "train", **kwargs)
    test = load_dataset(name, "test", **kwargs)
    check_train_test(train, test, f"dataset {name!r}: ")
    return train, test


def check_train_test(train: ImageSet, test: ImageSet, prefix: str = "") -> None:
    """Raise ValueError (message starting with `prefix`) unless both splits have the same image
    shape and class names."""
    if train.image_shape != test.image_shape:
        raise ValueError(f"{prefix}train images are {train.image_shape} but test images are "
                         f"{test.image_shape}")
    if train.class_names != test.class_names:
        raise ValueError(f"{prefix}train and test class names differ ({train.num_classes} vs "
                         f"{test.num_classes} classes)")
