"""Model zoo: `create_model(name, num_classes)` returns a flax.linen module.

Calling convention shared by every model:
  `model.apply(variables, x, train=False)` -> logits [N, num_classes], x NHWC float32;
  `model.apply(variables, x, train=True, mutable=["batch_stats"])` -> (logits, new_state);
  `return_features=True` -> (features: list of arrays, logits); `preact=True` asks for the
  pre-activation features where the architecture has them.
"""

from __future__ import annotations

from collections.abc import Callable

import flax.linen as nn

from ckd_jax.models.small import MLP, TinyCNN

# name -> constructor(num_classes, **kwargs). The zoo issue adds the RepDistiller architectures.
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "tiny_cnn": lambda num_classes, **kw: TinyCNN(num_classes=num_classes, **kw),
    "mlp": lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
}


def model_names() -> list[str]:
    """All names `create_model` accepts, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the model called `name` with a `num_classes`-way head."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    return _REGISTRY[name](num_classes, **kwargs)
