"""Data: in-memory uint8 image sets, loaders for every supported source, per-dataset
preprocessing specs, and on-device augmentation (`ckd_jax.data.augment`)."""

from ckd_jax.data.imageset import ImageSet
from ckd_jax.data.sources import (
    CIFAR10_CLASSES,
    CIFAR100_CLASSES,
    DIGITS_SPLIT_SEED,
    dataset_names,
    decode_images,
    default_cache_dir,
    load_dataset,
    load_train_test,
    read_idx,
    records_to_arrays,
)
from ckd_jax.data.specs import DATASET_STATS, DatasetSpec, dataset_spec, eval_view, train_view

__all__ = [
    "CIFAR10_CLASSES", "CIFAR100_CLASSES", "DATASET_STATS", "DIGITS_SPLIT_SEED", "DatasetSpec",
    "ImageSet", "dataset_names", "dataset_spec", "decode_images", "default_cache_dir",
    "eval_view", "load_dataset", "load_train_test", "read_idx", "records_to_arrays",
    "train_view",
]
