"""A network as data: the layers a `ModelConfig` describes, before any of them exists.

`plan(config)` reads the config and its family's row (`nfcore.spec.families`) and lays out the
stem, every residual block (its pre-activation, branch f, shortcut and post-activation, with
the block's alpha, beta and expected variance of Section 4.5) and the head. Torch-free: the
builder (`nfcore.engine.models`) makes one module per layer, and the cost model (`nfcore.spec.cost`)
sums FLOPs, parameters and memory over the same layers, so the two cannot drift apart.

A family's parts are chosen by name in its row (`stem`, `block`, `head`): the functions of
`STEMS`, `BLOCKS` and `HEADS` below. What the norm adds to them is read from its row
(`nfcore.spec.norms`): its `parts`, and whether its blocks are scaled (NF's alpha and beta).
`Seq` is an `nn.Sequential`, a bare layer is the module itself: module names (`stem.0`,
`blocks.3.branch.2`) follow the plan.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from nfcore.spec import variants
from nfcore.spec.config import ModelConfig
from nfcore.spec.families import FamilyRow, family
from nfcore.spec.norms import NormRow, norm

# --- layers -------------------------------------------------------------------------------


Padding = Literal["zeros", "circular"]
"""What lies beyond the border of a conv or pool wider than 1x1: zeros (the paper's, and
PyTorch's default: a max-pool ignores the border, an average counts only real values), or
the opposite side of the image (circular: a periodic signal, so every output position sees
as many real inputs as every other and the statistics do not depend on the position)."""


@dataclass(frozen=True)
class Conv:
    """A conv padded by kernel // 2: Scaled WS or He-initialized, as the config says.

    `reads_activation`: its input is g(.) (Scaled WS then uses gamma, He init the gain
    1/sqrt(E[g^2])), not a linear map of it such as BN or the image (gain 1).
    `fixup_scale`: FixUp's rescaling of the He init (Zhang et al., 2019).
    `fan`: He init's variance over the fan-in, or over the fan-out (out channels x kernel
    area), as the reference FixUp network draws its weights.
    `padding`: what the kernel // 2 border holds (a 1x1 conv has none)."""

    cin: int
    cout: int
    kernel: int
    stride: int = 1
    groups: int = 1
    reads_activation: bool = True
    fixup_scale: float | None = None
    padding: Padding = "zeros"
    fan: Literal["in", "out"] = "in"


@dataclass(frozen=True)
class BatchNorm:
    channels: int


@dataclass(frozen=True)
class Act:
    """The config's nonlinearity g."""


@dataclass(frozen=True)
class Bias:
    """FixUp's scalar bias."""


@dataclass(frozen=True)
class Scale:
    """FixUp's scalar multiplier."""


@dataclass(frozen=True)
class Identity:
    """A placeholder that keeps module indices (ResNetV1 without BN)."""


@dataclass(frozen=True)
class SqueezeExcite:
    """S+E: two biased 1x1 convs on the pooled channels, output gain `se_gain` (Section 4.4).
    `gain_is_gamma`: its hidden g carries the Scaled WS gain (NF-RegNet's listing)."""

    channels: int
    hidden: int
    se_gain: float
    gain_is_gamma: bool = False


@dataclass(frozen=True)
class MaxPool:
    """The ResNet stem's 3x3 stride-2 max-pool, padded by 1: with zeros padding the border
    windows take the max of the 6 or 4 real values they cover; circular wraps them round."""

    padding: Padding = "zeros"


@dataclass(frozen=True)
class AvgPool:
    """2x2 stride-2 average pool with ceil_mode (NF-RegNet's shortcut, Appendix B.4). Only an
    odd side has a border: its last window covers one row (or column) and, with zeros
    padding, averages that alone; circular completes it with the first row."""

    padding: Padding = "zeros"


@dataclass(frozen=True)
class Seq:
    layers: tuple[Layer, ...]


Layer = Conv | BatchNorm | Act | Bias | Scale | Identity | SqueezeExcite | MaxPool | AvgPool | Seq


