"""The cost of measuring a network nfcore did not build, counted before it is measured.

The API cannot count a plugin's FLOPs (it never imports torch or plugin code), so the worker
does, before the run: the network is first built on PyTorch's meta device (no memory, no
initialization), where its parameters are counted and one forward pass is run under torch's
FLOP counter. Then, on the real network, one example's eval-mode forward pass measures the
peak activation memory (the storages ops create, each from its creation to its death; a
first pass fills caches such as the standardized Scaled WS weights), scaled by the batch. A network whose factory cannot run on the meta device is counted on
its real build instead. The numbers are `nfcore.cost.Cost`s, checked against the same limits
with the same words as the API's (`contract.limits`).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.flop_counter import FlopCounterMode

from nfcore.cost import FLOAT32_BYTES, Cost
from nfcore.foreign_config import ForeignConfig
from nfcore.foreign_spp import foreign_input


class LiveBytes(TorchDispatchMode):
    """Peak bytes of the storages that ops create, each counted from its creation to its death.

    A storage dies when its last tensor (Python-visible or held by autograd) does; storages an
    op only reads or views (weights, buffers, the input) are not counted. The tests measure
    the engine's memory with it too (tests/nfcore/test_cost.py)."""

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


def meta_cost(build: Callable[[], nn.Module], config: ForeignConfig) -> tuple[int, int] | None:
    """(parameters, forward FLOPs of the whole batch) on the meta device, or None where the
    factory cannot build there (it computes with real tensors, say)."""
    try:
        with torch.device("meta"):
            model = build()
            x = torch.empty(config.batch, *config.example_shape)
            model.eval()
            with FlopCounterMode(display=False) as counter, torch.no_grad():
                model(x)
    except Exception:
        return None
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops()


def real_cost(model: nn.Module, config: ForeignConfig, flops: int | None = None) -> Cost:
    """The cost of measuring `model` (built) with `config`: one example's eval-mode forward
    pass measured and scaled by the batch; `flops` when already counted on the meta device."""
    x = foreign_input(config.model_copy(update={"batch": 1}))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad(), LiveBytes() as warm:
            model(x)  # fills caches (Scaled WS weights), which are not activations
        cached = warm.now  # what outlives the pass: counted with the weights
        with torch.no_grad(), FlopCounterMode(display=False) as counter, LiveBytes() as live:
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


def weights_only(parameters: int, flops: int, config: ForeignConfig) -> Cost:
    """What the meta device counted, before anything real is built."""
    forward = 2 * flops if config.gradients else flops
    return Cost(flops=forward, activation_bytes=0, parameters=parameters, blocks=0,
                weight_bytes=FLOAT32_BYTES * parameters)  # fmt: skip
