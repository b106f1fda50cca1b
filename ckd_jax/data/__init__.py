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
from ckd_jax.data.specs import (
    DATASET_STATS,
    SPEC_FIELDS,
    DatasetSpec,
    dataset_spec,
    default_spec,
    eval_view,
    has_spec,
    image_stats,
    resolve_spec,
    spec_dict,
    train_view,
)

__all__ = [
    "CIFAR10_CLASSES", "CIFAR100_CLASSES", "DATASET_STATS", "DIGITS_SPLIT_SEED", "DatasetSpec",
    "ImageSet", "SPEC_FIELDS", "dataset_names", "dataset_spec", "decode_images",
    "default_cache_dir", "default_spec", "eval_view", "has_spec", "image_stats", "load_dataset",
    "load_train_test", "read_idx", "records_to_arrays", "resolve_spec", "spec_dict",
    "train_view",
]
