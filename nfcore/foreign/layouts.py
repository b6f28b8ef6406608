"""Where the channel axis of a block's tensors is, decided from what the network does with
them, so that statistics are taken per channel over the right axes.

Layouts: N,C vectors; N,C,L or N,L,C sequences (tokens are N,L,C); N,C,H,W or N,H,W,C images
(Swin keeps N,H,W,C). The evidence comes from the traced pass (`nfcore.foreign.trace`): the layers
fed the block's output, or its input where the block keeps its shape, or the same tensor
after operations that keep the axes where they are (a ReLU, a sum, a layer scale, a norm):
- a convolution, BatchNorm, GroupNorm or InstanceNorm reads axis 1 as its channels;
- a Linear reads the last axis;
- a LayerNorm (any module with a `normalized_shape` of one size: RMSNorm, timm's norms)
  normalizes the last axis, or axis 1 where it moves the axes first (timm's LayerNorm2d);
- without such a layer, a 4-D tensor that no axis reorder separates from the image input is
  N,C,H,W, as the input entered.
Layers that disagree (one reads axis 1, another the last) are a refusal, as is a tensor of 3
axes or more with no evidence: the message says what to pass (`channels`). `channels` given
by the user is used as asked, and the result says so, and where the network disagrees.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from torch import Tensor, nn
from torch.nn.modules.batchnorm import _BatchNorm
from torch.nn.modules.conv import _ConvNd
from torch.nn.modules.instancenorm import _InstanceNorm

from nfcore.foreign.trace import AXIS_MOVES, INPUT, AnyCall, Trace

# How far (operations) from a block's output or input a layer still tells its layout, and how
# far the layers are that decide it where they speak (a block's own norm, the next block's).
EVIDENCE_STEPS = 6
NEAR_STEPS = 3
# Operations that may reorder axes without a reorder's name (a same-shape einsum can).
REORDERS = AXIS_MOVES | {"einsum"}
CODES = {(2, 1): "NC", (3, 1): "NCL", (3, -1): "NLC", (4, 1): "NCHW", (4, -1): "NHWC",
         (5, 1): "NCDHW", (5, -1): "NDHWC"}  # fmt: skip
OTHER_AXES = {2: "N", 3: "N,L", 4: "N,H,W", 5: "N,D,H,W"}


LAYERS = (_ConvNd, _BatchNorm, _InstanceNorm, nn.GroupNorm, nn.Linear)  # layers that tell


class LayoutError(ValueError):
    """The network does not say where a block's channel axis is, or says two things."""


@dataclass(frozen=True)
class Layout:
    ndim: int
    axis: int  # the channel axis: 1 or -1
    why: str

    @property
    def code(self) -> str:
        return CODES.get((self.ndim, self.axis), f"{self.ndim}-D channels "
                         f"{'first' if self.axis == 1 else 'last'}")  # fmt: skip

    @property
    def reduced_over(self) -> str:
        return OTHER_AXES.get(self.ndim, f"N and {self.ndim - 2} more axes")

    @property
    def words(self) -> str:
        if self.ndim == 2:
            return "vectors (N,C)"
        return f"channels {'first' if self.axis == 1 else 'last'} ({self.code})"

    def view(self) -> Callable[[Tensor], Tensor]:
        """The block's tensor as N x C x (the other axes flattened) x 1, as reductions take."""
        axis, ndim = self.axis, self.ndim

        def view(y: Tensor) -> Tensor:
            y = y.detach()
            if y.ndim != ndim:  # a residual branch of another rank: its own channel axis 1
                return y if y.ndim == 4 else y.reshape(y.shape[0], y.shape[1], -1, 1)
            if axis == -1 and ndim > 2:
                y = y.movedim(-1, 1)
            return y if ndim == 4 else y.reshape(y.shape[0], y.shape[1], -1, 1)

        return view


class Reading(NamedTuple):
    """A layer that reads (or makes) an axis of a block's tensor as its channels."""

    axis: int
    size: int
    kind: str  # the layer's class
    name: str  # the layer's module name
    verb: str  # "reads", "normalizes", "makes"

    @property
    def made(self) -> bool:
        return self.verb == "makes"  # said of the layer's output, not of what it reads

    @property
    def says(self) -> str:
        where = "axis 1" if self.axis == 1 else "the last axis"
        return f"the {self.kind} {self.name} {self.verb} {where} ({self.size})"


