"""The SPP of any PyTorch network: `measure(my_model)`.

    from nfcore import measure
    result = measure(my_model, resolution=64, batch=8)            # blocks found by themselves
    result = measure(my_model, blocks=["layer*.*"], residual=["layer*.*.bn3"], gradients=True)
    spp_figure([result, run_spp(SPPConfig(depth=50, norm="nf"))]).show()

The same engine as `nfcore.spp`: hooks reduce each block's output (and, where `residual`
names it, its residual branch f(x)) to the statistics of `nfcore.statistics` on the spot,
in `measurement_mode` (batch-statistics BatchNorm, eval otherwise), with the weights frozen
for the backward pass. Blocks are found as `nfcore.foreign` describes. Without `residual`
the residual statistics are null: never a guess presented as a measurement.

Statistics are per channel over the other axes: N,H,W of an N,C,H,W tensor; N of an N,C
tensor (an MLP); N,L of token tensors, N,L,C with `channels="last"` (a Transformer or
MLP-Mixer). The result says which (`meta.reduced_over`). With `gradients`, the loss is the
cross-entropy of random labels when the network outputs N x K logits (as for nfcore's
networks), else half the mean square of its output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nfcore import __version__
from nfcore.devices import describe_device, resolve_device
from nfcore.foreign import (
    BlockSpec,
    FoundBlock,
    block_shapes,
    find_blocks,
    match_residuals,
    stages_and_transitions,
)
from nfcore.foreign_config import ForeignConfig
from nfcore.inputs import gaussian, input_batch
from nfcore.result import BlockStats, SPPMeta, SPPResult, finite_or_none
from nfcore.spp import ProgressCallback, Recorder, forward_pass, measurement_mode

AXIS_NAMES = {1: "N", 2: "N,L", 3: "N,H,W"}  # by the number of axes besides the channel's


def measure(
    model: nn.Module,
    *,
    resolution: int = 64,
    batch: int = 8,
    input: str = "gaussian",
    input_shape: Sequence[int] | None = None,
    channels: str = "first",
    blocks: BlockSpec = "auto",
    residual: BlockSpec | None = None,
    gradients: bool = False,
    extra_stats: bool = False,
    seed: int = 0,
    device: str = "auto",
    name: str | None = None,
    progress: ProgressCallback | None = None,
) -> SPPResult:
    """The SPP of `model` at its current weights (see the module docstring)."""

    def described(spec: BlockSpec | None) -> Any:
        if spec is None or (isinstance(spec, str) and spec == "auto"):
            return spec
        if callable(spec):
            return (f"<{getattr(spec, '__name__', 'function')}>",)
        return (spec,) if isinstance(spec, str) else tuple(spec)

    config = ForeignConfig(
        model=type(model).__name__, blocks=described(blocks), residual=described(residual),
        resolution=resolution, batch=batch, input=input,
        input_shape=tuple(input_shape) if input_shape is not None else None, channels=channels,
        seed=seed, device=device, gradients=gradients, extra_stats=extra_stats, name=name,
    )  # fmt: skip
    return measure_config(model, config, blocks=blocks, residual=residual, progress=progress)


def measure_config(
    model: nn.Module,
    config: ForeignConfig,
    *,
    blocks: BlockSpec | None = None,
    residual: BlockSpec | None = None,
    progress: ProgressCallback | None = None,
    device: str | None = None,
) -> SPPResult:
    """`measure` for a config (the CLI's and the worker's); `blocks` and `residual` default to
    the config's patterns (a callable can only be given here)."""
    blocks_spec: BlockSpec = blocks if blocks is not None else _spec(config.blocks)
    residual_spec = residual if residual is not None else config.residual
    torch_device = resolve_device(device or config.device)
    model.to(torch_device)
    x = foreign_input(config).to(torch_device)
    found = find_blocks(model, blocks_spec)
    residuals = (
        match_residuals(model, found, _spec(residual_spec))
        if residual_spec is not None
        else [None] * len(found)
    )
    shapes = block_shapes(model, found, x)
    stages, transitions = stages_and_transitions(found, shapes)
    recorder = Recorder(
        [(block.module, residual) for block, residual in zip(found, residuals, strict=True)],
        extra_stats=config.extra_stats,
        gradients=config.gradients,
        progress=progress,
        view=lambda tensor: as_channels_first(tensor.detach(), config.channels),
    )
    start = time.perf_counter()
    with measurement_mode(model, torch_device):
        recorder.attach()
        try:
            forward_pass(model, x, gradients=config.gradients, seed=config.seed)
        finally:
            recorder.detach()
    records = recorder.records()
    seconds = time.perf_counter() - start
    out_shape = shapes[0][1]
    other_axes = len(out_shape) - 1 if len(out_shape) > 1 else 1
    return _result(config, model, found, stages, transitions, records, torch_device, seconds,
                   AXIS_NAMES.get(other_axes, f"{other_axes} axes"))  # fmt: skip


def _spec(value: Any) -> BlockSpec:
    return value if isinstance(value, str) else list(value)


def foreign_input(config: ForeignConfig) -> Tensor:
    """N(0,1) of `input_shape` per example, else the images `nfcore.inputs` makes."""
    if config.input_shape is None:
        return input_batch(config.input, config.batch, config.resolution, config.seed)
    return gaussian((config.batch, *config.input_shape), config.seed)


def as_channels_first(y: Tensor, channels: str) -> Tensor:
    """`y` as N x C x (the other axes flattened) x 1, the layout the reductions take."""
    if y.ndim == 4 and channels == "first":
        return y
    if y.ndim < 2:
        raise ValueError(f"a block's output has shape {tuple(y.shape)}: no channel axis")
    if channels == "last":
        y = y.movedim(-1, 1)
    return y.reshape(y.shape[0], y.shape[1], -1, 1)


def _result(
    config: ForeignConfig,
    model: nn.Module,
    found: Sequence[FoundBlock],
    stages: list[int],
    transitions: list[bool],
    records: list[dict[str, float]],
    device: torch.device,
    seconds: float,
    reduced_over: str,
) -> SPPResult:
    blocks, nonfinite_from = [], None
    for index, (block, record) in enumerate(zip(found, records, strict=True)):
        values = {key: finite_or_none(value) for key, value in record.items()}
        if nonfinite_from is None and any(
            values.get(k) is None for k in ("avg_channel_var", "avg_sq_channel_mean")
        ):
            nonfinite_from = index
        values.setdefault("residual_avg_channel_var", None)  # not named: not measured
        expected = getattr(block.module, "expected_var", None)  # where a block declares one
        blocks.append(
            BlockStats(
                index=index, stage=stages[index], transition=transitions[index], name=block.name,
                expected_var=expected if isinstance(expected, float) else None, **values,
            )
        )  # fmt: skip
    stage_ends = [
        i for i in range(len(stages)) if i + 1 == len(stages) or stages[i + 1] != stages[i]
    ]
    meta = SPPMeta(
        version=__version__,
        torch_version=torch.__version__,
        device=describe_device(device),
        seconds=round(seconds, 4),
        parameter_count=sum(p.numel() for p in model.parameters()),
        gamma=None,
        model=config.label,
        num_blocks=len(blocks),
        stage_ends=stage_ends,
        nonfinite_from_block=nonfinite_from,
        reduced_over=reduced_over,
    )
    return SPPResult(config=config, blocks=blocks, meta=meta)
