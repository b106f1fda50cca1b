"""Per-dataset normalisation statistics and augmentation settings.

`dataset_spec(name)` gives everything needed to turn uint8 images into model inputs:
`train_view` (random crop after zero padding, optional flip, normalise; the paper's training and
teacher-pass view) and `eval_view` (optional centre crop, normalise).

Sources of the numbers:
  cifar100: RepDistiller / CKD code (mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761)).
  cifar10: the usual per-channel pixel statistics of the CIFAR-10 training set, also used for the
    JPEG re-encoding `cifar10_jpeg` (its decoded statistics differ by < 0.002; the JPEG copy:
    docs/data.md, results/cifar10/README.md).
  cars196: ImageNet statistics, as the CKD code's Stanford Cars loader; images are resized to 64x64
    at load time, trained on random 56x56 crops (no padding) with flips, evaluated on the centre
    56x56 crop (the CKD code's `Resize((64, 64))`, `RandomCrop(56)`, `CenterCrop(56)`).
  mnist / fashion_mnist: the usual training-set statistics (0.1307, 0.3081) and (0.2860, 0.3530).
  digits: computed by us on the seeded training split of `load_dataset("digits", "train")`
    (pixels scaled 0-16 -> 0-255); `tests/test_data.py` recomputes them.
"""

from __future__ import annotations

from typing import NamedTuple

import jax

from ckd_jax.data.augment import center_crop, normalize, random_crop_flip


class DatasetSpec(NamedTuple):
    """How to preprocess one dataset (a NamedTuple, so hashable and usable as a jit static arg).

    mean, std: per-channel tuples on the [0, 1] scale (`normalize` computes (x/255 - mean)/std).
    crop_size: side of the random training crop (taken after zero padding by `padding`).
    padding: zero padding on each side before the random crop.
    flip: random horizontal flip during training.
    eval_crop: side of the centre crop for evaluation / the clean view; None = whole image.
    """

    mean: tuple[float, ...]
    std: tuple[float, ...]
    crop_size: int
    padding: int
    flip: bool
    eval_crop: int | None = None


# name -> (mean, std); keys are canonical dataset names (ImageSet.name).
DATASET_STATS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar10_jpeg": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "cifar100": ((0.5071, 0.4867, 0.4408), (0.2675, 0.2565, 0.2761)),
    "cars196": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "mnist": ((0.1307,), (0.3081,)),
    "fashion_mnist": ((0.2860,), (0.3530,)),
    "digits": ((0.3055,), (0.3759,)),
}

# name -> (crop_size, padding, flip, eval_crop)
_AUGMENT: dict[str, tuple[int, int, bool, int | None]] = {
    "cifar10": (32, 4, True, None),
    "cifar10_jpeg": (32, 4, True, None),
    "cifar100": (32, 4, True, None),
    "cars196": (56, 0, True, 56),
    "mnist": (28, 2, False, None),
    "fashion_mnist": (28, 2, False, None),
    "digits": (8, 1, False, None),
}


def _canonical(name: str) -> str:
    return name[len("tfds:"):] if name.startswith("tfds:") else name


def dataset_spec(name: str) -> DatasetSpec:
    """The `DatasetSpec` of dataset `name` (a canonical name or a `load_dataset` name such as
    "tfds:cifar100"). Raises ValueError listing the known names otherwise."""
    key = _canonical(name)
    if key not in _AUGMENT:
        raise ValueError(f"no preprocessing spec for dataset {name!r}; known: "
                         f"{', '.join(sorted(_AUGMENT))}. For other data give data_spec (the "
                         f"config field, train_teacher.py --crop-size/--mean/...) or let "
                         f"resolve_spec derive one from the images (docs/data.md).")
    mean, std = DATASET_STATS[key]
    crop, pad, flip, eval_crop = _AUGMENT[key]
    return DatasetSpec(mean, std, crop, pad, flip, eval_crop)


