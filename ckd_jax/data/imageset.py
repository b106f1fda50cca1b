"""`ImageSet`: one split of an image-classification dataset held in host memory as uint8."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True, eq=False)
class ImageSet:
    """One split of a labelled image dataset.

    Attributes:
      images: uint8 [N, H, W, C] (NHWC, what the models and `ckd_jax.data.augment` take).
      labels: int32 [N], each in [0, num_classes). Other integer dtypes are converted to int32.
      class_names: tuple of `num_classes` strings; `class_names[k]` names label k.
      name: canonical dataset name (e.g. "cifar100"; the same for every source of the same data,
        so a logit table built from the TFDS copy matches one built from the official archive).
      split: split name ("train", "test", or a TFDS split string).
    """

    images: np.ndarray
    labels: np.ndarray
    class_names: tuple[str, ...]
    name: str
    split: str

    def __post_init__(self):
        images, labels = self.images, self.labels
        if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
            raise ValueError(f"images must be a uint8 np.ndarray, got "
                             f"{type(images).__name__} of dtype {getattr(images, 'dtype', None)}")
        if images.ndim != 4:
            raise ValueError(f"images must be [N, H, W, C], got shape {images.shape}")
        labels = np.asarray(labels)
        if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
            raise ValueError(f"labels must be a 1-D integer array, got shape {labels.shape} "
                             f"dtype {labels.dtype}")
        if len(labels) != len(images):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        names = self.class_names
        if isinstance(names, str) or not all(isinstance(n, str) for n in names):
            raise ValueError(f"class_names must be a sequence of str, got {names!r:.200}")
        names = tuple(names)
        if not names:
            raise ValueError("class_names is empty")
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            raise ValueError(f"labels must lie in [0, {len(names)}), got range "
                             f"[{labels.min()}, {labels.max()}]")
        object.__setattr__(self, "labels", labels.astype(np.int32, copy=False))
        object.__setattr__(self, "class_names", names)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of every image."""
        return tuple(self.images.shape[1:])

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices) -> ImageSet:
        """The rows `indices` (1-D ints, any order) as a new ImageSet of the same split."""
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices must be a 1-D integer array, got shape {idx.shape}")
        return ImageSet(self.images[idx], self.labels[idx], self.class_names, self.name,
                        self.split)

    def __repr__(self) -> str:
        return (f"ImageSet(name={self.name!r}, split={self.split!r}, n={len(self)}, "
                f"image_shape={self.image_shape}, num_classes={self.num_classes})")
