"""The SPP of any PyTorch network: `measure(my_model)`.

    from nfcore import measure
    result = measure(my_model, resolution=64, batch=8)            # blocks found by themselves
    result = measure(my_model, blocks=["layer*.*"], residual=["layer*.*.bn3"], gradients=True)
    spp_figure([result, run_spp(SPPConfig(depth=50, norm="nf"))]).show()

The same engine as `nfcore.spp`: hooks reduce each block's output (and, where `residual`
names it, its residual branch f(x)) to the statistics of `nfcore.statistics` on the spot,
in `measurement_mode` (batch-statistics BatchNorm, eval otherwise), with the weights frozen
for the backward pass. Blocks and their layouts are found as `nfcore.foreign` describes, by
one traced pass of one example; the shapes, the stages and the statistics come from the one
measured pass (and its backward with `gradients`), and `meta.seconds` counts both. Without
`residual` the residual statistics are null: never a guess presented as a measurement.

Statistics are per channel over the other axes: N,H,W of N,C,H,W or N,H,W,C images; N of
N,C vectors (an MLP); N,L of N,L,C tokens (a Transformer, an MLP-Mixer) or N,C,L sequences.
The layout is decided from what the network does (`nfcore.layouts`), or as `channels` asks;
the result says which (`meta.layout`, `meta.reduced_over`) and why (`meta.notes`). With
`gradients`, the loss is the cross-entropy of random labels when the network outputs N x K
logits (as for nfcore's networks), else half the mean square of its output.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

import torch
from torch import Tensor, nn

from nfcore import __version__
from nfcore.devices import describe_device, resolve_device
from nfcore.foreign import (
    BlockSpec,
    Discovery,
    blocks_of,
    layout_summary,
    match_residuals,
    select,
    stages_and_transitions,
)
from nfcore.foreign_config import ForeignConfig
from nfcore.inputs import gaussian, input_batch
from nfcore.layouts import Layout, Readers
from nfcore.residuals import CONTAINERS, ResidualFinder, listed
from nfcore.result import BlockStats, SPPMeta, SPPResult, finite_or_none
from nfcore.spp import ProgressCallback, Recorder, forward_pass, measurement_mode
from nfcore.statistics import measured
from nfcore.stats import channel_stats
from nfcore.trace import Call, Trace, recording


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
) -> SPPResult:
    """`measure` for a config (the CLI's and the worker's); `blocks` and `residual` default to
    the config's patterns (a callable can only be given here)."""
    start = time.perf_counter()
    blocks_spec: BlockSpec = blocks if blocks is not None else _spec(config.blocks)
    residual_spec = residual if residual is not None else config.residual
    torch_device = resolve_device(device or config.device)
    if any(t.device != torch_device for t in (*model.parameters(), *model.buffers())):
        model.to(torch_device)
    x = foreign_input(config).to(torch_device)
    taps = [] if residual_spec is None else select(model, _spec(residual_spec), "residual")
    recorder = TracingRecorder(model, blocks_spec, [m for _, m in taps], config, progress)
    tracing = recording(model, recorder.trace, recorder.call_ended,
                        keep=frozenset(recorder.taps | recorder.always), modules=recorder.modules)  # fmt: skip
    with measurement_mode(model, torch_device), tracing:
        forward_pass(model, x, gradients=config.gradients, seed=config.seed)
    recorder.trace.forget_tensors()
    found = blocks_of(model, recorder.trace, blocks_spec, config.channels,
                      recorder.finder.found, recorder.readers, explain=False,
                      modules=recorder.modules)  # fmt: skip
    residuals = (
        match_residuals(model, found.blocks, _spec(residual_spec))
        if residual_spec is not None
        else [None] * len(found.blocks)
    )
    records, missing = recorder.records(found, residuals)
    if missing:  # blocks the pass did not take for candidates: measured in a second pass
        found = replace(found, notes=[*found.notes, f"{listed([found.blocks[i].name for i in missing])} "
                                      "measured in a second pass"])  # fmt: skip
        again = _second_pass(model, x, found, residuals, missing, config)
        for index, record in zip(missing, again, strict=True):
            records[index] = record
    recorder.finish()
    shapes = [(block.in_shape, block.out_shape) for block in found.blocks]
    stages, transitions = stages_and_transitions(found.blocks, shapes)
    seconds = time.perf_counter() - start  # the whole call: one pass finds and measures
    return _result(config, model, found, stages, transitions, records, torch_device, seconds)


