"""Residual blocks found by what they do: a module whose output adds its input (or a
projection of it) to a branch, seen in one traced forward pass (`nfcore.foreign.trace`).

1. **Residual calls.** A module call is residual when its output goes back to its input
   through additions of two signals (`x + f(x)`, `out += downsample(x)`) and operations on
   one signal before, between and after them (the pre-activation, the projection on the
   skip, a ReLU after the sum), and one of these additions is its own: not inside a
   residual call nested in it. Calls are taken innermost first, so a stage of blocks (whose
   output also goes back to its input through the blocks' additions) owns none, while a
   Transformer block owns both of its additions (attention, then MLP).
2. **Blocks made of residual sub-layers** (MaxViT: an MBConv, a window and a grid
   attention): where the residual modules under one module (the nearest that is not a
   container) are of two classes or more, every module of its class holds the same ones, and
   some keep their input's shape (repeated in place, as blocks are and stages are not), that
   module is the block.
3. **Blocks that do not add**, the container rule given the residual blocks: a module of a
   block's class beside them (the first block of an EfficientNet stage, whose shape
   changes); the one module of a stage beside stages of residual blocks, or its modules of a
   block's class (a single-block first stage); a module beside them that holds residual
   blocks itself (a MobileViT block), which is then measured as one block.

What was left out, and why, is kept for `nfcore blocks`. No residual call at all is
`NoResidualBlocks`, whose message names modules to pass instead.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass
from itertools import takewhile

from torch import nn

from nfcore.foreign.trace import ADDITIONS, Call, Trace

CONTAINERS = (nn.Sequential, nn.ModuleList, nn.ModuleDict)
SHOWN = 4  # names listed in a sentence before "and N more"


class NoResidualBlocks(ValueError):
    """The traced forward has no residual block; the message says what to pass instead."""


@dataclass(frozen=True)
class Residual:
    call: Call
    adds: int  # the additions it owns
    skip: str  # what they add: 'its input', or 'a projection of its input (downsample)'


@dataclass(frozen=True)
class Chosen:
    name: str
    why: str
    skip: str | None  # what its own additions add; None: it has none (not residual itself)
    rule: str = "residual"  # or "sub-layers" (step 2), "container" (step 3)


@dataclass(frozen=True)
class LeftOut:
    name: str
    why: str


@dataclass(frozen=True)
class Choice:
    blocks: list[Chosen]  # in the order of their first call
    left_out: list[LeftOut]


def a(word: str) -> str:
    """The word with its indefinite article."""
    return f"{'an' if word[:1].lower() in 'aeiou' else 'a'} {word}"


def listed(names: list[str]) -> str:
    shown = ", ".join(names[:SHOWN])
    return shown + (f" and {len(names) - SHOWN} more" if len(names) > SHOWN else "")


# --- 1. residual calls ------------------------------------------------------------------------


class ResidualFinder:
    """Residual calls as calls end (children before the calls they ran inside): during the
    measured pass, or over a finished trace (`residual_calls`)."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.owned: set[int] = set()
        self.found: dict[int, Residual] = {}  # by call order

    def see(self, call: Call) -> Residual | None:
        """The call, if it is residual (it then owns the additions found)."""
        if call.inp is None or call.out is None:
            return None
        additions = self.trace.additions
        first = bisect_left(additions, call.start)
        if not any(
            i not in self.owned for i in additions[first : bisect_left(additions, call.end)]
        ):
            return None  # only its children's additions: a stage, a network, or none
        adds = _additions_back_to_input(self.trace, call, self.owned)
        if not adds:
            return None
        self.owned |= adds
        residual = Residual(call, len(adds), _skip(self.trace, call, min(adds)))
        self.found[call.order] = residual
        return residual


def residual_calls(trace: Trace) -> dict[int, Residual]:
    """The residual calls of a finished trace by their order, each with the additions it owns."""
    finder = ResidualFinder(trace)
    for call in sorted(trace.calls, key=lambda c: (c.end, -c.depth)):
        finder.see(call)
    return finder.found


