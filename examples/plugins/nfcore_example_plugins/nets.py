"""Three networks written outside nfcore, offered to its service as model plugins.

- `tv_resnet`: a BatchNorm bottleneck ResNet laid out as torchvision's (`layer1.0` ...),
  written here, not imported;
- `nf_tv_resnet`: the same layout made Normalizer-Free with nfcore's layers: Scaled WS convs,
  x_{l+1} = x_l + alpha * f(x_l / beta_l) with the analytic beta of Section 4;
- `mixer`: an MLP-Mixer, a stack of blocks on N x L x C token tensors (no convolution).

Each factory's arguments are annotated with their bounds, so the service knows their JSON
schema and refuses a request outside them before any worker counts or builds a network (a
plugin with an unbounded number does not load); the `model_plugin` marks say how each is
measured by default. The bounds say what each network is for, not what a machine can afford:
the workers' cost check (MAX_FLOPS, MAX_MEMORY_BYTES) refuses a network within them that is
too large.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

import torch
from pydantic import Field
from torch import Tensor, nn

from nfcore.engine.activations import resolve_gamma
from nfcore.engine.layers import ScaledWSConv2d
from nfcore.foreign.plugins import model_plugin

LAYOUTS = {14: (1, 1, 1, 1), 26: (2, 2, 2, 2), 50: (3, 4, 6, 3), 101: (3, 4, 23, 3)}
Depth = Literal[14, 26, 50, 101]
# A ResNet's base width: torchvision's is 64, so up to 16 times wider than ImageNet's.
Width = Annotated[int, Field(ge=1, le=1024)]
Classes = Annotated[int, Field(ge=1, le=100_000)]  # ImageNet-21k has 21,841
Alpha = Annotated[float, Field(ge=0.0, le=10.0)]  # the paper uses 0.2; 10 leaves room to explore
MixerDepth = Annotated[int, Field(ge=1, le=256)]  # Mixer-H has 32 blocks
Expansion = Annotated[int, Field(ge=1, le=16)]  # the MLP's hidden width over its input's


class Bottleneck(nn.Module):
    """torchvision's bottleneck: relu(bn3(conv3(...)) + downsample(x))."""

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, 4 * planes, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(4 * planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample: nn.Module | None = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class NFBottleneck(nn.Module):
    """Pre-activation NF bottleneck: x + alpha * f(relu(x) / beta), Scaled WS convs."""

    def __init__(self, cin: int, planes: int, stride: int, beta: float, alpha: float) -> None:
        super().__init__()
        gamma = resolve_gamma("auto", "relu")
        self.beta, self.alpha = beta, alpha
        self.relu = nn.ReLU()
        self.conv1 = ScaledWSConv2d(cin, planes, 1, gamma=gamma)
        self.conv2 = ScaledWSConv2d(planes, planes, 3, stride, 1, gamma=gamma)
        self.conv3 = ScaledWSConv2d(planes, 4 * planes, 1, gamma=gamma)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != 4 * planes:
            self.shortcut = ScaledWSConv2d(cin, 4 * planes, 1, stride, gamma=gamma)
        self.expected_var = 0.0  # set by the network: Var(x_{l+1}) of Section 4

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(x) / self.beta
        skip = x if self.shortcut is None else self.shortcut(out)
        branch = self.conv3(self.relu(self.conv2(self.relu(self.conv1(out)))))
        return skip + self.alpha * branch


class ResNet(nn.Module):
    def __init__(self, layers: tuple[int, ...], width: int, num_classes: int, block: str,
                 alpha: float = 0.2) -> None:  # fmt: skip
        super().__init__()
        if block == "bn":
            self.conv1 = nn.Conv2d(3, width, 7, 2, 3, bias=False)
            self.bn1: nn.Module = nn.BatchNorm2d(width)
            self.relu: nn.Module = nn.ReLU(inplace=True)
        else:
            self.conv1 = ScaledWSConv2d(3, width, 7, 2, 3)
            self.bn1 = nn.Identity()
            self.relu = nn.Identity()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        cin, expected = width, 1.0
        for index, count in enumerate(layers):
            planes, blocks = width * 2**index, []
            for position in range(count):
                stride = 2 if index > 0 and position == 0 else 1
                if block == "bn":
                    blocks.append(Bottleneck(cin, planes, stride))
                else:
                    nf = NFBottleneck(cin, planes, stride, math.sqrt(expected), alpha)
                    expected = (1.0 if position == 0 else expected) + alpha**2
                    nf.expected_var = expected
                    blocks.append(nf)
                cin = 4 * planes
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
        self.fc = nn.Linear(cin, num_classes)
        self.depth = len(layers)

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(1, self.depth + 1):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(torch.flatten(x.mean(dim=(2, 3)), 1))


@model_plugin(residual=["layer*.*.bn3"])
def tv_resnet(depth: Depth = 26, width: Width = 16, num_classes: Classes = 10) -> nn.Module:
    """A BatchNorm ResNet in torchvision's layout (bottlenecks, layer1 ... layer4)."""
    return ResNet(LAYOUTS[depth], width, num_classes, "bn")


@model_plugin(residual=["layer*.*.conv3"])
def nf_tv_resnet(
    depth: Depth = 26, width: Width = 16, alpha: Alpha = 0.2, num_classes: Classes = 10
) -> nn.Module:
    """The same layout Normalizer-Free: Scaled WS, x + alpha * f(x / beta) (Section 4)."""
    return ResNet(LAYOUTS[depth], width, num_classes, "nf", alpha)


class MixerBlock(nn.Module):
    """Token mixing, then channel mixing, each a residual MLP on N x L x C tokens."""

    def __init__(self, tokens: int, channels: int, expansion: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.token_mlp = nn.Sequential(
            nn.Linear(tokens, expansion * tokens), nn.GELU(), nn.Linear(expansion * tokens, tokens)
        )
        self.channel_mlp = nn.Sequential(
            nn.Linear(channels, expansion * channels),
            nn.GELU(),
            nn.Linear(expansion * channels, channels),
        )

    def forward(self, x: Tensor) -> Tensor:
        x = x + self.token_mlp(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.channel_mlp(self.norm2(x))


@model_plugin(input_shape=[16, 64], channels="last", residual=["*.channel_mlp"])
def mixer(
    depth: MixerDepth = 8,
    tokens: Literal[16] = 16,  # the example's input is 16 tokens of 64 channels
    channels: Literal[64] = 64,
    expansion: Expansion = 2,
) -> nn.Module:
    """An MLP-Mixer: a stack of token- and channel-mixing blocks on 16 tokens of 64 channels."""
    return nn.Sequential(*[MixerBlock(tokens, channels, expansion) for _ in range(depth)])
