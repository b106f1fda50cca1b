"""Independent PyTorch re-implementations of the RepDistiller / CKD CIFAR zoo, for the tests.

Written from the reference's facts (layer list, module names, strides, paddings, pooling,
``is_feat``/``preact`` outputs), NCHW, with the same state_dict layout as HobbitLong/RepDistiller
``models/`` (identical in alextxu/ckd), so a ``{"model": net.state_dict()}`` file made here has
the reference checkpoint layout. Forward: ``net(x, is_feat=False, preact=False)`` -> logits, or
``(features, logits)`` with ``is_feat=True``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def _bn(c):
    return nn.BatchNorm2d(c)


def _conv(cin, cout, k, stride=1, pad=0, groups=1, bias=False):
    return nn.Conv2d(cin, cout, k, stride, pad, groups=groups, bias=bias)


# ----------------------------------------------------------------------------- ResNets
class TBlock(nn.Module):
    """Basic or bottleneck residual block; forward returns (out, preact)."""

    def __init__(self, cin, planes, stride, bottleneck, short_name):
        super().__init__()
        self.bottleneck = bottleneck
        width = planes * (4 if bottleneck else 1)
        if bottleneck:
            self.conv1, self.bn1 = _conv(cin, planes, 1), _bn(planes)
            self.conv2, self.bn2 = _conv(planes, planes, 3, stride, 1), _bn(planes)
            self.conv3, self.bn3 = _conv(planes, width, 1), _bn(width)
        else:
            self.conv1, self.bn1 = _conv(cin, planes, 3, stride, 1), _bn(planes)
            self.conv2, self.bn2 = _conv(planes, planes, 3, 1, 1), _bn(planes)
        self.short_name = short_name
        proj = (nn.Sequential(_conv(cin, width, 1, stride), _bn(width))
                if stride != 1 or cin != width else nn.Sequential())
        setattr(self, short_name, proj)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        if self.bottleneck:
            out = F.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
        else:
            out = self.bn2(self.conv2(out))
        pre = out + getattr(self, self.short_name)(x)
        return F.relu(pre), pre


class TResNet(nn.Module):
    def __init__(self, blocks, widths, strides, stem, bottleneck, short_name, head, classes):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, stem, 3, 1, 1), _bn(stem)
        cin, exp = stem, (4 if bottleneck else 1)
        for s, (n, w, st) in enumerate(zip(blocks, widths, strides)):
            layer = []
            for i in range(n):
                layer.append(TBlock(cin, w, st if i == 0 else 1, bottleneck, short_name))
                cin = w * exp
            setattr(self, f"layer{s + 1}", nn.Sequential(*layer))
        self.n_stages = len(blocks)
        self.head = head
        setattr(self, head, nn.Linear(cin, classes))

    def forward(self, x, is_feat=False, preact=False):
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [x], [x]
        for s in range(self.n_stages):
            for blk in getattr(self, f"layer{s + 1}"):
                x, pre = blk(x)
            feats.append(x)
            pres.append(pre)
        pooled = x.mean(dim=(2, 3))
        logits = getattr(self, self.head)(pooled)
        if is_feat:
            return (pres if preact else feats) + [pooled], logits
        return logits


def cifar_resnet(depth, x4, classes):
    n = (depth - 2) // 6
    w = (32, 64, 128, 256) if x4 else (16, 16, 32, 64)
    return TResNet((n,) * 3, w[1:], (1, 2, 2), w[0], False, "downsample", "fc", classes)


# ----------------------------------------------------------------------------- WRN
class TWRNBlock(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.bn1 = _bn(cin)
        self.conv1 = _conv(cin, cout, 3, stride, 1)
        self.bn2 = _bn(cout)
        self.conv2 = _conv(cout, cout, 3, 1, 1)
        self.equal = cin == cout
        if not self.equal:
            self.convShortcut = _conv(cin, cout, 1, stride)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return (x if self.equal else self.convShortcut(a)) + out


class TStage(nn.Module):
    def __init__(self, blocks):
        super().__init__()
        self.layer = nn.Sequential(*blocks)


class TWRN(nn.Module):
    def __init__(self, depth, k, classes):
        super().__init__()
        n = (depth - 4) // 6
        ch = (16, 16 * k, 32 * k, 64 * k)
        self.conv1 = _conv(3, 16, 3, 1, 1)
        for s in range(3):
            setattr(self, f"block{s + 1}", TStage(
                [TWRNBlock(ch[s] if i == 0 else ch[s + 1], ch[s + 1],
                           (1, 2, 2)[s] if i == 0 else 1) for i in range(n)]))
        self.bn1 = _bn(ch[3])
        self.fc = nn.Linear(ch[3], classes)

    def forward(self, x, is_feat=False, preact=False):
        out = self.conv1(x)
        feats = [out]
        for s in range(3):
            out = getattr(self, f"block{s + 1}").layer(out)
            feats.append(out)
        pooled = F.relu(self.bn1(out)).mean(dim=(2, 3))
        logits = self.fc(pooled)
        if not is_feat:
            return logits
        if preact:  # the reference calls these BNs again (second running-stat update in train)
            feats = [feats[0], self.block2.layer[0].bn1(feats[1]),
                     self.block3.layer[0].bn1(feats[2]), self.bn1(feats[3])]
        return feats + [pooled], logits


# ----------------------------------------------------------------------------- VGG
VGG_CFG = {
    "vgg8": [[64], [128], [256], [512], [512]],
    "vgg11": [[64], [128], [256] * 2, [512] * 2, [512] * 2],
    "vgg13": [[64] * 2, [128] * 2, [256] * 2, [512] * 2, [512] * 2],
    "vgg16": [[64] * 2, [128] * 2, [256] * 3, [512] * 3, [512] * 3],
    "vgg19": [[64] * 2, [128] * 2, [256] * 4, [512] * 4, [512] * 4],
}


class TVGG(nn.Module):
    def __init__(self, cfg, classes):
        super().__init__()
        cin = 3
        for b, widths in enumerate(cfg):
            mods = []
            for w in widths:
                mods += [_conv(cin, w, 3, 1, 1, bias=True), _bn(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{b}", nn.Sequential(*mods[:-1]))  # no ReLU at a block's end
        self.classifier = nn.Linear(512, classes)

    def forward(self, x, is_feat=False, preact=False):
        h = x.shape[2]
        feats, pres = [], []
        for b in range(5):
            if b in (1, 2, 3) or (b == 4 and h == 64):
                x = F.max_pool2d(x, 2, 2)
            x = getattr(self, f"block{b}")(x)
            pres.append(x)
            x = F.relu(x)
            feats.append(x)
        pooled = x.mean(dim=(2, 3))
        logits = self.classifier(pooled)
        if is_feat:
            return [feats[0]] + (pres[1:] if preact else feats[1:]) + [pooled], logits
        return logits


# ----------------------------------------------------------------------------- MobileNetV2
class TInvRes(nn.Module):
    def __init__(self, cin, cout, stride, t):
        super().__init__()
        hid = cin * t
        self.res = stride == 1 and cin == cout
        self.conv = nn.Sequential(
            _conv(cin, hid, 1), _bn(hid), nn.ReLU(),
            _conv(hid, hid, 3, stride, 1, groups=hid), _bn(hid), nn.ReLU(),
            _conv(hid, cout, 1), _bn(cout))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class TMobileHalf(nn.Module):
    SETTING = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
               (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, classes):
        super().__init__()
        self.conv1 = nn.Sequential(_conv(3, 16, 3, 2, 1), _bn(16), nn.ReLU())
        cin, stages = 16, []
        for t, c, n, s in self.SETTING:
            blocks = []
            for i in range(n):
                blocks.append(TInvRes(cin, c // 2, s if i == 0 else 1, t))
                cin = c // 2
            stages.append(nn.Sequential(*blocks))
        self.blocks = nn.ModuleList(stages)
        self.conv2 = nn.Sequential(_conv(cin, 1280, 1), _bn(1280), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(1280, classes))

    def forward(self, x, is_feat=False, preact=False):
        x = self.conv1(x)
        feats = [x]
        for i, stage in enumerate(self.blocks):
            x = stage(x)
            if i in (1, 2, 4, 6):
                feats.append(x)
        pooled = self.conv2(x).mean(dim=(2, 3))
        logits = self.classifier(pooled)
        return (feats + [pooled], logits) if is_feat else logits


# ----------------------------------------------------------------------------- ShuffleNets
def shuffle(x, g):
    n, c, h, w = x.shape
    return x.reshape(n, g, c // g, h, w).transpose(1, 2).reshape(n, c, h, w)


def _pool4(x):
    return F.avg_pool2d(x, 4).flatten(1)


class TShuffleV1Block(nn.Module):
    def __init__(self, cin, cout, stride, groups):
        super().__init__()
        mid = cout // 4
        self.g = 1 if cin == 24 else groups
        self.stride = stride
        self.conv1, self.bn1 = _conv(cin, mid, 1, groups=self.g), _bn(mid)
        self.conv2, self.bn2 = _conv(mid, mid, 3, stride, 1, groups=mid), _bn(mid)
        self.conv3, self.bn3 = _conv(mid, cout, 1, groups=groups), _bn(cout)

    def forward(self, x):
        out = shuffle(F.relu(self.bn1(self.conv1(x))), self.g)
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        if self.stride == 2:
            pre = torch.cat([out, F.avg_pool2d(x, 3, 2, 1)], 1)  # count_include_pad default
        else:
            pre = out + x
        return F.relu(pre), pre


class TShuffleV1(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, 24, 1), _bn(24)
        cin = 24
        for s, (w, n) in enumerate(zip((240, 480, 960), (4, 8, 4))):
            blocks = []
            for i in range(n):
                blocks.append(TShuffleV1Block(cin, w - (cin if i == 0 else 0),
                                              2 if i == 0 else 1, 3))
                cin = w
            setattr(self, f"layer{s + 1}", nn.Sequential(*blocks))
        self.linear = nn.Linear(960, classes)

    def forward(self, x, is_feat=False, preact=False):
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [x], [x]
        for s in range(3):
            for blk in getattr(self, f"layer{s + 1}"):
                x, pre = blk(x)
            feats.append(x)
            pres.append(pre)
        pooled = _pool4(x)
        logits = self.linear(pooled)
        if is_feat:
            return (pres if preact else feats) + [pooled], logits
        return logits


class TShuffleV2Basic(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c // 2
        self.conv1, self.bn1 = _conv(h, h, 1), _bn(h)
        self.conv2, self.bn2 = _conv(h, h, 3, 1, 1, groups=h), _bn(h)
        self.conv3, self.bn3 = _conv(h, h, 1), _bn(h)

    def forward(self, x):
        c = x.shape[1] // 2
        x1, x2 = x[:, :c], x[:, c:]
        b = self.bn3(self.conv3(self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))))
        return shuffle(torch.cat([x1, F.relu(b)], 1), 2), torch.cat([x1, b], 1)


class TShuffleV2Down(nn.Module):
    def __init__(self, cin, cout):
        super().__init__()
        m = cout // 2
        self.conv1, self.bn1 = _conv(cin, cin, 3, 2, 1, groups=cin), _bn(cin)
        self.conv2, self.bn2 = _conv(cin, m, 1), _bn(m)
        self.conv3, self.bn3 = _conv(cin, m, 1), _bn(m)
        self.conv4, self.bn4 = _conv(m, m, 3, 2, 1, groups=m), _bn(m)
        self.conv5, self.bn5 = _conv(m, m, 1), _bn(m)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        right = F.relu(self.bn5(self.conv5(right)))
        return shuffle(torch.cat([left, right], 1), 2)


class TShuffleV2(nn.Module):
    def __init__(self, classes):
        super().__init__()
        self.conv1, self.bn1 = _conv(3, 24, 1), _bn(24)
        cin = 24
        for s, (w, n) in enumerate(zip((116, 232, 464), (3, 7, 3))):
            setattr(self, f"layer{s + 1}", nn.Sequential(
                TShuffleV2Down(cin, w), *[TShuffleV2Basic(w) for _ in range(n)]))
            cin = w
        self.conv2, self.bn2 = _conv(464, 1024, 1), _bn(1024)
        self.linear = nn.Linear(1024, classes)

    def forward(self, x, is_feat=False, preact=False):
        x = F.relu(self.bn1(self.conv1(x)))
        feats, pres = [x], [x]
        for s in range(3):
            layer = getattr(self, f"layer{s + 1}")
            x = layer[0](x)
            for blk in list(layer)[1:]:
                x, pre = blk(x)
            feats.append(x)
            pres.append(pre)
        pooled = _pool4(F.relu(self.bn2(self.conv2(x))))
        logits = self.linear(pooled)
        if is_feat:
            return (pres if preact else feats) + [pooled], logits
        return logits


def build(name: str, num_classes: int) -> nn.Module:
    """The PyTorch network called `name` in RepDistiller's model_dict."""
    if name.startswith("resnet"):
        x4 = name.endswith("x4")
        return cifar_resnet(int(name[6:].removesuffix("x4")), x4, num_classes)
    if name == "ResNet50":
        return TResNet((3, 4, 6, 3), (64, 128, 256, 512), (1, 2, 2, 2), 64, True, "shortcut",
                       "linear", num_classes)
    if name.startswith("wrn_"):
        _, d, k = name.split("_")
        return TWRN(int(d), int(k), num_classes)
    if name in VGG_CFG:
        return TVGG(VGG_CFG[name], num_classes)
    if name == "MobileNetV2":
        return TMobileHalf(num_classes)
    if name == "ShuffleV1":
        return TShuffleV1(num_classes)
    if name == "ShuffleV2":
        return TShuffleV2(num_classes)
    raise ValueError(f"no torch model {name!r}")