def _additions_back_to_input(trace: Trace, call: Call, owned: set[int]) -> set[int]:
    """The additions not in `owned` on the ways from the call's output back to its input
    (empty: there is no such way, or none passes an addition of its own).

    Nodes are numbered in the order they were made, so one pass over the call's operations
    in order sees every operand before its result."""
    reach: dict[int, frozenset[int] | None] = {}

    def back(node: int) -> frozenset[int] | None:
        return frozenset() if node == call.inp else reach.get(node)

    for op in trace.ops[call.start : call.end]:
        if op.name in ADDITIONS and len(op.parents) == 2:
            ways = [way for way in map(back, op.parents) if way is not None]
            mine = frozenset() if op.index in owned else frozenset({op.index})
            result = mine.union(*ways) if ways else None
        elif len(op.parents) == 1:
            result = back(op.parents[0])
        else:
            result = None  # a product, a concatenation, attention: two signals, no skip
        for node in op.results:
            reach[node] = result
    return set(back(call.out) or ()) if call.out is not None else set()


def _skip(trace: Trace, call: Call, first_add: int) -> str:
    """What the call's first addition adds: its input, the output of a module fed by it (the
    shortest, the projection rather than the branch), or a shortcut handed to it."""
    parents = trace.ops[first_add].parents
    if call.inp in parents:
        return "its input"
    inside = takewhile(lambda sub: sub.start < call.end, trace.calls[call.order + 1 :])
    fed = [sub for sub in inside if sub.out in parents and sub.inp == call.inp]
    if fed:
        projection = min(fed, key=lambda sub: sub.end - sub.start)
        return f"a projection of its input ({projection.name.rpartition('.')[2]})"
    if any(trace.nodes[p].op < call.start for p in parents):
        return "a shortcut handed to it with its input"
    return "a projection of its input"


# --- 2, 3. from residual calls to blocks -----------------------------------------------------


def _parent(name: str) -> str:
    return name.rpartition(".")[0]


def _inside(name: str, outer: str) -> bool:
    return outer == "" or name.startswith(outer + ".")


class _Network:
    """The module tree and the calls of each module."""

    def __init__(
        self, model: nn.Module, trace: Trace, modules: dict[str, nn.Module] | None = None
    ) -> None:
        self.modules = dict(model.named_modules()) if modules is None else modules
        self.calls: dict[str, list[Call]] = {}
        for call in trace.calls:
            self.calls.setdefault(call.name, []).append(call)
        self.by_order = {call.order: call for call in trace.calls}

    def cls(self, name: str) -> str:
        return type(self.modules[name]).__name__

    def signal(self, name: str) -> bool:
        """Called in the pass with a tensor in and out."""
        return any(c.inp is not None and c.out is not None for c in self.calls.get(name, []))

    def block_like(self, name: str) -> bool:
        """Called on a signal and made of modules (not one layer such as a ReLU or a Flatten)."""
        return self.signal(name) and next(self.modules[name].children(), None) is not None

    def children(self, name: str) -> list[str]:
        prefix = f"{name}." if name else ""
        return [prefix + child for child, _ in self.modules[name].named_children()]

    def first_call(self, name: str) -> int:
        return min((c.order for c in self.calls.get(name, [])), default=1 << 30)

    def shape_kept(self, name: str) -> bool:
        return any(c.in_shape == c.out_shape and c.in_shape is not None
                   for c in self.calls.get(name, []))  # fmt: skip


