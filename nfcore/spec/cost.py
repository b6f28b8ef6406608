"""What a run will cost, known before it runs: FLOPs, activation memory and parameters, and for
a training run how long it takes in FLOP-equivalents (its layers' fixed cost counted too).

The API refuses jobs that are too expensive before enqueueing them, and it never imports
torch; so this module sums over the same plan of layers (`nfcore.spec.plan`) that `nfcore.engine.models`
builds the network from: tests/nfcore/spec/test_cost.py checks the parameters exactly, the FLOPs
against torch's counter and the memory against the storages torch creates.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from nfcore.spec import plan
from nfcore.spec.config import ModelConfig, SPPConfig, TrainConfig

FLOAT32_BYTES = 4
# A training step computes the input gradients (what `estimate` counts with gradients) and
# the weight gradients too: about one more forward pass, so 3 forward passes in all.
TRAIN_STEP_FACTOR = 1.5
EVAL_BATCH = 256  # held-out examples per forward pass of an evaluation (`nfcore.training.train`)

# A layer's fixed cost beside its FLOPs (dispatching its kernels, autograd's bookkeeping, the
# optimizer's update of its weights), in the FLOPs a compute-bound layer does meanwhile. A
# deep, narrow network at a small resolution is bound by it, not by its FLOPs: NF-ResNetV2-600
# at width 0.0625, 32 px, batch 2 (4.4e7 FLOPs a training step, 1808 layer calls) takes 0.24 s
# a step on one thread of a 2-core Xeon (torch 2.13, CPU) and 0.75 to 1.06 s on two, hundreds
# of times what its FLOPs take. Measured there on two threads (a worker's default), with
# other jobs running, per layer call: a training step 160-185 us, an SPP 105-525 us, a
# forward pass 28-36 us, while a compute-bound training step (BN-ResNet-50, 32 px, batch 32)
# ran at 5.0e10-5.9e10 FLOP/s; times that rate (one thread gives about a third):
LAYER_CALL_FLOPS: dict[str, float] = {
    "forward": 2e6,  # measured 1.7e6-1.9e6 (a forward pass without gradients, as evaluations)
    "spp": 6e6,  # 5.2e6-2.6e7 (the engine's hooks and statistics on every block)
    "step": 1e7,  # 8.2e6-9.4e6 (forward, backward, clipping, the SGD update)
}


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
      This matches the live storages torch creates (tests/nfcore/spec/test_cost.py). With gradients
      autograd keeps the input of every conv, BN, activation, S+E and pool (a ReLU keeps its
      output instead, often also the next conv's input: counted twice) for the backward pass,
      which adds one unit's peak of gradients in flight: 1.3 to 1.6 times the measured peak.
    - `parameters`: exact (`parameter_count`), as the built network's.
    - `weight_bytes`: the float32 weights, and with Scaled WS the standardized copy of them
      that the engine caches for the run (counted for every parameter: an upper bound).
    - `blocks`: residual blocks.
    - `layer_calls`: the layers one forward pass runs, each one op (a conv, BN, activation, pool,
      / beta, the classifier, ...), whatever the batch: each has a fixed cost besides its FLOPs
      (`LAYER_CALL_FLOPS`).
    """

    flops: int
    activation_bytes: int
    parameters: int
    blocks: int
    weight_bytes: int = 0
    layer_calls: int = 0

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
    # Beside each created tensor: elements alive only while the layer making it runs (the
    # padded copy of its input that a circular border needs).
    scratch: list[int] = field(default_factory=list)
    saved: int = 0  # elements autograd keeps: the inputs of convs, BN, activations, S+E, pools

    @property
    def numel(self) -> int:
        return self.channels * self.size**2

    def fork(self) -> _Path:
        """A new path that reads this one's output."""
        return _Path(self.channels, self.size, self.ws)

    def padded(self, border: int, circular: bool) -> int:
        """Elements of the padded copy of the path's tensor that a circular border makes
        (`border` pixels before, `border` after); none with zeros padding, done in the op."""
        return self.channels * (self.size + 2 * border) ** 2 if circular and border else 0

    def conv(self, step: plan.Conv) -> _Path:
        fan_in = self.channels // step.groups * step.kernel**2
        padded = self.padded(step.kernel // 2, step.padding == "circular")
        self.saved += padded or self.numel  # autograd keeps what the conv read
        self.size = conv_out(self.size, step.kernel, step.stride)
        self.channels = step.cout
        self.flops += 2 * fan_in * step.cout * self.size**2
        params = fan_in * step.cout + (2 * step.cout if self.ws else 0)
        return self.map(params, saves=False, scratch=padded)

    def map(self, params: int = 0, saves: bool = True, scratch: int = 0) -> _Path:
        """A shape-keeping op: BN (2C parameters) or an activation, which autograd saves the
        input (or output) of; a FixUp scalar or / beta (`saves=False`), which it does not."""
        self.saved += self.numel if saves else 0
        self.params += params
        self.created.append(self.numel)
        self.scratch.append(scratch)
        return self

    def pool(self, size: int, padded: int = 0) -> _Path:
        self.saved += padded or self.numel
        self.size = size
        return self.map(saves=False, scratch=padded)

    def largest_pair(self) -> int:
        """Most elements alive at once along the path: a layer's input and output (and its
        padded copy of the input)."""
        inputs = [0, *self.created][: len(self.created)]  # the path's input is counted apart
        alive = (a + s + b for a, s, b in zip(inputs, self.scratch, self.created, strict=True))
        return max(alive, default=0)


@dataclass(frozen=True)
class _Unit:
    """Stem, residual block or head, per image; `peak` and `saved` count tensor elements."""

    flops: int
    params: int
    peak: int  # alive at once while it runs without gradients (the image aside)
    saved: int  # what autograd keeps for the backward pass
    calls: int  # layers run (one op each: a conv, BN, activation, pool, / beta, ...)

    @classmethod
    def along(cls, path: _Path, held: int = 0, flops: int = 0, params: int = 0) -> _Unit:
        """A unit without a skip (stem, head), its input of `held` elements alive throughout."""
        peak = held + path.largest_pair()
        return cls(path.flops + flops, path.params + params, peak, path.saved, len(path.created))


def _run(path: _Path, layer: plan.Layer | None) -> _Path:
    """Tally the planned layers along `path`, in the order they run."""
    for step in plan.flat(layer):
        match step:
            case plan.Conv():
                path.conv(step)
            case plan.BatchNorm():
                path.map(2 * path.channels)
            case plan.Act():
                path.map()
            case plan.Bias() | plan.Scale():
                path.map(1, saves=False)  # FixUp's scalars
            case plan.SqueezeExcite(channels, hidden):
                # Two biased 1x1 convs on the pooled N,C,1,1 vector.
                path.flops += 4 * channels * hidden
                path.map(2 * channels * hidden + hidden + channels)
            case plan.MaxPool(padding):
                path.pool(conv_out(path.size, 3, 2), path.padded(1, padding == "circular"))
            case plan.AvgPool(padding):
                # Circular completes an odd side's last window: a copy one pixel larger.
                odd = path.size % 2 == 1 and padding == "circular"
                padded = path.channels * (path.size + 1) ** 2 if odd else 0
                path.pool(avg_pool_out(path.size), padded)
    return path


BLOCK_END_CALLS = 2  # alpha * gain * f, and its sum with the skip


def _block(block: plan.BlockPlan, x: _Path) -> tuple[_Unit, _Path]:
    """x_{l+1} = post(skip + alpha * gain * f(pre(x) / beta)) (`nfcore.engine.blocks.ResidualBlock`),
    and the path of its output."""
    pre = _run(x.fork(), block.pre).map(saves=False)  # / beta
    branch = _run(pre.fork(), block.branch)
    short = None if block.shortcut is None else _run(pre.fork(), block.shortcut)
    paths = [p for p in (pre, branch, short) if p is not None]
    skip = short.numel if short else 0  # an identity skip is x itself
    end = skip + max(branch.largest_pair(), 3 * branch.numel)  # f, alpha * f and the sum at most
    post = int(block.post is not None)  # g(the sum), the only op at the end that saves
    during = max(short.largest_pair() if short else 0, end)
    unit = _Unit(
        sum(p.flops for p in paths),
        sum(p.params for p in paths) + int(block.skipinit),  # SkipInit's scalar gain
        x.numel + max(pre.largest_pair(), pre.numel + during),
        sum(p.saved for p in paths) + post * branch.numel,
        sum(len(p.created) for p in paths) + BLOCK_END_CALLS + post,
    )
    return unit, _Path(branch.channels, branch.size, x.ws)


def _units(config: ModelConfig, resolution: int) -> list[_Unit]:
    """Stem, every residual block, and the head with the classifier, in order."""
    layers = plan.plan(config)
    x = _run(_Path(3, resolution, ws=config.conv == "ws"), layers.stem)
    units = [_Unit.along(x)]  # the image is counted in `estimate`
    for block in layers.blocks:
        unit, x = _block(block, x.fork())
        units.append(unit)
    head = _run(x.fork(), layers.head)
    features, classes = head.channels, config.num_classes  # global average pool, classifier
    classifier = _Unit.along(head, x.numel, 2 * features * classes, features * classes + classes)
    units.append(replace(classifier, calls=classifier.calls + 1))
    return units


def parameter_count(config: ModelConfig) -> int:
    """Number of parameters of `config`'s network, exactly as built (torch-free)."""
    return estimate(config, batch=1, resolution=config.total_stride).parameters


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
        layer_calls=sum(u.calls for u in units),
    )