def readings(call: AnyCall, trace: Trace) -> list[tuple[int, Reading]]:
    """What the layer of `call` says of its input's channel axis and its output's, by node."""
    module, shape, out = call.module, call.in_shape, call.out_shape
    if shape is None or len(shape) < 2 or call.inp is None:
        return []
    kind, said = type(module).__name__, []
    if isinstance(module, _ConvNd | _BatchNorm | _InstanceNorm | nn.GroupNorm):
        conv = isinstance(module, _ConvNd)
        size = (module.in_channels if conv
                else getattr(module, "num_features", None) or getattr(module, "num_channels", 0))  # fmt: skip
        if shape[1] == size:
            said.append(
                (call.inp, Reading(1, size, kind, call.name, "reads" if conv else "normalizes"))
            )
        made = module.out_channels if conv else size
        if out is not None and len(out) == len(shape) and out[1] == made:
            said.append((call.out, Reading(1, made, kind, call.name, "makes")))
    elif isinstance(module, nn.Linear):
        if shape[-1] == module.in_features:
            said.append((call.inp, Reading(-1, module.in_features, kind, call.name, "reads")))
        if out is not None and out[-1] == module.out_features:
            said.append((call.out, Reading(-1, module.out_features, kind, call.name, "makes")))
    else:
        normalized = getattr(module, "normalized_shape", None)
        if isinstance(normalized, int):
            normalized = (normalized,)
        if isinstance(normalized, tuple | list) and len(normalized) == 1:
            size = int(normalized[0])
            moved = any(op.name in REORDERS and call.inp in op.parents
                        for op in trace.ops[call.start : call.end])  # fmt: skip
            axis = 1 if moved else -1
            if shape[axis] == size:
                reading = Reading(axis, size, kind, call.name, "normalizes")
                said.append((call.inp, reading))
                if out == shape:
                    said.append((call.out, reading))
    return [(node, reading) for node, reading in said if node is not None]


def _ended(call: AnyCall) -> tuple[int, int]:
    return call.end, -call.depth


class Readers:
    """Every layer's readings, by the tensor read or made, worked out from the trace's calls
    when a block asks (a layer's only when a block near it asks: most layers are near none)."""

    def __init__(self, trace: Trace) -> None:
        self.trace = trace
        self.calls_by_node: dict[int, list[AnyCall]] = {}  # node -> the layers reading/making it
        self.said: dict[int, list[tuple[int, Reading]]] = {}  # call order -> its readings
        self.kept: dict[int, list[int]] = {}  # node -> nodes a shape-keeping call links it to
        self.tells: dict[int, bool] = {}  # module -> whether it is a layer that reads channels
        self.seen = 0  # the trace's calls looked at so far
        self.running: list[AnyCall] = []  # calls looked at before they ended
        # Once the trace is finished: each node's neighbours and readings, worked out once
        # (the blocks of a network look at overlapping stretches of it).
        self.memo: dict[tuple[int, bool], list[int]] = {}
        self.memo_readings: dict[int, list[Reading]] = {}
        self.memo_balls: dict[tuple[int, bool, int], frozenset[int]] = {}
        self.memo_parts: dict[tuple[int, tuple[int, ...]], tuple[list[Reading], ...]] = {}

    @classmethod
    def of_trace(cls, trace: Trace) -> Readers:
        return cls(trace)

    def _catch_up(self) -> None:
        """Take in the calls that ended since the last look."""
        calls = self.trace.calls
        if self.seen == len(calls) and not self.running:
            return
        running, self.running = self.running, []
        told, by_node, kept = self.tells, self.calls_by_node, self.kept
        for call in (*running, *calls[self.seen :]):  # (one loop: run once per call)
            if call.end < 0:
                self.running.append(call)
                continue
            inp, out = call.inp, call.out
            if inp is None:
                continue  # not a signal: nothing to read, nothing kept
            module = call.module
            tells = told.get(id(module))
            if tells is None:
                tells = told[id(module)] = isinstance(module, LAYERS) or (
                    getattr(module, "normalized_shape", None) is not None
                )
            if tells:
                by_node.setdefault(inp, []).append(call)
                if out is not None and out != inp:
                    by_node.setdefault(out, []).append(call)
            if out is not None and call.in_shape == call.out_shape:
                kept.setdefault(inp, []).append(out)
                kept.setdefault(out, []).append(inp)
        self.seen = len(calls)

    def _readings(self, node: int) -> list[Reading]:
        found = self.memo_readings.get(node)
        if found is not None:
            return found
        found = []
        calls = self.calls_by_node.get(node, ())
        if len(calls) > 1:
            calls = sorted(calls, key=_ended)
        for call in calls:  # in the order the calls ended, the inner first
            said = self.said.get(call.order)
            if said is None:
                said = self.said[call.order] = readings(call, self.trace)
            found += [reading for at, reading in said if at == node]
        if self.trace.finished:
            self.memo_readings[node] = found
        return found

    def _neighbours(self, node: int, forward: bool) -> list[int]:
        """The tensors one step from `node` forward (what it becomes) or backward (what it
        came from) by an operation that keeps its shape and axes, or across a module call
        that keeps its input's shape (`kept`: a block, a sub-layer: what they take and give
        is laid out alike)."""
        found = self.memo.get((node, forward))
        if found is not None:
            return found
        nodes, ops = self.trace.nodes, self.trace.ops
        if forward:
            steps = [r for i in self.trace.consumers.get(node, ()) if ops[i].name not in REORDERS
                     for r in ops[i].results]  # fmt: skip
        else:
            op = nodes[node].op
            steps = [] if op < 0 or ops[op].name in REORDERS else list(ops[op].parents)
        shape = nodes[node].shape
        found = [other for other in (*steps, *self.kept.get(node, ()))
                 if nodes[other].shape == shape]  # fmt: skip
        if self.trace.finished:
            self.memo[(node, forward)] = found
        return found

    def _near(self, starts: list[int], forward: bool, steps: int) -> set[int]:
        """The tensors at most `steps` such steps from `starts`, forward or backward."""
        seen, frontier = set(starts), set(starts)
        memo = self.memo if self.trace.finished else {}
        for _ in range(steps):
            following: set[int] = set()
            for node in frontier:
                others = memo.get((node, forward))
                following.update(others if others is not None else self._neighbours(node, forward))
            following -= seen
            if not following:
                break
            seen |= following
            frontier = following
        return seen

    def of(self, call: AnyCall, steps: int = EVIDENCE_STEPS) -> list[Reading]:
        """The readings of the call's output (and input, where it keeps its shape): by the
        layers fed them or the same tensors after shape-keeping operations, and by the layers
        that made them, at most `steps` operations away."""
        if call.out is None:
            return []
        self._catch_up()
        # The tensors near a set of them: those near one of them (worked out once per tensor).
        near = self._ball(call.out, True, steps) | self._ball(call.out, False, steps)
        if call.inp is not None and call.in_shape == call.out_shape:
            near |= self._ball(call.inp, True, steps)
        shape = call.out_shape or ()
        # What reads it first: the plainer words; the layers that made it after them.
        plain: list[Reading] = []
        made: list[Reading] = []
        for node in sorted(self.calls_by_node.keys() & near):
            parts = self.memo_parts.get((node, shape))
            if parts is None:
                said = [r for r in self._readings(node) if shape[r.axis] == r.size]
                parts = ([r for r in said if r.verb != "makes"],
                         [r for r in said if r.verb == "makes"])  # fmt: skip
                if self.trace.finished:
                    self.memo_parts[(node, shape)] = parts
            plain += parts[0]
            made += parts[1]
        return plain + made

    def _ball(self, node: int, forward: bool, steps: int) -> set[int] | frozenset[int]:
        """`_near` from one tensor (once the trace is finished, worked out once)."""
        if not self.trace.finished:
            return self._near([node], forward, steps)
        ball = self.memo_balls.get((node, forward, steps))
        if ball is None:
            ball = self.memo_balls[(node, forward, steps)] = frozenset(
                self._near([node], forward, steps)
            )
        return ball

    def axes_now(self, call: AnyCall) -> tuple[int, ...]:
        """The channel axes to measure the call's output in while the pass runs: the one its
        layers say so far, or both where they say none or two (decided after the pass)."""
        if len(call.out_shape or ()) <= 2:
            return (1,)
        for steps in (2, EVIDENCE_STEPS):  # the nearest layers mostly tell: a cheap look first
            axes = {r.axis for r in self.of(call, steps)}
            if len(axes) == 1:
                return (axes.pop(),)
        return (1, -1)


