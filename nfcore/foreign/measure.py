"""The SPP of any PyTorch network: `measure(my_model)`.

    from nfcore import measure
    result = measure(my_model, resolution=64, batch=8)            # blocks found by themselves
    result = measure(my_model, blocks=["layer*.*"], residual=["layer*.*.bn3"], gradients=True)
    spp_figure([result, run_spp(SPPConfig(depth=50, norm="nf"))]).show()

The same engine as `nfcore.engine.spp`, in `measurement_mode` (batch-statistics BatchNorm, eval
otherwise), with the weights frozen for the backward pass. Blocks and their layouts are
found as `nfcore.foreign.discovery` describes, from the measured pass itself, traced: the shapes, the
stages and the statistics come from that one pass (and its backward with `gradients`), and
`meta.seconds` counts all of it. The outputs of the calls that may be blocks are kept
during the pass and reduced after it, in the layout decided then (`nfcore.foreign.reduce`).
Measured again, the same model object is not traced: what was decided is reused with plain
hooks on its blocks (`nfcore.foreign.plan`), as long as its module tree is unchanged.
Without `residual` the residual statistics are null: never a guess presented as a
measurement.

Statistics are per channel over the other axes: N,H,W of N,C,H,W or N,H,W,C images; N of
N,C vectors (an MLP); N,L of N,L,C tokens (a Transformer, an MLP-Mixer) or N,C,L sequences.
The layout is decided from what the network does (`nfcore.foreign.layouts`), or as `channels` asks;
the result says which (`meta.layout`, `meta.reduced_over`) and why (`meta.notes`). With
`gradients`, the loss is the cross-entropy of random labels when the network outputs N x K
logits (as for nfcore's networks), else half the mean square of its output.
"""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Hashable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm

from nfcore import __version__
from nfcore.engine.devices import describe_device, resolve_device
from nfcore.engine.inputs import gaussian, input_batch
from nfcore.engine.spp import ProgressCallback, forward_pass, measurement_mode
from nfcore.foreign.discovery import (
    BlockSpec,
    Discovery,
    blocks_of,
    layout_summary,
    match_residuals,
    select,
    stages_and_transitions,
)
from nfcore.foreign.plan import Plan, forget, measure_blocks, recall, reduce_at_once, remember
from nfcore.foreign.residuals import listed
from nfcore.foreign.trace import recording
from nfcore.foreign.tracing import TracingRecorder
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import BlockStats, SPPMeta, SPPResult, finite_or_none

# The blocks found, their statistics, stages and transitions.
Measured = tuple[Discovery, list[dict[str, float]], list[int], list[bool]]


def measure(
    model: nn.Module,
    *,
    resolution: int = 64,
    batch: int = 8,
    input: str = "gaussian",
    input_shape: Sequence[int] | None = None,
    channels: str = "auto",
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
    x: Tensor | None = None,
) -> SPPResult:
    """`measure` for a config (the CLI's and the worker's); `blocks` and `residual` default to
    the config's patterns (a callable can only be given here). `x`: a batch of the caller's
    own (a tracker's probe) instead of the one the config describes; the result says so."""
    start = time.perf_counter()
    blocks_spec: BlockSpec = blocks if blocks is not None else _spec(config.blocks)
    residual_spec = residual if residual is not None else config.residual
    torch_device = resolve_device(device or config.device)
    modules = dict(model.named_modules())
    parameters = _on_device(model, modules, torch_device)
    given = x is not None
    x = (foreign_input(config) if x is None else x).to(torch_device)
    key = _plan_key(x, config.channels, blocks_spec, residual_spec)
    plan = recall(model, key, modules) if key is not None else None
    with _measuring(model, modules, torch_device), _no_cyclic_gc():
        planned = None if plan is None else _by_plan(model, x, plan, modules, config, progress)
        if isinstance(planned, tuple):
            found, records, stages, transitions = planned
        else:
            found, records, stages, transitions = _traced(
                model, x, modules, blocks_spec, residual_spec, config, progress, key
            )
            if planned is not None:  # the plan no longer held
                found = replace(found, notes=[*found.notes, f"the model changed since it was "
                                              f"last measured ({planned}): traced afresh"])  # fmt: skip
    if given:
        found = replace(found, notes=[*found.notes, "measured on the batch given by the caller"])
    seconds = time.perf_counter() - start  # the whole call: one pass finds and measures
    return _result(config, found, stages, transitions, records, parameters, torch_device,
                   seconds)  # fmt: skip


def _traced(
    model: nn.Module,
    x: Tensor,
    modules: dict[str, nn.Module],
    blocks_spec: BlockSpec,
    residual_spec: BlockSpec | None,
    config: ForeignConfig,
    progress: ProgressCallback | None,
    key: Hashable | None,
) -> Measured:
    """The traced pass: blocks and layouts found, their statistics measured (the blocks it
    did not take for candidates in a second pass), and the plan kept for next time."""
    taps = [] if residual_spec is None else select(model, _spec(residual_spec), "residual")
    recorder = TracingRecorder(modules, blocks_spec, [m for _, m in taps], config, progress)
    tracing = recording(model, recorder.trace, recorder.call_ended,
                        keep=frozenset(recorder.taps | recorder.always), modules=modules)  # fmt: skip
    with tracing:
        forward_pass(model, x, gradients=config.gradients, seed=config.seed)
    recorder.trace.forget_tensors()
    found = blocks_of(model, recorder.trace, blocks_spec, config.channels,
                      recorder.finder.found, recorder.readers, explain=False,
                      modules=modules)  # fmt: skip
    residuals = (
        match_residuals(model, found.blocks, _spec(residual_spec))
        if residual_spec is not None
        else [None] * len(found.blocks)
    )
    records, missing = recorder.records(found, residuals)
    shapes = [(block.in_shape, block.out_shape) for block in found.blocks]
    stages, transitions = stages_and_transitions(found.blocks, shapes)
    if key is not None:
        remember(model, key, modules, found, residuals, stages, transitions,
                 recorder.trace.calls, missing)  # fmt: skip
    if missing:  # blocks the pass did not take for candidates: measured in a second pass
        found = replace(found, notes=[*found.notes, f"{listed([found.blocks[i].name for i in missing])} "
                                      "measured in a second pass"])  # fmt: skip
        subset = replace(found, blocks=[found.blocks[i] for i in missing],
                         layouts=[found.layouts[i] for i in missing])  # fmt: skip
        again, _ = measure_blocks(model, x, subset, [residuals[i] for i in missing],
                                  extra_stats=config.extra_stats, gradients=config.gradients,
                                  seed=config.seed, at_once=range(len(missing)))  # fmt: skip
        for index, record in zip(missing, again, strict=True):
            records[index] = record
    recorder.finish()
    return found, records, stages, transitions


