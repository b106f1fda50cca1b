"""ResNets of RepDistiller/CKD: the CIFAR ResNets (``models/resnet.py``: resnet8 ... resnet110,
resnet8x4, resnet32x4) and ``ResNet50`` (``models/resnetv2.py``), layer for layer.

CIFAR ResNet (depth 6n+2, basic blocks): conv3x3(3->w0)-BN-ReLU, three stages of n blocks with
widths w1, w2, w3 and strides 1, 2, 2, global average pool, linear ``fc``. A block whose stride
is not 1 or whose width changes gets a ``downsample`` (1x1 conv with the block's stride + BN).
ResNet50 (``resnetv2``): conv3x3(3->64)-BN-ReLU, four stages of [3, 4, 6, 3] bottleneck blocks
(1x1, 3x3 with stride, 1x1 x4 expansion) of widths 64..512, strides 1, 2, 2, 2; shortcut named
``shortcut``; adaptive average pool; linear ``linear``.

Features (``return_features=True``; reference ``is_feat=True``), NHWC, 32x32 input:
  CIFAR: [stem 32x32xw0, stage1 32x32xw1, stage2 16x16xw2, stage3 8x8xw3, pooled [N, w3]]
  ResNet50: [stem 32x32x64, 32x32x256, 16x16x512, 8x8x1024, 4x4x2048, pooled [N, 2048]]
``preact=True`` replaces each stage output by the last block's sum before its final ReLU.

Pooling: CKD replaced RepDistiller's ``AvgPool2d(8)`` by ``avg_pool2d(x, x.size(3))`` (global for
square maps); the two agree at 32x32 and the CKD form is the one valid at 56x56, so we use the
global mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn

from ckd_jax.models.layers import BatchNorm, check_input, conv, dense, global_avg_pool


class ResidualBlock(nn.Module):
    """Basic (two 3x3) or bottleneck (1x1, 3x3, 1x1 x4) block; returns (out, preact)."""

    planes: int
    stride: int = 1
    bottleneck: bool = False
    project: bool = False  # 1x1 conv + BN on the shortcut
    shortcut_name: str = "downsample"

    @nn.compact
    def __call__(self, x, train: bool):
        bn = lambda name: BatchNorm(name=name)
        ura = not train
        if self.bottleneck:
            out = nn.relu(bn("bn1")(conv(self.planes, 1, name="conv1")(x), ura))
            out = conv(self.planes, 3, self.stride, 1, name="conv2")(out)
            out = nn.relu(bn("bn2")(out, ura))
            out = bn("bn3")(conv(4 * self.planes, 1, name="conv3")(out), ura)
            width = 4 * self.planes
        else:
            out = conv(self.planes, 3, self.stride, 1, name="conv1")(x)
            out = nn.relu(bn("bn1")(out, ura))
            out = bn("bn2")(conv(self.planes, 3, 1, 1, name="conv2")(out), ura)
            width = self.planes
        residual = x
        if self.project:
            residual = conv(width, 1, self.stride, name=f"{self.shortcut_name}.0")(x)
            residual = bn(f"{self.shortcut_name}.1")(residual, ura)
        preact = out + residual
        return nn.relu(preact), preact


class ResNet(nn.Module):
    """Generic stem + stages + global-pool + linear ResNet (see module docstring).

    Input [N, H, W, 3]; output logits [N, num_classes].
    """

    num_classes: int
    stage_blocks: Sequence[int]
    stage_widths: Sequence[int]
    stage_strides: Sequence[int]
    stem_width: int
    bottleneck: bool = False
    shortcut_name: str = "downsample"
    head_name: str = "fc"

    @nn.compact
    def __call__(self, x, train: bool = False, return_features: bool = False,
                 preact: bool = False):
        check_input(x, type(self).__name__)
        x = conv(self.stem_width, 3, 1, 1, name="conv1")(x)
        x = nn.relu(BatchNorm(name="bn1")(x, not train))
        feats, pre_feats = [x], [x]
        in_width = self.stem_width
        expansion = 4 if self.bottleneck else 1
        for s, (n, width, stride) in enumerate(
                zip(self.stage_blocks, self.stage_widths, self.stage_strides)):
            for i in range(n):
                st = stride if i == 0 else 1
                block = ResidualBlock(
                    width, st, self.bottleneck,
                    project=(st != 1 or in_width != width * expansion),
                    shortcut_name=self.shortcut_name, name=f"layer{s + 1}.{i}")
                x, pre = block(x, train)
                in_width = width * expansion
            feats.append(x)
            pre_feats.append(pre)
        pooled = global_avg_pool(x)
        logits = dense(self.num_classes, pooled.shape[-1], "torch", self.head_name)(pooled)
        if return_features:
            return (pre_feats if preact else feats) + [pooled], logits
        return logits


_CIFAR_DEPTHS = {"resnet8": 8, "resnet14": 14, "resnet20": 20, "resnet32": 32, "resnet44": 44,
                 "resnet56": 56, "resnet110": 110, "resnet8x4": 8, "resnet32x4": 32}


def cifar_resnet(name: str, num_classes: int) -> ResNet:
    """RepDistiller's ``resnet{depth}`` (widths 16,16,32,64) or ``resnet{depth}x4`` (32..256)."""
    depth = _CIFAR_DEPTHS[name]
    n = (depth - 2) // 6
    widths = (32, 64, 128, 256) if name.endswith("x4") else (16, 16, 32, 64)
    return ResNet(num_classes=num_classes, stage_blocks=(n, n, n), stage_widths=widths[1:],
                  stage_strides=(1, 2, 2), stem_width=widths[0])


def resnet50(num_classes: int) -> ResNet:
    """RepDistiller's ``ResNet50`` (``resnetv2.py``; bottleneck blocks [3, 4, 6, 3])."""
    return ResNet(num_classes=num_classes, stage_blocks=(3, 4, 6, 3),
                  stage_widths=(64, 128, 256, 512), stage_strides=(1, 2, 2, 2), stem_width=64,
                  bottleneck=True, shortcut_name="shortcut", head_name="linear")