SPEC_FIELDS = DatasetSpec._fields
_STATS_CHUNK = 4096  # images per chunk when computing the statistics (bounded memory)


def image_stats(images_u8) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel (mean, std) of uint8 images [N, H, W, C] on the [0, 1] scale, in float64
    over every pixel (chunked, so a large split needs little extra memory). A channel whose
    std is below 1/255 (constant) gets 1/255, so normalising never divides by zero."""
    import numpy as np

    x = np.asarray(images_u8)
    if x.dtype != np.uint8 or x.ndim != 4 or len(x) == 0:
        raise ValueError(f"images must be uint8 [N, H, W, C] with N > 0, got {x.dtype} "
                         f"{x.shape}")
    total = np.zeros(x.shape[-1], np.float64)
    total_sq = np.zeros(x.shape[-1], np.float64)
    for i in range(0, len(x), _STATS_CHUNK):
        chunk = x[i:i + _STATS_CHUNK].reshape(-1, x.shape[-1]).astype(np.float64) / 255.0
        total += chunk.sum(0)
        total_sq += (chunk * chunk).sum(0)
    n = x.shape[0] * x.shape[1] * x.shape[2]
    mean = total / n
    std = np.sqrt(np.maximum(total_sq / n - mean * mean, 0.0))
    std = np.maximum(std, 1.0 / 255.0)
    return (tuple(round(float(v), 6) for v in mean), tuple(round(float(v), 6) for v in std))


def default_spec(images_u8) -> DatasetSpec:
    """The spec of data with no registered one, derived from its (training) images:
    crop_size = the image side (min(H, W), with a centre crop to it for evaluation when the
    images are not square), padding = side // 8 (CIFAR's 4 at 32 px), no flip (safe for digits
    and text; set flip=True for natural images), mean / std = `image_stats` of the images."""
    mean, std = image_stats(images_u8)
    return DatasetSpec(mean=mean, std=std, **_derived_geometry(images_u8))


def _derived_geometry(images_u8) -> dict:
    h, w = int(images_u8.shape[1]), int(images_u8.shape[2])
    side = min(h, w)
    return dict(crop_size=side, padding=side // 8, flip=False,
                eval_crop=None if h == w else side)


def check_spec_dict(given) -> dict:
    """`given` (a data_spec dict of a config: any subset of SPEC_FIELDS) checked: known keys,
    the right types; lists become tuples. ValueError naming the key otherwise."""
    if given is None:
        return {}
    if not isinstance(given, dict):
        raise ValueError(f"data_spec must be a dict with keys among {', '.join(SPEC_FIELDS)}, "
                         f"got {given!r}")
    unknown = sorted(set(given) - set(SPEC_FIELDS))
    if unknown:
        raise ValueError(f"data_spec has unknown key(s) {unknown}; accepted: "
                         f"{', '.join(SPEC_FIELDS)}")
    out = {}
    for k, v in given.items():
        if k in ("mean", "std"):
            vals = (v,) if isinstance(v, (int, float)) else v
            if (not isinstance(vals, (list, tuple)) or not vals
                    or not all(isinstance(a, (int, float)) and not isinstance(a, bool)
                               for a in vals)):
                raise ValueError(f"data_spec {k}={v!r} must be a number or a list of numbers "
                                 "(one per channel, on the [0, 1] scale)")
            if k == "std" and any(a <= 0 for a in vals):
                raise ValueError(f"data_spec std={v!r} must be > 0")
            out[k] = tuple(float(a) for a in vals)
        elif k == "flip":
            if not isinstance(v, bool):
                raise ValueError(f"data_spec flip={v!r} must be true or false")
            out[k] = v
        else:  # crop_size, padding, eval_crop
            ok = isinstance(v, int) and not isinstance(v, bool) and (
                v >= 0 if k == "padding" else v >= 1)
            if not (ok or (k == "eval_crop" and v is None)):
                raise ValueError(f"data_spec {k}={v!r} must be an int "
                                 f"{'>= 0' if k == 'padding' else '>= 1'}"
                                 f"{' or null' if k == 'eval_crop' else ''}")
            out[k] = v
    return out


def has_spec(name: str) -> bool:
    """Whether dataset `name` has a registered spec (`dataset_spec(name)` works)."""
    return _canonical(name) in _AUGMENT


def resolve_spec(name: str, images_u8=None, given: dict | None = None) -> DatasetSpec:
    """The spec of a run: `given` (any subset of the DatasetSpec fields, e.g. a config's
    `data_spec`) over the registered spec of `name`, or, for a dataset without one, over
    `default_spec(images_u8)` (the training images; mean / std computed only when not given).
    Checks that the channel count of mean / std matches the images."""
    given = check_spec_dict(given)
    if has_spec(name):
        base = dataset_spec(name)._asdict()
    elif images_u8 is None:
        raise ValueError(f"no preprocessing spec for dataset {name!r} and no images to derive "
                         "one from")
    else:
        base = _derived_geometry(images_u8)
        if not {"mean", "std"} <= set(given):
            base["mean"], base["std"] = image_stats(images_u8)
    spec = DatasetSpec(**{**base, **given})
    if images_u8 is not None and (given or not has_spec(name)):  # a spec made for this data
        check_spec_fits(spec, images_u8.shape[1:])
        ch = int(images_u8.shape[-1])
        for k in ("mean", "std"):
            if len(getattr(spec, k)) != ch:
                raise ValueError(f"data_spec {k} has {len(getattr(spec, k))} value(s), the "
                                 f"images {ch} channel(s)")
    return spec


def check_spec_fits(spec: DatasetSpec, image_shape) -> None:
    """ValueError unless the spec's views fit images of `image_shape` (H, W, C): the training
    crop within the padded image, and the evaluation view (centre `eval_crop`, else the whole
    image) the same size as the training crop (the network sees both)."""
    h, w = int(image_shape[0]), int(image_shape[1])
    if spec.crop_size > min(h, w) + 2 * spec.padding:
        raise ValueError(f"crop_size={spec.crop_size} is larger than the {h}x{w} images padded "
                         f"by {spec.padding}")
    if spec.eval_crop is not None and spec.eval_crop > min(h, w):
        raise ValueError(f"eval_crop={spec.eval_crop} is larger than the {h}x{w} images")
    ev = (spec.eval_crop, spec.eval_crop) if spec.eval_crop else (h, w)
    if ev != (spec.crop_size, spec.crop_size):
        raise ValueError(f"training crops are {spec.crop_size}x{spec.crop_size} but the "
                         f"evaluation view is {ev[0]}x{ev[1]}; set eval_crop={spec.crop_size} "
                         f"or crop_size={h}" if h == w else
                         f"training crops are {spec.crop_size}x{spec.crop_size} but the "
                         f"evaluation view is {ev[0]}x{ev[1]}; set eval_crop")


def spec_dict(spec: DatasetSpec) -> dict:
    """A spec as a JSON-ready dict (what a run records as its config's data_spec)."""
    d = spec._asdict()
    d["mean"], d["std"] = list(spec.mean), list(spec.std)
    return d


def train_view(key: jax.Array, images_u8: jax.Array, spec: DatasetSpec) -> jax.Array:
    """Randomly augmented, normalised view: uint8 [B, H, W, C] -> float32 [B, crop, crop, C]."""
    out = random_crop_flip(key, images_u8, crop_size=spec.crop_size, padding=spec.padding,
                           flip=spec.flip)
    return normalize(out, spec.mean, spec.std)


def eval_view(images_u8: jax.Array, spec: DatasetSpec) -> jax.Array:
    """Deterministic normalised view (centre crop if `spec.eval_crop`): float32 [B, h, w, C]."""
    out = images_u8 if spec.eval_crop is None else center_crop(images_u8, spec.eval_crop)
    return normalize(out, spec.mean, spec.std)