def choose_blocks(
    model: nn.Module,
    trace: Trace,
    residuals: dict[int, Residual] | None = None,
    explain: bool = True,
    modules: dict[str, nn.Module] | None = None,
) -> Choice:
    """The blocks a researcher would name, by the rules of the module docstring
    (`residuals`: the residual calls, where found during the pass; `explain`: also the
    modules beside them left out, and why)."""
    net = _Network(model, trace, modules)
    residuals = residual_calls(trace) if residuals is None else residuals
    if not residuals:
        raise NoResidualBlocks(_refusal(net))
    chosen: dict[str, Chosen] = {}
    left: list[LeftOut] = []
    for residual in residuals.values():
        call = residual.call
        many = f" ({residual.adds} additions)" if residual.adds > 1 else ""
        why = f"its output adds {residual.skip} to a branch{many}"
        chosen.setdefault(call.name, Chosen(call.name, why, residual.skip))
    _lift_sub_layers(net, chosen, left)
    for name in sorted(chosen):  # a residual module around residual blocks: keep the inner
        inner = [other for other in chosen if other != name and _inside(other, name)]
        if inner:
            del chosen[name]
            left.append(LeftOut(name, f"holds the residual blocks {listed(inner)}: a stage of "
                                      "them, or a skip around them"))  # fmt: skip
    _complete(net, chosen, left)
    if explain:
        _left_beside(net, chosen, left)
    blocks = sorted(chosen.values(), key=lambda block: net.first_call(block.name))
    return Choice(blocks, left)


def _holder(net: _Network, name: str) -> str | None:
    """The nearest module above `name` that is not a container, nor the network."""
    parent = _parent(name)
    while parent and isinstance(net.modules[parent], CONTAINERS):
        parent = _parent(parent)
    return parent or None


def _lift_sub_layers(net: _Network, chosen: dict[str, Chosen], left: list[LeftOut]) -> None:
    """Residual sub-layers of a repeated block (MaxViT's MBConv, window and grid attention)
    are replaced by the block."""
    held: dict[str, list[str]] = {}
    for name in chosen:
        holder = _holder(net, name)
        if holder is not None:
            held.setdefault(holder, []).append(name)

    def signature(holder: str) -> tuple[str, ...]:
        return tuple(net.cls(n) for n in sorted(held.get(holder, []), key=net.first_call))

    by_class: dict[str, list[str]] = {}
    for holder in held:
        by_class.setdefault(net.cls(holder), []).append(holder)
    for cls, holders in by_class.items():
        instances = [n for n in net.modules if n and net.cls(n) == cls]
        kinds = signature(holders[0])
        if (len(set(kinds)) < 2 or len(instances) < 2
                or any(signature(i) != kinds for i in instances)
                or not any(net.shape_kept(i) for i in instances)):  # fmt: skip
            continue
        for holder in holders:
            parts = sorted(held[holder], key=net.first_call)
            for part in parts:
                del chosen[part]
                left.append(LeftOut(part, f"a residual sub-layer of {holder}, measured as a "
                                          f"whole (every {cls} holds {', '.join(kinds)})"))  # fmt: skip
            chosen[holder] = Chosen(holder, "made of the residual sub-layers "
                                            f"{listed([p.rpartition('.')[2] for p in parts])}, "
                                            f"as every {cls} is", None, "sub-layers")  # fmt: skip


def _complete(net: _Network, chosen: dict[str, Chosen], left: list[LeftOut]) -> None:
    """Modules beside the residual blocks that are blocks too, by the container rule."""
    classes = {net.cls(name) for name in chosen}
    stages = {_parent(name) for name in chosen}
    added: dict[str, str] = {}
    for stage in sorted(stages):
        for child in net.children(stage):
            if child in chosen or not net.block_like(child):
                continue
            holds = [n for n in chosen if _inside(n, child)]
            if holds:
                added[child] = (f"in {stage or 'the network'} beside residual blocks; it holds "
                                f"residual blocks of its own ({listed(holds)}), measured as one")  # fmt: skip
            elif net.cls(child) in classes:
                added[child] = (f"{a(net.cls(child))} like the blocks beside it in "
                                f"{stage or 'the network'}; not residual itself (its output "
                                "does not add its input)")  # fmt: skip
    stage_kinds = {type(net.modules[stage]) for stage in stages}
    for stage in sorted(stages):  # stages beside them that hold no residual block
        if not stage:
            continue
        kind = type(net.modules[stage])
        for sibling in net.children(_parent(stage)):
            if sibling in stages or type(net.modules[sibling]) is not kind:
                continue
            kids = [
                k
                for k in net.children(sibling)
                if net.block_like(k) and type(net.modules[k]) not in stage_kinds
            ]  # not a stage in a stage (DLA)
            for kid in kids:
                holds = any(_inside(n, kid) for n in chosen)
                if len(kids) == 1 or net.cls(kid) in classes or holds:
                    beside = sorted(st for st in stages if _parent(st) == _parent(stage))
                    added[kid] = (f"a module of the stage {sibling}, {a(kind.__name__)} like "
                                  f"{listed(beside)} that hold residual blocks"
                                  + ("; it holds residual blocks of its own, measured as one"
                                     if holds else ""))  # fmt: skip
    for name, why in added.items():
        for inner in [n for n in chosen if _inside(n, name)]:
            del chosen[inner]
            left.append(LeftOut(inner, f"a residual block inside {name}, which is measured "
                                       "as one block"))  # fmt: skip
        chosen[name] = Chosen(name, why, None, "container")


