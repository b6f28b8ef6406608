"""The cost of measuring a network nfcore did not build, counted before it is measured.

The API cannot count a plugin's FLOPs (it never imports torch or plugin code), so the worker
does, before the run: the network is first built on PyTorch's meta device (no memory, no
initialization), where its parameters are counted and one forward pass is run under torch's
FLOP counter. Then, on the real network, one example's eval-mode forward pass measures the
peak activation memory (the storages ops create, each from its creation to its death; a
first pass fills caches such as the standardized Scaled WS weights), scaled by the batch.
The numbers are `nfcore.spec.cost.Cost`s, checked against the same limits with the same words as
the API's (`contract.limits`).

The count is a check that cannot be skipped: a network that cannot be counted is not built
(`NotCounted`). Only a forward pass that cannot run on the meta device (a data-dependent
`.item()`, an op without a meta kernel) is counted on the real network instead, once its
parameters were counted there within the limits. Every build and pass, on the meta device
and for real, runs under a guard (`BuildGuard`, `PassGuard`) that ends it as soon as a stop
is asked for, or what it has reached is over the `Budget` (the parameters built; the FLOPs
and live bytes of a real pass): a network of a million blocks is refused once the blocks
built so far are over the limits.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as torch_module
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from nfcore.foreign.measure import foreign_input
from nfcore.spec.cost import FLOAT32_BYTES, Cost
from nfcore.spec.foreign_config import ForeignConfig

# Ops between two looks at a stop request and at the FLOPs so far: a look sums the FLOP
# counter's table (microseconds), an op on the meta device takes a few microseconds itself.
LOOK_EVERY = 64
# What says that a forward pass failed because it ran on the meta device, not because the
# network or its input is wrong: a data-dependent op (`.item()`), a mix of meta and real
# tensors, an op with no meta kernel (NotImplementedError).
META_ONLY_FAILURE = re.compile(r"\bmeta\b", re.IGNORECASE)


def _never_stopped() -> None:
    return None


@dataclass(frozen=True)
class Budget:
    """What counting, building and measuring a network may reach before it is ended (the
    limits a job must meet), and how it hears that it should end sooner."""

    max_flops: float
    max_activation_bytes: float
    max_memory_bytes: float
    # Raises to end the work (a canceled job); called between ops and module registrations.
    check_stop: Callable[[], None] = _never_stopped
    # The caller's own control flow (a job's timeout, a stop), never a network's failure:
    # let through as they are, like MemoryError.
    propagate: tuple[type[BaseException], ...] = ()

    def over(self, cost: Cost) -> bool:
        return (
            cost.flops > self.max_flops
            or cost.activation_bytes > self.max_activation_bytes
            or cost.memory_bytes > self.max_memory_bytes
        )

    @property
    def passes_through(self) -> tuple[type[BaseException], ...]:
        """What a count or a build never turns into its own failure."""
        return (MemoryError, OverBudget, *self.propagate)


class OverBudget(ValueError):
    """A count, build or pass went over the budget part way; `cost` is what it had reached
    (a lower bound of the network's cost)."""

    def __init__(self, cost: Cost) -> None:
        super().__init__(f"over the budget part way, at {cost}")
        self.cost = cost


class NotCounted(ValueError):
    """The network could not be counted on the meta device, so it was not built."""


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages that ops create, each counted from its creation to its death.

    A storage dies when its last tensor (Python-visible or held by autograd) does; storages an
    op only reads or views (weights, buffers, the input) are not counted. The tests measure
    the engine's memory with it too (tests/nfcore/spec/test_cost.py)."""

    def __init__(self) -> None:
        super().__init__()
        self.live: dict[int, int] = {}
        self.now = self.peak = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        read = [t for t in tree_leaves((args, kwargs or {})) if isinstance(t, torch.Tensor)]
        inputs = {t.untyped_storage().data_ptr() for t in read}
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if not isinstance(tensor, torch.Tensor):
                continue
            storage = tensor.untyped_storage()
            key = storage.data_ptr()
            if key in self.live or key in inputs or storage.nbytes() == 0:
                continue
            self.live[key] = storage.nbytes()
            self.now += storage.nbytes()
            self.peak = max(self.peak, self.now)
            weakref.finalize(storage, self._release, key)
        return out

    def _release(self, key: int) -> None:
        self.now -= self.live.pop(key, 0)


class BuildGuard:
    """Ends a build as soon as a stop is asked for, or the parameters and buffers its modules
    register are over the budget: counted as they are registered, so a loop that builds a
    million blocks is stopped part way. (Module registration hooks, not a dispatch mode:
    these cost nothing per op, which would double the time of a build on the meta device.)"""

    def __init__(self, budget: Budget) -> None:
        self.budget = budget
        self.parameters = self.weight_bytes = 0
        self.registered: set[int] = set()  # a tensor registered twice is counted once
        self._hooks: list[Any] = []

    def __enter__(self) -> BuildGuard:
        self._hooks = [
            torch_module.register_module_parameter_registration_hook(self._registered),
            torch_module.register_module_buffer_registration_hook(self._registered),
            torch_module.register_module_module_registration_hook(self._look),
        ]
        return self

    def __exit__(self, *exc_info: Any) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []

    def _registered(self, module: nn.Module, name: str, tensor: Any) -> None:
        if isinstance(tensor, torch.Tensor) and id(tensor) not in self.registered:
            self.registered.add(id(tensor))
            if isinstance(tensor, nn.Parameter):
                self.parameters += tensor.numel()
            self.weight_bytes += tensor.numel() * tensor.element_size()
        self._look()

    def _look(self, *_: Any) -> None:
        self.budget.check_stop()
        cost = Cost(flops=0, activation_bytes=0, parameters=self.parameters, blocks=0,
                    weight_bytes=self.weight_bytes)  # fmt: skip
        if self.budget.over(cost):
            raise OverBudget(cost)


class PassGuard(TorchDispatchMode):
    """Ends a forward pass as soon as a stop is asked for, or what it has reached is over the
    budget: the FLOPs of `flops`, the live bytes of `live` times `batch` (one example's pass
    stands for the batch's), on top of the `weight_bytes` that exist before it. (Without
    them, as on the meta device, it only hears stop requests: the count there is cheap and
    says by how much a network is over, which a count stopped part way could not.)

    Enter it after `flops` and `live`, so that it sees each op once they have counted it."""

    def __init__(
        self,
        budget: Budget,
        *,
        weight_bytes: int = 0,
        flops: FlopCounterMode | None = None,
        live: LiveBytes | None = None,
        batch: int = 1,
    ) -> None:
        super().__init__()
        self.budget = budget
        self.weight_bytes = weight_bytes
        self.flops, self.live, self.batch = flops, live, batch
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        out = func(*args, **(kwargs or {}))
        self.ops += 1
        if self.ops % LOOK_EVERY == 0 or self.live is not None:
            self.budget.check_stop()
            # The FLOP counter's table is summed every LOOK_EVERY ops only.
            counted = self.flops is not None and self.ops % LOOK_EVERY == 0
            flops = self.flops.get_total_flops() * self.batch if counted else 0  # type: ignore[union-attr]
            activations = self.live.peak * self.batch if self.live is not None else 0
            cost = Cost(flops=int(flops), activation_bytes=int(activations), parameters=0,
                        blocks=0, weight_bytes=self.weight_bytes)  # fmt: skip
            if self.budget.over(cost):
                raise OverBudget(cost)
        return out


@dataclass(frozen=True)
class MetaCount:
    parameters: int
    flops: int | None  # the whole batch's forward pass; None: it cannot run on meta


def meta_cost(
    build: Callable[[], nn.Module], config: ForeignConfig, budget: Budget, name: str
) -> MetaCount:
    """`build()`'s network counted on the meta device: its parameters, and its forward FLOPs
    for the whole batch (None where the forward pass cannot run there). OverBudget as soon as
    the parameters built are over `budget`; NotCounted, saying why, when the network cannot be
    counted (the factory fails, the forward pass fails on the input): then nothing may be
    built. A stop request ends the build and the pass. `name` starts the sentence ("the
    mixer network")."""
    with torch.device("meta"):
        model = _build_counted(build, budget, name)
        parameters = sum(p.numel() for p in model.parameters())
        model.eval()
        try:
            x = torch.empty(config.batch, *config.example_shape)
            with torch.no_grad(), FlopCounterMode(display=False) as counter, PassGuard(budget):
                model(x)
        except budget.passes_through:
            raise
        except Exception as error:
            if not (isinstance(error, NotImplementedError) or META_ONLY_FAILURE.search(str(error))):
                shape = list(config.example_shape)
                raise NotCounted(
                    f"{name} could not be counted on the meta device: its forward pass on an "
                    f"input of shape [batch, *{shape}] raised {type(error).__name__}: "
                    f"{_first_line(error)}; it was not built"
                ) from None
            return MetaCount(parameters, None)  # counted on the real network, once built
    return MetaCount(parameters, counter.get_total_flops())


def _build_counted(build: Callable[[], nn.Module], budget: Budget, name: str) -> nn.Module:
    try:
        with BuildGuard(budget):
            model = build()
    except budget.passes_through:
        raise
    except Exception as error:
        raise NotCounted(
            f"{name} could not be counted on the meta device: building it raised "
            f"{type(error).__name__}: {_first_line(error)}; it was not built"
        ) from None
    if not isinstance(model, nn.Module):
        raise NotCounted(
            f"{name} could not be counted: its factory returned a {type(model).__name__}, "
            "not a torch nn.Module; it was not built"
        )
    return model


def _first_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return text[0][:300] if text else "(no message)"


def real_cost(
    model: nn.Module, config: ForeignConfig, flops: int | None = None, budget: Budget | None = None
) -> Cost:
    """The cost of measuring `model` (built) with `config`: one example's eval-mode forward
    pass measured and scaled by the batch; `flops` when already counted on the meta device.
    Under a `budget`, each pass ends as soon as what it reached is over it."""
    x = foreign_input(config.model_copy(update={"batch": 1}))
    budget = budget or Budget(float("inf"), float("inf"), float("inf"))
    weights = FLOAT32_BYTES * sum(p.numel() for p in model.parameters())
    was_training = model.training
    model.eval()
    try:
        # The first pass fills caches (Scaled WS weights), which are not activations; it is
        # guarded for one example only, since what it keeps is not per example.
        with torch.no_grad(), FlopCounterMode(display=False) as warm_flops, LiveBytes() as warm, \
                PassGuard(budget, weight_bytes=weights, flops=warm_flops, live=warm):  # fmt: skip
            model(x)
        cached = warm.now  # what outlives the pass: counted with the weights
        with torch.no_grad(), FlopCounterMode(display=False) as counter, LiveBytes() as live, \
                PassGuard(budget, weight_bytes=weights + cached, flops=counter, live=live,
                          batch=config.batch):  # fmt: skip
            model(x)
    finally:
        model.train(was_training)
    forward = flops if flops is not None else counter.get_total_flops() * config.batch
    parameters = sum(p.numel() for p in model.parameters())
    activations = (live.peak + x.numel() * FLOAT32_BYTES) * config.batch
    if config.gradients:  # the backward pass: about as much again, and what autograd keeps
        forward, activations = 2 * forward, 2 * activations
    return Cost(
        flops=int(forward),
        activation_bytes=int(activations),
        parameters=parameters,
        blocks=0,
        weight_bytes=FLOAT32_BYTES * parameters + cached,
    )


def weights_only(counted: MetaCount, config: ForeignConfig) -> Cost:
    """What the meta device counted, before anything real is built (FLOPs 0 where the
    forward pass could not run there: they are counted on the real network)."""
    flops = counted.flops or 0
    forward = 2 * flops if config.gradients else flops
    return Cost(flops=forward, activation_bytes=0, parameters=counted.parameters, blocks=0,
                weight_bytes=FLOAT32_BYTES * counted.parameters)  # fmt: skip
