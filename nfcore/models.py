"""Build any network of the paper from a `ModelConfig`: one generic builder over data tables.

The layouts and widths are rows of `nfcore.variants`; the config picks the norm layer, the conv
layer and the activation, which are injected into the shared `ResidualBlock`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from nfcore.activations import get_activation, he_gain, resolve_gamma
from nfcore.blocks import ResidualBlock, nf_expected_variances
from nfcore.config import ModelConfig
from nfcore.layers import (
    Activation,
    ScalarBias,
    ScalarScale,
    ScaledWSConv2d,
    SqueezeExcite,
)
from nfcore.variants import (
    NF_REGNET_EXPANSION,
    NF_REGNET_FINAL_WIDTH,
    NF_REGNET_FINAL_WIDTH_BASE,
    NF_REGNET_GROUP_SIZE,
    NF_REGNET_SE_RATIO,
    NF_REGNET_VARIANTS,
    NF_REGNET_WIDTH,
    RESNET_BOTTLENECK_RATIO,
    RESNET_LAYOUTS,
    RESNET_SE_RATIO,
    RESNET_STAGE_WIDTHS,
    RESNET_STEM_WIDTH,
)


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
        self.fc = nn.Linear(num_features, num_classes)

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
    ) -> nn.Conv2d:
        """A Scaled WS conv, or a plain conv that `init_weights` He-initializes.

        `after_activation` says whether the conv's input is g(.) (then Scaled WS uses gamma and
        He init the gain 1/sqrt(E[g^2])) or a linear map of it such as BN or the image (gain 1).
        """
        if self.config.conv == "ws":
            gamma = self.gamma if after_activation else 1.0
            conv = ScaledWSConv2d(
                cin, cout, kernel, stride, kernel // 2, groups, bias=True, gamma=gamma
            )
            conv.reads_activation = after_activation  # `retune` gives it the new gamma
            return conv
        conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False)
        conv.he_gain = self.he if after_activation else 1.0
        return conv

    def act(self, gain: float = 1.0) -> Activation:
        name = str(self.config.activation)
        return Activation(get_activation(name), name, gain)

    def norm_act(self, channels: int) -> nn.Module:
        """What sits between two convs: BN and g in the configured order, g alone, or FixUp's g + biases."""
        norm = self.config.norm
        if norm == "bn":
            bn = nn.BatchNorm2d(channels)
            if self.config.order == "relu-bn-conv":
                return nn.Sequential(self.act(), bn)
            return nn.Sequential(bn, self.act())
        if norm == "fixup":
            return nn.Sequential(ScalarBias(), self.act(), ScalarBias())
        return self.act()

    def norm_act_layers(self, channels: int) -> list[nn.Module]:
        """`norm_act` as layers to splice into a Sequential: [g] for NF, [BN, g] for BN.

        Spliced rather than nested, a layer's input dies as soon as the layer has run (a nested
        BN-g would keep the conv output alive beside BN's and g's outputs)."""
        layers = self.norm_act(channels)
        return list(layers) if isinstance(layers, nn.Sequential) else [layers]

    def squeeze_excite(
        self, channels: int, ratio: float, act_gain: float = 1.0, gain_is_gamma: bool = False
    ) -> list[nn.Module]:
        se_gain = self.config.se_gain or 0.0
        if se_gain == 0.0:
            return []
        hidden = max(1, int(channels * ratio))
        activation = self.act(act_gain)
        activation.gain_is_gamma = gain_is_gamma  # NF-RegNet bakes gamma in (see `retune`)
        return [SqueezeExcite(channels, hidden, activation, se_gain)]


def _scaled(channels: int, width: float) -> int:
    return max(1, round(channels * width))


