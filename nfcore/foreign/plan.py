"""A pass over blocks already known: hooks on the block modules, no trace. It measures the
blocks a traced pass found too late to measure (`nfcore.foreign.measure`'s second pass), and
every block when the same model is measured again (the plan cache).

**The plan cache.** Measuring one model over and over (a tracker every N training steps)
finds the same blocks and layouts each time. After a traced `measure`, what it decided
(the blocks, their layouts, stages, notes) is kept as a `Plan`, keyed weakly by the model
object (a model freed is forgotten: nothing is kept alive) and by what decides the answer:
the input's shape, `channels`, the block and residual selections. It holds module names,
not modules. A later `measure` of the model with the same key runs one plain forward with
forward hooks on the known blocks, and reduces their outputs as the traced pass does
(`nfcore.foreign.reduce`): the numbers are the same, bit for bit.

A plan is used only while the model is still what it described: its module tree (the name
and class of every module) is compared first, and during the pass every module made of
modules (or of a class of the network's own) must be called as often as in the traced pass
(a branch taken now that was not: a block the plan does not know) and each block must give
the shape it gave. Anything else drops the plan, and the model is traced afresh in the same
call.
"""

from __future__ import annotations

import weakref
from collections import Counter
from collections.abc import Collection, Hashable, Sequence
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from nfcore.engine.spp import ProgressCallback, Recorder, first_tensor, forward_pass
from nfcore.foreign.discovery import Discovery, FoundBlock
from nfcore.foreign.reduce import CHANGED, Kept, reduce_all
from nfcore.foreign.trace import AnyCall, kind

Signature = tuple[tuple[str, type], ...]
_UNBOUND = nn.Module()  # a plan's blocks name their modules; the model binds them again


def signature(modules: dict[str, nn.Module]) -> Signature:
    """The module tree, as names and classes: a change in it is a new network."""
    return tuple((name, type(module)) for name, module in modules.items())


@dataclass(frozen=True)
class Plan:
    """What a traced `measure` decided for one model and key."""

    key: Hashable
    signature: Signature
    found: Discovery  # its blocks' modules unbound
    residuals: tuple[str | None, ...]  # each block's residual branch, by module name
    stages: tuple[int, ...]
    transitions: tuple[bool, ...]
    census: tuple[tuple[str, int], ...]  # the calls of each watched module in the traced pass
    at_once: frozenset[int]  # blocks reduced as they end (the network changes their output)

    def bind(
        self, modules: dict[str, nn.Module]
    ) -> tuple[Discovery, list[nn.Module | None], dict[nn.Module, tuple[str, int]]]:
        """The plan's blocks with the model's modules, each block's residual module, and
        the modules to count calls of, with their calls in the traced pass."""
        blocks = [replace(block, module=modules[block.module_name]) for block in self.found.blocks]
        residuals = [None if name is None else modules[name] for name in self.residuals]
        census = {modules[name]: (name, calls) for name, calls in self.census}
        return replace(self.found, blocks=blocks), residuals, census


_PLANS: weakref.WeakKeyDictionary[nn.Module, Plan] = weakref.WeakKeyDictionary()


def remember(
    model: nn.Module,
    key: Hashable,
    modules: dict[str, nn.Module],
    found: Discovery,
    residuals: Sequence[nn.Module | None],
    stages: list[int],
    transitions: list[bool],
    calls: Sequence[AnyCall],
    at_once: Collection[int],
) -> None:
    """Keep what was decided for `model` (one plan per model: the latest key); `calls`: the
    traced pass's module calls; `at_once`: the blocks reduced as they end."""
    names = {id(module): name for name, module in reversed(modules.items())}
    blocks = [replace(block, module=_UNBOUND) for block in found.blocks]
    counts = Counter(call.name for call in calls)
    census = tuple((name, counts[name]) for name in watched(modules))
    _PLANS[model] = Plan(
        key, signature(modules), replace(found, blocks=blocks),
        tuple(None if r is None else names[id(r)] for r in residuals),
        tuple(stages), tuple(transitions), census, frozenset(at_once),
    )  # fmt: skip


def reduce_at_once(model: nn.Module, blocks: Collection[int]) -> None:
    """From now on, reduce these blocks of the model's plan as they end."""
    plan = _PLANS.get(model)
    if plan is not None:
        _PLANS[model] = replace(plan, at_once=plan.at_once | frozenset(blocks))


def watched(modules: dict[str, nn.Module]) -> list[str]:
    """The modules whose calls a planned pass counts: those made of modules, and leaves of
    the network's own classes (torch's layers are no blocks)."""
    return [name for name, module in modules.items()
            if kind(module) == "module" and not isinstance(module, torch.jit.ScriptModule)]  # fmt: skip


def recall(model: nn.Module, key: Hashable, modules: dict[str, nn.Module]) -> Plan | None:
    """The model's plan for `key`, where its module tree is still the one planned."""
    plan = _PLANS.get(model)
    if plan is None or plan.key != key:
        return None
    if plan.signature != signature(modules):
        del _PLANS[model]
        return None
    return plan


def plan_of(model: nn.Module) -> Plan | None:
    """The plan kept for `model`, if any (what its last traced `measure` decided)."""
    return _PLANS.get(model)