@dataclass(frozen=True)
class TrainCost:
    """What a training run costs: one step (forward and backward on the batch), one of its
    SPPs and one evaluation batch (forward); in FLOP-equivalents (their FLOPs and their layers'
    fixed cost, `LAYER_CALL_FLOPS`) one step, one SPP and one evaluation, and all of them
    together over the run (`total`, of which `overhead` is the layers' fixed cost).
    """

    step: Cost
    spp: Cost
    eval: Cost
    per_step: int
    per_spp: int
    per_eval: int
    total: int
    overhead: int = 0

    def total_for(self, config: TrainConfig) -> int:
        """`total` for a run like the costed one with other steps, SPPs or evaluations."""
        return _over_run(config, self.per_step, self.per_spp, self.per_eval)

    def affordable_steps(self, config: TrainConfig, budget: float) -> int:
        """The most steps of `config` (its other settings kept) whose total is within `budget`;
        0 when not even one step is."""
        low, high = 0, config.steps + 1  # total_for(low) fits (or low is 0); high's does not
        while high - low > 1:
            middle = (low + high) // 2
            fits = self.total_for(config.model_copy(update={"steps": middle})) <= budget
            low, high = (middle, high) if fits else (low, middle)
        return low


def train_costs(config: TrainConfig) -> TrainCost:
    """The `TrainCost` of `config`; evaluations are counted on `eval_examples` (a data set
    may hold fewer)."""
    spp = config.spp_config()
    step = estimate(spp.model_copy(update={"batch": config.batch, "gradients": True}))
    # Beside the weights: their gradients, the momentum buffers, the EMA copy, and with Scaled
    # WS the standardized weights that autograd keeps for the backward pass.
    copies = 3 + int(config.ema_decay is not None) + int(config.conv == "ws")
    step = replace(
        step,
        flops=round(step.flops * TRAIN_STEP_FACTOR),
        weight_bytes=copies * FLOAT32_BYTES * step.parameters,
    )
    snapshot = estimate(spp)
    evaluation = estimate(config, min(EVAL_BATCH, config.eval_examples), config.resolution)
    per_example = estimate(config, batch=1, resolution=config.resolution).flops
    calls = snapshot.layer_calls  # the same network in all three
    batches = math.ceil(config.eval_examples / EVAL_BATCH)
    overheads = (
        round(calls * LAYER_CALL_FLOPS["step"]),
        round(calls * LAYER_CALL_FLOPS["spp"]),
        round(batches * calls * LAYER_CALL_FLOPS["forward"]),
    )
    per_step, per_spp, per_eval = (
        step.flops + overheads[0],
        snapshot.flops + overheads[1],
        config.eval_examples * per_example + overheads[2],
    )
    total = _over_run(config, per_step, per_spp, per_eval)
    overhead = _over_run(config, *overheads)
    return TrainCost(step, snapshot, evaluation, per_step, per_spp, per_eval, total, overhead)


def _over_run(config: TrainConfig, per_step: int, per_spp: int, per_eval: int) -> int:
    """All steps, SPPs and evaluations of `config`'s run at these costs each."""
    return (
        config.steps * per_step
        + len(config.spp_steps) * per_spp
        + len(config.eval_steps) * per_eval
    )
