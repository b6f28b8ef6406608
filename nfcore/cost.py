"""What a run will cost, known before it runs: FLOPs, activation memory and parameters.

The API refuses jobs that are too expensive before enqueueing them, and it never imports
torch; so this module walks the networks of `nfcore.models` on paper, layer by layer, from the
same config and tables. A change to a layer there needs the same change here:
tests/nfcore/test_cost.py checks the parameters exactly and the FLOPs against torch's counter.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from nfcore import variants
from nfcore.config import ModelConfig, SPPConfig

FLOAT32_BYTES = 4


@dataclass(frozen=True)
class Cost:
    """The cost of one run, for the whole batch.

    - `flops`: the convolutions and the classifier, a multiply-add counted as 2 FLOPs (as
      `torch.utils.flop_counter` counts); BN, activations, pooling and sums are left out. With
      gradients, the backward pass adds about as much again: it computes input gradients only
      (the SPP engine freezes the weights), one transposed conv per conv.
    - `activation_bytes`: the estimated peak float32 activation memory (weights, and the Scaled
      WS weights cached once per run, are not activations). Under `no_grad` a tensor dies as
      soon as nothing refers to it, so the peak falls inside one unit (stem, block or head):
      the block input x, pre(x) / beta, the shortcut's output, and the larger of the branch's
      largest pair of consecutive tensors (a layer's input and output) and the three
      output-sized tensors at the block's end (f, alpha * f, the sum); plus the input image.
      This matches the live storages torch creates (tests/nfcore/test_cost.py). With gradients
      autograd keeps the input of every conv, BN, activation, S+E and pool (a ReLU keeps its
      output instead, often also the next conv's input: counted twice) for the backward pass,
      which adds one unit's peak of gradients in flight: 1.3 to 1.6 times the measured peak.
    - `parameters`: exact, as `nfcore.models.parameter_count`.
    - `weight_bytes`: the float32 weights, and with Scaled WS the standardized copy of them
      that the engine caches for the run (counted for every parameter: an upper bound).
    - `blocks`: residual blocks.
    """

    flops: int
    activation_bytes: int
    parameters: int
    blocks: int
    weight_bytes: int = 0

    @property
    def memory_bytes(self) -> int:
        """Estimated peak memory of the run: the weights and the activations."""
        return self.weight_bytes + self.activation_bytes


def conv_out(size: int, kernel: int, stride: int = 1) -> int:
    """Output side of a conv (or the stem's 3x3 max-pool) padded by kernel // 2."""
    return (size + 2 * (kernel // 2) - kernel) // stride + 1


def avg_pool_out(size: int) -> int:
    """Output side of NF-RegNet's 2x2 stride-2 average pool with ceil_mode: ceil(size / 2)."""
    return (size + 1) // 2


@dataclass
class _Path:
    """A running tally along one path of the network, per image: the shape it has reached, its
    FLOPs and parameters, and the elements of every tensor it creates, in order."""

    channels: int
    size: int  # height = width
    ws: bool  # Scaled WS convs carry a bias and a gain per output channel; plain convs neither
    flops: int = 0
    params: int = 0
    created: list[int] = field(default_factory=list)
    saved: int = 0  # elements autograd keeps: the inputs of convs, BN, activations, S+E, pools

    @property
    def numel(self) -> int:
        return self.channels * self.size**2

    def fork(self) -> _Path:
        """A new path that reads this one's output."""
        return _Path(self.channels, self.size, self.ws)

    def conv(self, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> _Path:
        fan_in = self.channels // groups * kernel**2
        self.saved += self.numel
        self.size = conv_out(self.size, kernel, stride)
        self.channels = cout
        self.flops += 2 * fan_in * cout * self.size**2
        return self.map(fan_in * cout + (2 * cout if self.ws else 0), saves=False)

    def map(self, params: int = 0, saves: bool = True) -> _Path:
        """A shape-keeping op: BN (2C parameters) or an activation, which autograd saves the
        input (or output) of; a FixUp scalar or / beta (`saves=False`), which it does not."""
        self.saved += self.numel if saves else 0
        self.params += params
        self.created.append(self.numel)
        return self

    def pool(self, size: int) -> _Path:
        self.saved += self.numel
        self.size = size
        return self.map(saves=False)

    def squeeze_excite(self, ratio: float, se_gain: float | None) -> _Path:
        """S+E (layers.SqueezeExcite): two biased 1x1 convs on the pooled N,C,1,1 vector."""
        if not se_gain:
            return self
        channels, hidden = self.channels, max(1, int(self.channels * ratio))
        self.flops += 4 * channels * hidden
        return self.map(2 * channels * hidden + hidden + channels)

    def largest_pair(self) -> int:
        """Most elements alive at once along the path: a layer's output and the next one's."""
        sizes = [0, 0, *self.created]  # the first layer reads the path's input, counted apart
        return max(a + b for a, b in itertools.pairwise(sizes))


@dataclass(frozen=True)
class _Unit:
    """Stem, residual block or head, per image; `peak` and `saved` count tensor elements."""

    flops: int
    params: int
    peak: int  # alive at once while it runs without gradients (the image aside)
    saved: int  # what autograd keeps for the backward pass

    @classmethod
    def along(cls, path: _Path, held: int = 0, flops: int = 0, params: int = 0) -> _Unit:
        """A unit without a skip (stem, head), its input of `held` elements alive throughout."""
        return cls(path.flops + flops, path.params + params, held + path.largest_pair(), path.saved)


def _block(config: ModelConfig, x: _Path, pre: _Path, branch: _Path, short: _Path | None) -> _Unit:
    """x_{l+1} = post(skip + alpha * gain * f(pre(x) / beta)) (`nfcore.blocks.ResidualBlock`)."""
    paths = [p for p in (pre, branch, short) if p is not None]
    skip = short.numel if short else 0  # an identity skip is x itself
    end = skip + max(branch.largest_pair(), 3 * branch.numel)  # f, alpha * f and the sum at most
    post = int(config.family == "resnetv1")  # g(the sum), the only op at the end that saves
    during = max(short.largest_pair() if short else 0, end)
    return _Unit(
        sum(p.flops for p in paths),
        sum(p.params for p in paths) + int(bool(config.skipinit)),  # SkipInit's scalar gain
        x.numel + max(pre.largest_pair(), pre.numel + during),
        sum(p.saved for p in paths) + post * branch.numel,
    )


def _norm_act(path: _Path, norm: str | None) -> _Path:
    """Between two ResNetV2 (or NF-RegNet) convs: BN and g in either order, FixUp's bias, g,
    bias, or g (`models._Parts.norm_act`)."""
    if norm == "bn":
        return path.map(2 * path.channels).map()
    return path.map(1, saves=False).map().map(1, saves=False) if norm == "fixup" else path.map()


def _resnet_v2_block(config: ModelConfig, x: _Path, cout: int, stride: int, _: int) -> _Unit:
    """Pre-activation bottleneck, stride on the 3x3 conv (`models._resnet_v2_block`)."""
    mid = max(1, cout // variants.RESNET_BOTTLENECK_RATIO)
    pre = x.fork()
    if config.norm == "fixup":
        pre.map().map(1, saves=False)  # g, then FixUp's bias
    else:
        _norm_act(pre, "bn" if config.norm == "bn" else None)
    pre.map(saves=False)  # / beta
    branch = _norm_act(pre.fork().conv(mid, 1), config.norm).conv(mid, 3, stride)
    _norm_act(branch, config.norm).conv(cout, 1)
    if config.norm == "fixup":
        branch.map(1, saves=False).map(1, saves=False)  # FixUp's scale and bias
    branch.squeeze_excite(variants.RESNET_SE_RATIO, config.se_gain)
    short = pre.fork().conv(cout, 1, stride) if stride > 1 or x.channels != cout else None
    return _block(config, x, pre, branch, short)


def _resnet_v1_block(config: ModelConfig, x: _Path, cout: int, stride: int, _: int) -> _Unit:
    """Post-activation bottleneck: g(skip + BN(conv(...))) (`models._resnet_v1_block`)."""
    mid = max(1, cout // variants.RESNET_BOTTLENECK_RATIO)

    def bn(path: _Path) -> _Path:
        return path.map(2 * path.channels) if config.norm == "bn" else path

    pre = x.fork().map(saves=False)  # no pre-activation, but / beta
    branch = bn(pre.fork().conv(mid, 1)).map().conv(mid, 3, stride)
    bn(bn(branch).map().conv(cout, 1)).squeeze_excite(variants.RESNET_SE_RATIO, config.se_gain)
    short = bn(pre.fork().conv(cout, 1, stride)) if stride > 1 or x.channels != cout else None
    return _block(config, x, pre, branch, short)


def _nf_regnet_block(config: ModelConfig, x: _Path, cout: int, stride: int, index: int) -> _Unit:
    """Inverted bottleneck, grouped 3x3 conv, S+E (`models._nf_regnet_block`); the BN twin
    has BN before every g."""
    # Following EfficientNets, the very first block does not expand (Appendix C).
    expansion = variants.NF_REGNET_EXPANSION if index > 0 else 1.0
    groups = max(1, int(x.channels * expansion) // variants.NF_REGNET_GROUP_SIZE)
    width = variants.NF_REGNET_GROUP_SIZE * groups
    pre = _norm_act(x.fork(), config.norm).map(saves=False)  # (BN,) g, / beta
    branch = _norm_act(pre.fork().conv(width, 1), config.norm).conv(width, 3, stride, groups)
    branch.squeeze_excite(variants.NF_REGNET_SE_RATIO, config.se_gain)
    _norm_act(branch, config.norm).conv(cout, 1)
    short = None
    if stride > 1 or x.channels != cout:
        short = pre.fork().pool(avg_pool_out(x.size)) if stride > 1 else pre.fork()
        short.conv(cout, 1)
    return _block(config, x, pre, branch, short)


_BLOCKS = {
    "resnetv2": _resnet_v2_block,
    "resnetv1": _resnet_v1_block,
    "nf_regnet": _nf_regnet_block,
}


def _units(config: ModelConfig, resolution: int) -> list[_Unit]:
    """Stem, every residual block, and the head with the classifier, in order."""
    regnet = config.family == "nf_regnet"
    x = _Path(3, resolution, ws=config.conv == "ws")
    if regnet:
        variant = variants.NF_REGNET_VARIANTS[str(config.variant)]
        # Same float expression as the builder: int() truncates, so the order of products counts.
        widths = [
            max(1, int(w * variants.NF_REGNET_WIDTH * config.width)) for w in variant["width"]
        ]
        x.conv(widths[0], 3, 2)
    else:
        widths = [max(1, round(w * config.width)) for w in variants.RESNET_STAGE_WIDTHS]
        x.conv(max(1, round(variants.RESNET_STEM_WIDTH * config.width)), 7, 2)
        if config.family == "resnetv1":
            (x.map(2 * x.channels) if config.norm == "bn" else x).map()  # BN, g
        if config.maxpool:
            x.pool(conv_out(x.size, 3, 2))
    units = [_Unit.along(x)]  # the image is counted in `estimate`
    index = 0
    for stage, (cout, depth) in enumerate(zip(widths, config.stage_layout, strict=False)):
        for block_in_stage in range(depth):
            stride = 2 if block_in_stage == 0 and (stage > 0 or regnet) else 1
            units.append(_BLOCKS[config.family](config, x.fork(), cout, stride, index))
            x = _Path(cout, conv_out(x.size, 3, stride), x.ws)
            index += 1
    head = x.fork()
    if regnet:  # a 1x1 conv to int(1280 * c_last // 440) channels, then (BN and) g
        final = (
            variants.NF_REGNET_FINAL_WIDTH * head.channels // variants.NF_REGNET_FINAL_WIDTH_BASE
        )
        _norm_act(head.conv(final, 1), config.norm)
    elif config.family == "resnetv2":
        _norm_act(head, "bn" if config.norm == "bn" else None)
    features, classes = head.channels, config.num_classes  # global average pool, classifier
    units.append(_Unit.along(head, x.numel, 2 * features * classes, features * classes + classes))
    return units


def estimate(
    config: SPPConfig | ModelConfig, batch: int | None = None, resolution: int | None = None
) -> Cost:
    """The cost of a forward pass of `config`'s network on a float32 batch of square images,
    plus the backward pass when an SPPConfig asks for gradients (see `Cost`).

    `batch` and `resolution` default to an SPPConfig's; a ModelConfig needs them given.
    """
    if isinstance(config, SPPConfig):
        batch = config.batch if batch is None else batch
        resolution = config.resolution if resolution is None else resolution
    if batch is None or resolution is None:
        raise ValueError("estimate: a ModelConfig needs a batch and a resolution")
    if batch < 1 or resolution < 1:
        raise ValueError(f"estimate: batch {batch} and resolution {resolution} must be positive")
    units = _units(config, resolution)
    flops = sum(u.flops for u in units)
    elements = max(u.peak for u in units)
    if isinstance(config, SPPConfig) and config.gradients:
        flops *= 2  # input gradients only: one transposed conv (or matmul) per conv
        elements += sum(u.saved for u in units)
    elements += 3 * resolution**2  # the input image, alive all through
    parameters = sum(u.params for u in units)
    return Cost(
        flops=batch * flops,
        activation_bytes=FLOAT32_BYTES * batch * elements,
        parameters=parameters,
        blocks=config.num_blocks,
        weight_bytes=FLOAT32_BYTES * parameters * (2 if config.conv == "ws" else 1),
    )