def forget(model: nn.Module) -> None:
    """Drop the model's plan: its next `measure` traces its pass afresh."""
    _PLANS.pop(model, None)


class ForeignRecorder(Recorder):
    """Hooks on known blocks: each block in its own layout, the k-th call of a block module
    called several times into row `name#k`; outputs (and gradients) kept and reduced after
    the pass as the traced pass reduces them (or at once: the rows `at_once`, and any over
    the budget). After the pass, `changed` holds the rows whose kept tensor the network
    changed in place afterwards, `strays` what did not go as planned (a call more or fewer
    than in the traced pass, a block giving another shape)."""

    def __init__(
        self,
        found: Discovery,
        residuals: Sequence[nn.Module | None],
        at_once: Collection[int] = (),
        census: dict[nn.Module, tuple[str, int]] | None = None,
        **options: Any,
    ) -> None:
        points = [(b.module, r) for b, r in zip(found.blocks, residuals, strict=True)]
        super().__init__(points, **options)
        self.blocks: list[FoundBlock] = list(found.blocks)
        self.layouts = list(found.layouts)
        self.kept = Kept()
        self.at_once = frozenset(at_once)  # rows reduced as they end, not kept
        self.changed: set[int] = set()
        self.strays: list[str] = []
        self.census = census or {}  # module -> (name, calls in the traced pass)
        self.counted: dict[int, int] = {}

    def _measure(self, index: int, tap: str, tensor: Tensor) -> None:
        rows = self.taps.get(tap, [])
        if not rows or not tensor.is_floating_point():
            return
        if index not in self.at_once and self.kept.keep((index, tap), tensor):
            return
        layout = self.layouts[index]
        self._pending += [(index, row, value) for _, row, value
                          in reduce_all([((index, tap), tensor, layout, rows)])]  # fmt: skip

    def records(self) -> list[dict[str, float]]:
        """Each row's statistics: the kept tensors reduced now, with those reduced as they
        ended."""
        wanted = []
        for key, kept in self.kept.items():
            index, tap = key  # type: ignore[misc]
            if kept is CHANGED:
                self.changed.add(index)
            else:
                wanted.append((key, kept, self.layouts[index], self.taps.get(tap, [])))
        self.kept.clear()
        self._pending += [(key[0], row, value) for key, row, value in reduce_all(wanted)]  # type: ignore[index]
        return super().records()

    def attach(self) -> None:
        """One hook per module and tap, handing its k-th call to the row of call k."""
        rows: dict[tuple[int, str], dict[int, int]] = {}  # (module, tap) -> {call: row}
        modules: dict[int, nn.Module] = {}
        for index, (output, residual) in enumerate(self.points):
            for module, tap in ((output, "output"), (residual, "residual")):
                if module is not None:
                    modules[id(module)] = module
                    rows.setdefault((id(module), tap), {})[self.blocks[index].call] = index
        for (key, tap), by_call in rows.items():
            self.handles.append(modules[key].register_forward_hook(self._by_call(by_call, tap)))
        for module in self.census:
            self.handles.append(module.register_forward_pre_hook(self._count))

    def _count(self, module: nn.Module, inputs: tuple) -> None:
        self.counted[id(module)] = self.counted.get(id(module), 0) + 1

    def detach(self) -> None:
        super().detach()
        for module, (name, planned) in self.census.items():
            calls = self.counted.get(id(module), 0)
            if calls != planned:
                self.strays.append(f"{name} called {_times(calls)}, {_times(planned)} before")

    def _by_call(self, by_call: dict[int, int], tap: str) -> Any:
        """The hook of one module and tap: its k-th call measured into row by_call[k], where
        it goes as planned."""
        hooks = {call: (index, self._hook(index, tap)) for call, index in by_call.items()}
        calls = [0]

        def hook(module: nn.Module, inputs: tuple, output: Any) -> None:
            k, calls[0] = calls[0], calls[0] + 1
            if k not in hooks:
                self.strays.append(f"{type(module).__name__} called more often than before")
                return
            index, measure = hooks[k]
            if tap == "output":
                out = first_tensor(output)
                if out is None or tuple(out.shape[1:]) != self.blocks[index].out_shape:
                    self.strays.append(f"{self.blocks[index].name} gave another shape")
                    return
            measure(module, inputs, output)

        return hook


def _times(count: int) -> str:
    return {0: "never", 1: "once", 2: "twice"}.get(count, f"{count} times")


def measure_blocks(
    model: nn.Module,
    x: Tensor,
    found: Discovery,
    residuals: Sequence[nn.Module | None],
    *,
    extra_stats: bool,
    gradients: bool,
    seed: int,
    progress: ProgressCallback | None = None,
    at_once: Collection[int] = (),
    census: dict[nn.Module, tuple[str, int]] | None = None,
) -> tuple[list[dict[str, float]], ForeignRecorder]:
    """One pass of `model` on `x` (in the measurement mode its caller entered) with hooks on
    the blocks of `found`: each block's statistics, and the recorder (what did not go as
    planned)."""
    recorder = ForeignRecorder(found, residuals, at_once, census, extra_stats=extra_stats,
                               gradients=gradients, progress=progress)  # fmt: skip
    recorder.attach()
    try:
        forward_pass(model, x, gradients=gradients, seed=seed)
    finally:
        recorder.detach()
    return recorder.records(), recorder
