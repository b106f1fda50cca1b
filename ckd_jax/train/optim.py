"""Optimiser and learning-rate schedules shared by teacher training and the student engine.

`make_optimizer` is PyTorch's `torch.optim.SGD(params, lr, momentum, weight_decay=wd,
nesterov=...)` (dampening 0), the optimiser of RepDistiller and the CKD code:

    d_t   = g_t + wd * p_t                      (L2 weight decay added to the gradient)
    buf_t = momentum * buf_{t-1} + d_t          (buf_0 = d_0)
    step  = d_t + momentum * buf_t  if nesterov else buf_t
    p_t+1 = p_t - lr_t * step

i.e. `optax.chain(optax.add_decayed_weights(wd), optax.sgd(lr, momentum, nesterov))`. The
learning rate sits outside the momentum buffer, so changing it mid-run (plateau /10) behaves as
changing `param_group["lr"]` in PyTorch. Weight decay applies to every parameter (BatchNorm scale
and bias included), as `model.parameters()` does in those codebases.

The whole optimiser is wrapped in `optax.inject_hyperparams`, so the learning rate, momentum and
weight decay live in the optimiser *state*: `get_lr` / `set_lr` read and replace the learning
rate of a state (or of a population of states stacked by `jax.vmap`, shape [P]) without
recompiling, as the student protocol's "divide the LR by 10 on a plateau" and per-member learning
rates need. With a schedule, the schedule owns the learning rate and `set_lr` refuses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import optax

__all__ = ["make_optimizer", "get_lr", "set_lr", "scale_lr", "multistep", "cosine", "onecycle",
           "constant"]

Schedule = Callable[[jax.Array], jax.Array]


def _sgd(learning_rate, momentum, weight_decay, nesterov):
    return optax.chain(optax.add_decayed_weights(weight_decay),
                       optax.sgd(learning_rate, momentum=momentum, nesterov=nesterov))


def make_optimizer(*, lr_schedule: float | Schedule, momentum: float = 0.9,
                   weight_decay: float = 5e-4, nesterov: bool = False
                   ) -> optax.GradientTransformation:
    """SGD with momentum and L2 weight decay, equivalent to `torch.optim.SGD`.

    Args:
      lr_schedule: a constant learning rate (then adjustable with `set_lr`) or an optax schedule
        `step -> lr` (e.g. `multistep`, `cosine`, `onecycle`), evaluated at the update count.
      momentum: momentum coefficient (0 disables the buffer's effect, as in torch).
      weight_decay: L2 coefficient added to the gradient before momentum.
      nesterov: Nesterov momentum, PyTorch's formulation.

    Returns:
      An `optax.GradientTransformation` whose state is an `InjectHyperparamsState` with
      `hyperparams = {"learning_rate", "momentum", "weight_decay"}`.
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


# ----------------------------------------------------------------------- state helpers
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
    """Learning rate held in the state: a scalar, or [P] for a vmapped population state.

    With a constant learning rate this is the rate the next update uses; with a schedule it is
    the rate of the most recent update (schedule(0) before the first).
    """
    state, _ = _find(opt_state)
    return state.hyperparams["learning_rate"]


def set_lr(opt_state: Any, lr: float | jax.Array) -> Any:
    """Return `opt_state` with its learning rate replaced (pure; usable inside `jit`).

    `lr` is a scalar or an array broadcastable to the current learning-rate shape, e.g. [P]
    per-member rates for a population state stacked by `jax.vmap`.

    Raises:
      ValueError: if the optimiser was built with a schedule (it would overwrite the value at
        the next update).
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


# ---------------------------------------------------------------------------- schedules
def constant(base_lr: float) -> Schedule:
    """lr(step) = base_lr."""
    _check_lr(base_lr)
    return optax.constant_schedule(base_lr)


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
    return optax.piecewise_constant_schedule(
        base_lr, {m * steps_per_epoch: factor for m in ms})


def cosine(base_lr: float, total_steps: int, warmup_steps: int = 0) -> Schedule:
    """Linear warm-up from 0 over `warmup_steps`, then cosine decay to 0 at `total_steps`.

    lr(s) = base_lr * s / W for s < W; base_lr * 0.5 * (1 + cos(pi * (s - W) / (T - W))) after.
    """
    _check_lr(base_lr)
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}")
    if not isinstance(warmup_steps, int) or not 0 <= warmup_steps < total_steps:
        raise ValueError(f"warmup_steps must be an int in [0, total_steps={total_steps}), "
                         f"got {warmup_steps!r}")
    if warmup_steps == 0:
        return optax.cosine_decay_schedule(base_lr, total_steps)
    return optax.warmup_cosine_decay_schedule(0.0, base_lr, warmup_steps, total_steps, 0.0)


def onecycle(base_lr: float, total_steps: int, pct_start: float = 0.25,
             div_factor: float = 25.0, final_div_factor: float = 1e4) -> Schedule:
    """One-cycle (Smith 2018) with cosine annealing, peak `base_lr`.

    With lo = base_lr / div_factor, end = lo / final_div_factor, P = int(pct_start * T):
    lr(s) = base_lr + (lo - base_lr) * (1 + cos(pi * s / P)) / 2 for s <= P (rise), then
    lr(s) = end + (base_lr - end) * (1 + cos(pi * (s - P) / (T - P))) / 2 up to T (fall);
    the div factors have the meaning of PyTorch's OneCycleLR.
    """
    _check_lr(base_lr)
    if not isinstance(total_steps, int) or total_steps < 2:
        raise ValueError(f"total_steps must be an int >= 2, got {total_steps!r}")
    if not 0 < pct_start < 1:
        raise ValueError(f"pct_start must be in (0, 1), got {pct_start!r}")
    return optax.cosine_onecycle_schedule(total_steps, base_lr, pct_start=pct_start,
                                          div_factor=div_factor,
                                          final_div_factor=final_div_factor)


def _check_lr(base_lr: float) -> None:
    if not isinstance(base_lr, (int, float)) or not base_lr > 0:
        raise ValueError(f"base_lr must be a positive number, got {base_lr!r}")
