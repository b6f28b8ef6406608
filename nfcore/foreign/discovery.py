"""Which modules of a network nfcore did not build are its blocks (the factories are in
`nfcore.foreign.factories`, re-exported here).

**Found by themselves**, from a traced forward pass (`nfcore.foreign.trace`): `measure` traces its
measured pass itself; `discover` (`nfcore blocks`) traces one example in eval mode without
autograd. Which modules are residual blocks is decided by what they do, their output adding
their input (or a projection of it) to a branch, whatever the containers are called
(`nfcore.foreign.residuals`), and where each block's channel axis is by the layers that read its
tensors (`nfcore.foreign.layouts`). The answer says, per block, why it was chosen, which near
candidates were left out and why, and, as notes for the user, the layout and how the blocks
were found. A block module called several times (weights tied) gives a row per call,
`name#0`, `name#1`, ...

**Named by the user**: glob patterns in which `*` matches exactly one dotted component
(`layer*.*` matches `layer1.0`, not `layer1.0.conv1`), a list of exact names, or a callable
`(name, module) -> bool`.

**The container rule** (`auto_blocks`), the answer before blocks were found by what they
do, kept to say what it would have picked and why discovery did not: a *group* is a
container (`nn.Sequential` or `nn.ModuleList`) with at least two children of one class that
is neither a container nor a leaf; the children of that class are the blocks, the innermost
groups win; a container with one such child joins in when the class is a block class
elsewhere, or, where no container holds two, when that class is alone in two containers or
more.

**Stages and transitions** come from the blocks' shapes. A transition is a block whose output
shape differs from its input's. The blocks' names, below the part all share, name their stage
(`layer1.0` and `layer1.1` are in `layer1`, `level3.tree1.tree2` in `level3`); when every
block is its own (one flat list, `blocks.0` ... `blocks.11`), a new stage starts at each
transition after the first block.
"""

from __future__ import annotations

import re
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from typing import Any

from torch import Tensor, nn

from nfcore.foreign.factories import FactoryError as FactoryError  # re-exported: the CLI, workers
from nfcore.foreign.factories import build_foreign as build_foreign
from nfcore.foreign.factories import load_factory as load_factory
from nfcore.foreign.layouts import Layout, LayoutError, Readers, decide
from nfcore.foreign.residuals import LeftOut, NoResidualBlocks, Residual, choose_blocks, listed
from nfcore.foreign.trace import Trace, trace_forward

BlockSpec = str | Sequence[str] | Callable[[str, nn.Module], bool]
CONTAINERS = (nn.Sequential, nn.ModuleList)
SHOWN_CANDIDATES = 8  # names listed when a pattern matches nothing


class SelectionError(ValueError):
    """A block or residual selection that matches nothing; the message lists candidates."""


@dataclass(frozen=True)
class FoundBlock:
    """A block chosen for measurement: its name, module and place, and why it was chosen."""

    name: str  # the module's name; `name#k` for the k-th call of a module called several times
    module: nn.Module
    parent: str  # the module it sits in ('' for the top level)
    why: str
    call: int = 0  # which call of the module this row measures
    order: int = 0  # the row's call in the trace (`Trace.calls[order]`)
    skip: str | None = None  # what its own addition adds ('its input', ...); None: no addition
    in_shape: tuple[int, ...] | None = None  # one example's, as the traced pass saw them
    out_shape: tuple[int, ...] | None = None

    @property
    def module_name(self) -> str:
        return self.name.partition("#")[0]


@dataclass(frozen=True)
class Discovery:
    """What `discover` found: the blocks with their layouts, what was left out, and the
    sentences a user must see about the choices made (`SPPMeta.notes`)."""

    blocks: list[FoundBlock]
    layouts: list[Layout]  # each block's
    left_out: list[LeftOut]
    notes: list[str]
    seconds: float  # the traced pass and the decisions

    def as_json(self) -> dict[str, Any]:
        """The blocks, what was left out and the notes as JSON (`nfcore blocks --json`)."""
        stages, transitions = stages_and_transitions(
            self.blocks, [(b.in_shape, b.out_shape) for b in self.blocks]
        )
        blocks = [
            {"index": i, "name": b.name, "stage": stages[i], "transition": transitions[i],
             "input_shape": list(b.in_shape or ()), "output_shape": list(b.out_shape or ()),
             "layout": layout.code, "skip": b.skip, "why": b.why}
            for i, (b, layout) in enumerate(zip(self.blocks, self.layouts, strict=True))
        ]  # fmt: skip
        left = [{"name": item.name, "why": item.why} for item in self.left_out]
        return {"blocks": blocks, "left_out": left, "notes": self.notes}


# --- patterns ------------------------------------------------------------------------------


