"""Build any network of the paper from a `ModelConfig`: one generic builder over data tables.

The layouts and widths are rows of `nfcore.spec.variants`; the config picks the norm layer, the conv
layer and the activation, which are injected into the shared `ResidualBlock`.
"""

from __future__ import annotations

import gc
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nfcore.engine.activations import get_activation, he_gain, resolve_gamma
from nfcore.engine.blocks import ResidualBlock
from nfcore.engine.layers import (
    Activation,
    BatchNorm2d,
    CircularAvgPool2d,
    CircularMaxPool2d,
    Conv2d,
    Linear,
    ScalarBias,
    ScalarScale,
    ScaledWSConv2d,
    SkipInitGain,
    SqueezeExcite,
    deferred_init,
)
from nfcore.spec import plan
from nfcore.spec.config import ModelConfig


class Network(nn.Module):
    """stem -> residual blocks -> head -> global average pool -> dropout -> classifier."""

    def __init__(
        self,
        stem: nn.Module,
        blocks: list[ResidualBlock],
        head: nn.Module,
        num_features: int,
        num_classes: int,
        drop_rate: float,
    ) -> None:
        super().__init__()
        self.stem = stem
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        self.dropout = nn.Dropout(drop_rate)
        self.fc = Linear(num_features, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        out = self.stem(x)  # N,C,H/2 (or H/4 with the max-pool),W/..
        for block in self.blocks:
            out = block(out)
        out = self.head(out)
        pooled = out.mean(dim=(2, 3))  # N,C
        return self.fc(self.dropout(pooled))

    @property
    def stage_ends(self) -> list[int]:
        """Index of the last block of every stage (the paper's black dots)."""
        stages = [block.stage for block in self.blocks]
        return [
            i for i, stage in enumerate(stages) if i + 1 == len(stages) or stages[i + 1] != stage
        ]


@dataclass(frozen=True)
class _Parts:
    """The layers a config chooses, as factories the family builders call."""

    config: ModelConfig
    gamma: float  # Scaled WS gain for convs that read g(.)
    he: float  # He-init gain for convs that read g(.)

    @classmethod
    def of(cls, config: ModelConfig) -> _Parts:
        """Resolve the gains first: they integrate on the CPU, so not on the meta device."""
        activation = str(config.activation)
        gamma = resolve_gamma(config.gamma, activation) if config.conv == "ws" else 1.0
        return cls(config, gamma, he_gain(activation) if config.conv == "he" else 1.0)

    def conv(
        self,
        cin: int,
        cout: int,
        kernel: int,
        stride: int = 1,
        groups: int = 1,
        *,
        after_activation: bool = True,
        padding: str = "zeros",
    ) -> nn.Conv2d:
        """A Scaled WS conv, or a plain conv that `init_weights` He-initializes.

        `after_activation` says whether the conv's input is g(.) (then Scaled WS uses gamma and
        He init the gain 1/sqrt(E[g^2])) or a linear map of it such as BN or the image (gain 1).
        `padding`: the mode of the kernel // 2 border (a 1x1 conv has none, so stays "zeros":
        another mode would copy its input for nothing).
        """
        mode = padding if kernel > 1 else "zeros"
        if self.config.conv == "ws":
            gamma = self.gamma if after_activation else 1.0
            conv = ScaledWSConv2d(
                cin, cout, kernel, stride, kernel // 2, groups, bias=True, gamma=gamma,
                padding_mode=mode,
            )  # fmt: skip
            conv.reads_activation = after_activation  # `retune` gives it the new gamma
            return conv
        conv = Conv2d(
            cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False, padding_mode=mode
        )
        conv.he_gain = self.he if after_activation else 1.0
        return conv

    def act(self, gain: float = 1.0) -> Activation:
        name = str(self.config.activation)
        return Activation(get_activation(name), name, gain)

    def squeeze_excite(self, layer: plan.SqueezeExcite) -> SqueezeExcite:
        activation = self.act(self.gamma if layer.gain_is_gamma else 1.0)
        activation.gain_is_gamma = layer.gain_is_gamma  # NF-RegNet bakes gamma in (`retune`)
        return SqueezeExcite(layer.channels, layer.hidden, activation, layer.se_gain)

    def module(self, layer: plan.Layer) -> nn.Module:
        """The module of one planned layer; a `Seq` is an nn.Sequential of its layers'."""
        match layer:
            case plan.Seq(layers):
                return nn.Sequential(*(self.module(inner) for inner in layers))
            case plan.Conv():
                conv = self.conv(
                    layer.cin, layer.cout, layer.kernel, layer.stride, layer.groups,
                    after_activation=layer.reads_activation, padding=layer.padding,
                )  # fmt: skip
                if layer.fixup_scale is not None:
                    conv.fixup_scale = layer.fixup_scale
                if layer.fan == "out":
                    conv.he_fan = "out"
                return conv
            case plan.BatchNorm(channels):
                return BatchNorm2d(channels)
            case plan.Act():
                return self.act()
            case plan.Bias():
                return ScalarBias()
            case plan.Scale():
                return ScalarScale()
            case plan.Identity():
                return nn.Identity()
            case plan.SqueezeExcite():
                return self.squeeze_excite(layer)
            case plan.MaxPool(padding="circular"):
                return CircularMaxPool2d()
            case plan.MaxPool():
                return nn.MaxPool2d(3, stride=2, padding=1)
            case plan.AvgPool(padding="circular"):
                return CircularAvgPool2d()
            case plan.AvgPool():
                return nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
        raise TypeError(f"no module for the planned layer {layer!r}")

    def block(self, block: plan.BlockPlan) -> ResidualBlock:
        pre = self.module(block.pre)
        branch = self.module(block.branch)
        shortcut = None if block.shortcut is None else self.module(block.shortcut)
        post = None if block.post is None else self.module(block.post)
        return ResidualBlock(
            pre=pre,
            branch=branch,
            shortcut=shortcut,
            post=post,
            beta=block.beta,
            alpha=block.alpha,
            skipinit=block.skipinit,
            stochdepth_rate=block.stochdepth_rate,
            stage=block.stage,
            expected_var=block.expected_var,
        )


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Every initialization of the project, in one place: every parameter and buffer of the
    network, module by module in `model.modules()` order (the order of the random stream).

    `build_model` constructs without PyTorch's default init (`deferred_init`), so each weight
    is drawn once, here. A module with parameters or buffers this does not know is an error.
    """
    se_convs: set[int] = set()  # an S+E layer comes before its convs in module order
    for module in model.modules():
        if isinstance(module, SqueezeExcite):
            se_convs.update((id(module.se_conv0), id(module.se_conv1)))
        elif isinstance(module, ScaledWSConv2d):
            # Section 4.2: W is drawn from a Gaussian; eq. 3 removes its scale, and unit fan-in
            # variance keeps eps negligible next to N * Var(W).
            nn.init.normal_(module.weight, std=1 / math.sqrt(module.weight[0].numel()))
            nn.init.ones_(module.gain)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif id(module) in se_convs:
            # S+E convs keep PyTorch's default init, as in the Appendix D.2 listing.
            nn.Conv2d.reset_parameters(module)  # type: ignore[arg-type]
        elif isinstance(module, nn.Conv2d):
            # He et al. (2015): N(0, gain^2 / fan_in), gain = 1/sqrt(E[g^2]) after g (sqrt 2 for
            # ReLU, as in Fig. 8's caption), else 1. FixUp rescales its branch convs; the
            # reference FixUp network takes the fan-out (out channels x kernel area) instead.
            weight = module.weight
            fan_out = weight.shape[0] * weight[0, 0].numel()
            fan = fan_out if getattr(module, "he_fan", "in") == "out" else weight[0].numel()
            std = getattr(module, "he_gain", 1.0) / math.sqrt(fan)
            nn.init.normal_(module.weight, std=std * getattr(module, "fixup_scale", 1.0))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()  # mean 0, variance 1, no batches seen
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # The paper zero-initializes NF-RegNet's classifier (Appendix D.2) and FixUp does too;
            # that would make every activation gradient exactly zero at initialization, so the
            # gradient SPP uses a small Gaussian instead. It does not touch the forward SPP.
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
        elif isinstance(module, SkipInitGain):
            nn.init.zeros_(module.skipinit_gain)  # De & Smith (2020): the branch starts off
        elif isinstance(module, ScalarBias):
            nn.init.zeros_(module.bias)  # FixUp's scalar bias starts at 0, its scale at 1
        elif isinstance(module, ScalarScale):
            nn.init.ones_(module.scale)
        elif any(t is not None for t in (*module._parameters.values(), *module._buffers.values())):
            raise TypeError(f"init_weights does not know how to initialize {module!r}")


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run with the CPU random generator seeded, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(parts: _Parts) -> Network:
    """The network of the config's plan, made in the plan's order; under `deferred_init` its
    parameters are left for `init_weights` to draw."""
    layers = plan.plan(parts.config)
    stem = parts.module(layers.stem)
    blocks = [parts.block(block) for block in layers.blocks]
    head = parts.module(layers.head)
    model = Network(stem, blocks, head, layers.num_features, layers.num_classes, layers.drop_rate)
    model.gamma = parts.gamma  # the resolved Scaled WS gain, reported in the SPP's meta
    return model


def build_model(config: ModelConfig, seed: int | None = None) -> Network:
    """The network `config` describes, initialized on the CPU (reproducibly, given `seed`).

    Constructed without PyTorch's default init, then `init_weights` draws each weight once
    (since nfcore 0.2.0; 0.1.0 drew every conv twice, so its weights differ)."""
    parts = _Parts.of(config)
    with _collection_paused(), deferred_init():
        model = _build(parts)
    if seed is None:
        init_weights(model)
        return model
    with seeded(seed):
        init_weights(model)
    return model


@contextmanager
def _collection_paused() -> Iterator[None]:
    """No cyclic garbage collection while a network is constructed: its thousands of modules
    would trigger collections that traverse every object of the process (40% of the
    construction time of NF-ResNetV2-600). Reference counting still frees what is dropped."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


# Fields that change no weight: a network built for one value serves every other after
# `retune`, bit for bit as a fresh build would (the S+E gain only between nonzero values: 0
# means no S+E layers at all).
SCALAR_FIELDS: tuple[str, ...] = ("alpha", "gamma", "se_gain")


def weights_key(config: ModelConfig, seed: int) -> str:
    """What the weights of `config`'s network built with `seed` depend on, as text: two
    configs with the same key differ only in `SCALAR_FIELDS` (see `retune`)."""
    fields = {name: getattr(config, name) for name in ModelConfig.model_fields}
    fields.update(alpha=None, gamma=None, se_gain=bool(config.se_gain))
    return json.dumps({**fields, "seed": seed}, sort_keys=True, default=list)


@torch.no_grad()
def retune(model: Network, config: ModelConfig) -> None:
    """Give a network built for another value of `SCALAR_FIELDS` the values of `config`:
    each block's alpha, beta and expected variance (Section 4.5), the Scaled WS gain gamma of
    the convs that read g(.) (and NF-RegNet's S+E activation, which carries gamma), and the
    S+E gain. Its weights are untouched; the SPP is then that of a fresh build."""
    parts = _Parts.of(config)
    for block, (alpha, beta, expected_var) in zip(
        model.blocks, plan.block_scales(config), strict=True
    ):
        block.alpha = alpha
        block.beta = beta
        block.expected_var = expected_var
    for module in model.modules():
        if isinstance(module, ScaledWSConv2d):
            module.gamma = parts.gamma if getattr(module, "reads_activation", True) else 1.0
        elif isinstance(module, SqueezeExcite):
            module.se_gain = float(config.se_gain or 0.0)
            if getattr(module.activation, "gain_is_gamma", False):
                module.activation.gain = parts.gamma
    model.gamma = parts.gamma
