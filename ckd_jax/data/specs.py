"""Per-dataset normalisation statistics and augmentation settings.

`dataset_spec(name)` gives everything needed to turn uint8 images into model inputs:
`train_view` (random crop after zero padding, optional flip, normalise; the paper's training and
teacher-pass view) and `eval_view` (optional centre crop, normalise).

Sources of the numbers:
  cifar100: RepDistiller / CKD code (mean (0.5071, 0.4867, 0.4408), std (0.2675, 0.2565, 0.2761)).
  cifar10: the usual per-channel pixel statistics of the CIFAR-10 training set, also used for the
    JPEG re-encoding `cifar10_jpeg` (its decoded statistics differ by < 0.002, see the data README).
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
                         f"{', '.join(sorted(_AUGMENT))}. Build a DatasetSpec(...) by hand for "
                         f"other data.")
    mean, std = DATASET_STATS[key]
    crop, pad, flip, eval_crop = _AUGMENT[key]
    return DatasetSpec(mean, std, crop, pad, flip, eval_crop)


def train_view(key: jax.Array, images_u8: jax.Array, spec: DatasetSpec) -> jax.Array:
    """Randomly augmented, normalised view: uint8 [B, H, W, C] -> float32 [B, crop, crop, C]."""
    out = random_crop_flip(key, images_u8, crop_size=spec.crop_size, padding=spec.padding,
                           flip=spec.flip)
    return normalize(out, spec.mean, spec.std)


def eval_view(images_u8: jax.Array, spec: DatasetSpec) -> jax.Array:
    """Deterministic normalised view (centre crop if `spec.eval_crop`): float32 [B, h, w, C]."""
    out = images_u8 if spec.eval_crop is None else center_crop(images_u8, spec.eval_crop)
    return normalize(out, spec.mean, spec.std)
