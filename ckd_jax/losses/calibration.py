"""Logit-offset calibration: the one thing CKD's loss cannot see, recovered from the logit table.

Why. CKD's relative term compares *differences* of logits, `s_i - s_j` with `t_i - t_j`, so
adding one vector `c` [C] to every student output leaves the loss unchanged (the head bias gets
exactly zero gradient from it). The component of the student's logits common to all inputs is
therefore not learned: it drifts from its initial value and, once it is large, decides the
argmax on its own. The learned differences can be good while the accuracy is poor.

What. The offset is estimated on the samples whose teacher logits are already cached (the
teacher-labelled split and its logit table), so it costs no teacher call and never sees
validation or test data:

    c = mean_i s(x_i) - mean_i t_i        s, t: student / cached teacher logits [N, C]

and calibrated logits are `s(x) - c`. That is the least-squares choice of one shared shift
(argmin_c sum_i ||s(x_i) - c - t_i||^2), so it matches the student's mean output to the
teacher's on the same images. Subtracting one vector from every logit of every input is a
pure re-labelling of the head bias: `fold_offset_into_head` exports a calibrated student as an
ordinary network with `bias - c`.

    s = student_apply(variables, x_train)            # [N, C] eval mode, clean view
    c = estimate_logit_offset(s, table.logits)       # [C]
    pred = apply_logit_offset(student_apply(variables, x_test), c).argmax(-1)
    exported = fold_offset_into_head(student_apply, variables, c, x_train[:2])

See docs/calibration.md for the measured effect and how the training engine uses it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array


def _check_logits(name: str, x) -> None:
    if getattr(x, "ndim", None) != 2:
        raise ValueError(f"{name} must be [N, C] logits, got shape {getattr(x, 'shape', None)}")


def estimate_logit_offset(student_logits: Array, teacher_logits: Array,
                          mask: Array | None = None) -> Array:
    """The shared offset `c` [C] between student and cached teacher logits of the same samples.

    Args:
      student_logits: [N, C] student outputs (eval mode, clean view) on the samples.
      teacher_logits: [N, C] the cached teacher logits of the same samples, same row order.
      mask: optional [N] weights (bool or 0/1) selecting the rows that count, e.g. to ignore
        padding; at least one row must count.

    Returns:
      float32 [C]: `sum_i m_i (s_i - t_i) / sum_i m_i` (the mean difference). Subtract it from
      student logits with `apply_logit_offset`.

    Example:

      >>> s = jnp.array([[3.0, 1.0], [2.0, 2.0]])
      >>> t = jnp.array([[1.0, 1.0], [0.0, 1.0]])
      >>> estimate_logit_offset(s, t).tolist()   # the mean of s - t over the rows
      [2.0, 0.5]
    """
    _check_logits("student_logits", student_logits)
    _check_logits("teacher_logits", teacher_logits)
    if student_logits.shape != teacher_logits.shape:
        raise ValueError(f"student_logits {student_logits.shape} and teacher_logits "
                         f"{teacher_logits.shape} must have the same shape [N, C]")
    diff = jnp.asarray(student_logits, jnp.float32) - jnp.asarray(teacher_logits, jnp.float32)
    if mask is None:
        return jnp.mean(diff, axis=0)
    if getattr(mask, "shape", None) != student_logits.shape[:1]:
        raise ValueError(f"mask must be [N] = {student_logits.shape[:1]}, got "
                         f"{getattr(mask, 'shape', None)}")
    m = jnp.asarray(mask, jnp.float32)
    return jnp.sum(diff * m[:, None], axis=0) / jnp.maximum(jnp.sum(m), 1.0)


def apply_logit_offset(logits: Array, offset: Array) -> Array:
    """Calibrated logits `logits - offset`: logits [..., C], offset [C] (broadcast over ...).

    Example:

      >>> apply_logit_offset(jnp.array([[2.0, 1.0, 0.5]]), jnp.array([1.0, 0.0, 0.5])).tolist()
      [[1.0, 1.0, 0.0]]
    """
    if offset.ndim != 1 or logits.shape[-1] != offset.shape[0]:
        raise ValueError(f"offset must be [C] with C = logits.shape[-1] = {logits.shape[-1]}, "
                         f"got {offset.shape}")
    return logits - offset.astype(logits.dtype)


def _paths(tree) -> list[tuple[tuple, Any]]:
    return jax.tree_util.tree_flatten_with_path(tree)[0]


def _key_name(k) -> str:
    return str(getattr(k, "key", getattr(k, "name", getattr(k, "idx", k))))


def _takes_train(fn: Callable) -> bool:
    """Whether `fn` accepts a `train` keyword. For a flax `module.apply` (bound method of a
    Module) the module's `__call__` decides, since `apply` itself takes any keyword."""
    import inspect

    owner = getattr(fn, "__self__", None)
    try:
        import flax.linen as nn

        if isinstance(owner, nn.Module) and getattr(fn, "__name__", "") == "apply":
            fn = type(owner).__call__
    except ImportError:  # pragma: no cover - flax is a dependency
        pass
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: assume the zoo's convention
        return True
    return any(p.name == "train" or p.kind is p.VAR_KEYWORD for p in params)