def _left_beside(net: _Network, chosen: dict[str, Chosen], left: list[LeftOut]) -> None:
    """The modules beside the blocks and beside their stages that are not blocks, and why."""
    stages = {_parent(name) for name in chosen}
    near = {child for stage in stages for child in net.children(stage)}
    near |= {child for stage in stages if stage for child in net.children(_parent(stage))}
    said = {item.name for item in left}
    for name in sorted(near - set(chosen) - stages - said, key=net.first_call):
        if not net.block_like(name):
            continue  # one layer (a ReLU, the head's Linear): nobody's candidate
        inside = [n for n in chosen if _inside(n, name)]
        if inside:
            left.append(LeftOut(name, f"holds the blocks {listed(inside)}: a stage"))
            continue
        shapes = [(c.in_shape, c.out_shape) for c in net.calls[name] if c.out_shape]
        change = ""
        if shapes and shapes[0][0] != shapes[0][1]:
            change = f"; it changes the shape {_shape(shapes[0][0])} -> {_shape(shapes[0][1])}"
        left.append(LeftOut(name, f"not residual: its output does not add its input{change}"))


def _shape(shape: tuple[int, ...] | None) -> str:
    return "?" if shape is None else "x".join(str(side) for side in shape[1:])


def _refusal(net: _Network) -> str:
    """No residual block: say so, and which repeated modules could be named instead (the
    class whose modules are shallowest, then largest: Inception modules, not their convs)."""
    counts = Counter(net.cls(n) for n in net.modules if n and net.block_like(n)
                     and not isinstance(net.modules[n], CONTAINERS))  # fmt: skip
    repeated = [cls for cls, count in counts.items() if count >= 2]
    advice = "name the blocks to measure (blocks=[...], --blocks PATTERNS)"
    if repeated:

        def rank(cls: str) -> tuple[int, int]:
            names = [n for n in net.modules if n and net.cls(n) == cls]
            return (min(n.count(".") for n in names),
                    -sum(1 for _ in net.modules[names[0]].modules()))  # fmt: skip

        best = min(repeated, key=rank)
        names = [n for n in net.modules if n and net.cls(n) == best and net.signal(n)]
        advice += f", e.g. {_pattern(net, names)} (the {len(names)} {best} modules)"
    return (
        "blocks: no residual blocks: in a forward pass no module's output adds its input (or a "
        f"projection of it) to a branch; {advice}"
    )


def _pattern(net: _Network, names: list[str]) -> str:
    """A glob naming exactly `names` where their common start does, else their list."""
    prefix = names[0]
    for name in names[1:]:
        while not name.startswith(prefix):
            prefix = prefix[:-1]
    head, _, stem = prefix.rpartition(".")
    glob = f"{head}.{stem}*" if head else f"{stem}*"
    depth = names[0].count(".")
    matched = [n for n in net.modules if n.count(".") == depth and n.startswith(prefix)]
    if stem and sorted(matched) == sorted(names):
        return f"--blocks '{glob}'"
    return f"--blocks {','.join(names)}"
