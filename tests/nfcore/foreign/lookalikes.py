"""Tiny networks with the structure of the architectures people measure (timm 1.0 and
torchvision, which cannot be imported here), each modelled on its source: the same module
names, containers and forward code, a few blocks, narrow widths, small images.

Convolutional networks are here; Transformers and hybrids in `lookalike_tokens`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ConvNormAct(nn.Module):
    """timm's ConvNormAct: conv, then a norm with its activation."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, act: bool = True) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, k, stride, k // 2, bias=False)
        self.bn = nn.BatchNorm2d(cout)
        self.act = nn.ReLU() if act else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.bn(self.conv(x)))


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int = 4) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, reduced, 1), nn.Conv2d(reduced, channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


# --- RegNet (timm regnet.py): stages add their blocks as b1, b2, ... and loop over them -------


class RegBottleneck(nn.Module):
    """timm's regnet Bottleneck: x = drop_path(conv3(...)) + downsample(shortcut); act3."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = ConvNormAct(cin, cout, 1)
        self.conv2 = ConvNormAct(cout, cout, 3, stride)
        self.se = SqueezeExcite(cout)
        self.conv3 = ConvNormAct(cout, cout, 1, act=False)
        self.downsample = ConvNormAct(cin, cout, 1, stride, act=False) if (
            stride != 1 or cin != cout) else nn.Identity()  # fmt: skip
        self.drop_path, self.act3 = nn.Identity(), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv3(self.se(self.conv2(self.conv1(x))))
        x = self.drop_path(x) + self.downsample(shortcut)
        return self.act3(x)


class RegStage(nn.Module):
    def __init__(self, depth: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        for i in range(depth):
            self.add_module(f"b{i + 1}", RegBottleneck(cin if i == 0 else cout, cout,
                                                       stride if i == 0 else 1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        for block in self.children():
            x = block(x)
        return x


class RegNet(nn.Module):
    """regnetx_002's layout, (1, 1, 4, 7) blocks made (1, 1, 3, 2): single-block first stages."""

    def __init__(self, depths: tuple[int, ...] = (1, 1, 3, 2), widths=(8, 16, 24, 32)) -> None:
        super().__init__()
        self.stem = ConvNormAct(3, 8, 3, 2)
        cin = 8
        for i, (depth, width) in enumerate(zip(depths, widths, strict=True)):
            self.add_module(f"s{i + 1}", RegStage(depth, cin, width, 2))
            cin = width
        self.final_conv, self.head = nn.Identity(), nn.Linear(cin, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.s4(self.s3(self.s2(self.s1(self.stem(x)))))
        return self.head(self.final_conv(x).mean((2, 3)))


# --- DLA (timm dla.py): trees of blocks, the shortcut handed to the first block --------------


class DlaBasic(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.conv2, self.bn2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor, shortcut: Tensor | None = None, children=None) -> Tensor:
        if shortcut is None:
            shortcut = x
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out += shortcut
        return self.relu(out)


class DlaRoot(nn.Module):
    """The aggregation node: a conv of the concatenated children (no shortcut in dla34)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x_children: list[Tensor]) -> Tensor:
        return self.relu(self.bn(self.conv(torch.cat(x_children, 1))))


class DlaTree(nn.Module):
    def __init__(self, levels: int, cin: int, cout: int, stride: int = 1,
                 level_root: bool = False, root_dim: int = 0) -> None:  # fmt: skip
        super().__init__()
        root_dim = (root_dim or 2 * cout) + (cin if level_root else 0)
        self.downsample = nn.MaxPool2d(stride, stride) if stride > 1 else nn.Identity()
        self.project: nn.Module = nn.Identity()
        self.root: nn.Module | None = None
        if levels == 1:
            self.tree1, self.tree2 = DlaBasic(cin, cout, stride), DlaBasic(cout, cout)
            if cin != cout:
                self.project = nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False),
                                             nn.BatchNorm2d(cout))  # fmt: skip
            self.root = DlaRoot(root_dim, cout)
        else:
            self.tree1 = DlaTree(levels - 1, cin, cout, stride)
            self.tree2 = DlaTree(levels - 1, cout, cout, root_dim=root_dim + cout)
        self.level_root = level_root

    def forward(self, x: Tensor, shortcut: Tensor | None = None, children=None) -> Tensor:
        children = [] if children is None else children
        bottom = self.downsample(x)
        shortcut = self.project(bottom)
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, shortcut)
        if self.root is not None:
            return self.root([self.tree2(x1), x1, *children])
        children.append(x1)
        return self.tree2(x1, None, children)


class DLA(nn.Module):
    """dla34's layout: plain conv levels 0-1, then trees (one of level 1, one of level 2)."""

    def __init__(self) -> None:
        super().__init__()
        self.base_layer = ConvNormAct(3, 8, 7)
        self.level0 = ConvNormAct(8, 8, 3)
        self.level1 = ConvNormAct(8, 16, 3, 2)
        self.level2 = DlaTree(1, 16, 16, 2, level_root=False)
        self.level3 = DlaTree(2, 16, 32, 2, level_root=True)
        self.fc = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.level1(self.level0(self.base_layer(x)))
        return self.fc(self.level3(self.level2(x)).mean((2, 3)))


# --- Xception (timm xception_aligned.py): an inner Sequential of three separable convs --------


class SeparableConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        self.conv_dw = nn.Conv2d(cin, cin, 3, stride, 1, groups=cin, bias=False)
        self.bn_dw = nn.BatchNorm2d(cin)
        self.conv_pw, self.bn_pw = nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.bn_pw(self.conv_pw(self.bn_dw(self.conv_dw(x))))


class XceptionModule(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1, no_skip: bool = False) -> None:
        super().__init__()
        self.no_skip = no_skip
        self.shortcut = ConvNormAct(cin, cout, 1, stride, act=False) if (
            not no_skip and (cin != cout or stride != 1)) else None  # fmt: skip
        self.stack = nn.Sequential()
        for i in range(3):
            self.stack.add_module(f"act{i + 1}", nn.ReLU(inplace=i > 0))
            self.stack.add_module(f"conv{i + 1}", SeparableConv2d(
                cin if i == 0 else cout, cout, stride if i == 2 else 1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        skip = x
        x = self.stack(x)
        if self.shortcut is not None:
            skip = self.shortcut(skip)
        if not self.no_skip:
            x = x + skip
        return x


class Xception(nn.Module):
    """xception41's layout: entry (stride 2), middle, exit (the last module has no skip)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(ConvNormAct(3, 8, 3, 2), ConvNormAct(8, 8))
        self.blocks = nn.Sequential(XceptionModule(8, 16, 2), XceptionModule(16, 16),
                                    XceptionModule(16, 16), XceptionModule(16, 24, 2),
                                    XceptionModule(24, 32, no_skip=True))  # fmt: skip
        self.act, self.head = nn.ReLU(), nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.act(self.blocks(self.stem(x))).mean((2, 3)))


# --- BoTNet (timm byobnet.py): a stem of repeated convs, stages of mixed blocks ---------------


class BottleneckBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int = 1) -> None:
        super().__init__()
        mid = cout // 2
        self.shortcut = ConvNormAct(cin, cout, 1, stride, act=False) if (
            cin != cout or stride != 1) else nn.Identity()  # fmt: skip
        self.conv1_1x1, self.conv2_kxk = ConvNormAct(cin, mid, 1), ConvNormAct(mid, mid, 3, stride)
        self.conv3_1x1, self.act = ConvNormAct(mid, cout, 1, act=False), nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv3_1x1(self.conv2_kxk(self.conv1_1x1(x)))
        return self.act(x + self.shortcut(shortcut))


class BottleneckAttn(nn.Module):
    """Multi-head self-attention over the positions of an N,C,H,W map."""

    def __init__(self, dim: int, heads: int = 2) -> None:
        super().__init__()
        self.heads, self.qkv = heads, nn.Conv2d(dim, 3 * dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        n, c, h, w = x.shape
        q, k, v = self.qkv(x).reshape(n, 3, self.heads, c // self.heads, h * w).unbind(1)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                             v.transpose(-1, -2))  # fmt: skip
        return out.transpose(-1, -2).reshape(n, c, h, w)


class SelfAttnBlock(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.shortcut = nn.Identity() if cin == cout else ConvNormAct(cin, cout, 1, act=False)
        self.conv1_1x1, self.self_attn = ConvNormAct(cin, cout, 1), BottleneckAttn(cout)
        self.post_attn, self.conv3_1x1 = nn.BatchNorm2d(cout), ConvNormAct(cout, cout, 1, act=False)
        self.act = nn.ReLU()

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.conv3_1x1(self.post_attn(self.self_attn(self.conv1_1x1(x))))
        return self.act(x + self.shortcut(shortcut))


class Stem(nn.Sequential):
    """byobnet's Stem: a Sequential of convs (three here, as botnet26t's 'tiered' stem)."""


class BoTNet(nn.Module):
    """botnet26t's layout: stage 2 interleaves a bottleneck and a self-attention block."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = Stem(ConvNormAct(3, 8, 3, 2), ConvNormAct(8, 8), ConvNormAct(8, 16))
        self.stages = nn.Sequential(
            nn.Sequential(BottleneckBlock(16, 16), BottleneckBlock(16, 16)),
            nn.Sequential(BottleneckBlock(16, 32, 2), BottleneckBlock(32, 32)),
            nn.Sequential(BottleneckBlock(32, 48, 2), SelfAttnBlock(48, 48)),
            nn.Sequential(SelfAttnBlock(48, 64), SelfAttnBlock(64, 64)),
        )
        self.head = nn.Linear(64, 10)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


# --- EfficientNet (timm efficientnet.py), MobileNetV2 (torchvision) ---------------------------


class DepthwiseSeparableConv(nn.Module):
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.has_skip = cin == cout
        self.conv_dw, self.bn1 = nn.Conv2d(cin, cin, 3, 1, 1, groups=cin), nn.BatchNorm2d(cin)
        self.se = SqueezeExcite(cin)
        self.conv_pw, self.bn2 = nn.Conv2d(cin, cout, 1), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.bn2(self.conv_pw(self.se(F.relu(self.bn1(self.conv_dw(x))))))
        return x + shortcut if self.has_skip else x


class InvertedResidual(nn.Module):
    """timm's: has_skip = in == out and stride == 1 (the first block of a stage has none)."""

    def __init__(self, cin: int, cout: int, stride: int = 1, expand: int = 2) -> None:
        super().__init__()
        mid, self.has_skip = cin * expand, cin == cout and stride == 1
        self.conv_pw, self.bn1 = nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid)
        self.conv_dw = nn.Conv2d(mid, mid, 3, stride, 1, groups=mid, bias=False)
        self.bn2, self.se = nn.BatchNorm2d(mid), SqueezeExcite(mid)
        self.conv_pwl, self.bn3 = nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = F.relu(self.bn1(self.conv_pw(x)))
        x = self.se(F.relu(self.bn2(self.conv_dw(x))))
        x = self.bn3(self.conv_pwl(x))
        return x + shortcut if self.has_skip else x


class EfficientNet(nn.Module):
    """efficientnet_b0's layout: stage 0 is one depthwise-separable block without a skip."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stem, self.bn1 = nn.Conv2d(3, 8, 3, 2, 1, bias=False), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(
            nn.Sequential(DepthwiseSeparableConv(8, 4)),
            nn.Sequential(InvertedResidual(4, 8, 2), InvertedResidual(8, 8)),
            nn.Sequential(InvertedResidual(8, 12, 2), InvertedResidual(12, 12)),
            nn.Sequential(InvertedResidual(12, 16)),
        )
        self.conv_head, self.bn2 = nn.Conv2d(16, 32, 1, bias=False), nn.BatchNorm2d(32)
        self.classifier = nn.Linear(32, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.blocks(F.relu(self.bn1(self.conv_stem(x))))
        return self.classifier(F.relu(self.bn2(self.conv_head(x))).mean((2, 3)))


class Conv2dNormActivation(nn.Sequential):
    """torchvision's: a Sequential subclass (conv, norm, ReLU6)."""

    def __init__(self, cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU6(inplace=True))  # fmt: skip


class TVInvertedResidual(nn.Module):
    """torchvision's MobileNetV2 block: use_res_connect = stride == 1 and inp == oup."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        mid, self.use_res_connect = cin * expand, stride == 1 and cin == cout
        layers: list[nn.Module] = [Conv2dNormActivation(cin, mid, 1)] if expand != 1 else []
        layers += [Conv2dNormActivation(mid, mid, 3, stride, groups=mid),
                   nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout)]  # fmt: skip
        self.conv = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


MOBILENET_ROWS = ((1, 4, 1, 1), (2, 8, 2, 2), (2, 12, 2, 2), (2, 16, 1, 1))  # t, c, n, s


class MobileNetV2(nn.Module):
    """torchvision's flat `features`: a stem, the inverted residual rows, a last conv."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = [Conv2dNormActivation(3, 8, 3, 2)]
        cin = 8
        for t, c, n, s in MOBILENET_ROWS:
            for i in range(n):
                layers.append(TVInvertedResidual(cin, c, s if i == 0 else 1, t))
                cin = c
        layers.append(Conv2dNormActivation(cin, 32, 1))
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(32, 10))

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x).mean((2, 3)))