def decide(call: AnyCall, readers: Readers, channels: str, what: str) -> tuple[Layout, str | None]:
    """The layout of a block's output, and a sentence where the user's `channels` is not what
    the network says. LayoutError where the network says nothing, or two things."""
    shape = call.out_shape or ()
    ndim = len(shape)
    if ndim < 2:
        raise LayoutError(f"layout: {what}'s output has shape {shape}: no channel axis")
    if ndim == 2:  # axis 1 is the last: nothing to decide
        return Layout(2, 1, "N,C vectors"), None
    # The layers nearest the block first; further ones only where those say nothing.
    readings = readers.of(call, NEAR_STEPS) or readers.of(call)
    axes = {r.axis for r in readings}
    if channels != "auto":
        axis = 1 if channels == "first" else -1
        asked = Layout(ndim, axis, f"as you asked (channels='{channels}')")
        other = [r for r in readings if r.axis != axis]
        if other:
            return asked, (f"you asked channels {channels} for {what}, but {other[0].says}; "
                           "the statistics follow your choice")  # fmt: skip
        return asked, None
    if len(axes) > 1:
        one = next(r for r in readings if r.axis == 1)
        last = next(r for r in readings if r.axis == -1)
        raise LayoutError(
            f"layout: the network disagrees on where the channels of {what} are "
            f"({_shape(shape)} per example): {one.says}, and {last.says}; pass channels='first' "
            "or 'last' (--channels first|last)"
        )
    if axes:
        agree = f" ({len(readings) - 1} more layers agree)" if len(readings) > 1 else ""
        return Layout(ndim, axes.pop(), f"{readings[0].says}{agree}"), None
    if (
        ndim == 4
        and call.out is not None
        and not readers.trace.nodes[call.out].moved
        and (len(readers.trace.nodes[INPUT].shape) == 4)
    ):
        return Layout(4, 1, "no layer reads it, and no axis reorder lies between the N,C,H,W "
                            "input and it: N,C,H,W as the input entered"), None  # fmt: skip
    raise LayoutError(
        f"layout: nothing in the network says where the channels of {what} are "
        f"({_shape(shape)} per example: no convolution, norm or Linear reads it); pass "
        "channels='last' for N,...,C (tokens) or 'first' for N,C,... (--channels last|first)"
    )


def _shape(shape: tuple[int, ...]) -> str:
    return " x ".join(str(side) for side in shape[1:])