def glob_regex(pattern: str) -> re.Pattern[str]:
    """`*` matches one dotted component (any characters but '.'), `?` one character."""
    parts = []
    for char in pattern:
        if char == "*":
            parts.append(r"[^.]+")
        elif char == "?":
            parts.append(r"[^.]")
        else:
            parts.append(re.escape(char))
    return re.compile("".join(parts) + r"\Z")


def _named(model: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(name, module) for name, module in model.named_modules() if name]


def _candidates(model: nn.Module) -> str:
    names = [name for name, module in _named(model) if next(module.children(), None) is not None]
    shown = ", ".join(names[:SHOWN_CANDIDATES]) or "none"
    more = f" (and {len(names) - SHOWN_CANDIDATES} more)" if len(names) > SHOWN_CANDIDATES else ""
    return f"modules with submodules here: {shown}{more}"


def select(model: nn.Module, spec: BlockSpec, what: str = "blocks") -> list[tuple[str, nn.Module]]:
    """The modules `spec` names, in forward (registration) order; a pattern or name that
    matches nothing raises SelectionError naming it and the first candidates."""
    return select_in(dict(model.named_modules()), spec, what)


def select_in(
    modules: dict[str, nn.Module], spec: BlockSpec, what: str = "blocks"
) -> list[tuple[str, nn.Module]]:
    """`select` among a model's `named_modules` already listed."""
    named = [(name, module) for name, module in modules.items() if name]
    model = modules[""]
    if callable(spec):
        chosen = [(name, module) for name, module in named if spec(name, module)]
        if not chosen:
            raise SelectionError(
                f"{what}: the selection function chose no module; {_candidates(model)}"
            )
        return chosen
    patterns = [spec] if isinstance(spec, str) else list(spec)
    chosen_names: set[str] = set()
    for pattern in patterns:
        regex = glob_regex(pattern)
        hits = {name for name, _ in named if regex.match(name)}
        if not hits:
            raise SelectionError(f"{what}: {pattern!r} matches no module; {_candidates(model)}")
        chosen_names |= hits
    return [(name, module) for name, module in named if name in chosen_names]


# --- the auto rule ---------------------------------------------------------------------------


def _is_block_class(module: nn.Module) -> bool:
    return not isinstance(module, CONTAINERS) and next(module.children(), None) is not None


def auto_blocks(model: nn.Module) -> list[FoundBlock]:
    """The residual blocks by the rule of the module docstring; SelectionError if none."""
    containers = [
        (name, module)
        for name, module in [("", model), *_named(model)]
        if isinstance(module, CONTAINERS)
    ]
    groups: dict[str, tuple[str, list[tuple[str, nn.Module]]]] = {}  # container -> (class, kids)
    for name, container in containers:
        kids = [(child_name, child) for child_name, child in container.named_children()
                if _is_block_class(child)]  # fmt: skip
        counts = Counter(type(child).__name__ for _, child in kids)
        if counts:
            cls, count = counts.most_common(1)[0]
            if count >= 2:
                groups[name] = (cls, [(k, c) for k, c in kids if type(c).__name__ == cls])
    block_classes = {cls for cls, _ in groups.values()}
    singles: dict[str, list[tuple[str, nn.Module]]] = {}  # container -> its one block-like kid
    for name, container in containers:
        kids = [(k, c) for k, c in container.named_children() if _is_block_class(c)]
        if name not in groups and len(kids) == 1:
            singles[name] = kids
    if not block_classes:  # every stage holds one block: a class alone in two containers
        alone = Counter(type(kids[0][1]).__name__ for kids in singles.values())
        block_classes = {cls for cls, count in alone.items() if count >= 2}
    for name, kids in singles.items():  # stages of one block
        if type(kids[0][1]).__name__ in block_classes:
            groups[name] = (type(kids[0][1]).__name__, kids)
    found: list[FoundBlock] = []
    for parent, (cls, kids) in groups.items():
        for child_name, child in kids:
            full = f"{parent}.{child_name}" if parent else child_name
            found.append(FoundBlock(full, child, parent, f"a {cls} in {parent or 'the model'}"))
    # A block that holds another group is a stage of blocks, not a block.
    names = {block.name for block in found}
    found = [b for b in found if not any(o.startswith(b.name + ".") for o in names)]
    if not found:
        raise SelectionError(
            "blocks: auto found no repeated blocks (no nn.Sequential or nn.ModuleList holds two "
            f"modules of one class); give patterns, e.g. --blocks 'layer*.*'; {_candidates(model)}"
        )
    order = {name: index for index, (name, _) in enumerate(_named(model))}
    return sorted(found, key=lambda block: order[block.name])