def flat(layer: Layer | None) -> Iterator[Layer]:
    """The layers inside `layer`, in the order they run."""
    if isinstance(layer, Seq):
        for inner in layer.layers:
            yield from flat(inner)
    elif layer is not None:
        yield layer


# --- the network --------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockPlan:
    """x_{l+1} = post(skip + alpha * gain * f(pre(x) / beta)) (`nfcore.engine.blocks.ResidualBlock`)."""

    index: int
    stage: int
    cin: int
    cout: int
    stride: int
    pre: Layer
    branch: Layer
    shortcut: Layer | None  # None: the identity
    post: Layer | None = None
    beta: float = 1.0
    alpha: float = 1.0
    expected_var: float | None = None  # analytic Var(x_{l+1}) of an NF block
    skipinit: bool = False
    stochdepth_rate: float = 0.0


@dataclass(frozen=True)
class NetworkPlan:
    """stem -> residual blocks -> head -> global average pool -> dropout -> classifier."""

    stem: Layer
    blocks: tuple[BlockPlan, ...]
    head: Layer
    num_features: int
    num_classes: int
    drop_rate: float


@dataclass(frozen=True)
class _Ctx:
    """What the part functions read: the config, its family row and the block count."""

    config: ModelConfig
    row: FamilyRow
    num_blocks: int

    @property
    def padding(self) -> Padding:
        """The border of every conv and pool wider than 1x1 (the config's `padding`)."""
        return self.config.padding

    @property
    def norm(self) -> NormRow:
        """The config's norm row (`nfcore.spec.norms`)."""
        return norm(str(self.config.norm))

    @property
    def batchnorm(self) -> bool:
        """The net normalizes with BatchNorm layers."""
        return self.norm.parts == "batchnorm"

    @property
    def fixup(self) -> bool:
        """The net carries FixUp's scalar biases and rescaled initialization."""
        return self.norm.parts == "fixup"

    def norm_act(self, channels: int) -> Layer:
        """Between two convs: BN and g in the configured order, g alone, or FixUp's bias, g, bias."""
        if self.batchnorm:
            if self.config.order == "relu-bn-conv":
                return Seq((Act(), BatchNorm(channels)))
            return Seq((BatchNorm(channels), Act()))
        if self.fixup:
            return Seq((Bias(), Act(), Bias()))
        return Act()

    def norm_act_layers(self, channels: int) -> tuple[Layer, ...]:
        """`norm_act` spliced into the enclosing Seq: a layer's input then dies as soon as the
        layer has run (a nested BN-g would keep the conv output alive beside BN's and g's)."""
        return tuple(flat(self.norm_act(channels)))

    def squeeze_excite(
        self, channels: int, ratio: float, gain_is_gamma: bool = False
    ) -> tuple[Layer, ...]:
        se_gain = self.config.se_gain or 0.0
        if se_gain == 0.0:
            return ()
        return (SqueezeExcite(channels, max(1, int(channels * ratio)), se_gain, gain_is_gamma),)


def nf_expected_variances(layout: tuple[int, ...], alpha: float) -> list[tuple[float, float]]:
    """(beta_l, expected Var(x_{l+1})) for every block of an NF network (Section 4.5).

    Var(x_0) = 1 and grows by alpha^2 per block; a transition block's skip path sees x/beta,
    so the variance resets to 1 + alpha^2 after it. The first block of each stage is a
    transition.
    """
    expected_var = 1.0
    rows = []
    for stage_depth in layout:
        for block_index in range(stage_depth):
            beta = math.sqrt(expected_var)
            if block_index == 0:
                expected_var = 1.0
            expected_var += alpha**2
            rows.append((beta, expected_var))
    return rows


def block_scales(config: ModelConfig) -> list[tuple[float, float, float | None]]:
    """(alpha, beta_l, expected Var(x_{l+1})) of every block: Section 4.5's for a norm whose
    blocks are scaled (NF), else (1, 1, None). The plan and the builder's `retune` read it."""
    scaled = norm(str(config.norm)).scaled
    alpha = float(config.alpha) if scaled else 1.0
    variances = nf_expected_variances(config.stage_layout, alpha)
    if not scaled:
        return [(alpha, 1.0, None) for _ in variances]
    return [(alpha, beta, expected_var) for beta, expected_var in variances]