class TracingRecorder:
    """Measures the measured pass's module calls that may turn out to be blocks, as they
    end, while the pass is traced (`nfcore.trace.recording`); which were blocks, and in which
    layout, is decided after the pass (`nfcore.foreign.blocks_of`), from the same trace.

    Measured: each residual call (`nfcore.residuals.ResidualFinder`, as it ends); each
    module of `blocks` where the user named them; and, where blocks are found by
    themselves, the calls that could be blocks without an addition of their own: a module of
    modules sitting in a container or beside modules of its class (an EfficientNet stage's
    first block), or holding residual calls of two classes (a MaxViT block). A call whose
    layout its layers do not tell yet is measured both ways (channels first and last); the
    residual branches named by `residual` likewise. Nothing of the pass is kept but a few
    0-d tensors per call, read back at once at the end."""

    def __init__(
        self,
        model: nn.Module,
        spec: BlockSpec,
        taps: list[nn.Module],
        config: ForeignConfig,
        progress: ProgressCallback | None,
    ) -> None:
        self.trace = Trace()
        self.finder = ResidualFinder(self.trace)
        self.readers = Readers(self.trace)
        self.gradients, self.progress = config.gradients, progress
        self.reductions: dict[str, list[tuple[str, str]]] = {}  # tap -> [(key, reduction)]
        for row in measured(config.extra_stats, config.gradients):
            self.reductions.setdefault(row.tap, []).append((row.key, row.reduction))
        self.taps = {id(module) for module in taps}
        self.modules = dict(model.named_modules())
        self.always = _candidates(model, spec, self.modules)
        self.holders = {id(m) for m in self.modules.values()  # what could hold sub-layers
                        if next(m.children(), None) is not None and not isinstance(m, CONTAINERS)}  # fmt: skip
        self.done, self.total = 0, max(1, len(self.always)) * (2 if config.gradients else 1)
        self.pending: list[tuple[tuple[int, int, str], str, Tensor]] = []
        self.seen: set[tuple[int, int, str]] = set()

    def call_ended(self, call: Call, out: Tensor) -> None:
        self.readers.add(call)
        key = id(call.module)
        if call.end - call.start <= 1 and key not in self.always and key not in self.taps:
            return  # one operation (a torch layer): no addition of its own, not a candidate
        residual = self.finder.see(call)
        if call.out is None or call.parent < 0 or len(call.out_shape or ()) < 2:
            return
        if key in self.taps:
            self._measure(call, out, "residual")
        if residual is not None or key in self.always or self._holds_two(call):
            self._measure(call, out, "output")

    def _holds_two(self, call: Call) -> bool:
        """Residual calls of two classes or more ran inside it (a block of sub-layers)."""
        if id(call.module) not in self.holders:
            return False
        kinds = {type(r.call.module) for r in self.finder.found.values()
                 if r.call.order > call.order and r.call.end <= call.end}  # fmt: skip
        return len(kinds) >= 2

    def _measure(self, call: Call, out: Tensor, tap: str) -> None:
        assert call.out is not None
        for axis in self.readers.axes_now(call):
            key = (call.out, axis, tap)
            if key in self.seen:
                continue  # the same tensor, handed out by a module around it
            self.seen.add(key)
            if not out.is_floating_point():
                return
            view = Layout(out.ndim, axis, "").view()
            self._reduce(key, view(out), tap)
            if self.gradients and out.requires_grad:
                out.register_hook(self._gradient(key, view, f"grad_{tap}"))

    def _reduce(self, key: tuple[int, int, str], y: Tensor, tap: str) -> None:
        rows = self.reductions.get(tap, [])
        if rows:
            stats = channel_stats(y, {reduction for _, reduction in rows})
            self.pending += [(key, name, stats[reduction]) for name, reduction in rows]
        self._tick()

    def _gradient(self, key: tuple[int, int, str], view: Any, tap: str) -> Any:
        def hook(grad: Tensor) -> None:
            with torch._C.DisableTorchFunction():  # not the network's operations
                self._reduce((key[0], key[1], tap), view(grad), tap)

        return hook

    def _tick(self) -> None:
        self.done += 1
        self.total = max(self.total, self.done + 1)  # the last tick is `finish`'s
        if self.progress is not None:
            self.progress(self.done, self.total)

    def finish(self) -> None:
        if self.progress is not None:
            self.progress(self.total, self.total)

    def records(
        self, found: Discovery, residuals: Sequence[nn.Module | None]
    ) -> tuple[list[dict[str, float]], list[int]]:
        """Each block's statistics (one transfer from the device), and the blocks the pass
        did not measure."""
        values: dict[tuple[int, int, str], dict[str, float]] = {}
        if self.pending:
            numbers = torch.stack([value.double() for _, _, value in self.pending]).tolist()
            for (key, name, _), number in zip(self.pending, numbers, strict=True):
                values.setdefault(key, {})[name] = number
        records, missing = [], []
        for index, (block, layout) in enumerate(zip(found.blocks, found.layouts, strict=True)):
            call = self.trace.calls[block.order]
            record = {**values.get((call.out, layout.axis, "output"), {}),
                      **values.get((call.out, layout.axis, "grad_output"), {})}  # fmt: skip
            tap = self._tap_call(call, residuals[index])
            for axis in (layout.axis, -layout.axis):
                if tap is not None and (tap.out, axis, "residual") in values:
                    record |= values[(tap.out, axis, "residual")]
                    record |= values.get((tap.out, axis, "grad_residual"), {})
                    break
            if not record:
                missing.append(index)
            records.append(record)
        return records, missing

    def _tap_call(self, block: Call, module: nn.Module | None) -> Call | None:
        """The call of the residual branch `module` inside the block's call."""
        return next((c for c in self.trace.calls[block.order + 1 :] if c.module is module
                     and c.end <= block.end and c.out is not None), None)  # fmt: skip