def _is_auto(spec: BlockSpec | None) -> bool:
    return isinstance(spec, str) and spec == "auto"


# --- discovery from a traced forward ---------------------------------------------------------


def discover(
    model: nn.Module, x: Tensor, spec: BlockSpec = "auto", channels: str = "auto"
) -> Discovery:
    """The blocks of `model` on the input `x` and their layouts, from one traced forward of
    its first example (`nfcore blocks`; `measure` traces its measured pass instead);
    SelectionError saying what to pass where it cannot tell."""
    start = time.perf_counter()
    try:
        trace = trace_forward(model, x[:1])
    except Exception:  # a network that squeezes its batch axis away: the whole batch
        trace = trace_forward(model, x)
    found = blocks_of(model, trace, spec, channels)
    return replace(found, seconds=time.perf_counter() - start)


def blocks_of(
    model: nn.Module,
    trace: Trace,
    spec: BlockSpec = "auto",
    channels: str = "auto",
    residuals: dict[int, Residual] | None = None,
    readers: Readers | None = None,
    explain: bool = True,
    modules: dict[str, nn.Module] | None = None,
) -> Discovery:
    """The blocks and layouts a finished trace shows (`residuals` and `readers`: as found
    while it was taken; `explain`: also what was left out, and why)."""
    start = time.perf_counter()
    modules = dict(model.named_modules()) if modules is None else modules
    notes: list[str] = []
    if _is_auto(spec):
        try:
            choice = choose_blocks(model, trace, residuals, explain, modules)
        except NoResidualBlocks as refusal:
            raise SelectionError(str(refusal)) from None
        named = [(block.name, block.why, block.skip) for block in choice.blocks]
        left_out = choice.left_out
        if explain:
            left_out += _left_by_the_container_rule(model, choice.blocks, choice.left_out)
        notes.append(_how_found(choice.blocks))
    else:
        how = "chosen by the selection function" if callable(spec) else "matched by a pattern"
        named = [(name, how, None) for name, _ in select(model, spec)]
        left_out = []
    blocks = _rows(modules, trace, named, notes)
    readers = readers if readers is not None else Readers.of_trace(trace)
    layouts, layout_notes = _layouts(trace, readers, blocks, channels)
    return Discovery(blocks, layouts, left_out, layout_notes + notes,
                     time.perf_counter() - start)  # fmt: skip


def _how_found(blocks: Sequence[Any]) -> str:
    """The note saying how the blocks were found: by their additions, and by which rule the
    blocks without one were taken."""
    said = f"blocks found by their residual additions: {len(blocks)} blocks"
    lifted = [b.name for b in blocks if b.rule == "sub-layers"]
    added = [b.name for b in blocks if b.rule == "container"]
    if lifted:
        said += f"; {listed(lifted)} made of residual sub-layers, each measured as one block"
    if added:
        said += f"; {listed(added)} without an addition of their own, taken by the container rule"
    return said


def _rows(
    modules: dict[str, nn.Module],
    trace: Trace,
    named: list[tuple[str, str, str | None]],
    notes: list[str],
) -> list[FoundBlock]:
    """A row per call of each block, in the order they ran."""
    rows: list[tuple[int, FoundBlock]] = []
    wanted = {name for name, _, _ in named}
    by_name: dict[str, list[Any]] = {}  # the calls of each named module, in order
    for call in trace.calls:
        if call.name in wanted and call.out is not None:
            by_name.setdefault(call.name, []).append(call)
    for name, why, skip in named:
        calls = by_name.get(name, [])
        if not calls:
            raise SelectionError(
                f"blocks: {name} did not run on a tensor in the forward pass (not called, or "
                "no tensor in and out); choose other blocks"
            )
        tied = len(calls) > 1
        if tied:
            notes.append(
                f"block {name!r} is called {len(calls)} times (weights tied): rows "
                f"{name}#0 ... {name}#{len(calls) - 1}, one per call"
            )
        for k, call in enumerate(calls):
            said = f"{why}; called {len(calls)} times, this is call {k}" if tied else why
            rows.append((call.order, FoundBlock(
                f"{name}#{k}" if tied else name, modules[name], name.rpartition(".")[0], said,
                call=k, order=call.order, skip=skip, in_shape=_example(call.in_shape),
                out_shape=_example(call.out_shape),
            )))  # fmt: skip
    return [row for _, row in sorted(rows, key=lambda item: item[0])]


def _example(shape: tuple[int, ...] | None) -> tuple[int, ...] | None:
    return None if shape is None else shape[1:]


