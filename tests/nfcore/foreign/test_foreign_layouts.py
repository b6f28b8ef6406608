"""The right axes, decided from what the network does (issue 20, items 1 and 6): tokens
N,L,C, maps kept N,H,W,C, both in one network, refusals where the network disagrees or says
nothing, `channels` as an override that is said; and one measured pass that costs what it
reports, leaving the model as it was."""

from __future__ import annotations

import time

import pytest
import torch
from torch import Tensor, nn

from nfcore import measure
from nfcore.engine.spp import run_spp
from nfcore.foreign.discovery import SelectionError
from nfcore.foreign.plan import forget
from nfcore.spec.config import SPPConfig
from tests.nfcore.foreign import lookalike_tokens as tokens
from tests.nfcore.foreign import lookalikes as nets
from tests.nfcore.foreign.lookalikes import Outputs, reduced


def agree(result, outputs: list[Tensor], over: tuple[int, ...], blocks: list[int]) -> None:
    """The result's statistics of `blocks` are the hooks' outputs reduced over `over`."""
    for index, y in zip(blocks, outputs, strict=True):
        variance, squared_mean = reduced(y, over)
        assert result.blocks[index].avg_channel_var == pytest.approx(variance, rel=1e-5)
        assert result.blocks[index].avg_sq_channel_mean == pytest.approx(
            squared_mean, rel=1e-5, abs=1e-12
        )


def test_a_vit_is_measured_per_channel_over_batch_and_tokens_without_being_told() -> None:
    torch.manual_seed(0)
    model = tokens.ViT()  # 17 tokens of 24 channels
    with Outputs(model.blocks[0]) as first, Outputs(model.blocks[2]) as last:
        result = measure(model, resolution=32, batch=4)
    assert result.meta.layout == "NLC" and result.meta.reduced_over == "N,L"
    assert result.meta.notes[0].startswith("channels last (NLC): the LayerNorm blocks.0.norm1")
    agree(result, first.seen + last.seen, (0, 1), [0, 2])
    wrong, _ = reduced(last.seen[0], (0, 2))  # the tokens taken for channels, as before
    assert result.blocks[2].avg_channel_var != pytest.approx(wrong, rel=0.05)


def test_a_swin_keeps_its_maps_n_h_w_c_and_is_measured_over_n_h_w() -> None:
    torch.manual_seed(0)
    model = tokens.Swin()
    with Outputs(model.features[1][0]) as first, Outputs(model.features[5][1]) as last:
        result = measure(model, resolution=32, batch=4)
    assert result.meta.layout == "NHWC" and result.meta.reduced_over == "N,H,W"
    agree(result, first.seen + last.seen, (0, 1, 2), [0, 5])
    wrong, _ = reduced(last.seen[0], (0, 2, 3))  # H taken for the channels, as before
    assert result.blocks[5].avg_channel_var != pytest.approx(wrong, rel=0.05)


def test_a_network_of_maps_then_tokens_takes_each_block_in_its_layout() -> None:
    torch.manual_seed(0)
    model = tokens.EfficientFormer()
    with Outputs(model.stages[2].blocks[0]) as conv, Outputs(model.stages[2].blocks[2]) as tok:
        result = measure(model, resolution=32, batch=4)
    assert result.meta.layout == "NCHW+NLC"
    assert result.meta.reduced_over == "N,H,W (blocks 0-4); N,L (block 5)"
    agree(result, conv.seen, (0, 2, 3), [4])
    agree(result, tok.seen, (0, 1), [5])


class Disagreeing(nn.Module):
    """Blocks on N,A,B tensors read by a Conv1d on axis 1 and a LayerNorm on the last axis."""

    def __init__(self, size: int = 8) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Mixed(size) for _ in range(2)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Mixed(nn.Module):
    def __init__(self, size: int) -> None:
        super().__init__()
        self.conv, self.norm = nn.Conv1d(size, size, 1), nn.LayerNorm(size)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.norm(self.conv(x))