def _by_plan(
    model: nn.Module,
    x: Tensor,
    plan: Plan,
    modules: dict[str, nn.Module],
    config: ForeignConfig,
    progress: ProgressCallback | None,
) -> Measured | str:
    """The plan's blocks measured by hooks; where the pass did not go as planned, what went
    otherwise (the plan is then dropped, for the model to be traced afresh)."""
    found, residuals, census = plan.bind(modules)
    records, recorder = measure_blocks(model, x, found, residuals,
                                       extra_stats=config.extra_stats,
                                       gradients=config.gradients, seed=config.seed,
                                       progress=progress, at_once=plan.at_once, census=census)  # fmt: skip
    if recorder.strays or not all(records):
        forget(model)
        return recorder.strays[0] if recorder.strays else "a block was not called"
    if recorder.changed:  # changed in place after the block ended: measured as they end
        again, _ = measure_blocks(model, x, found, residuals, extra_stats=config.extra_stats,
                                  gradients=config.gradients, seed=config.seed,
                                  at_once=recorder.changed)  # fmt: skip
        records = [again[i] if i in recorder.changed else r for i, r in enumerate(records)]
        reduce_at_once(model, recorder.changed)
    return found, records, list(plan.stages), list(plan.transitions)


def _plan_key(
    x: Tensor, channels: str, blocks: BlockSpec, residual: BlockSpec | None
) -> Hashable | None:
    """What decides the blocks and layouts besides the model (None: a selection that cannot
    be a key: not planned). A selection function is held weakly: it may hold the model,
    which the plan must not keep alive."""

    def frozen(spec: BlockSpec | None) -> Hashable:
        if callable(spec):
            return weakref.ref(spec)
        return spec if spec is None or isinstance(spec, str) else tuple(spec)

    try:
        key = (tuple(x.shape), x.dtype, channels, frozen(blocks), frozen(residual))
        hash(key)
    except TypeError:  # a callable that takes no weak reference, or an unhashable one
        return None
    return key


def _on_device(model: nn.Module, modules: dict[str, nn.Module], device: torch.device) -> int:
    """Move the model to `device` where any of it is elsewhere; its parameter count."""
    seen: dict[int, Tensor] = {}
    for module in modules.values():
        for tensor in (*module._parameters.values(), *module._buffers.values()):
            if tensor is not None:
                seen[id(tensor)] = tensor
    if any(tensor.device != device for tensor in seen.values()):
        model.to(device)
    return sum(t.numel() for t in seen.values() if isinstance(t, nn.Parameter))


@contextmanager
def _no_cyclic_gc() -> Iterator[None]:
    """The cyclic garbage collector paused for the call: the trace makes thousands of small
    objects that live until the end of the call, and each collection they set off walks
    them again (about 5% of a small network's pass); reference counting still frees
    everything else at once, and the collector runs as before afterwards."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _measuring(model: nn.Module, modules: dict[str, nn.Module], device: torch.device) -> Any:
    """`measurement_mode`, or nothing where it would change nothing: on the CPU, a model in
    eval mode without BatchNorm whose modules keep torch's `train` (it would walk the model
    twice and put every flag back as it was)."""
    if device.type == "cpu" and all(
        not module.training and type(module).train is nn.Module.train
        and not isinstance(module, _BatchNorm) for module in modules.values()
    ):  # fmt: skip
        return nullcontext()
    return measurement_mode(model, device)


def _spec(value: Any) -> BlockSpec:
    return value if isinstance(value, str) else list(value)


def foreign_input(config: ForeignConfig) -> Tensor:
    """N(0,1) of `input_shape` per example, else the images `nfcore.engine.inputs` makes."""
    if config.input_shape is None:
        return input_batch(config.input, config.batch, config.resolution, config.seed)
    return gaussian((config.batch, *config.input_shape), config.seed)


def _result(
    config: ForeignConfig,
    found: Discovery,
    stages: list[int],
    transitions: list[bool],
    records: list[dict[str, float]],
    parameter_count: int,
    device: torch.device,
    seconds: float,
) -> SPPResult:
    blocks, nonfinite_from = [], None
    for index, (block, record) in enumerate(zip(found.blocks, records, strict=True)):
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
    layout, reduced_over = layout_summary(found.layouts)
    meta = SPPMeta(
        version=__version__,
        torch_version=torch.__version__,
        device=describe_device(device),
        seconds=round(seconds, 4),
        parameter_count=parameter_count,
        gamma=None,
        model=config.label,
        num_blocks=len(blocks),
        stage_ends=stage_ends,
        nonfinite_from_block=nonfinite_from,
        reduced_over=reduced_over,
        layout=layout,
        notes=found.notes,
    )
    return SPPResult(config=config, blocks=blocks, meta=meta)