def _layouts(
    trace: Trace, readers: Readers, blocks: list[FoundBlock], channels: str
) -> tuple[list[Layout], list[str]]:
    """Each block's layout, and the notes: a sentence per layout saying why (first), then
    where the network disagrees with the user's `channels`."""
    layouts: list[Layout] = []
    warnings: list[str] = []
    for block in blocks:
        try:
            layout, warning = decide(trace.calls[block.order], readers, channels,
                                     f"block {block.name}")  # fmt: skip
        except LayoutError as error:
            raise SelectionError(str(error)) from None
        layouts.append(layout)
        if warning is not None and not warnings:
            warnings.append(warning)  # one says it; the others would repeat it
    groups = _groups(layouts)
    notes = [
        f"{layout.words}{_which(ix) if len(groups) > 1 else ''}: {layout.why}; statistics "
        f"per channel over {layout.reduced_over}"
        for layout, ix in groups
    ]
    return layouts, notes + warnings


def _groups(layouts: Sequence[Layout]) -> list[tuple[Layout, list[int]]]:
    """Runs of blocks of one layout."""
    groups: list[tuple[Layout, list[int]]] = []
    for index, layout in enumerate(layouts):
        if groups and groups[-1][0].code == layout.code:
            groups[-1][1].append(index)
        else:
            groups.append((layout, [index]))
    return groups


def _which(indexes: list[int]) -> str:
    return f" (block {indexes[0]})" if len(indexes) == 1 else (
        f" (blocks {indexes[0]}-{indexes[-1]})")  # fmt: skip


def layout_summary(layouts: Sequence[Layout]) -> tuple[str, str]:
    """The result's `layout` and `reduced_over`: one, or each with its blocks."""
    groups = _groups(layouts)
    if len(groups) == 1:
        return groups[0][0].code, groups[0][0].reduced_over
    code = "+".join(dict.fromkeys(layout.code for layout, _ in groups))
    return code, "; ".join(f"{layout.reduced_over}{_which(ix)}" for layout, ix in groups)


def _left_by_the_container_rule(
    model: nn.Module, chosen: Sequence[Any], said: Sequence[LeftOut]
) -> list[LeftOut]:
    """What the container rule would pick and discovery did not, and why."""
    try:
        candidates = auto_blocks(model)
    except SelectionError:
        return []
    names = [block.name for block in chosen]  # in block order: the sentences say them so
    known = {*names, *(item.name for item in said)}
    out = []
    for candidate in candidates:
        if candidate.name in known:
            continue
        inside = next((n for n in names if candidate.name.startswith(n + ".")), None)
        holds = [n for n in names if n.startswith(candidate.name + ".")]
        if inside is not None:
            why = f"{candidate.why}, but inside the block {inside}: part of its branch"
        elif holds:
            why = f"{candidate.why}, but holds the blocks {listed(holds)}: a stage"
        else:
            why = f"{candidate.why}, but not residual: its output does not add its input"
        out.append(LeftOut(candidate.name, why))
    return out


def match_residuals(
    model: nn.Module, blocks: Sequence[FoundBlock], spec: BlockSpec
) -> list[nn.Module | None]:
    """For each block, the one module of `spec` inside it (its residual branch f(x)), or None
    where it has none; SelectionError where a block holds several."""
    chosen = select(model, spec, what="residual")
    out: list[nn.Module | None] = []
    for block in blocks:
        inside = [(name, module) for name, module in chosen
                  if name.startswith(block.module_name + ".")]  # fmt: skip
        if len(inside) > 1:
            raise SelectionError(
                f"residual: {len(inside)} modules match inside block {block.name} "
                f"({', '.join(name for name, _ in inside[:3])}); give one per block"
            )
        out.append(inside[0][1] if inside else None)
    if all(module is None for module in out):
        raise SelectionError(
            "residual: the pattern matches no module inside the blocks "
            f"({', '.join(b.name for b in blocks[:3])}, ...)"
        )
    return out


def stages_and_transitions(
    blocks: Sequence[FoundBlock],
    shapes: Sequence[tuple[tuple[int, ...] | None, tuple[int, ...] | None]],
) -> tuple[list[int], list[bool]]:
    """Each block's stage and whether it is a transition, from its (input, output) shapes and
    its name (the module docstring)."""
    transitions = [inp != out for inp, out in shapes]
    names = [block.name.partition("#")[0].split(".") for block in blocks]
    shared = 0  # dotted components all names share
    while all(len(n) > shared + 1 and n[shared] == names[0][shared] for n in names):
        shared += 1
    keys = [".".join(name[: shared + 1]) for name in names]
    flat = len(set(keys)) == len({".".join(name) for name in names})  # every block its own
    stages, stage = [], 0
    for index in range(len(blocks)):
        if index > 0:
            stage += int(transitions[index] if flat else keys[index] != keys[index - 1])
        stages.append(stage)
    return stages, transitions
