"""Import RepDistiller / CKD PyTorch checkpoints into the flax zoo's variables.

The zoo's module names are the PyTorch module paths, so the mapping is generic: a flax variable at
``(collection, *path, leaf)`` corresponds to the state_dict key ``".".join(path) + "." + t`` with

  =============  =========  ==============  =========================================
  collection     leaf       torch suffix t  layout change
  =============  =========  ==============  =========================================
  params         kernel     weight          conv OIHW -> HWIO (grouped: O, I/g, H, W ->
                                            H, W, I/g, O); linear [out, in] -> [in, out]
  params         scale      weight          BatchNorm gamma, as is
  params         bias       bias            as is
  batch_stats    mean       running_mean    as is
  batch_stats    var        running_var     as is
  =============  =========  ==============  =========================================

``num_batches_tracked`` is ignored (PyTorch only uses it when ``momentum=None``).
"""

from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from typing import Any

import numpy as np

_TORCH_SUFFIX = {
    ("params", "kernel"): "weight",
    ("params", "scale"): "weight",
    ("params", "bias"): "bias",
    ("batch_stats", "mean"): "running_mean",
    ("batch_stats", "var"): "running_var",
}

_TORCH_MISSING = ("load_torch_checkpoint needs PyTorch to read a .pth file, and it is not "
                  "installed: pip install torch==2.13.0 (the CPU build is enough)")


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(_TORCH_MISSING) from e
    return torch


def _torch_shape(flax_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a tensor that becomes a flax leaf of `flax_shape`."""
    if len(flax_shape) == 4:  # HWIO -> OIHW
        h, w, i, o = flax_shape
        return (o, i, h, w)
    if len(flax_shape) == 2:  # [in, out] -> [out, in]
        return (flax_shape[1], flax_shape[0])
    return tuple(flax_shape)


def _from_torch_layout(arr: np.ndarray) -> np.ndarray:
    if arr.ndim == 4:
        return np.transpose(arr, (2, 3, 1, 0))
    if arr.ndim == 2:
        return arr.T
    return arr


def torch_key_map(variables: Mapping) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
    """state_dict key -> (flax variable path incl. collection, expected PyTorch shape).

    `variables` may hold arrays or `jax.ShapeDtypeStruct`s (e.g. from `jax.eval_shape`).
    """
    from flax import traverse_util

    out = {}
    # params before batch_stats, so a report of missing keys starts with weights.
    ordered = {c: variables[c] for c in sorted(variables, key=lambda c: c != "params")}
    for path, leaf in traverse_util.flatten_dict(ordered).items():
        suffix = _TORCH_SUFFIX.get((path[0], path[-1]))
        if suffix is None:
            raise ValueError(f"variable {'/'.join(path)} has no PyTorch counterpart")
        out[".".join(path[1:-1] + (suffix,))] = (path, _torch_shape(tuple(leaf.shape)))
    return out


def _to_numpy(key: str, value: Any) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch.Tensor; no torch import needed for this
        value = value.detach().cpu()
        if value.dtype.is_floating_point:
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray | np.generic) or hasattr(value, "__array__"):
        return np.asarray(value)
    raise ValueError(f"state_dict entry {key!r} is a {type(value).__name__}, not a tensor; pass "
                     "a RepDistiller checkpoint ({'model': state_dict, ...}) or a state_dict")


def read_state_dict(source, weights_only: bool = True) -> dict[str, np.ndarray]:
    """The state_dict in `source` as {key: numpy array}.

    `source`: a path (str / PathLike) or open binary file of a ``.pth`` file, or an already
    loaded object; either a RepDistiller/CKD checkpoint dict (its ``"model"`` entry is used) or a
    bare state_dict. A ``"module."`` prefix on every key (``nn.DataParallel``) is removed.
    """
    if isinstance(source, str | os.PathLike) or hasattr(source, "read"):
        if isinstance(source, str | os.PathLike) and not os.path.isfile(source):
            raise FileNotFoundError(f"checkpoint file not found: {os.fspath(source)!r}")
        torch = _import_torch()
        try:
            obj = torch.load(source, map_location="cpu", weights_only=weights_only)
        except pickle.UnpicklingError as e:
            raise ValueError(
                f"torch.load(weights_only={weights_only}) refused the checkpoint ({e}). "
                "If you trust the file, pass weights_only=False") from e
    else:
        obj = source
    if not isinstance(obj, Mapping):
        raise ValueError(f"expected a checkpoint dict or a state_dict, got {type(obj).__name__}")
    if "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    state = {str(k): _to_numpy(str(k), v) for k, v in obj.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_torch_checkpoint(source, name: str, num_classes: int, *, weights_only: bool = True,
                          **model_kwargs) -> dict:
    """Convert a RepDistiller / CKD PyTorch checkpoint into the zoo's flax variables.

    Args:
      source: path or open file of a ``.pth`` (e.g. ``save/models/resnet110_vanilla/
        ckpt_epoch_240.pth``), a loaded checkpoint dict ``{"model": state_dict, ...}``, or a bare
        state_dict (torch tensors or numpy arrays).
      name: zoo name of the architecture (as in ``create_model``), e.g. ``"resnet110"``.
      num_classes: classifier width the checkpoint was trained with (100 for CIFAR-100).
      weights_only: passed to ``torch.load``; RepDistiller's ``ckpt_epoch_*.pth`` files load
        with the safe default, ``*_last.pth`` (they pickle an argparse Namespace) need False.
      model_kwargs: extra `create_model` arguments (e.g. ``global_pool`` for the ShuffleNets).

    Returns:
      ``{"params": ..., "batch_stats": ...}`` (float32 jax arrays) for
      ``create_model(name, num_classes).apply(variables, x, train=False)``.

    Raises:
      ValueError: unknown `name`; or the checkpoint does not fit the architecture: a missing or
        unexpected key, or a shape mismatch (the message names the key and both shapes).
      ImportError: `source` is a file and PyTorch is not installed.
    """
    import jax
    import jax.numpy as jnp
    from flax import traverse_util

    from ckd_jax.models import create_model

    model = create_model(name, num_classes, **model_kwargs)  # validates name and num_classes
    abstract = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3), jnp.float32)))
    key_map = torch_key_map(abstract)
    state = read_state_dict(source, weights_only=weights_only)

    where = f"model {name!r} (num_classes={num_classes})"
    mismatched, missing, unexpected, flat = [], [], [], {}
    for key, (path, expected) in key_map.items():
        if key not in state:
            missing.append(f"checkpoint lacks key {key!r} (model expects shape {expected})")
            continue
        arr = state[key]
        if tuple(arr.shape) != expected:
            mismatched.append(f"key {key!r}: checkpoint shape {tuple(arr.shape)}, model expects "
                              f"shape {expected}")
            continue
        flat[path] = jnp.asarray(_from_torch_layout(arr.astype(np.float32)))
    for key, arr in state.items():
        if key not in key_map and not key.endswith("num_batches_tracked"):
            unexpected.append(f"unexpected key {key!r} (checkpoint shape {tuple(arr.shape)}) "
                              "has no counterpart in the model")
    if mismatched or missing or unexpected:
        lines = []
        for kind, items in (("shape mismatches", mismatched), ("missing keys", missing),
                            ("unexpected keys", unexpected)):
            if items:
                lines.append(f"{len(items)} {kind}:")
                lines += ["  " + item for item in items[:6]]
                if len(items) > 6:
                    lines.append(f"  ... and {len(items) - 6} more")
        raise ValueError(f"checkpoint does not match {where}:\n" + "\n".join(lines))
    return traverse_util.unflatten_dict(flat)
