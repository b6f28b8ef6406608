"""A record of what a network does in a forward pass: its module calls, the tensor
operations between them, and which tensor came from which.

Block discovery (`nfcore.foreign.residuals`) and the layout decision (`nfcore.foreign.layouts`) read this
record instead of module names. It is taken during the measured pass itself (`recording`,
`nfcore.foreign.measure`), or alone by `trace_forward` (`nfcore blocks`). A `TorchFunctionMode`
sees every torch function the network calls (`torch.add`, `x + y`, `out += identity`,
`F.conv2d`, `F.layer_norm`, ...) and hooks on the modules see their calls; `on_call_end`
hears of each call as it ends, its output still at hand.

The record costs Python work per operation and per hooked call, paid on top of the pass
(issue 20: `measure` at most 1.3x a plain forward), so it is kept to what the readers use:
- torch's own convolutions, Linears and norms are not hooked: their one functional call
  (`F.linear(x, weight, bias)`, ...) names them by the parameter it is given, and becomes
  their call (a layer called this way runs nothing else worth recording);
- functions whose result is no tensor value (`size`, `dim`, `.shape`) are passed by at once,
  found by one dictionary look-up per function.

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
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn
from torch.overrides import TorchFunctionMode

INPUT = 0  # the node of the network's input

# Functions that add two tensors (`x + y` is `add`, `x += y` is `add_`).
ADDITIONS = frozenset({"add", "add_", "__add__", "__radd__", "__iadd__"})
# Functions that reorder the axes of a tensor: across them a channel axis moves (`T`, `mT`:
# the properties, as the mode names them).
AXIS_MOVES = frozenset({"permute", "transpose", "transpose_", "swapaxes", "swapaxes_",
                        "swapdims", "swapdims_", "movedim", "moveaxis", "t", "t_", "T", "mT",
                        "H", "mH"})  # fmt: skip
# Functions whose result is not a new tensor value: passed by at once (most of the calls a
# network makes are these, and the record should cost little next to the pass).
NOT_VALUES = frozenset({"size", "dim", "numel", "stride", "is_contiguous", "data_ptr",
                        "element_size", "__len__", "__bool__", "__index__", "item", "tolist",
                        "__format__", "__repr__", "__hash__", "__eq__", "__ne__", "__iter__",
                        "storage_offset", "__setitem__", "requires_grad_", "register_hook",
                        "backward", "dtype", "device", "shape", "ndim", "is_cuda", "layout",
                        "requires_grad", "grad_fn", "is_leaf", "names"})  # fmt: skip

# torch's layers whose forward is one functional call given their own parameters, and those
# functions: the call is known by the parameter (no hooks). `type(module) in` (not a
# subclass, whose forward may do more) and only where the module has no hooks of its own.
BY_FUNCTION = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d,
               nn.ConvTranspose2d, nn.ConvTranspose3d, nn.BatchNorm1d, nn.BatchNorm2d,
               nn.BatchNorm3d, nn.LayerNorm, nn.GroupNorm, nn.RMSNorm)  # fmt: skip
LAYER_FUNCTIONS = frozenset({"linear", "conv1d", "conv2d", "conv3d", "conv_transpose1d",
                             "conv_transpose2d", "conv_transpose3d", "batch_norm", "layer_norm",
                             "group_norm", "rms_norm"})  # fmt: skip


class Node(NamedTuple):
    """A tensor computed from the input: the operation that made it and its operands."""

    op: int  # index into Trace.ops (-1 for the input)
    parents: tuple[int, ...]  # the nodes among its operands
    shape: tuple[int, ...]
    moved: bool  # an axis reorder lies between the input and it


class Op(NamedTuple):
    index: int
    name: str
    parents: tuple[int, ...]  # the nodes among its operands
    results: tuple[int, ...]  # the nodes it made (an in-place op: a new node of its operand)


_make = tuple.__new__  # a Node or an Op from a tuple, without a Python-level __init__ per op


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


class LayerCall(NamedTuple):
    """A call of one of torch's layers known by its functional call: one operation, made
    whole at once (a `Call` to its readers)."""

    name: str
    module: nn.Module
    order: int
    start: int
    end: int
    inp: int | None
    out: int | None
    in_shape: tuple[int, ...] | None
    out_shape: tuple[int, ...] | None
    depth: int
    parent: int


AnyCall = Call | LayerCall


@dataclass
class Trace:
    nodes: list[Node] = field(default_factory=list)
    ops: list[Op] = field(default_factory=list)
    calls: list[AnyCall] = field(default_factory=list)
    consumers: dict[int, list[int]] = field(default_factory=dict)  # node -> ops reading it
    additions: list[int] = field(default_factory=list)  # ops adding two nodes, in order
    finished: bool = False  # the pass is over: nothing more is recorded
    _known: dict[int, tuple[int, weakref.ref]] = field(default_factory=dict)

    def _new_node(self, tensor: Tensor, op: int, parents: tuple[int, ...], moved: bool) -> int:
        index = len(self.nodes)
        self.nodes.append(_make(Node, (op, parents, tuple(tensor.shape), moved)))
        self._known[id(tensor)] = (index, weakref.ref(tensor))
        return index

    def record(self, name: str, args: tuple, kwargs: dict | None, result: Any) -> None:
        """An operation: its result becomes a node if an operand was one. (Run once per
        operation of the pass: written for few Python steps, not for looks.)"""
        known = self._known
        parents: list[int] = []
        operands: list[Tensor] = []
        for value in (*args, *kwargs.values()) if kwargs else args:
            if isinstance(value, Tensor):
                entry = known.get(id(value))
                if entry is not None and entry[1]() is value:
                    parents.append(entry[0])
                    operands.append(value)
            elif isinstance(value, _SEQUENCES):
                for item in value:
                    entry = known.get(id(item)) if isinstance(item, Tensor) else None
                    if entry is not None and entry[1]() is item:
                        parents.append(entry[0])
                        operands.append(item)
        if not parents:
            return
        if isinstance(result, Tensor):
            outs: tuple[Tensor, ...] = (result,)
        else:
            outs = tuple(_tensors((result,)))
            if not outs:
                return
        unique = (parents[0],) if len(parents) == 1 else tuple(dict.fromkeys(parents))
        flags = _FLAGS.get(name)
        if flags is None:
            flags = _FLAGS[name] = _flags(name)
        in_place, moved, adds = flags
        nodes = self.nodes
        if not moved:
            for parent in unique:
                if nodes[parent][3]:  # Node.moved
                    moved = True
                    break
        index = len(self.ops)
        made = []
        for out in outs:
            if not in_place and (out is operands[0] or _among(out, operands)):
                continue  # handed back unchanged: the same node
            node = len(nodes)
            made.append(node)
            nodes.append(_make(Node, (index, unique, tuple(out.shape), moved)))
            known[id(out)] = (node, weakref.ref(out))
        self.ops.append(_make(Op, (index, name, unique, tuple(made))))
        consumers = self.consumers
        for parent in unique:
            readers = consumers.get(parent)
            if readers is None:
                consumers[parent] = [index]
            else:
                readers.append(index)
        if adds and len(unique) == 2:
            self.additions.append(index)

    def forget_tensors(self) -> None:
        """Drop what identifies tensors (after the pass: nodes keep shapes only); the trace
        is finished."""
        self._known.clear()
        self.finished = True


_SEQUENCES = (list, tuple)
_FLAGS: dict[str, tuple[bool, bool, bool]] = {}  # by name: in place, an axis move, an addition


def _flags(name: str) -> tuple[bool, bool, bool]:
    in_place = (name[-1:] == "_" and name[-2:] != "__") or name == "__iadd__"
    return in_place, name in AXIS_MOVES, name in ADDITIONS


def _among(tensor: Tensor, tensors: list[Tensor]) -> bool:
    """`tensor` is one of `tensors` (by identity: `in` would compare values; a loop, not
    `any(...)`: no generator made per operation)."""
    for other in tensors:  # noqa: SIM110
        if other is tensor:
            return True
    return False


def _tensors(values: tuple) -> Iterator[Tensor]:
    """The tensors among values, and in the lists, tuples and dicts among them (one level)."""
    for value in values:
        if isinstance(value, Tensor):
            yield value
        elif isinstance(value, _SEQUENCES):
            yield from (item for item in value if isinstance(item, Tensor))
        elif isinstance(value, dict):
            yield from (item for item in value.values() if isinstance(item, Tensor))


def first_tensor_of(args: tuple, kwargs: dict | None = None) -> Tensor | None:
    """The first tensor among a call's arguments (or its result's items)."""
    return next(_tensors((*args, *(kwargs or {}).values())), None)


CallEnd = Callable[[Call, Any], None]

# What a torch layer that reads channels has (a convolution, a Linear, a norm): its call is
# kept (the layout is read from it), recorded as one operation of its input.
LAYER_ATTRIBUTES = ("in_channels", "in_features", "num_features", "num_channels",
                    "normalized_shape")  # fmt: skip

SKIP, RECORD, LAYER = 0, 1, 2  # what the mode does with a function's call
_FUNCTIONS: dict[Any, tuple[int, str]] = {}  # by function: torch's functions are fixed


def _function(func: Any) -> tuple[int, str]:
    """What to do with a call of `func`, and the name it is recorded by."""
    name = getattr(func, "__name__", None) or ""
    if name == "__get__":  # a property (`.T`, `.shape`): named by its attribute
        name = getattr(getattr(func, "__self__", None), "__name__", "") or name
    if not name or name in NOT_VALUES:
        return SKIP, name
    return (LAYER if name in LAYER_FUNCTIONS else RECORD), name


def has_children(module: nn.Module) -> bool:
    children = module._modules
    if not children:
        return False  # a leaf: most modules (asked of each module as a pass is set up)
    for child in children.values():  # noqa: SIM110 (a loop: no generator per module)
        if child is not None:
            return True
    return False


def kind(module: nn.Module) -> str:
    """'layer': one of torch's layers that read channels (its call is one operation);
    'skip': another of torch's layers without submodules (a ReLU, a pooling: its operations
    are recorded, its call is of no use); 'module': anything else (a call to keep)."""
    if has_children(module):
        return "module"
    found = _KINDS.get(type(module))
    if found is None:
        torch_made = type(module).__module__.startswith("torch.nn.")
        reads = any(hasattr(module, name) for name in LAYER_ATTRIBUTES)
        found = _KINDS[type(module)] = ("layer" if reads else "skip") if torch_made else "module"
    return found


_KINDS: dict[type, str] = {}  # a leaf module's kind by its class (torch's layers are fixed)


def _by_function(module: nn.Module) -> list[Tensor]:
    """The tensors that name the layer in its functional call, where its call can be known
    that way: an exact torch class, no hooks of its own, and a parameter or buffer."""
    if type(module) not in BY_FUNCTION or module._forward_hooks or module._forward_pre_hooks:
        return []
    return [t for t in (*module._parameters.values(), *module._buffers.values())
            if t is not None and t.dtype.is_floating_point]  # fmt: skip


class _Recording(TorchFunctionMode):
    def __init__(self, trace: Trace, layer_call: Callable[[nn.Module, tuple, Any], None],
                 layer_of: dict[int, nn.Module]) -> None:  # fmt: skip
        super().__init__()
        self.trace, self.layer_call, self.layer_of = trace, layer_call, layer_of

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: Any = None):
        result = func(*args, **kwargs) if kwargs else func(*args)
        try:
            what, name = _FUNCTIONS[func]
        except KeyError:
            what, name = _FUNCTIONS[func] = _function(func)
        except TypeError:  # not hashable: asked every time
            what, name = _function(func)
        if what == SKIP:
            return result
        if what == LAYER and self.layer_of:
            layer_of = self.layer_of
            for value in (*args[1:], *kwargs.values()) if kwargs else args[1:]:
                module = layer_of.get(id(value))
                if module is not None:
                    self.layer_call(module, args, result)
                    return result
        self.trace.record(name, args, kwargs, result)
        return result


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
    names: dict[int, str] = {}  # each module once: its first name
    unique: list[nn.Module] = []
    for name, module in modules.items():
        if id(module) not in names:
            names[id(module)] = name
            unique.append(module)
    stack: list[Call] = []
    quiet = torch._C.DisableTorchFunction
    inside: list[Any] = []  # the torch-functions-off guard of the layer call running
    calls, ops, nodes, known = trace.calls, trace.ops, trace.nodes, trace._known

    def node_and_shape(tensor: Tensor) -> tuple[int | None, tuple[int, ...]]:
        """The tensor's node and shape (a node's shape is known: no look at the tensor)."""
        entry = known.get(id(tensor))
        if entry is not None and entry[1]() is tensor:
            return entry[0], nodes[entry[0]].shape
        with quiet():  # a look at a tensor is not the network's operation
            return None, tuple(tensor.shape)

    def enter(module: nn.Module, args: tuple, kwargs: dict) -> None:
        given = args[0] if args and isinstance(args[0], Tensor) else first_tensor_of(args, kwargs)
        call = Call(names.get(id(module), "?"), module, len(calls), len(ops), depth=len(stack),
                    parent=stack[-1].order if stack else -1)  # fmt: skip
        if given is not None:
            if not nodes:
                with quiet():
                    trace._new_node(given, -1, (), False)  # the network's input
            call.inp, call.in_shape = node_and_shape(given)
        calls.append(call)
        stack.append(call)

    def leave(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        call = stack.pop()
        while stack and call.module is not module:  # a call whose hook did not run
            call = stack.pop()
        call.end = len(ops)
        out = output if isinstance(output, Tensor) else first_tensor_of((output,))
        if out is not None:
            call.out, call.out_shape = node_and_shape(out)
            if on_call_end is not None:
                on_call_end(call, out)

    def enter_layer(module: nn.Module, args: tuple, kwargs: dict) -> None:
        """A layer that is hooked: its own operations are one, recorded as it ends, with
        torch functions off inside it."""
        enter(module, args, kwargs)
        inside.append(quiet())
        inside[-1].__enter__()

    def leave_layer(module: nn.Module, args: tuple, kwargs: dict, output: Any) -> None:
        if inside:
            inside.pop().__exit__(None, None, None)
        out = output if isinstance(output, Tensor) else first_tensor_of((output,))
        if out is not None:
            given = args[0] if args and isinstance(args[0], Tensor) else None
            with quiet():
                trace.record(type(module).__name__, (given,) if given is not None else (),
                             None, out)  # fmt: skip
        leave(module, args, kwargs, output)

    def layer_call(module: nn.Module, args: tuple, result: Any) -> None:
        """A layer known by its functional call (inside the mode's handler: the mode is
        off): the call and its one operation. Not handed to `on_call_end`: a layer is no
        block, and what it says of layouts is read from the trace after the pass."""
        given = args[0] if args and isinstance(args[0], Tensor) else None
        inp, in_shape = (None, None) if given is None else node_and_shape(given)
        start = len(ops)
        trace.record(type(module).__name__, () if given is None else (given,), None, result)
        out, out_shape = node_and_shape(result) if isinstance(result, Tensor) else (None, None)
        calls.append(_make(LayerCall, (names[id(module)], module, len(calls), start, len(ops), inp,
                                       out, in_shape, out_shape, len(stack),
                                       stack[-1].order if stack else -1)))  # fmt: skip

    handles = []
    hooked: list[tuple[nn.Module, str]] = []
    owners: dict[int, list[nn.Module]] = {}  # tensor -> the layers it is given to
    for module in unique:
        what = "module" if id(module) in keep else kind(module)
        if what == "skip" or isinstance(module, torch.jit.ScriptModule):
            continue  # a script module takes no hooks: its operations are its caller's
        tensors = _by_function(module) if what == "layer" else []
        for tensor in tensors:
            owners.setdefault(id(tensor), []).append(module)
        if not tensors:
            hooked.append((module, what))
    tied = {id(m): m for layers in owners.values() if len(layers) > 1 for m in layers}
    hooked += [(module, "layer") for module in tied.values()]  # a shared weight names neither
    layer_of = {key: layers[0] for key, layers in owners.items() if id(layers[0]) not in tied}
    for module, what in hooked:
        before, after = (enter_layer, leave_layer) if what == "layer" else (enter, leave)
        handles.append(module.register_forward_pre_hook(before, with_kwargs=True))
        handles.append(module.register_forward_hook(after, with_kwargs=True))
    try:
        with _Recording(trace, layer_call, layer_of):
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