def eval_apply(apply_fn: Callable) -> Callable:
    """`f(variables, x)` calling `apply_fn` in eval mode: `apply_fn(variables, x, train=False)`
    when it accepts a `train` keyword (the zoo's models), else `apply_fn(variables, x)` (any
    plain flax module or function)."""
    if _takes_train(apply_fn):
        return lambda variables, x: apply_fn(variables, x, train=False)
    return lambda variables, x: apply_fn(variables, x)


def find_head_bias(apply_fn: Callable, variables: dict, probe_inputs: Array) -> tuple:
    """Path (tuple of keys into `variables["params"]`) of the classifier's output bias.

    Model-agnostic: among parameters named `bias` of shape [C] (C = number of logits) it picks
    the one that shifts every logit of every probe input by exactly its own change (a head
    bias does; a BatchNorm shift or a hidden layer's bias does not). Raises if there is not
    exactly one such parameter (a network without an output bias cannot fold the offset).

    Example:

      >>> import flax.linen as nn
      >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(3)])
      >>> x = jnp.ones((2, 5))
      >>> apply = lambda variables, x: model.apply(variables, x)   # no `train` keyword
      >>> find_head_bias(apply, model.init(jax.random.key(0), x), x)
      ('layers_2', 'bias')
    """
    run = eval_apply(apply_fn)
    base = run(variables, probe_inputs)
    c = base.shape[-1]
    delta = jnp.asarray(np.random.default_rng(0).normal(size=c), base.dtype)
    found = []
    for path, leaf in _paths(variables["params"]):
        if not path or _key_name(path[-1]) != "bias" or leaf.shape != (c,):
            continue
        keys = tuple(_key_name(k) for k in path)
        moved = run(_with_leaf(variables, keys, leaf + delta), probe_inputs)
        if np.allclose(np.asarray(moved - base), np.asarray(delta)[None, :], atol=1e-4,
                       rtol=1e-4):
            found.append(keys)
    if len(found) != 1:
        raise ValueError(f"expected exactly one output bias of shape [{c}] that shifts the "
                         f"logits, found {len(found)}: {found}")
    return found[0]


def _with_leaf(variables: dict, keys: tuple, value: Array) -> dict:
    """A copy of `variables` with params[keys...] replaced by `value` (other leaves shared)."""
    def rebuild(node, rest):
        node = dict(node)
        node[rest[0]] = value if len(rest) == 1 else rebuild(node[rest[0]], rest[1:])
        return node

    out = dict(variables)
    out["params"] = rebuild(variables["params"], keys)
    return out


def fold_offset_into_head(apply_fn: Callable, variables: dict, offset: Array,
                          probe_inputs: Array) -> dict:
    """Variables of an ordinary network whose logits are the calibrated `logits - offset`.

    Args:
      apply_fn: any `f(variables, x)` returning logits, e.g. a flax `model.apply`; called
        with `train=False` only when it accepts a `train` keyword (`eval_apply`).
      variables: {"params": ..., "batch_stats"?: ...} of one network (no member axis).
      offset: [C] from `estimate_logit_offset`.
      probe_inputs: a few inputs of the model's shape (e.g. two normalised images), used only
        to locate the head bias (`find_head_bias`).

    Returns the same variables with the head bias replaced by `bias - offset`; nothing else
    changes, so the result loads and runs wherever the original did (incl. torch export).

    Example:

      >>> import flax.linen as nn
      >>> model = nn.Sequential([nn.Dense(4), nn.relu, nn.Dense(3)])
      >>> x = jnp.ones((2, 5))
      >>> variables = model.init(jax.random.key(0), x)
      >>> offset = jnp.array([0.5, -1.0, 2.0])
      >>> apply = lambda variables, x: model.apply(variables, x)   # no `train` keyword
      >>> folded = fold_offset_into_head(apply, variables, offset, x)
      >>> bool(jnp.allclose(model.apply(folded, x), model.apply(variables, x) - offset))
      True
    """
    keys = find_head_bias(apply_fn, variables, probe_inputs)
    bias = variables["params"]
    for k in keys:
        bias = bias[k]
    return _with_leaf(variables, keys, bias - jnp.asarray(offset, bias.dtype))
