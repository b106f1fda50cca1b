"""The one optimiser layer of the package: torch-style SGD and every learning-rate schedule.

The training step (`ckd_jax.train.engine._make_member_epoch`, which teachers train through as
well) calls exactly two things from here, once per step:

    lr = scheduled_lr(spec.schedule, base_lr, step, ...)      # the schedule, a pure function
    params, buf = sgd_update(grads, buf, params, lr, ...)     # torch.optim.SGD, one step

`sgd_update` is PyTorch's `torch.optim.SGD(params, lr, momentum, weight_decay=wd,
nesterov=...)` (dampening 0), the optimiser of RepDistiller and the CKD code:

    d_t   = g_t + wd * p_t                      (L2 weight decay added to the gradient)
    buf_t = momentum * buf_{t-1} + d_t          (buf_0 = d_0)
    step  = d_t + momentum * buf_t  if nesterov else buf_t
    p_t+1 = p_t - lr_t * step

The learning rate sits outside the momentum buffer, so changing it mid-run (the plateau
protocol's LR/10, `plateau_drop`) behaves as changing `param_group["lr"]` in PyTorch. Weight
decay applies to every parameter (BatchNorm scale and bias included), as `model.parameters()`
does in those codebases. The base learning rate is per member: the engine keeps it in
`TrainState.lr` ([M] for a population, vmapped to a scalar inside the step), and every schedule
is `lr(base_lr, step)`, so members with different rates share one compiled step.

Schedules (`scheduled_lr` dispatches on the name; each is also a function of its own):
  "constant" / "plateau": base_lr (the plateau protocol changes base_lr between epochs)
  "multistep":  base_lr * factor ** #{milestones <= step}      (RepDistiller's teacher recipe)
  "cosine":     optional linear warm-up, then base_lr * (1 + cos(pi t / T)) / 2
  "onecycle":   Smith's one-cycle with cosine annealing (PyTorch OneCycleLR's div factors)
Step counts are global optimiser steps, 0 for the first update.

`make_optimizer` (+ `get_lr` / `set_lr` / `scale_lr`) is the same SGD exposed as an
`optax.GradientTransformation` for code that wants optax's interface (it calls `sgd_direction`,
the function `sgd_update` uses); the engines do not go through it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["sgd_init", "sgd_direction", "sgd_update", "scheduled_lr", "constant_lr",
           "multistep_lr", "cosine_lr", "onecycle_lr", "plateau_drop", "SCHEDULES",
           "make_optimizer", "get_lr", "set_lr", "scale_lr", "multistep", "cosine", "onecycle",
           "constant"]

Schedule = Callable[[jax.Array], jax.Array]
from ckd_jax.train.choices import SCHEDULES  # noqa: E402  (the one list; re-exported here)


# ------------------------------------------------------------------------------- SGD (torch)
def sgd_init(params: Any) -> optax.TraceState:
    """Zero momentum buffers shaped like `params` (an `optax.TraceState`, as checkpointed)."""
    return optax.trace(decay=0.0).init(params)


def sgd_direction(grads: Any, buf: optax.TraceState, params: Any, *, momentum: float,
                  weight_decay: float, nesterov: bool = False) -> tuple[Any, optax.TraceState]:
    """(step direction, new momentum buffers): decay added to the gradient, then momentum."""
    grads = jax.tree.map(lambda g, p: g + weight_decay * p, grads, params)
    return optax.trace(decay=momentum, nesterov=nesterov).update(grads, buf)


def sgd_update(grads: Any, buf: optax.TraceState, params: Any, lr: jax.Array | float, *,
               momentum: float, weight_decay: float, nesterov: bool = False
               ) -> tuple[Any, optax.TraceState]:
    """One `torch.optim.SGD` step: returns (new params, new momentum buffers).

    `lr` is a scalar (inside a vmapped step: this member's rate), e.g. from `scheduled_lr`.
    """
    direction, buf = sgd_direction(grads, buf, params, momentum=momentum,
                                   weight_decay=weight_decay, nesterov=nesterov)
    return jax.tree.map(lambda p, d: p - lr * d, params, direction), buf


# --------------------------------------------------------------------------------- schedules
def constant_lr(base_lr, step):
    """lr(step) = base_lr."""
    del step
    return base_lr


def multistep_lr(base_lr, step, milestone_steps: Sequence[int], factor: float = 0.1):
    """base_lr * factor ** #{m in milestone_steps : step >= m} (milestones in steps)."""
    lr = base_lr
    for m in milestone_steps:
        lr = jnp.where(step >= m, lr * factor, lr)
    return lr


def cosine_lr(base_lr, step, total_steps: int, warmup_steps: int = 0):
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    lr(s) = base_lr * s / W for s < W; base_lr * 0.5 * (1 + cos(pi * (s - W) / (T - W))) after
    (clamped at T). Without warm-up this is the student engine's cosine, op for op.
    """
    if warmup_steps == 0:
        t = jnp.minimum(step, total_steps).astype(jnp.float32)
        return base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * t / total_steps))
    span = total_steps - warmup_steps
    t = jnp.clip(step - warmup_steps, 0, span).astype(jnp.float32)
    decay = base_lr * 0.5 * (1.0 + jnp.cos(jnp.pi * t / span))
    warm = base_lr * jnp.asarray(step, jnp.float32) / warmup_steps
    return jnp.where(step < warmup_steps, warm, decay)


def onecycle_lr(base_lr, step, total_steps: int, pct_start: float = 0.25,
                div_factor: float = 25.0, final_div_factor: float = 1e4):
    """One-cycle (Smith 2018) with cosine annealing, peak `base_lr` (optax's
    `cosine_onecycle_schedule`, PyTorch OneCycleLR's div factors).

    With lo = base_lr / div_factor, end = lo / final_div_factor, P = int(pct_start * T):
    lr(s) = base_lr + (lo - base_lr) * (1 + cos(pi * s / P)) / 2 for s <= P (rise), then
    lr(s) = end + (base_lr - end) * (1 + cos(pi * (s - P) / (T - P))) / 2 up to T (fall).
    """
    p = int(pct_start * total_steps)
    lo = base_lr / div_factor
    end = lo / final_div_factor
    s = jnp.asarray(step, jnp.float32)
    rise_frac = jnp.clip(s / max(p, 1), 0.0, 1.0)
    fall_frac = jnp.clip((s - p) / max(total_steps - p, 1), 0.0, 1.0)
    rise = base_lr + (lo - base_lr) * (1.0 + jnp.cos(jnp.pi * rise_frac)) / 2
    fall = end + (base_lr - end) * (1.0 + jnp.cos(jnp.pi * fall_frac)) / 2
    return jnp.where(s <= p, rise, fall)


def scheduled_lr(schedule: str, base_lr, step, *, total_steps: int = 1,
                 milestones: Sequence[int] = (), factor: float = 0.1, warmup_steps: int = 0):
    """The learning rate of the update at global step `step` (0-based) under `schedule`.

    `base_lr` may be a traced per-member value; `milestones` are in steps (multistep);
    `total_steps` is the cosine / one-cycle horizon; `warmup_steps` cosine only.
    """
    if schedule in ("constant", "plateau"):
        return constant_lr(base_lr, step)
    if schedule == "multistep":
        return multistep_lr(base_lr, step, milestones, factor)
    if schedule == "cosine":
        return cosine_lr(base_lr, step, total_steps, warmup_steps)
    if schedule == "onecycle":
        return onecycle_lr(base_lr, step, total_steps)
    raise ValueError(f"unknown schedule {schedule!r}; choose one of {SCHEDULES}")


def plateau_drop(lr, reload, factor: float = 0.1):
    """The plateau protocol's LR drop: `lr * factor` where `reload` ([M] bool), else `lr`."""
    return jnp.where(reload, lr * factor, lr)


# ------------------------------------------------- schedule factories (step -> lr closures)
# Kept for your own training loops (docs/teacher.md): the engine uses the `*_lr` functions above;
# these and `make_optimizer` below are the same schedules and SGD behind optax's interface,
# checked against torch.optim.SGD and the `*_lr` functions in tests/test_teacher_optim.py.
def constant(base_lr: float) -> Schedule:
    """lr(step) = base_lr."""
    _check_lr(base_lr)
    return lambda step: jnp.asarray(constant_lr(float(base_lr), step), jnp.float32)


def multistep(base_lr: float, steps_per_epoch: int,
              milestones_epochs: Sequence[int] = (150, 180, 210),
              factor: float = 0.1) -> Schedule:
    """Step decay per epoch, RepDistiller's `adjust_learning_rate`.

    lr(step) = base_lr * factor ** #{m in milestones_epochs : step >= m * steps_per_epoch};
    with 0-indexed epochs e, epochs 0..149 run at base_lr, 150..179 at base_lr * 0.1, etc.
    """
    _check_lr(base_lr)
    if not isinstance(steps_per_epoch, int) or steps_per_epoch < 1:
        raise ValueError(f"steps_per_epoch must be a positive int, got {steps_per_epoch!r}")
    ms = [int(m) for m in milestones_epochs]
    if any(m < 1 for m in ms) or ms != sorted(set(ms)):
        raise ValueError(f"milestones_epochs must be strictly increasing positive ints, got "
                         f"{tuple(milestones_epochs)}")
    if not 0 < factor <= 1:
        raise ValueError(f"factor must be in (0, 1], got {factor!r}")
    steps = tuple(m * steps_per_epoch for m in ms)
    return lambda step: multistep_lr(jnp.float32(base_lr), step, steps, factor)


def cosine(base_lr: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """`cosine_lr` as a `step -> lr` function (see there)."""
    _check_lr(base_lr)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an int in [0, total_steps={total_steps}), "
                         f"got {warmup_steps!r}")
    return lambda step: cosine_lr(jnp.float32(base_lr), step, total_steps, warmup_steps)


def onecycle(base_lr: float, total_steps: int, pct_start: float = 0.25,
             div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """`onecycle_lr` as a `step -> lr` function (see there)."""
    _check_lr(base_lr)
    if not isinstance(total_steps, int) or total_steps < 2:
        raise ValueError(f"total_steps must be an int >= 2, got {total_steps!r}")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
    return lambda step: onecycle_lr(jnp.float32(base_lr), step, total_steps, pct_start,
                                    div_factor, final_div_factor)


def _check_lr(base_lr: float) -> None:
    if not isinstance(base_lr, (int, float)) or not base_lr > 0:
        raise ValueError(f"base_lr must be a positive number, got {base_lr!r}")


# ------------------------------------------------------ the same SGD behind optax's interface
def _sgd(learning_rate, momentum, weight_decay, nesterov):
    def update(updates, state, params=None):
        direction, state = sgd_direction(updates, state, params, momentum=momentum,
                                         weight_decay=weight_decay, nesterov=nesterov)
        return jax.tree.map(lambda d: -learning_rate * d, direction), state

    return optax.GradientTransformation(sgd_init, update)


def make_optimizer(*, lr_schedule: float | Schedule, momentum: float = 0.9,
                   weight_decay: float = 5e-4, nesterov: bool = False
                   ) -> optax.GradientTransformation:
    """`sgd_update` as an optax transformation whose hyperparameters live in the state.

    Args:
      lr_schedule: a constant learning rate (then adjustable with `set_lr`) or a schedule
        `step -> lr` (e.g. `multistep`, `cosine`, `onecycle`), evaluated at the update count.
      momentum, weight_decay, nesterov: as `sgd_update`.

    Returns:
      An `optax.GradientTransformation` whose state is an `InjectHyperparamsState` with
      `hyperparams = {"learning_rate", "momentum", "weight_decay"}`; `get_lr` / `set_lr` read
      and replace the learning rate (also of a `jax.vmap`-stacked population state, [P]).
    """
    if not callable(lr_schedule):
        if not isinstance(lr_schedule, (int, float)) or not lr_schedule > 0:
            raise ValueError(f"lr_schedule must be a positive number or a schedule, "
                             f"got {lr_schedule!r}")
        lr_schedule = float(lr_schedule)
    if not 0.0 <= momentum < 1.0:
        raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
    if weight_decay < 0:
        raise ValueError(f"weight_decay must be >= 0, got {weight_decay!r}")
    if nesterov and momentum == 0:
        raise ValueError("nesterov=True needs momentum > 0 (as in torch.optim.SGD)")
    return optax.inject_hyperparams(_sgd, static_args=("nesterov",))(
        learning_rate=lr_schedule, momentum=float(momentum), weight_decay=float(weight_decay),
        nesterov=bool(nesterov))


def _is_inject_state(x: Any) -> bool:
    return hasattr(x, "hyperparams") and hasattr(x, "inner_state")


def _find(opt_state: Any) -> tuple[Any, Callable[[Any], Any]]:
    """Find the injected-hyperparams state (top level or inside chain tuples).

    Returns (that state, a function that puts a replacement back into `opt_state`).
    """
    if _is_inject_state(opt_state):
        return opt_state, lambda new: new
    if isinstance(opt_state, (tuple, list)) and not hasattr(opt_state, "_fields"):
        for i, sub in enumerate(opt_state):
            try:
                found, put = _find(sub)
            except ValueError:
                continue

            def put_back(new, i=i, put=put):
                items = list(opt_state)
                items[i] = put(new)
                return type(opt_state)(items)

            return found, put_back
    raise ValueError("no inject_hyperparams state found; build the optimiser with "
                     "ckd_jax.train.optim.make_optimizer")


def get_lr(opt_state: Any) -> jax.Array:
    """Learning rate held in a `make_optimizer` state: a scalar, or [P] for a vmapped
    population state. With a schedule it is the rate of the most recent update."""
    state, _ = _find(opt_state)
    return state.hyperparams["learning_rate"]


def set_lr(opt_state: Any, lr: float | jax.Array) -> Any:
    """Return `opt_state` with its learning rate replaced (pure; usable inside `jit`).

    Raises:
      ValueError: if the optimiser was built with a schedule.
    """
    state, put = _find(opt_state)
    if "learning_rate" in state.hyperparams_states:
        raise ValueError("this optimiser state follows a learning-rate schedule; set_lr only "
                         "applies to optimisers built with a constant lr_schedule")
    old = state.hyperparams["learning_rate"]
    new_lr = jnp.broadcast_to(jnp.asarray(lr, dtype=old.dtype), old.shape)
    hp = dict(state.hyperparams)
    hp["learning_rate"] = new_lr
    return put(state._replace(hyperparams=hp))


def scale_lr(opt_state: Any, factor: float | jax.Array) -> Any:
    """`set_lr(opt_state, get_lr(opt_state) * factor)`; e.g. factor 0.1 on a plateau."""
    return set_lr(opt_state, get_lr(opt_state) * jnp.asarray(factor))