def _resnet_v2_block(p: _Parts, cin: int, cout: int, stride: int, num_blocks: int) -> dict:
    """Pre-activation bottleneck (He et al., 2016a; the paper's Fig. 4)."""
    mid = max(1, cout // RESNET_BOTTLENECK_RATIO)
    # In ReLU-BN-Conv every conv reads a BN output, which is not rectified.
    fed = not (p.config.norm == "bn" and p.config.order == "relu-bn-conv")
    conv1 = p.conv(cin, mid, 1, after_activation=fed)
    conv2 = p.conv(mid, mid, 3, stride, after_activation=fed)
    conv3 = p.conv(mid, cout, 1, after_activation=fed)
    tail: list[nn.Module] = []
    if p.config.norm == "fixup":
        # FixUp (Zhang et al., 2019): branch convs scaled by L^(-1/(2m-2)) with m = 3, last conv zero.
        conv1.fixup_scale = conv2.fixup_scale = num_blocks ** (-1 / 4)
        conv3.fixup_scale = 0.0
        tail = [ScalarScale(), ScalarBias()]
    if p.config.norm == "bn":
        pre = p.norm_act(cin)  # BN-ReLU or ReLU-BN
    elif p.config.norm == "fixup":
        pre = nn.Sequential(p.act(), ScalarBias())  # g(x), then FixUp's bias before conv1
    else:
        pre = p.act()  # g(x); the block divides it by beta
    branch = nn.Sequential(conv1, p.norm_act(mid), conv2, p.norm_act(mid), conv3, *tail)
    branch.extend(p.squeeze_excite(cout, RESNET_SE_RATIO))
    shortcut = (
        p.conv(cin, cout, 1, stride, after_activation=fed) if stride > 1 or cin != cout else None
    )
    return {"pre": pre, "branch": branch, "shortcut": shortcut}


def _resnet_v1_block(p: _Parts, cin: int, cout: int, stride: int, num_blocks: int) -> dict:
    """Post-activation bottleneck (He et al., 2016b; Fig. 5): relu(skip + BN(conv(...)))."""
    mid = max(1, cout // RESNET_BOTTLENECK_RATIO)
    bn = nn.BatchNorm2d if p.config.norm == "bn" else (lambda _: nn.Identity())
    branch = nn.Sequential(
        p.conv(cin, mid, 1), bn(mid), p.act(),
        p.conv(mid, mid, 3, stride), bn(mid), p.act(),
        p.conv(mid, cout, 1), bn(cout),
    )  # fmt: skip
    branch.extend(p.squeeze_excite(cout, RESNET_SE_RATIO))
    shortcut = (
        nn.Sequential(p.conv(cin, cout, 1, stride), bn(cout)) if stride > 1 or cin != cout else None
    )
    return {"pre": nn.Identity(), "branch": branch, "shortcut": shortcut, "post": p.act()}


def _nf_regnet_block(p: _Parts, cin: int, cout: int, stride: int, expansion: float) -> dict:
    """NF-RegNet inverted bottleneck with grouped 3x3 conv and S+E (Appendix D.2 `NFBlock`).

    Its BN twin (norm "bn") is the pre-activation form of the same block, as in the BN
    ResNetV2: every g becomes BN then g (`_Parts.norm_act`, which is g alone for NF, so the NF
    network is unchanged).
    """
    width = int(cin * expansion)
    groups = max(1, width // NF_REGNET_GROUP_SIZE)
    width = NF_REGNET_GROUP_SIZE * groups  # round to whole groups, as the listing does
    # The listing bakes gamma into its activations, so the S+E MLP sees gamma * g too.
    se_act_gain = p.gamma if p.config.conv == "ws" else 1.0
    branch = nn.Sequential(
        p.conv(cin, width, 1),
        *p.norm_act_layers(width),
        p.conv(width, width, 3, stride, groups),
        *p.squeeze_excite(width, NF_REGNET_SE_RATIO, se_act_gain, p.config.conv == "ws"),
        *p.norm_act_layers(width),
        p.conv(width, cout, 1),
    )
    shortcut = None
    if stride > 1 or cin != cout:
        # Appendix B.4: average pooling then a 1x1 conv instead of a strided 1x1 conv.
        pool = (
            nn.AvgPool2d(2, ceil_mode=True, count_include_pad=False)
            if stride > 1
            else nn.Identity()
        )
        shortcut = nn.Sequential(pool, p.conv(cin, cout, 1))
    # NF: g(x), which the block divides by beta; BN: BN then g, as BN-ResNetV2's `pre`.
    return {"pre": p.norm_act(cin), "branch": branch, "shortcut": shortcut}


def _blocks(
    p: _Parts, stage_widths: list[int], cin: int, make: Callable[..., dict]
) -> list[ResidualBlock]:
    """Lay out the stages; for NF nets track beta and the expected variance (Section 4.5)."""
    config = p.config
    layout = config.stage_layout
    nf = config.norm == "nf"
    alpha = float(config.alpha) if nf else 1.0
    variances = nf_expected_variances(layout, alpha)
    num_blocks = sum(layout)
    blocks, index = [], 0
    for stage, (cout, stage_depth) in enumerate(zip(stage_widths, layout, strict=False)):
        for block_in_stage in range(stage_depth):
            stride = 2 if block_in_stage == 0 and (stage > 0 or config.family == "nf_regnet") else 1
            parts = make(p, cin, cout, stride, index)
            beta, expected_var = variances[index]
            blocks.append(
                ResidualBlock(
                    **parts,
                    beta=beta if nf else 1.0,
                    alpha=alpha,
                    skipinit=bool(config.skipinit),
                    stochdepth_rate=config.stochdepth_rate * index / num_blocks,
                    stage=stage,
                    expected_var=expected_var if nf else None,
                )
            )
            cin, index = cout, index + 1
    return blocks


def _build_resnet(p: _Parts) -> Network:
    config = p.config
    width = config.width
    stem_width = _scaled(RESNET_STEM_WIDTH, width)
    stage_widths = [_scaled(w, width) for w in RESNET_STAGE_WIDTHS][: len(config.stage_layout)]
    num_blocks = config.num_blocks
    v1 = config.family == "resnetv1"
    stem: list[nn.Module] = [p.conv(3, stem_width, 7, 2, after_activation=False)]
    if v1:
        stem += [nn.BatchNorm2d(stem_width)] if config.norm == "bn" else []
        stem.append(p.act())
    if config.maxpool:
        stem.append(nn.MaxPool2d(3, stride=2, padding=1))

    def make(parts: _Parts, cin: int, cout: int, stride: int, _index: int) -> dict:
        build = _resnet_v1_block if v1 else _resnet_v2_block
        return build(parts, cin, cout, stride, num_blocks)

    blocks = _blocks(p, stage_widths, stem_width, make)
    # Pre-activation nets end with one more norm + activation before pooling.
    head = (
        nn.Identity() if v1 else (p.norm_act(stage_widths[-1]) if config.norm == "bn" else p.act())
    )
    return Network(
        nn.Sequential(*stem), blocks, head, stage_widths[-1], config.num_classes, config.drop_rate
    )


def _build_nf_regnet(p: _Parts) -> Network:
    """NF-RegNet as the Appendix D.2 listing builds it, with the listing's slips fixed (or, for
    norm "bn", its batch-normalized twin: see `_nf_regnet_block`; the head's g is BN then g).

    The fixes: the final conv is given its output width (`which_conv(in_channels, ch, ...)`);
    dropout uses the resolved rate; the shortcut pools only in strided blocks, with
    `ceil_mode` so odd sizes match the strided 3x3 conv; a group count is at least 1 for
    narrow widths; gamma sits in the Scaled WS convs instead of being baked into the
    activations (same function, except the final conv's output, which feeds only pooling).
    Parameter counts then match Table 3 within 0.2% (tests/nfcore/test_models.py).
    """
    config = p.config
    variant = NF_REGNET_VARIANTS[str(config.variant)]
    stage_widths = [max(1, int(w * NF_REGNET_WIDTH * config.width)) for w in variant["width"]]
    stem = p.conv(3, stage_widths[0], 3, 2, after_activation=False)

    def make(parts: _Parts, cin: int, cout: int, stride: int, index: int) -> dict:
        # Following EfficientNets, the very first block does not expand (Appendix C).
        return _nf_regnet_block(parts, cin, cout, stride, NF_REGNET_EXPANSION if index > 0 else 1.0)

    blocks = _blocks(p, stage_widths, stage_widths[0], make)
    # Final 1x1 expansion conv to 1280 * w channels, following EfficientNets (Appendix C): w
    # scales with the variant's compound width, as the listing's int(1280 * in_channels // 440).
    final_width = int(NF_REGNET_FINAL_WIDTH * stage_widths[-1] // NF_REGNET_FINAL_WIDTH_BASE)
    # The conv reads the last block's sum (no g before it); the BN twin normalizes its output.
    head = nn.Sequential(
        p.conv(stage_widths[-1], final_width, 1, after_activation=False),
        *p.norm_act_layers(final_width),
    )
    return Network(stem, blocks, head, final_width, config.num_classes, config.drop_rate)


@torch.no_grad()
def init_weights(model: nn.Module) -> None:
    """Every initialization of the project, in one place."""
    se_convs = {
        id(c)
        for m in model.modules()
        if isinstance(m, SqueezeExcite)
        for c in (m.se_conv0, m.se_conv1)
    }
    for module in model.modules():
        if isinstance(module, ScaledWSConv2d):
            # Section 4.2: W is drawn from a Gaussian; eq. 3 removes its scale, and unit fan-in
            # variance keeps eps negligible next to N * Var(W).
            nn.init.normal_(module.weight, std=1 / math.sqrt(module.weight[0].numel()))
            nn.init.ones_(module.gain)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Conv2d) and id(module) not in se_convs:
            # He et al. (2015): N(0, gain^2 / fan_in), gain = 1/sqrt(E[g^2]) after g (sqrt 2 for
            # ReLU, as in Fig. 8's caption), else 1. FixUp rescales its branch convs.
            std = getattr(module, "he_gain", 1.0) / math.sqrt(module.weight[0].numel())
            nn.init.normal_(module.weight, std=std * getattr(module, "fixup_scale", 1.0))
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.BatchNorm2d):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Linear):
            # The paper zero-initializes NF-RegNet's classifier (Appendix D.2) and FixUp does too;
            # that would make every activation gradient exactly zero at initialization, so the
            # gradient SPP uses a small Gaussian instead. It does not touch the forward SPP.
            nn.init.normal_(module.weight, std=0.01)
            nn.init.zeros_(module.bias)
        # S+E convs keep PyTorch's default init, as in the Appendix D.2 listing.


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run with the CPU random generator seeded, restoring the caller's state afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _build(parts: _Parts) -> Network:
    """The uninitialized network: the family's builder with the config's parts."""
    build = _build_nf_regnet if parts.config.family == "nf_regnet" else _build_resnet
    model = build(parts)
    model.gamma = parts.gamma  # the resolved Scaled WS gain, reported in the SPP's meta
    return model


def build_model(config: ModelConfig, seed: int | None = None) -> Network:
    """The network `config` describes, initialized on the CPU (reproducibly, given `seed`)."""
    parts = _Parts.of(config)
    if seed is None:
        model = _build(parts)
        init_weights(model)
        return model
    with seeded(seed):
        model = _build(parts)
        init_weights(model)
    return model


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
    nf = config.norm == "nf"
    alpha = float(config.alpha) if nf else 1.0
    variances = nf_expected_variances(config.stage_layout, alpha)
    for block, (beta, expected_var) in zip(model.blocks, variances, strict=True):
        block.alpha = alpha
        block.beta = beta if nf else 1.0
        block.expected_var = expected_var if nf else None
    for module in model.modules():
        if isinstance(module, ScaledWSConv2d):
            module.gamma = parts.gamma if getattr(module, "reads_activation", True) else 1.0
        elif isinstance(module, SqueezeExcite):
            module.se_gain = float(config.se_gain or 0.0)
            if getattr(module.activation, "gain_is_gamma", False):
                module.activation.gain = parts.gamma
    model.gamma = parts.gamma


def parameter_count(config: ModelConfig) -> int:
    """Number of parameters, counted on the meta device (no memory, no initialization)."""
    parts = _Parts.of(config)
    with torch.device("meta"):
        model = _build(parts)
    return sum(p.numel() for p in model.parameters())


def model_catalog() -> list[dict]:
    """Every named model at width 1 with 1000 classes: family, depth or variant, parameters."""
    rows = []
    for family, norm in (("resnetv2", "nf"), ("resnetv2", "bn"), ("resnetv1", "bn")):
        for depth, layout in RESNET_LAYOUTS.items():
            config = ModelConfig(family=family, depth=depth, norm=norm)
            rows.append({"family": family, "norm": norm, "depth": depth, "variant": None,
                         "layout": list(layout), "parameters": parameter_count(config)})  # fmt: skip
    for variant in NF_REGNET_VARIANTS:
        config = ModelConfig(family="nf_regnet", variant=variant)
        rows.append({"family": "nf_regnet", "norm": "nf", "depth": None, "variant": variant,
                     "layout": list(config.stage_layout), "parameters": parameter_count(config)})  # fmt: skip
    return rows