def stage_widths(config: ModelConfig) -> list[int]:
    """Output channels of every stage at the config's width multiplier."""
    row = family(config.family)
    stages = len(config.stage_layout)
    if row.sized_by == "variant":
        # int() truncates, so the order of the products counts (the listing's).
        widths = row.variants[str(config.variant)]["width"]
        return [max(1, int(w * variants.NF_REGNET_WIDTH * config.width)) for w in widths][:stages]
    return [max(1, round(w * config.width)) for w in variants.RESNET_STAGE_WIDTHS][:stages]


def plan(config: ModelConfig) -> NetworkPlan:
    """The layers of `config`'s network; for NF nets with beta and the expected variance."""
    row = family(config.family)
    ctx = _Ctx(config, row, config.num_blocks)
    layout = config.stage_layout
    widths = stage_widths(config)
    stem, cin = STEMS[row.stem](ctx, widths)
    scales = block_scales(config)
    blocks: list[BlockPlan] = []
    for stage, (cout, stage_depth) in enumerate(zip(widths, layout, strict=False)):
        for block_in_stage in range(stage_depth):
            index = len(blocks)
            first = block_in_stage == 0 and (stage > 0 or row.first_stage_strided)
            stride = 2 if first else 1
            pre, branch, shortcut, post = BLOCKS[row.block](ctx, cin, cout, stride, index)
            alpha, beta, expected_var = scales[index]
            blocks.append(
                BlockPlan(
                    index, stage, cin, cout, stride, pre, branch, shortcut, post,
                    beta=beta,
                    alpha=alpha,
                    expected_var=expected_var,
                    skipinit=bool(config.skipinit),
                    stochdepth_rate=config.stochdepth_rate * index / ctx.num_blocks,
                )
            )  # fmt: skip
            cin = cout
    head, features = HEADS[row.head](ctx, cin)
    return NetworkPlan(stem, tuple(blocks), head, features, config.num_classes, config.drop_rate)


# --- the parts a family row names ---------------------------------------------------------

BlockParts = tuple[Layer, Layer, Layer | None, Layer | None]  # pre, branch, shortcut, post


def _resnet_stem(ctx: _Ctx, _widths: list[int], post_activation: bool = False) -> tuple[Layer, int]:
    """A 7x7 stride-2 conv on the image, (BN and g when post-activation), the 3x3 max-pool."""
    width = max(1, round(variants.RESNET_STEM_WIDTH * ctx.config.width))
    layers: list[Layer] = [Conv(3, width, 7, 2, reads_activation=False, padding=ctx.padding)]
    if post_activation:
        layers += [BatchNorm(width)] if ctx.batchnorm else []
        layers += [Bias()] if ctx.fixup else []  # FixUp's bias before g
        layers.append(Act())
    if ctx.config.maxpool:
        layers.append(MaxPool(ctx.padding))
    return Seq(tuple(layers)), width


def _resnet_postact_stem(ctx: _Ctx, widths: list[int]) -> tuple[Layer, int]:
    return _resnet_stem(ctx, widths, post_activation=True)


def _nf_regnet_stem(ctx: _Ctx, widths: list[int]) -> tuple[Layer, int]:
    """A 3x3 stride-2 conv to the first stage's width (Appendix D.2)."""
    return Conv(3, widths[0], 3, 2, reads_activation=False, padding=ctx.padding), widths[0]


