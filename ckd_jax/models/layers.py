"""Building blocks that reproduce PyTorch layer semantics in flax.linen (NHWC).

Every zoo model is built from these so that a RepDistiller/CKD PyTorch checkpoint converts
one-to-one (`ckd_jax.models.convert`):

* `conv`: `nn.Conv` with PyTorch's explicit symmetric padding (flax ``"SAME"`` pads stride-2
  convolutions asymmetrically, PyTorch ``padding=1`` pads 1 on both sides) and the grouping of
  ``groups=`` (flax ``feature_group_count``; both split channels into contiguous groups).
* `BatchNorm`: PyTorch's ``BatchNorm2d`` exactly, including the running-variance update with the
  *unbiased* batch variance (flax's own ``nn.BatchNorm`` uses the biased one).
* initialisers that mirror the reference code's (`KAIMING_FAN_OUT`, `TORCH_DEFAULT_*`), so a
  student trained from scratch here starts from the same distribution as in RepDistiller.

Module names follow the PyTorch module paths (e.g. ``"layer1.0"``, ``"downsample.0"``): joining a
flax variable path with ``"."`` gives the PyTorch state_dict key, which is what the converter uses.
"""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp

# kaiming_normal_(mode="fan_out", nonlinearity="relu") == normal(0, sqrt(2 / (k*k*out))), which
# is also what the WRN/VGG/MobileNetV2 files write by hand. jax "normal" is untruncated, as torch.
KAIMING_FAN_OUT = nn.initializers.variance_scaling(2.0, "fan_out", "normal")
# PyTorch's default Conv2d/Linear weight init: kaiming_uniform_(a=sqrt(5)) == U(+-1/sqrt(fan_in)).
TORCH_DEFAULT_KERNEL = nn.initializers.variance_scaling(1.0 / 3.0, "fan_in", "uniform")
# normal(0, 0.01) used for the classifier of VGG and MobileNetV2.
NORMAL_001 = nn.initializers.normal(0.01)


def torch_default_bias(fan_in: int):
    """PyTorch's default Linear/Conv bias init: U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    bound = 1.0 / math.sqrt(fan_in) if fan_in > 0 else 0.0

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def conv(features: int, kernel: int, stride: int = 1, padding: int = 0, groups: int = 1,
         bias: bool = False, kernel_init=KAIMING_FAN_OUT, name: str | None = None) -> nn.Conv:
    """A square `kernel` x `kernel` Conv2d with PyTorch's symmetric `padding` on H and W.

    Output size per spatial dim: floor((H + 2*padding - kernel) / stride) + 1, as in PyTorch.
    Kernel layout HWIO [k, k, C_in/groups, features].
    """
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                   padding=((padding, padding), (padding, padding)),
                   feature_group_count=groups, use_bias=bias, kernel_init=kernel_init,
                   bias_init=nn.initializers.zeros, name=name)


def dense(features: int, fan_in: int, init: str, name: str) -> nn.Dense:
    """A Linear layer with the reference's init.

    `init`: "torch" (PyTorch defaults), "torch_zero_bias" (default weight, zero bias; WRN) or
    "normal001" (N(0, 0.01) weight, zero bias; VGG, MobileNetV2).
    """
    if init == "torch":
        return nn.Dense(features, kernel_init=TORCH_DEFAULT_KERNEL,
                        bias_init=torch_default_bias(fan_in), name=name)
    if init == "torch_zero_bias":
        return nn.Dense(features, kernel_init=TORCH_DEFAULT_KERNEL,
                        bias_init=nn.initializers.zeros, name=name)
    if init == "normal001":
        return nn.Dense(features, kernel_init=NORMAL_001, bias_init=nn.initializers.zeros,
                        name=name)
    raise ValueError(f"unknown dense init {init!r}; expected 'torch', 'torch_zero_bias' or "
                     "'normal001'")


class BatchNorm(nn.Module):
    """PyTorch ``BatchNorm2d`` (also valid on [N, C]) over the last axis.

    Variables: params ``scale`` [C] (torch ``weight``), ``bias`` [C]; batch_stats ``mean`` [C]
    (torch ``running_mean``), ``var`` [C] (torch ``running_var``).

    Train mode normalises with the biased batch variance and updates
    ``mean <- momentum*mean + (1-momentum)*batch_mean``,
    ``var <- momentum*var + (1-momentum)*batch_var*n/(n-1)`` with n = elements per channel,
    exactly as PyTorch does with its ``momentum=0.1`` (flax convention: ``momentum=0.9``).
    Eval mode: y = (x - mean) / sqrt(var + epsilon) * scale + bias.
    Statistics and normalisation are computed in float32 whatever the input dtype (bfloat16
    compute); the output has the promoted dtype of `x` and the params.
    """

    momentum: float = 0.9
    epsilon: float = 1e-5

    @nn.compact
    def __call__(self, x, use_running_average: bool):
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
        bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
        ra_mean = self.variable("batch_stats", "mean", lambda: jnp.zeros((c,), jnp.float32))
        ra_var = self.variable("batch_stats", "var", lambda: jnp.ones((c,), jnp.float32))
        out_dtype = jnp.result_type(x.dtype, scale.dtype)
        x = x.astype(jnp.float32)
        if use_running_average:
            mean = ra_mean.value.astype(jnp.float32)
            var = ra_var.value.astype(jnp.float32)
        else:
            axes = tuple(range(x.ndim - 1))
            mean = jnp.mean(x, axis=axes)
            var = jnp.mean(jnp.square(x - mean), axis=axes)
            n = x.size // c
            if not self.is_initializing():
                unbiased = var * (n / max(n - 1, 1))
                ra_mean.value = self.momentum * ra_mean.value + (1.0 - self.momentum) * mean
                ra_var.value = self.momentum * ra_var.value + (1.0 - self.momentum) * unbiased
        inv = jax.lax.rsqrt(var + self.epsilon) * scale.astype(jnp.float32)
        return ((x - mean) * inv + bias.astype(jnp.float32)).astype(out_dtype)


def channel_shuffle(x, groups: int):
    """ShuffleNet channel shuffle on NHWC: channel ``j*(C/g) + i`` moves to ``i*g + j``.

    Same permutation as PyTorch's ``view(N, g, C/g, H, W).permute(0, 2, 1, 3, 4)``.
    """
    n, h, w, c = x.shape
    if c % groups:
        raise ValueError(f"channels {c} not divisible by groups {groups}")
    return x.reshape(n, h, w, groups, c // groups).swapaxes(3, 4).reshape(n, h, w, c)


def global_avg_pool(x):
    """[N, H, W, C] -> [N, C], the mean over H and W."""
    return jnp.mean(x, axis=(1, 2))


def check_input(x, model: str):
    """Raise a ValueError unless `x` is an NHWC batch with 3 channels."""
    if x.ndim != 4 or x.shape[-1] != 3:
        raise ValueError(f"{model} expects NHWC input [N, H, W, 3], got shape {tuple(x.shape)}")
