"""Measuring one model again (a tracker every N training steps, issue 24): what the first
`measure` decided is reused with hooks on its blocks, giving the same numbers for less; the
plan keeps no model alive and is dropped the moment the model is no longer what it
described. And the block outputs kept for reduction after the pass are measured as their
block gave them, whatever the network does to them afterwards (issue 20, the cost target)."""

from __future__ import annotations

import gc
import weakref

import pytest
import torch
from torch import Tensor, nn

from nfcore import measure
from nfcore.foreign import reduce as foreign_reduce
from nfcore.foreign.plan import forget, plan_of
from tests.nfcore.foreign import lookalike_tokens as tokens
from tests.nfcore.foreign.lookalikes import Outputs, reduced
from tests.nfcore.foreign.test_foreign import Bottleneck, TorchvisionStyle, seeded


class Probe(nn.Module):
    """Wraps a network and notes, per forward, whether a torch function mode (the trace)
    was active: a planned pass runs the network plain."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.traced, self.forwards = inner, [], 0

    def forward(self, x: Tensor) -> Tensor:
        self.forwards += 1
        self.traced.append(torch._C._is_torch_function_mode_enabled())
        return self.inner(x)


def test_measuring_the_same_model_again_gives_the_same_numbers_for_less() -> None:
    torch.manual_seed(0)
    model = Probe(tokens.ViT(depth=6))
    first = measure(model, resolution=32, batch=4)
    again = measure(model, resolution=32, batch=4)
    assert model.traced == [True, False] and model.forwards == 2  # one pass each, untraced
    assert again.to_json_dict()["blocks"] == first.to_json_dict()["blocks"]  # bit for bit
    assert (again.meta.layout, again.meta.reduced_over) == (
        first.meta.layout,
        first.meta.reduced_over,
    )
    assert again.meta.notes == first.meta.notes and again.meta.stage_ends == first.meta.stage_ends

    # "For less" is the untraced second pass above; how much less is a benchmark row
    # (benchmarks/bench_foreign.py, "again"), not a timed test: a loaded machine flips it.


@pytest.mark.parametrize("gradients", [False, True])
def test_residual_branches_and_gradients_are_the_same_when_measured_again(gradients) -> None:
    model = seeded(TorchvisionStyle)
    options = {"resolution": 32, "batch": 4, "residual": ["layer*.*.bn3"], "gradients": gradients}
    first = measure(model, **options)
    with Outputs(model.layer3[1]) as out:
        again = measure(model, **options)
    assert plan_of(model) is not None
    assert again.to_json_dict()["blocks"] == first.to_json_dict()["blocks"]
    variance, squared_mean = reduced(out.seen[0], (0, 2, 3))  # the repeated pass, by hooks
    assert again.blocks[4].avg_channel_var == pytest.approx(variance, rel=1e-5)
    assert again.blocks[4].avg_sq_channel_mean == pytest.approx(squared_mean, rel=1e-5)
    assert all(b.residual_avg_channel_var is not None for b in again.blocks)
    if gradients:
        assert all(b.grad_avg_channel_var > 0 for b in again.blocks)


def test_a_changed_module_tree_is_traced_afresh() -> None:
    model = seeded(TorchvisionStyle)
    before = measure(model, resolution=32, batch=4)
    model.layer2.append(Bottleneck(64, 16))  # a block more: the plan no longer describes it
    after = measure(model, resolution=32, batch=4)
    assert [b.name for b in after.blocks] == [
        *[b.name for b in before.blocks[:3]],
        "layer2.1",
        *[b.name for b in before.blocks[3:]],
    ]
    forget(model)
    fresh = measure(model, resolution=32, batch=4)
    assert after.to_json_dict()["blocks"] == fresh.to_json_dict()["blocks"]


class Residual(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(self.fc(x))


class Branching(nn.Module):
    """A block called only when `deep` is set: the module tree is the same either way."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Residual(width) for _ in range(2)])
        self.extra = Residual(width)
        self.deep = False

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
        return self.extra(x) if self.deep else x


def test_a_branch_taken_after_planning_is_not_missed() -> None:
    torch.manual_seed(0)
    model = Branching()
    assert [b.name for b in measure(model, input_shape=(16,), batch=8).blocks] == [
        "blocks.0", "blocks.1"
    ]  # fmt: skip
    model.deep = True
    with Outputs(model.extra) as extra:
        result = measure(model, input_shape=(16,), batch=8)
    assert [b.name for b in result.blocks] == ["blocks.0", "blocks.1", "extra"]
    assert any("changed since it was last measured" in note for note in result.meta.notes)
    variance, _ = reduced(extra.seen[-1], (0,))
    assert result.blocks[2].avg_channel_var == pytest.approx(variance, rel=1e-5)


def test_a_new_input_shape_is_traced_afresh_and_the_plan_keeps_no_model_alive() -> None:
    model = seeded(TorchvisionStyle)
    measure(model, resolution=32, batch=4)
    larger = measure(model, resolution=48, batch=2)  # other shapes: another plan
    plan = plan_of(model)
    assert plan is not None and plan.key[0] == (2, 3, 48, 48)
    forget(model)
    fresh = measure(model, resolution=48, batch=2)
    assert larger.to_json_dict()["blocks"] == fresh.to_json_dict()["blocks"]
    measure(model, resolution=32, batch=4, blocks=selecting_in(model))
    alive = weakref.ref(model)
    del model
    gc.collect()
    assert alive() is None  # a measured model is freed as any other, selection and all


def selecting_in(model: nn.Module):
    """A selection function holding the model, as closures often do."""
    return lambda _name, module: module in list(model.layer1)


class Doubling(nn.Module):
    """Doubles each block's output in place after the block returned it (`x *= 2`)."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Residual(width) for _ in range(3)])

    def forward(self, x: Tensor) -> Tensor:
        for block in self.blocks:
            x = block(x)
            x *= 2
        return x


@pytest.mark.parametrize("kept_bytes", [foreign_reduce.KEPT_TENSOR_BYTES, 0])
def test_a_block_output_is_measured_as_the_block_gave_it(monkeypatch, kept_bytes) -> None:
    """Outputs are kept for after the pass (or reduced at once where too large): one the
    network changes in place afterwards is measured as its block returned it, the first time
    and the next."""
    monkeypatch.setattr(foreign_reduce, "KEPT_TENSOR_BYTES", kept_bytes)
    torch.manual_seed(0)
    model = Doubling()
    for _ in range(2):  # traced, then planned
        with Outputs(model.blocks[1]) as out:
            result = measure(model, input_shape=(16,), batch=8)
        variance, squared_mean = reduced(out.seen[0], (0,))  # its value as the block ended
        assert result.blocks[1].avg_channel_var == pytest.approx(variance, rel=1e-5)
        assert result.blocks[1].avg_sq_channel_mean == pytest.approx(squared_mean, rel=1e-5)