def _resnet_v2_block(ctx: _Ctx, cin: int, cout: int, stride: int, _index: int) -> BlockParts:
    """Pre-activation bottleneck (He et al., 2016a; the paper's Fig. 4), stride on the 3x3."""
    config = ctx.config
    mid = max(1, cout // variants.RESNET_BOTTLENECK_RATIO)
    # In ReLU-BN-Conv every conv reads a BN output, which is not rectified.
    fed = not (ctx.batchnorm and config.order == "relu-bn-conv")
    fixup = ctx.fixup
    # FixUp: branch convs scaled by L^(-1/(2m-2)) with m = 3, the last conv zero.
    scale = ctx.num_blocks ** (-1 / 4) if fixup else None
    conv1 = Conv(cin, mid, 1, reads_activation=fed, fixup_scale=scale)
    conv2 = Conv(mid, mid, 3, stride, reads_activation=fed, fixup_scale=scale,
                 padding=ctx.padding)  # fmt: skip
    conv3 = Conv(mid, cout, 1, reads_activation=fed, fixup_scale=0.0 if fixup else None)
    if ctx.batchnorm:
        pre = ctx.norm_act(cin)  # BN-ReLU or ReLU-BN
    elif fixup:
        pre = Seq((Act(), Bias()))  # g(x), then FixUp's bias before conv1
    else:
        pre = Act()  # g(x); the block divides it by beta
    tail = (Scale(), Bias()) if fixup else ()
    branch = Seq(
        (conv1, ctx.norm_act(mid), conv2, ctx.norm_act(mid), conv3, *tail,
         *ctx.squeeze_excite(cout, variants.RESNET_SE_RATIO))
    )  # fmt: skip
    transition = stride > 1 or cin != cout
    shortcut = Conv(cin, cout, 1, stride, reads_activation=fed) if transition else None
    return pre, branch, shortcut, None


def _resnet_v1_block(ctx: _Ctx, cin: int, cout: int, stride: int, index: int) -> BlockParts:
    """Post-activation bottleneck (He et al., 2016b; Fig. 5): g(skip + BN(conv(...)))."""
    if ctx.fixup:
        return _fixup_v1_block(ctx, cin, cout, stride, index)
    mid = max(1, cout // variants.RESNET_BOTTLENECK_RATIO)

    def bn(channels: int) -> Layer:
        return BatchNorm(channels) if ctx.batchnorm else Identity()

    branch = Seq(
        (Conv(cin, mid, 1), bn(mid), Act(),
         Conv(mid, mid, 3, stride, padding=ctx.padding), bn(mid), Act(),
         Conv(mid, cout, 1), bn(cout),
         *ctx.squeeze_excite(cout, variants.RESNET_SE_RATIO))
    )  # fmt: skip
    transition = stride > 1 or cin != cout
    shortcut = Seq((Conv(cin, cout, 1, stride), bn(cout))) if transition else None
    return Identity(), branch, shortcut, Act()


def _fixup_v1_block(ctx: _Ctx, cin: int, cout: int, stride: int, _index: int) -> BlockParts:
    """The reference FixUp block (deepmind-research nfnets/fixup_resnet.py, after Zhang et
    al., 2019): a post-activation bottleneck without normalization,
    g(skip + f(x + b1a)), f = conv0, + b1b, g, + b2a, conv1, + b2b, g, + b3a, conv2, * s, + b3b:
    a scalar bias before every conv and activation, a scalar multiplier at the end.

    Its initialization: the last conv is zero, the others He-init over their fan-out
    (N(0, 2 / fan_out) for ReLU) scaled by L^(-1/(2m-2)) = L^(-1/4) for m = 3 convs per
    branch; the shortcut conv of a transition reads x + b1a, He-init over its fan-out,
    unscaled. The identity skip carries x itself, as Zhang et al.'s code does (the reference
    adds b1a to it too: the same at initialization, where b1a = 0).
    """
    mid = max(1, cout // variants.RESNET_BOTTLENECK_RATIO)
    scale = ctx.num_blocks ** (-1 / 4)
    conv0 = Conv(cin, mid, 1, fixup_scale=scale, fan="out")
    conv1 = Conv(mid, mid, 3, stride, fixup_scale=scale, padding=ctx.padding, fan="out")
    conv2 = Conv(mid, cout, 1, fixup_scale=0.0)
    branch = Seq(
        (conv0, *ctx.norm_act_layers(mid), conv1, *ctx.norm_act_layers(mid), conv2,
         Scale(), Bias(), *ctx.squeeze_excite(cout, variants.RESNET_SE_RATIO))
    )  # fmt: skip
    transition = stride > 1 or cin != cout
    shortcut = Conv(cin, cout, 1, stride, fan="out") if transition else None
    return Bias(), branch, shortcut, Act()


def _nf_regnet_block(ctx: _Ctx, cin: int, cout: int, stride: int, index: int) -> BlockParts:
    """NF-RegNet inverted bottleneck with grouped 3x3 conv and S+E (Appendix D.2 `NFBlock`).

    Its BN twin (norm "bn") is the pre-activation form of the same block, as in the BN
    ResNetV2: every g becomes BN then g (`norm_act`, which is g alone for NF).
    """
    # Following EfficientNets, the very first block does not expand (Appendix C).
    expansion = variants.NF_REGNET_EXPANSION if index > 0 else 1.0
    groups = max(1, int(cin * expansion) // variants.NF_REGNET_GROUP_SIZE)
    width = variants.NF_REGNET_GROUP_SIZE * groups  # whole groups, as the listing rounds
    # The listing bakes gamma into its activations, so the S+E MLP sees gamma * g too.
    gain_is_gamma = ctx.config.conv == "ws"
    branch = Seq(
        (Conv(cin, width, 1), *ctx.norm_act_layers(width),
         Conv(width, width, 3, stride, groups, padding=ctx.padding),
         *ctx.squeeze_excite(width, variants.NF_REGNET_SE_RATIO, gain_is_gamma),
         *ctx.norm_act_layers(width), Conv(width, cout, 1))
    )  # fmt: skip
    shortcut = None
    if stride > 1 or cin != cout:
        # Appendix B.4: average pooling then a 1x1 conv instead of a strided 1x1 conv.
        pool = AvgPool(ctx.padding) if stride > 1 else Identity()
        shortcut = Seq((pool, Conv(cin, cout, 1)))
    # NF: g(x), which the block divides by beta; BN: BN then g, as BN-ResNetV2's `pre`.
    return ctx.norm_act(cin), branch, shortcut, None


def _norm_act_head(ctx: _Ctx, channels: int) -> tuple[Layer, int]:
    """Pre-activation nets end with one more norm and g before pooling (g alone unless BN)."""
    return (ctx.norm_act(channels) if ctx.batchnorm else Act()), channels


def _no_head(ctx: _Ctx, channels: int) -> tuple[Layer, int]:
    """Nothing; FixUp's scalar bias before the classifier (the reference adds it to the
    pooled features: pooling commutes with it)."""
    return (Bias() if ctx.fixup else Identity()), channels


def _conv_norm_act_head(ctx: _Ctx, channels: int) -> tuple[Layer, int]:
    """A 1x1 expansion conv to 1280 * w channels, following EfficientNets (Appendix C): w
    scales with the variant's compound width, as the listing's int(1280 * in_channels // 440).
    The conv reads the last block's sum (no g before it); the BN twin normalizes its output."""
    final = int(variants.NF_REGNET_FINAL_WIDTH * channels // variants.NF_REGNET_FINAL_WIDTH_BASE)
    conv = Conv(channels, final, 1, reads_activation=False)
    return Seq((conv, *ctx.norm_act_layers(final))), final


STEMS: dict[str, Callable[[_Ctx, list[int]], tuple[Layer, int]]] = {
    "resnet": _resnet_stem,
    "resnet_postact": _resnet_postact_stem,
    "nf_regnet": _nf_regnet_stem,
}
BLOCKS: dict[str, Callable[[_Ctx, int, int, int, int], BlockParts]] = {
    "resnet_v2": _resnet_v2_block,
    "resnet_v1": _resnet_v1_block,
    "nf_regnet": _nf_regnet_block,
}
HEADS: dict[str, Callable[[_Ctx, int], tuple[Layer, int]]] = {
    "norm_act": _norm_act_head,
    "none": _no_head,
    "conv_norm_act": _conv_norm_act_head,
}