class Unsaid(nn.Module):
    """Blocks of N,L,C tokens mixed by bare parameters: no layer says where the channels are."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[Bare() for _ in range(2)])

    def forward(self, x: Tensor) -> Tensor:
        return self.blocks(x)


class Bare(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.randn(12, 12) / 4)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.tanh(x @ self.weight)


def test_layers_that_disagree_on_the_channel_axis_are_a_refusal_saying_what_to_pass() -> None:
    with pytest.raises(SelectionError, match=r"disagrees .*Conv1d.*LayerNorm.*pass channels="):
        measure(Disagreeing(), input_shape=(8, 8), batch=4)
    result = measure(Disagreeing(), input_shape=(8, 8), batch=4, channels="first")
    assert result.meta.layout == "NCL"
    assert any("you asked channels first" in note and "LayerNorm" in note
               for note in result.meta.notes)  # fmt: skip


def test_tokens_no_layer_reads_are_a_refusal_and_channels_is_used_as_asked() -> None:
    with pytest.raises(SelectionError, match=r"nothing in the network says .*pass channels='last'"):
        measure(Unsaid(), input_shape=(5, 12), batch=4)
    torch.manual_seed(0)
    model = Unsaid()
    with Outputs(model.blocks[1]) as out:
        result = measure(model, input_shape=(5, 12), batch=4, channels="last")
    assert "as you asked (channels='last')" in result.meta.notes[0]
    agree(result, out.seen, (0, 1), [1])


class ResidualMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Linear(width, width)

    def forward(self, x: Tensor) -> Tensor:
        return x + torch.relu(self.fc(x))


def test_vectors_of_an_mlp_need_no_evidence() -> None:
    result = measure(nn.Sequential(*[ResidualMLP(16) for _ in range(3)]), input_shape=(16,))
    assert result.meta.layout == "NC" and result.meta.reduced_over == "N"
    assert result.meta.notes[0].startswith("vectors (N,C)")


# --- one pass, counted, and the model left as it was ------------------------------------


class Counted(nets.RegNet):
    def __init__(self) -> None:
        super().__init__()
        self.forwards = 0

    def forward(self, x: Tensor) -> Tensor:
        self.forwards += 1
        return super().forward(x)


@pytest.mark.parametrize("gradients", [False, True])
def test_measure_is_one_pass_reported_whole_and_leaves_the_model_as_it_was(gradients) -> None:
    torch.manual_seed(0)
    model = Counted()
    buffers = {k: v.clone() for k, v in model.named_buffers()}
    start = time.perf_counter()
    result = measure(model, resolution=32, batch=4, gradients=gradients)
    wall = time.perf_counter() - start
    assert model.forwards == 1  # the blocks, their layout and shapes come from the measured pass
    assert result.meta.seconds >= 0.8 * wall
    assert all(torch.equal(v, buffers[k]) for k, v in model.named_buffers())  # BN stats unmoved
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert model.training and all(p.requires_grad for p in model.parameters())
    if gradients:
        assert all(b.grad_avg_channel_var > 0 for b in result.blocks)


def test_the_layout_and_notes_are_in_a_foreign_result_only() -> None:
    foreign = measure(tokens.ViT(), resolution=32, batch=2).to_json_dict()["meta"]
    assert foreign["layout"] == "NLC" and foreign["notes"]
    built_in = run_spp(SPPConfig(depth=14, norm="nf", width=0.25, resolution=32, batch=2))
    assert not {"layout", "notes", "reduced_over"} & set(built_in.to_json_dict()["meta"])


def test_a_network_that_fails_in_a_layer_leaves_nothing_behind() -> None:
    model = nn.Sequential(ResidualMLP(16), nn.Linear(8, 4))  # the head expects 8 features
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        measure(model, input_shape=(16,), batch=4)
    assert torch._C._is_torch_function_enabled()  # the trace's guards are all gone
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert model.training


def test_layers_known_by_their_functional_call_say_what_hooked_layers_say() -> None:
    """torch's Linears and norms are known by the weight their `F.linear`/`F.layer_norm` call
    is given, not hooked (a cost per layer); one with hooks of its own, or sharing its weight
    with another (tied), is hooked as before: the blocks, numbers and notes are the same."""

    def hook_every_layer(model: nn.Module) -> list:
        return [m.register_forward_hook(lambda *_: None) for m in model.modules()
                if isinstance(m, nn.Linear | nn.LayerNorm | nn.Conv2d)]  # fmt: skip

    for tie in (False, True):
        torch.manual_seed(0)
        model = tokens.ViT()
        if tie:  # two layers given one weight: neither can be named by it
            model.blocks[1].mlp.fc1.weight = model.blocks[0].mlp.fc1.weight
        by_call = measure(model, resolution=32, batch=4).to_json_dict()
        handles = hook_every_layer(model)
        forget(model)
        hooked = measure(model, resolution=32, batch=4).to_json_dict()
        for handle in handles:
            handle.remove()
        assert by_call["blocks"] == hooked["blocks"]
        assert by_call["meta"]["notes"] == hooked["meta"]["notes"]
        assert by_call["meta"]["notes"][0].startswith(
            "channels last (NLC): the LayerNorm blocks.0.norm1 normalizes the last axis (24)"
        )


@pytest.mark.parametrize("make", [tokens.ViT, tokens.Swin, tokens.EfficientFormer, nets.RegNet])
def test_the_evidence_looked_up_after_the_pass_is_what_a_walk_of_the_trace_finds(make) -> None:
    """Once the trace is finished, what each call's layers say is worked out once per tensor
    and shared between blocks (a cost per block); it must be what a plain walk of the same
    trace finds, reading for reading and in order, for every call and distance."""
    from nfcore.foreign.layouts import Readers
    from nfcore.foreign.trace import trace_forward

    torch.manual_seed(0)
    trace = trace_forward(make(), torch.randn(2, 3, 32, 32))
    walked = Readers(trace)
    trace.finished = False  # the walk as during the pass: no memo
    expected = {(c.order, steps): walked.of(c, steps) for c in trace.calls for steps in (2, 3, 6)}
    trace.finished = True
    shared = Readers(trace)
    found = {(c.order, steps): shared.of(c, steps) for c in trace.calls for steps in (2, 3, 6)}
    assert found == expected
    assert sum(len(readings) for readings in found.values()) > len(trace.calls)  # not vacuous