def _candidates(model: nn.Module, spec: BlockSpec, modules: dict[str, nn.Module]) -> set[int]:
    """The modules measured whenever called: those named, or those that could be blocks
    without an addition of their own (made of modules; in a container, or beside modules of
    their class)."""
    if not (isinstance(spec, str) and spec == "auto"):
        return {id(module) for _, module in select(model, spec)}
    out = set()
    for parent in modules.values():
        kids = [kid for kid in parent.children() if next(kid.children(), None) is not None
                and not isinstance(kid, CONTAINERS)]  # fmt: skip
        kinds = [type(kid) for kid in kids]
        for kid in kids:
            if isinstance(parent, CONTAINERS) or kinds.count(type(kid)) >= 2:
                out.add(id(kid))
    return out


def _second_pass(
    model: nn.Module,
    x: Tensor,
    found: Discovery,
    residuals: Sequence[nn.Module | None],
    indexes: list[int],
    config: ForeignConfig,
) -> list[dict[str, float]]:
    """The statistics of the blocks `indexes`, measured in a pass of their own."""
    subset = replace(found, blocks=[found.blocks[i] for i in indexes],
                     layouts=[found.layouts[i] for i in indexes])  # fmt: skip
    recorder = ForeignRecorder(subset, [residuals[i] for i in indexes],
                               extra_stats=config.extra_stats, gradients=config.gradients,
                               progress=None)  # fmt: skip
    with measurement_mode(model, x.device):
        recorder.attach()
        try:
            forward_pass(model, x, gradients=config.gradients, seed=config.seed)
        finally:
            recorder.detach()
    return recorder.records()


class ForeignRecorder(Recorder):
    """The engine's recorder for a pass of its own (`_second_pass`): each block in its own
    layout, and the k-th call of a block module called several times into row `name#k`."""

    def __init__(
        self, found: Discovery, residuals: Sequence[nn.Module | None], **options: Any
    ) -> None:
        points = [(b.module, r) for b, r in zip(found.blocks, residuals, strict=True)]
        super().__init__(points, **options)
        self.views = [layout.view() for layout in found.layouts]
        self.calls = [block.call for block in found.blocks]

    def _measure(self, index: int, tap: str, tensor: Tensor) -> None:
        self.view = self.views[index]
        super()._measure(index, tap, tensor)

    def attach(self) -> None:
        """One hook per module and tap, handing its k-th call to the row of call k."""
        rows: dict[tuple[int, str], dict[int, int]] = {}  # (module, tap) -> {call: row}
        modules: dict[int, nn.Module] = {}
        for index, (output, residual) in enumerate(self.points):
            for module, tap in ((output, "output"), (residual, "residual")):
                if module is not None:
                    modules[id(module)] = module
                    rows.setdefault((id(module), tap), {})[self.calls[index]] = index
        for (key, tap), by_call in rows.items():
            hooks = {call: self._hook(index, tap) for call, index in by_call.items()}
            self.handles.append(modules[key].register_forward_hook(self._by_call(hooks)))

    def _by_call(self, hooks: dict[int, Any]) -> Any:
        calls = [0]

        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            k, calls[0] = calls[0], calls[0] + 1
            if k in hooks:
                hooks[k](module, inputs, output)

        return hook


def _spec(value: Any) -> BlockSpec:
    return value if isinstance(value, str) else list(value)


def foreign_input(config: ForeignConfig) -> Tensor:
    """N(0,1) of `input_shape` per example, else the images `nfcore.inputs` makes."""
    if config.input_shape is None:
        return input_batch(config.input, config.batch, config.resolution, config.seed)
    return gaussian((config.batch, *config.input_shape), config.seed)


def _result(
    config: ForeignConfig,
    model: nn.Module,
    found: Discovery,
    stages: list[int],
    transitions: list[bool],
    records: list[dict[str, float]],
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
        parameter_count=sum(p.numel() for p in model.parameters()),
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
