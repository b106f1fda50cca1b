"""Trace-time argument checks shared by the loss modules.

Every check here looks only at static information (shapes, ranks, Python scalars) or at concrete
values, so it runs once while tracing and costs nothing inside a compiled step. Each error names
the bad value and what is accepted.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import numpy as np

try:  # public name; fall back to the internal one should a JAX release drop the alias
    _Tracer = jax.core.Tracer
except AttributeError:  # pragma: no cover
    from jax._src.core import Tracer as _Tracer


def is_concrete(x) -> bool:
    """True when `x` holds actual values (not a tracer under jit / vmap / grad)."""
    return not isinstance(x, _Tracer)


def shape_of(x) -> tuple[int, ...]:
    return tuple(np.shape(x))


def check_rank(name: str, x, rank: int | Sequence[int], what: str = "") -> None:
    """Raise ValueError unless `x` has rank `rank` (or one of the ranks listed)."""
    ranks = (rank,) if isinstance(rank, int) else tuple(rank)
    shape = shape_of(x)
    if len(shape) not in ranks:
        want = " or ".join(str(r) for r in ranks)
        hint = f" {what}" if what else ""
        raise ValueError(
            f"{name} must have rank {want}{hint}, got shape {shape} (rank {len(shape)})"
        )


def check_min_rank(name: str, x, rank: int, what: str = "") -> None:
    shape = shape_of(x)
    if len(shape) < rank:
        hint = f" {what}" if what else ""
        raise ValueError(f"{name} must have rank >= {rank}{hint}, got shape {shape}")


def check_same_shape(name_a: str, a, name_b: str, b) -> None:
    sa, sb = shape_of(a), shape_of(b)
    if sa != sb:
        raise ValueError(f"{name_a} and {name_b} must have the same shape, got {sa} and {sb}")


def check_integer_dtype(name: str, x) -> None:
    dtype = getattr(x, "dtype", None)
    dtype = np.result_type(x) if dtype is None else np.dtype(dtype)
    if not np.issubdtype(dtype, np.integer):
        raise ValueError(f"{name} must be an integer array, got dtype {dtype}")


def check_positive(name: str, value) -> None:
    """`value` must be > 0 when it is concrete (a Python / NumPy scalar or concrete array)."""
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.ndim != 0:
        raise ValueError(f"{name} must be a scalar, got shape {arr.shape}")
    if not np.isfinite(arr) or arr <= 0:
        raise ValueError(f"{name} must be a finite number > 0, got {value!r}")


def check_nonneg(name: str, value) -> None:
    if not is_concrete(value):
        return
    arr = np.asarray(value)
    if arr.ndim != 0 or not np.isfinite(arr) or arr < 0:
        raise ValueError(f"{name} must be a finite scalar >= 0, got {value!r}")


def check_choice(name: str, value, choices: Sequence[str]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {name} {value!r}; accepted: {', '.join(map(repr, choices))}")


def check_static_int(name: str, value, low: int, high: int, what: str = "") -> int:
    """`value` must be a Python/NumPy int in [low, high] (static: it decides slicing)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(
            f"{name} must be a static Python int in [{low}, {high}]{what}, got {value!r} "
            f"of type {type(value).__name__} (pass it as a static argument under jit)"
        )
    if not low <= int(value) <= high:
        raise ValueError(f"{name} must be in [{low}, {high}]{what}, got {value}")
    return int(value)


def check_labels_in_range(name: str, labels, num_classes: int,
                          bound_name: str = "num_classes") -> None:
    """Range check for integer labels / indices; skipped under jit (they are then tracers)."""
    if not is_concrete(labels):
        return
    arr = np.asarray(labels)
    if arr.size == 0:
        return
    lo, hi = int(arr.min()), int(arr.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} must lie in [0, {num_classes - 1}] ({bound_name}={num_classes}), "
            f"got values in [{lo}, {hi}]"
        )
