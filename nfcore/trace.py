"""A record of what a network does in a forward pass: its module calls, the tensor
operations between them, and which tensor came from which.

Block discovery (`nfcore.residuals`) and the layout decision (`nfcore.layouts`) read this
record instead of module names. It is taken during the measured pass itself (`recording`,
`nfcore.foreign_spp`), or alone by `trace_forward` (`nfcore blocks`). A `TorchFunctionMode`
sees every torch function the network calls (`torch.add`, `x + y`, `out += identity`,
`F.conv2d`, `F.layer_norm`, ...) and hooks on every module see its calls; `on_call_end`
hears of each call as it ends, its output still at hand.

A tensor is known by its identity, checked by a weak reference (an id is reused once its
tensor is freed, and the record keeps no tensor alive: the pass's memory stays a plain
forward's). An in-place operation (`out += identity`) gives the same tensor a new node; one
that hands back its operand unchanged (`x.contiguous()`, `F.relu(x, inplace=True)`) keeps
its node. Only tensors computed from the input are nodes: weights, buffers and constants are
not, so `x + pos_embed` is not an addition of two signals.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

INPUT = 0  # the node of the network's input

# Functions that add two tensors (`x + y` is `add`, `x += y` is `add_`).
ADDITIONS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
# Functions that reorder the axes of a tensor: across them a channel axis moves. `__get__` is
# how the mode sees `.T` and `.mT`.
AXIS_MOVES = frozenset({"permute", "transpose", "transpose_", "swapaxes", "swapaxes_",
                        "swapdims", "swapdims_", "movedim", "moveaxis", "t", "t_", "__get__"})  # fmt: skip
# Functions whose result is not a new tensor value: passed by at once (most of the calls a
# network makes are these, and the record should cost little next to the pass).
NOT_VALUES = frozenset({"size", "dim", "numel", "stride", "is_contiguous", "data_ptr",
                        "element_size", "__len__", "__bool__", "__index__", "item", "tolist",
                        "__format__", "__repr__", "__hash__", "__eq__", "__ne__", "__iter__",
                        "storage_offset", "__setitem__", "requires_grad_", "register_hook",
                        "backward", "dtype", "device"})  # fmt: skip


@dataclass(slots=True)
class Node:
    """A tensor computed from the input: the operation that made it and its operands."""

    op: int  # index into Trace.ops (-1 for the input)
    parents: tuple[int, ...]  # the nodes among its operands
    shape: tuple[int, ...]
    moved: bool  # an axis reorder lies between the input and it


@dataclass(slots=True)
class Op:
    index: int
    name: str
    parents: tuple[int, ...]  # the nodes among its operands
    results: tuple[int, ...]  # the nodes it made (an in-place op: a new node of its operand)


@dataclass(slots=True)
class Call:
    """One call of a module: its span of operations, its first tensor in and out."""

    name: str
    module: nn.Module
    order: int  # the k-th call entered in the pass
    start: int  # ops[start:end] ran inside the call
    end: int = -1
    inp: int | None = None  # the node of its first tensor argument (None: not a signal)
    out: int | None = None  # the node of its first tensor result
    in_shape: tuple[int, ...] | None = None
    out_shape: tuple[int, ...] | None = None
    depth: int = 0  # modules it was called inside
    parent: int = -1  # the order of the call it ran inside (-1: none)


@dataclass
class Trace:
    nodes: list[Node] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    calls: list[Call] = field(default_factory=list)
    consumers: dict[int, list[int]] = field(default_factory=dict)  # node -> ops reading it
    additions: list[int] = field(default_factory=list)  # ops adding two nodes, in order
    _known: dict[int, tuple[int, weakref.ref]] = field(default_factory=dict)

    def node_of(self, tensor: Tensor) -> int | None:
        known = self._known.get(id(tensor))
        return known[0] if known is not None and known[1]() is tensor else None

    def _new_node(self, tensor: Tensor, op: int, parents: tuple[int, ...], moved: bool) -> int:
        self.nodes.append(Node(op, parents, tuple(tensor.shape), moved))
        self._known[id(tensor)] = (len(self.nodes) - 1, weakref.ref(tensor))
        return len(self.nodes) - 1

    def record(self, name: str, args: tuple, kwargs: dict | None, result: Any) -> None:
        """An operation: its result becomes a node if an operand was one."""
        known = self._known
        operands, parents = [], []
        for value in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(value, Tensor):
                entry = known.get(id(value))
                if entry is not None and entry[1]() is value:
                    operands.append(value)
                    parents.append(entry[0])
            elif isinstance(value, list | tuple):
                for item in value:
                    entry = known.get(id(item)) if isinstance(item, Tensor) else None
                    if entry is not None and entry[1]() is item:
                        operands.append(item)
                        parents.append(entry[0])
        if not parents:
            return
        outs = (result,) if isinstance(result, Tensor) else tuple(_tensors((result,)))
        if not outs:
            return
        unique = tuple(dict.fromkeys(parents)) if len(parents) > 1 else (parents[0],)
        index = len(self.ops)
        in_place = (name[-1] == "_" and name[-2:] != "__") or name == "__iadd__"
        nodes = self.nodes
        moved = name in AXIS_MOVES or any(nodes[p].moved for p in unique)
        made = []
        for out in outs:
            if not in_place and any(out is t for t in operands):
                continue  # handed back unchanged: the same node
            made.append(self._new_node(out, index, unique, moved))
        self.ops.append(Op(index, name, unique, tuple(made)))
        consumers = self.consumers
        for parent in unique:
            consumers.setdefault(parent, []).append(index)
        if len(unique) == 2 and name in ADDITIONS:
            self.additions.append(index)

    def producer(self, node: int) -> Op | None:
        op = self.nodes[node].op
        return None if op < 0 else self.ops[op]

    def forget_tensors(self) -> None:
        """Drop what identifies tensors (after the pass: nodes keep shapes only)."""
        self._known.clear()


def _tensors(values: tuple) -> Iterator[Tensor]:
    """The tensors among values, and in the lists, tuples and dicts among them (one level)."""
    for value in values:
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, list | tuple):
            yield from (item for item in value if isinstance(item, Tensor))
        elif isinstance(value, dict):
            yield from (item for item in value.values() if isinstance(item, Tensor))


def first_tensor_of(args: tuple, kwargs: dict | None = None) -> Tensor | None:
    """The first tensor among a call's arguments (or its result's items)."""
    return next(_tensors((*args, *(kwargs or {}).values())), None)


class _Recording(TorchFunctionMode):
    def __init__(self, trace: Trace) -> None:
        super().__init__()
        self.trace = trace
        self.names: dict[Any, str | None] = {}  # function -> its name, None: not recorded

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        result = func(*args, **kwargs) if kwargs else func(*args)
        try:
            name = self.names[func]
        except (KeyError, TypeError):
            name = getattr(func, "__name__", None)
            name = None if not name or name in NOT_VALUES else name
            with suppress(TypeError):  # not hashable: asked again next time
                self.names[func] = name
        if name is not None:
            self.trace.record(name, args, kwargs, result)
        return result


CallEnd = Callable[[Call, Any], None]

# What a torch layer that reads channels has (a convolution, a Linear, a norm): its call is
# kept (the layout is read from it), recorded as one operation of its input.
LAYER_ATTRIBUTES = ("in_channels", "in_features", "num_features", "num_channels",
                    "normalized_shape")  # fmt: skip


def _kind(module: nn.Module) -> str:
    """'layer': one of torch's layers that read channels (its call is one operation);
    'skip': another of torch's layers without submodules (a ReLU, a pooling: its operations
    are recorded, its call is of no use); 'module': anything else (a call to keep)."""
    if next(module.children(), None) is not None:
        return "module"
    kind = _KINDS.get(type(module))
    if kind is None:
        torch_made = type(module).__module__.startswith("torch.nn.")
        reads = any(hasattr(module, name) for name in LAYER_ATTRIBUTES)
        kind = _KINDS[type(module)] = ("layer" if reads else "skip") if torch_made else "module"
    return kind


_KINDS: dict[type, str] = {}  # a leaf module's kind by its class (torch's layers are fixed)


@contextmanager
def recording(
    model: nn.Module,
    trace: Trace,
    on_call_end: CallEnd | None = None,
    keep: frozenset[int] = frozenset(),
    modules: dict[str, nn.Module] | None = None,
) -> Iterator[None]:
    """Record the network's operations and module calls into `trace` while inside; the
    first argument of the next `model(x)` is the input node if none was given. The calls of
    the modules in `keep` (ids) are recorded whatever they are. The hooks look at tensors
    with torch functions off (their looks are not the network's)."""
    modules = dict(model.named_modules()) if modules is None else modules
    names = {}
    for name, module in modules.items():
        names.setdefault(id(module), name)
    stack: list[Call] = []
    quiet = torch._C.DisableTorchFunction
    inside: list[Any] = []  # the torch-functions-off guard of the layer call running

    def enter(module: nn.Module, args: tuple, kwargs: dict, layer: bool = False) -> None:
        with quiet():  # the hook's looks at tensors are not the network's operations
            given = (args[0] if args and isinstance(args[0], Tensor)
                     else first_tensor_of(args, kwargs))  # fmt: skip
            if not trace.nodes and given is not None:
                trace._new_node(given, -1, (), False)  # the network's input
            call = Call(names.get(id(module), "?"), module, len(trace.calls), len(trace.ops),
                        depth=len(stack), parent=stack[-1].order if stack else -1)  # fmt: skip
            if given is not None:
                call.inp, call.in_shape = trace.node_of(given), tuple(given.shape)
            trace.calls.append(call)
            stack.append(call)
        if layer:  # its own operations are one, recorded as it ends: torch functions off
            inside.append(quiet())
            inside[-1].__enter__()

    def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any, layer: bool = False):
        if layer and inside:
            inside.pop().__exit__(None, None, None)
        with quiet():
            call = stack.pop()
            while stack and call.module is not module:  # a call whose hook did not run
                call = stack.pop()
            out = output if isinstance(output, Tensor) else first_tensor_of((output,))
            if layer and out is not None:
                given = args[0] if args and isinstance(args[0], Tensor) else None
                trace.record(type(module).__name__, (given,) if given is not None else (),
                             None, out)  # fmt: skip
            call.end = len(trace.ops)
            if out is not None:
                call.out, call.out_shape = trace.node_of(out), tuple(out.shape)
                if on_call_end is not None:
                    on_call_end(call, out)

    def enter_layer(module: nn.Module, args: tuple, kwargs: dict) -> None:
        enter(module, args, kwargs, layer=True)

    def leave_layer(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        leave(module, args, kwargs, output, layer=True)

    handles = []
    for module in {id(m): m for m in modules.values()}.values():
        kind = "module" if id(module) in keep else _kind(module)
        if kind == "skip":
            continue
        before, after = (enter_layer, leave_layer) if kind == "layer" else (enter, leave)
        if isinstance(module, torch.jit.ScriptModule):
            continue  # takes no hooks: its operations are still recorded, in its caller's call
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        with _Recording(trace):
            yield
    finally:
        while inside:  # a layer that raised: its guard must not outlive the pass
            inside.pop().__exit__(None, None, None)
        for handle in handles:
            handle.remove()


def trace_forward(model: nn.Module, x: Tensor) -> Trace:
    """What `model(x)` does, in eval mode without autograd; the model is left as it was
    (eval-mode BatchNorm moves no running statistics)."""
    trace = Trace()
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), recording(model, trace):
            model(x)
    finally:
        model.train(was_training)
    trace.forget_tensors()
    return trace