# --- GoogLeNet (torchvision googlenet.py): no residual block at all ---------------------------


class BasicConv2d(nn.Module):
    def __init__(self, cin: int, cout: int, k: int = 1) -> None:
        super().__init__()
        self.conv, self.bn = (
            nn.Conv2d(cin, cout, k, padding=k // 2, bias=False),
            nn.BatchNorm2d(cout),
        )

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)), inplace=True)


class Inception(nn.Module):
    def __init__(self, cin: int, width: int) -> None:
        super().__init__()
        self.branch1 = BasicConv2d(cin, width)
        self.branch2 = nn.Sequential(BasicConv2d(cin, width), BasicConv2d(width, width, 3))
        self.branch3 = nn.Sequential(BasicConv2d(cin, width), BasicConv2d(width, width, 3))
        self.branch4 = nn.Sequential(nn.MaxPool2d(3, 1, 1), BasicConv2d(cin, width))

    def forward(self, x: Tensor) -> Tensor:
        branches = [self.branch1(x), self.branch2(x), self.branch3(x), self.branch4(x)]
        return torch.cat(branches, 1)


class GoogLeNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.conv2 = BasicConv2d(3, 8, 7), BasicConv2d(8, 16, 3)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.inception3a, self.inception3b = Inception(16, 4), Inception(16, 4)
        self.inception4a = Inception(16, 4)
        self.fc = nn.Linear(16, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.conv2(self.conv1(x)))
        x = self.inception4a(self.maxpool(self.inception3b(self.inception3a(x))))
        return self.fc(x.mean((2, 3)))


