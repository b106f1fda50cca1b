"""Model zoo: `create_model(name, num_classes)` returns a flax.linen module.

Calling convention shared by every model:
  `model.apply(variables, x, train=False)` -> logits [N, num_classes], x NHWC float32;
  `model.apply(variables, x, train=True, mutable=["batch_stats"])` -> (logits, new_state);
  `return_features=True` -> (features: list of arrays, logits); `preact=True` asks for the
  pre-activation features where the architecture has them.

Besides the small test networks (`tiny_cnn`, `mlp`), the zoo holds the RepDistiller / CKD CIFAR
architectures under the names the CKD code accepts (`REFERENCE_MODELS`), layer for layer the same
networks, with PyTorch checkpoints importable by `load_torch_checkpoint`. See docs/models.md.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import flax.linen as nn
import jax
import jax.numpy as jnp

from ckd_jax.models.convert import load_torch_checkpoint
from ckd_jax.models.mobilenetv2 import mobile_half
from ckd_jax.models.resnet import cifar_resnet, resnet50
from ckd_jax.models.shufflenet import ShuffleNetV1, ShuffleNetV2
from ckd_jax.models.small import MLP, TinyCNN
from ckd_jax.models.vgg import vgg_bn
from ckd_jax.models.wrn import wide_resnet

# The names of RepDistiller's / CKD's `model_dict`, in its order.
REFERENCE_MODELS: tuple[str, ...] = (
    "resnet8", "resnet14", "resnet20", "resnet32", "resnet44", "resnet56", "resnet110",
    "resnet8x4", "resnet32x4", "ResNet50", "wrn_16_1", "wrn_16_2", "wrn_40_1", "wrn_40_2",
    "vgg8", "vgg11", "vgg13", "vgg16", "vgg19", "MobileNetV2", "ShuffleV1", "ShuffleV2",
)

# Role in the CKD paper / RepDistiller's CIFAR-100 benchmark (None: in the zoo, not in a pair).
PAPER_ROLES: dict[str, str] = {
    **dict.fromkeys(("resnet110", "resnet56", "resnet32x4", "wrn_40_2", "vgg13", "ResNet50"),
                    "teacher"),
    **dict.fromkeys(("resnet20", "resnet32", "resnet8x4", "wrn_16_2", "wrn_40_1", "vgg8",
                     "MobileNetV2", "ShuffleV1", "ShuffleV2"), "student"),
}

# name -> constructor(num_classes, **kwargs).
_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "tiny_cnn": lambda num_classes, **kw: TinyCNN(num_classes=num_classes, **kw),
    "mlp": lambda num_classes, **kw: MLP(num_classes=num_classes, **kw),
    **{n: (lambda num_classes, _n=n: cifar_resnet(_n, num_classes))
       for n in REFERENCE_MODELS if n.startswith("resnet")},
    "ResNet50": lambda num_classes: resnet50(num_classes),
    **{n: (lambda num_classes, _n=n: wide_resnet(_n, num_classes))
       for n in REFERENCE_MODELS if n.startswith("wrn")},
    **{n: (lambda num_classes, _n=n: vgg_bn(_n, num_classes))
       for n in REFERENCE_MODELS if n.startswith("vgg")},
    "MobileNetV2": lambda num_classes: mobile_half(num_classes),
    # `global_pool=True` replaces the reference's fixed 4x4 average pool (see shufflenet.py).
    "ShuffleV1": lambda num_classes, global_pool=False: ShuffleNetV1(
        num_classes=num_classes, global_pool=global_pool),
    "ShuffleV2": lambda num_classes, global_pool=False: ShuffleNetV2(
        num_classes=num_classes, global_pool=global_pool),
}


def model_names() -> list[str]:
    """All names `create_model` accepts, sorted."""
    return sorted(_REGISTRY)


def create_model(name: str, num_classes: int, **kwargs) -> nn.Module:
    """Build the model called `name` with a `num_classes`-way head.

    Extra keyword arguments go to the constructor (`tiny_cnn`/`mlp` widths; `global_pool` for
    ShuffleV1/ShuffleV2); the reference architectures take no others.
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(model_names())}")
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        return _REGISTRY[name](num_classes, **kwargs)
    except TypeError as e:
        raise ValueError(f"bad keyword arguments {sorted(kwargs)} for model {name!r}: {e}") from e


def init_variables(model: nn.Module, key: jax.Array, input_size: int = 32) -> dict:
    """Fresh variables {"params", "batch_stats"?} for `model` on [1, input_size, input_size, 3]."""
    return model.init(key, jnp.zeros((1, input_size, input_size, 3), jnp.float32))


def feature_shapes(name: str, num_classes: int = 100, input_size: int = 32,
                   preact: bool = False, batch_size: int = 1, **kwargs) -> list[tuple[int, ...]]:
    """Shapes of `model.apply(..., return_features=True, preact=preact)`'s feature list.

    Computed abstractly with `jax.eval_shape` (no compilation, no FLOPs). Feature maps are NHWC
    `(batch_size, H, W, C)`, the last entry is the pooled vector `(batch_size, D)`. White-box
    losses (FitNet regressors, VID, CC embeddings) size their extra layers from these.
    """
    model = create_model(name, num_classes, **kwargs)
    x = jax.ShapeDtypeStruct((batch_size, input_size, input_size, 3), jnp.float32)

    def run(x):
        variables = model.init(jax.random.PRNGKey(0), x)
        return model.apply(variables, x, train=False, return_features=True, preact=preact)[0]

    return [tuple(f.shape) for f in jax.eval_shape(run, x)]


def param_count(name: str, num_classes: int = 100, *, input_shape: tuple = (32, 32, 3),
                **kwargs) -> int:
    """Number of trainable parameters (the `params` collection), computed abstractly for inputs
    of `input_shape` (H, W, C; it matters for the MLP, whose first layer sees H*W*C values)."""
    model = create_model(name, num_classes, **kwargs)
    shapes = jax.eval_shape(
        lambda: model.init(jax.random.PRNGKey(0), jnp.zeros((1, *input_shape), jnp.float32)))
    return sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(shapes["params"]))


__all__ = [
    "PAPER_ROLES", "REFERENCE_MODELS", "create_model", "feature_shapes", "init_variables",
    "load_torch_checkpoint", "model_names", "param_count",
]
