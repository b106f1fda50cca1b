"""Small non-reference networks for tests, the digits quickstart and CPU smoke runs.

They are not part of the RepDistiller zoo; they follow the zoo's calling convention so every
training path can be exercised in seconds on a CPU.
"""

from __future__ import annotations

import flax.linen as nn
import jax.numpy as jnp

# PyTorch BatchNorm defaults (momentum 0.1 -> flax momentum 0.9, eps 1e-5), as in the zoo.
_BN = dict(momentum=0.9, epsilon=1e-5)


class TinyCNN(nn.Module):
    """conv-BN-ReLU x2 (with a 2x2 max-pool between), global average pool, linear head.

    Input [N, H, W, C] (any H, W >= 2), output logits [N, num_classes]. With
    `return_features=True` returns `(features, logits)` where features are
    [block1 output, block2 output, pooled vector] (NHWC, NHWC, [N, D]).
    """

    num_classes: int = 10
    width: int = 16

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        del preact  # no pre-activation variant for this network
        x = nn.Conv(self.width, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(x))
        f1 = x
        x = nn.max_pool(x, (2, 2), strides=(2, 2))
        x = nn.Conv(2 * self.width, (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(nn.BatchNorm(use_running_average=not train, **_BN)(x))
        f2 = x
        pooled = jnp.mean(x, axis=(1, 2))
        logits = nn.Dense(self.num_classes)(pooled)
        if return_features:
            return [f1, f2, pooled], logits
        return logits


class MLP(nn.Module):
    """Flatten, `depth` hidden Dense-ReLU layers of `width`, linear head (no BatchNorm)."""

    num_classes: int = 10
    width: int = 64
    depth: int = 1

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        del train, preact
        x = x.reshape((x.shape[0], -1))
        feats = []
        for _ in range(self.depth):
            x = nn.relu(nn.Dense(self.width)(x))
            feats.append(x)
        logits = nn.Dense(self.num_classes)(x)
        if return_features:
            return feats, logits
        return logits