# --- a block whose weights are used several times --------------------------------------------


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(),
                                    nn.Conv2d(channels, channels, 3, padding=1))  # fmt: skip

    def forward(self, x: Tensor) -> Tensor:
        return x + self.branch(x)


class TiedNet(nn.Module):
    """A stem, one block called three times (weights tied, as ALBERT or a recurrent-depth
    network does), then an untied block."""

    def __init__(self, calls: int = 3) -> None:
        super().__init__()
        self.stem, self.calls = nn.Conv2d(3, 8, 3, padding=1), calls
        self.shared, self.last = ResBlock(8), ResBlock(8)
        self.head = nn.Linear(8, 10)

    def forward(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        for _ in range(self.calls):
            x = self.shared(x)
        return self.head(self.last(x).mean((2, 3)))


# --- what the tests compare with: a module's outputs, reduced over the axes named ---------


class Outputs:
    """A forward hook that keeps every output of `module` (a test's independent record)."""

    def __init__(self, module: nn.Module) -> None:
        self.seen: list[Tensor] = []
        self.handle = module.register_forward_hook(
            lambda _m, _i, out: self.seen.append(out.detach().double().clone())
        )

    def __enter__(self) -> Outputs:
        return self

    def __exit__(self, *_: object) -> None:
        self.handle.remove()


def reduced(y: Tensor, over: tuple[int, ...]) -> tuple[float, float]:
    """(mean_C var y, mean_C (mean y)^2), each channel's statistics taken over the axes
    `over` (the others are the channels), as the paper defines them (Section 3)."""
    var = y.var(dim=over, correction=0)
    mean = y.mean(dim=over)
    return float(var.mean()), float(mean.square().mean())
