"""A plugin network's cost is counted before anything real is built, and the count cannot be
skipped: a network that cannot be counted is refused, a count that goes over the limits or is
asked to stop ends at once, and the caller's own control flow (a job's timeout, a cancel)
passes through as itself."""

from __future__ import annotations

import time

import pytest
import torch
from nfcore_example_plugins.nets import MixerBlock, nf_tv_resnet, tv_resnet
from torch import nn

from nfcore.foreign.cost import Budget, NotCounted, OverBudget, meta_cost, real_cost
from nfcore.spec.foreign_config import ForeignConfig

AMPLE = Budget(max_flops=1e12, max_activation_bytes=1e10, max_memory_bytes=1e10)
IMAGES = ForeignConfig(plugin="tv_resnet", resolution=32, batch=2)
TOKENS = ForeignConfig(plugin="mixer", input_shape=(16, 64), channels="last", batch=2)


class Canceled(Exception):
    """Stands for the worker's JobStopped (nfcore never imports the worker)."""


def test_a_network_of_a_million_blocks_is_refused_part_way_without_being_built() -> None:
    def million() -> nn.Module:  # the issue's {"plugin": "mixer", "depth": 1000000}
        return nn.Sequential(*[MixerBlock(16, 64, 2) for _ in range(1_000_000)])

    budget = Budget(max_flops=1e12, max_activation_bytes=1e10, max_memory_bytes=10e6)
    started = time.monotonic()
    with pytest.raises(OverBudget) as over:
        meta_cost(million, TOKENS, budget, "the mixer network")
    assert time.monotonic() - started < 10  # the whole count took minutes, then OOM
    assert 10e6 < over.value.cost.weight_bytes < 11e6  # stopped at the limit, not the end
    assert over.value.cost.parameters > 0


def test_a_forward_pass_that_fails_on_its_input_is_a_refusal_not_a_real_build() -> None:
    bad_shape = IMAGES.model_copy(update={"input_shape": (5,)})  # the item 3
    with pytest.raises(NotCounted) as refused:
        meta_cost(lambda: tv_resnet(14, 4), bad_shape, AMPLE, "the tv_resnet network")
    assert str(refused.value).startswith(
        "the tv_resnet network could not be counted on the meta device: its forward pass on an "
        "input of shape [batch, *[5]] raised RuntimeError: Expected 3D (unbatched) or 4D"
    )
    assert str(refused.value).endswith("; it was not built")


def test_a_factory_that_raises_on_meta_is_a_refusal() -> None:
    def broken() -> nn.Module:
        raise ValueError("tokens must be 16")

    with pytest.raises(NotCounted, match="building it raised ValueError: tokens must be 16; it"):
        meta_cost(broken, TOKENS, AMPLE, "the mixer network")
    with pytest.raises(NotCounted, match=r"returned a int, not a torch nn\.Module"):
        meta_cost(lambda: 3, TOKENS, AMPLE, "the mixer network")  # type: ignore[arg-type,return-value]


class DataDependent(nn.Module):
    """A forward pass that reads a value (`.item()`): it cannot run on the meta device."""

    def __init__(self) -> None:
        super().__init__()
        self.linear = nn.Linear(8, 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scale = 1.0 if x.abs().max().item() > 0 else 0.0
        return self.linear(x) * scale


def test_a_forward_pass_that_cannot_run_on_meta_is_counted_on_the_real_network() -> None:
    config = ForeignConfig(plugin="x", input_shape=(8,), batch=4)
    counted = meta_cost(DataDependent, config, AMPLE, "the x network")
    assert counted.parameters == 72 and counted.flops is None  # parameters counted first
    cost = real_cost(DataDependent(), config, counted.flops, AMPLE)
    assert cost.flops == 4 * 2 * 8 * 8  # the real pass, scaled by the batch


def test_nfcores_scaled_ws_layers_build_on_the_meta_device() -> None:
    """gamma='auto' integrates on the CPU, even inside `torch.device("meta")`."""
    counted = meta_cost(lambda: nf_tv_resnet(14, 4), IMAGES, AMPLE, "the nf_tv_resnet network")
    assert counted.parameters == sum(p.numel() for p in nf_tv_resnet(14, 4).parameters())
    assert counted.flops is not None and counted.flops > 0


def test_a_stop_request_ends_the_count_and_passes_through_as_itself() -> None:
    looks = 0

    def check_stop() -> None:
        nonlocal looks
        looks += 1
        if looks > 20:
            raise Canceled("canceled by request")

    budget = Budget(1e12, 1e10, 1e10, check_stop=check_stop, propagate=(Canceled,))
    with pytest.raises(Canceled):
        meta_cost(lambda: nn.Sequential(*[nn.Linear(4, 4) for _ in range(100_000)]), TOKENS,
                  budget, "the x network")  # fmt: skip
    assert looks == 21  # ended at the first look after the stop, not 100,000 layers later


@pytest.mark.parametrize("error", [MemoryError(), Canceled("job timed out")])
def test_control_flow_raised_in_the_factory_is_never_read_as_the_networks_failure(
    error: BaseException,
) -> None:
    def factory() -> nn.Module:
        raise error

    budget = Budget(1e12, 1e10, 1e10, propagate=(Canceled,))
    with pytest.raises(type(error)):
        meta_cost(factory, TOKENS, budget, "the x network")


def test_the_real_pass_ends_once_its_activations_are_over_the_budget() -> None:
    model = tv_resnet(14, 4)
    config = IMAGES.model_copy(update={"batch": 64, "resolution": 64})
    free = real_cost(model, config)
    budget = Budget(1e12, max_activation_bytes=free.activation_bytes / 4, max_memory_bytes=1e10)
    with pytest.raises(OverBudget) as over:
        real_cost(model, config, budget=budget)
    assert over.value.cost.activation_bytes > budget.max_activation_bytes
