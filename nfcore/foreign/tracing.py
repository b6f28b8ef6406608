"""What the traced pass of `measure` measures as each module call ends (`TracingRecorder`),
before it is known which calls are blocks and in which layout: the calls that may turn out
to be blocks, their outputs kept for reduction after the pass (`nfcore.foreign.reduce`).
Which were blocks, and in which layout, is decided after the pass (`nfcore.foreign.discovery`), from
the same trace; `records` then gives each block its statistics.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from nfcore.engine.spp import ProgressCallback
from nfcore.foreign.discovery import BlockSpec, Discovery, select_in
from nfcore.foreign.layouts import Layout, Readers
from nfcore.foreign.reduce import CHANGED, Kept, Wanted, reduce_all
from nfcore.foreign.residuals import CONTAINERS, ResidualFinder
from nfcore.foreign.trace import AnyCall, Call, Trace, has_children
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.statistics import measured


class TracingRecorder:
    """Measures the measured pass's module calls that may turn out to be blocks, as they
    end, while the pass is traced (`nfcore.foreign.trace.recording`); which were blocks, and in which
    layout, is decided after the pass (`nfcore.foreign.discovery.blocks_of`), from the same trace.

    Measured: each residual call (`nfcore.foreign.residuals.ResidualFinder`, as it ends); each
    module of `blocks` where the user named them; and, where blocks are found by
    themselves, the calls that could be blocks without an addition of their own: a module of
    modules sitting in a container or beside modules of its class (an EfficientNet stage's
    first block), or holding residual calls of two classes (a MaxViT block); the residual
    branches named by `residual` likewise. Their outputs (and gradients) are kept, up to
    `nfcore.foreign.reduce`'s budget, and reduced after the pass in the layout decided then;
    one over it is reduced as its call ends, both ways (channels first and last) where its
    layers do not tell its layout yet."""

    def __init__(
        self,
        modules: dict[str, nn.Module],
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
        self.always = _candidates(modules, spec)
        self.holders = {id(m) for m in modules.values()  # what could hold sub-layers
                        if has_children(m) and not isinstance(m, CONTAINERS)}  # fmt: skip
        self.done, self.total = 0, max(1, len(self.always)) * (2 if config.gradients else 1)
        self.pending: list[tuple[Hashable, str, Tensor]] = []  # reduced as their call ended
        self.kept = Kept()  # the tensors reduced after the pass
        self.seen: set[tuple[int, str]] = set()

    def call_ended(self, call: Call, out: Tensor) -> None:
        """(A hook's work, with torch functions on: it looks at tensors only in `_measure`.)"""
        key = id(call.module)
        if call.end - call.start <= 1 and key not in self.always and key not in self.taps:
            return  # one operation (a torch layer): no addition of its own, not a candidate
        residual = self.finder.see(call)
        if call.out is None or call.parent < 0 or len(call.out_shape or ()) < 2:
            return
        with torch._C.DisableTorchFunction():  # the measurement is not the network's
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
        """Keep the call's output for after the pass, when its layout is known; where the
        kept tensors are over their budget, reduce it now, both ways where its layers do not
        tell the layout yet. (Torch functions are off.)"""
        node = call.out
        assert node is not None
        if (node, tap) in self.seen or not out.is_floating_point():
            return  # the same tensor, handed out by a module around it; or not a signal
        self.seen.add((node, tap))
        if self.kept.keep((node, tap), out):
            self._tick()
            if self.gradients and out.requires_grad:
                out.register_hook(self._gradient(call, f"grad_{tap}"))
            return
        for axis in self.readers.axes_now(call):
            self._reduce((node, axis, tap), out, Layout(out.ndim, axis, ""), tap)
            if self.gradients and out.requires_grad:
                out.register_hook(self._gradient(call, f"grad_{tap}", axis))

    def _reduce(self, key: Hashable, y: Tensor, layout: Layout, tap: str) -> None:
        """Reduce now, as the kept tensors are reduced after the pass."""
        self.pending += reduce_all([(key, y, layout, self.reductions.get(tap, []))])
        self._tick()

    def _gradient(self, call: Call, tap: str, axis: int | None = None) -> Any:
        """The hook of the gradient of the call's output: kept like it (`axis` None), or
        reduced at once in `axis`."""
        node = call.out
        assert node is not None

        def hook(grad: Tensor) -> None:
            with torch._C.DisableTorchFunction():  # not the network's operations
                if axis is None and self.kept.keep((node, tap), grad):
                    self._tick()
                    return
                for each in (axis,) if axis is not None else self.readers.axes_now(call):
                    self._reduce((node, each, tap), grad, Layout(grad.ndim, each, ""), tap)

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
        did not measure: the kept tensors reduced in the block's layout, the others as they
        were reduced during the pass."""
        wanted: list[Wanted] = []
        asked: set[tuple[int | None, int, str]] = set()
        changed: set[int] = set()  # nodes whose kept tensor the network changed in place
        taps = [self._tap_call(self.trace.calls[block.order], residual)
                for block, residual in zip(found.blocks, residuals, strict=True)]  # fmt: skip
        for block, layout, tap in zip(found.blocks, found.layouts, taps, strict=True):
            out = self.trace.calls[block.order].out
            for node, name in ((out, "output"), (out, "grad_output"),
                               *(((tap.out, "residual"), (tap.out, "grad_residual"))
                                 if tap is not None else ())):  # fmt: skip
                key = (node, layout.axis, name)
                kept = self.kept.get((node, name))
                if kept is CHANGED:
                    changed.add(node)
                elif kept is not None and key not in asked:
                    asked.add(key)
                    wanted.append((key, kept, layout, self.reductions.get(name, [])))
        self.kept.clear()
        stats = self.pending + reduce_all(wanted)
        values: dict[tuple[int, int, str], dict[str, float]] = {}
        if stats:
            numbers = torch.stack([value.double() for _, _, value in stats]).tolist()
            for (key, name, _), number in zip(stats, numbers, strict=True):
                values.setdefault(key, {})[name] = number  # type: ignore[index]
        records, missing = [], []
        for index, (block, layout) in enumerate(zip(found.blocks, found.layouts, strict=True)):
            out, tap = self.trace.calls[block.order].out, taps[index]
            record = {**values.get((out, layout.axis, "output"), {}),
                      **values.get((out, layout.axis, "grad_output"), {})}  # fmt: skip
            for axis in (layout.axis, -layout.axis):
                if tap is not None and (tap.out, axis, "residual") in values:
                    record |= values[(tap.out, axis, "residual")]
                    record |= values.get((tap.out, axis, "grad_residual"), {})
                    break
            if not record or out in changed or (tap is not None and tap.out in changed):
                record = {}
                missing.append(index)
            records.append(record)
        return records, missing

    def _tap_call(self, block: AnyCall, module: nn.Module | None) -> AnyCall | None:
        """The call of the residual branch `module` inside the block's call."""
        if module is None:
            return None
        return next((c for c in self.trace.calls[block.order + 1 :] if c.module is module
                     and c.end <= block.end and c.out is not None), None)  # fmt: skip


def _candidates(modules: dict[str, nn.Module], spec: BlockSpec) -> set[int]:
    """The modules measured whenever called: those named, or those that could be blocks
    without an addition of their own (made of modules; in a container, or beside modules of
    their class)."""
    if not (isinstance(spec, str) and spec == "auto"):
        return {id(module) for _, module in select_in(modules, spec)}
    out = set()
    for parent in modules.values():
        kids = [kid for kid in parent._modules.values() if kid is not None
                and has_children(kid) and not isinstance(kid, CONTAINERS)]  # fmt: skip
        kinds = [type(kid) for kid in kids]
        for kid in kids:
            if isinstance(parent, CONTAINERS) or kinds.count(type(kid)) >= 2:
                out.add(id(kid))
    return out
