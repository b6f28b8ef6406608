"""The torch-free cost estimate: exact parameters, FLOPs as torch counts them, activation memory."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from nfcore.engine.models import Network, build_model
from nfcore.engine.spp import measurement_mode
from nfcore.foreign.cost import LiveBytes
from nfcore.spec.config import ModelConfig, SPPConfig, TrainConfig
from nfcore.spec.cost import FLOAT32_BYTES, Cost, estimate, parameter_count
from nfcore.spec.variants import PAPER_RESNET_DEPTHS

TINY = {"depth": 14, "width": 0.125, "num_classes": 10}

PARAMETER_CONFIGS: list[dict[str, Any]] = [
    {**TINY, "norm": "bn", "order": "bn-relu-conv"},
    {**TINY, "norm": "bn", "order": "relu-bn-conv"},
    {**TINY, "norm": "nf"},
    {**TINY, "norm": "nf", "conv": "he"},
    {**TINY, "norm": "none"},
    {**TINY, "norm": "fixup"},
    {**TINY, "family": "resnetv1", "norm": "fixup"},  # the reference FixUp network
    {**TINY, "family": "resnetv1", "norm": "fixup", "se_gain": 2.0, "width": 0.5},
    {**TINY, "family": "resnetv1", "norm": "bn"},
    {**TINY, "family": "resnetv1", "norm": "none", "se_gain": 2.0, "skipinit": True},
    {**TINY, "family": "resnetv1", "norm": "bn", "conv": "ws", "maxpool": False},
    {**TINY, "norm": "nf", "se_gain": 2.0, "skipinit": True},
    {**TINY, "norm": "bn", "se_gain": 1.0, "skipinit": True, "maxpool": False},
    {**TINY, "norm": "none", "skipinit": False, "width": 0.5},
    {**TINY, "norm": "nf", "width": 1.0},
    {"layout": (1,), "norm": "nf", "width": 0.5},
    {"layout": (2, 1), "norm": "bn", "se_gain": 2.0, "width": 0.25},
    {"layout": (1, 1, 1, 1), "family": "resnetv1", "norm": "bn", "width": 0.125},
    {"family": "nf_regnet", "variant": "B0"},
    {"family": "nf_regnet", "variant": "B0", "se_gain": 0.0, "conv": "he", "width": 0.125},
    # 440 * 0.75 * 0.3 truncates to 98 or 99 depending on the order of the products.
    {"family": "nf_regnet", "variant": "B3", "width": 0.3},
    # NF-RegNet's BN twin: BN before every activation, plain convs; and with the NF options.
    {"family": "nf_regnet", "variant": "B0", "norm": "bn"},
    {"family": "nf_regnet", "variant": "B3", "norm": "bn", "width": 0.3},
    {
        "family": "nf_regnet",
        "variant": "B1",
        "norm": "bn",
        "conv": "ws",
        "se_gain": 2.0,
        "skipinit": True,
        "width": 0.5,
    },
    *({"depth": depth, "norm": "nf", "width": 0.25} for depth in PAPER_RESNET_DEPTHS),
    # A circular border adds no parameter.
    {**TINY, "norm": "nf", "padding": "circular"},
    {"family": "nf_regnet", "variant": "B0", "padding": "circular"},
]

# Small networks measured with torch's FLOP counter: (config, resolution), batch 2.
FLOP_CASES: list[tuple[dict[str, Any], int]] = [
    ({"depth": 14, "width": 0.25, "norm": "bn"}, 32),
    ({"depth": 26, "width": 0.25, "norm": "nf", "se_gain": 2.0, "maxpool": False}, 48),
    ({"depth": 50, "width": 0.25, "norm": "bn"}, 64),
    ({"depth": 26, "width": 0.25, "family": "resnetv1", "norm": "bn"}, 45),  # odd sizes
    ({"family": "nf_regnet", "variant": "B0", "width": 0.5}, 64),
    ({"family": "nf_regnet", "variant": "B0", "width": 0.5, "norm": "bn"}, 64),
    ({"family": "nf_regnet", "variant": "B1", "width": 0.25, "norm": "bn"}, 45),  # odd sizes
    ({"depth": 14, "width": 0.25, "norm": "bn", "padding": "circular"}, 32),
    ({"depth": 26, "width": 0.25, "family": "resnetv1", "norm": "fixup"}, 45),  # odd sizes
    ({"depth": 50, "width": 0.25, "family": "resnetv1", "norm": "fixup"}, 64),
    ({"family": "nf_regnet", "variant": "B1", "width": 0.25, "padding": "circular"}, 45),
]

# Mid-size networks whose activation memory is measured, at batch 4 and 64 px.
MEMORY_CASES: list[dict[str, Any]] = [
    {"depth": 50, "width": 0.25, "norm": "bn"},
    {"depth": 26, "width": 0.5, "norm": "nf", "se_gain": 2.0, "skipinit": True},
    {"family": "nf_regnet", "variant": "B0", "width": 0.5},
    {"family": "nf_regnet", "variant": "B0", "width": 0.5, "norm": "bn"},
    {"depth": 26, "width": 0.5, "family": "resnetv1", "norm": "fixup"},
    # A circular border pads a copy of each 3x3 conv's (and the max-pool's) input.
    {"depth": 26, "width": 0.5, "norm": "nf", "se_gain": 2.0, "padding": "circular"},
]


def _batchnorms(config: ModelConfig) -> list[torch.nn.BatchNorm2d]:
    model = build_model(config)
    return [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]


def flop_case_id(case: tuple[dict[str, Any], int]) -> str:
    config, resolution = case
    return f"{ModelConfig(**config).label}@{resolution}"


def measured_flops(model: Network, x: torch.Tensor, gradients: bool = False) -> int:
    """FLOPs torch counts (2 per multiply-add in convs and matmuls) for one pass."""
    for p in model.parameters():
        p.requires_grad_(False)  # input gradients only, as the SPP engine computes them
    with FlopCounterMode(display=False) as counter:
        if gradients:
            model(x.requires_grad_(True)).sum().backward()
        else:
            with torch.no_grad():
                model(x)
    return counter.get_total_flops()


def measured_activation_bytes(config: SPPConfig) -> int:
    """Peak activation bytes of the SPP engine's pass (BN on batch statistics), image included."""
    model = build_model(config, seed=0)
    x = torch.randn(config.batch, 3, config.resolution, config.resolution)
    for p in model.parameters():
        p.requires_grad_(False)
    with measurement_mode(model, torch.device("cpu")):
        with torch.no_grad():
            model(x)  # caches the Scaled WS weights, which are not activations
        with LiveBytes() as live:
            if config.gradients:
                logits = model(x.requires_grad_(True))
                F.cross_entropy(logits, torch.zeros(config.batch, dtype=torch.long)).backward()
            else:
                with torch.no_grad():
                    model(x)
    return live.peak + x.numel() * FLOAT32_BYTES


# --- parameters -------------------------------------------------------------------------------


@pytest.mark.parametrize("config", PARAMETER_CONFIGS, ids=lambda c: ModelConfig(**c).label)
def test_parameters_equal_the_builders_count(config: dict[str, Any]) -> None:
    model_config = ModelConfig(**config)
    cost = estimate(model_config, batch=1, resolution=64)
    with torch.device("meta"):  # the built network's count, without memory or initialization
        built = sum(p.numel() for p in build_model(model_config).parameters())
    assert cost.parameters == parameter_count(model_config) == built
    assert cost.blocks == model_config.num_blocks


def test_parameters_of_well_known_networks() -> None:
    # torchvision.models.resnet50(): 25,557,032 parameters.
    v1 = ModelConfig(family="resnetv1", depth=50, norm="bn")
    assert estimate(v1, batch=1, resolution=224).parameters == 25_557_032
    # The reference FixUp ResNet-50: the same convs and classifier without BN's 53,120
    # affine parameters, plus 7 scalars per block (6 biases, a multiplier) and 2 more (the
    # stem's bias and the classifier's): 25,557,032 - 53,120 + 16 * 7 + 2.
    fixup = ModelConfig(family="resnetv1", depth=50, norm="fixup")
    bn_affine = 2 * sum(m.num_features for m in _batchnorms(v1))
    assert bn_affine == 53_120
    assert estimate(fixup, batch=1, resolution=224).parameters == 25_557_032 - bn_affine + 114


# --- FLOPs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", FLOP_CASES, ids=flop_case_id)
def test_flops_match_torchs_counter(case: tuple[dict[str, Any], int]) -> None:
    config, resolution = case
    model_config = ModelConfig(**config)
    x = torch.randn(2, 3, resolution, resolution)
    measured = measured_flops(build_model(model_config, seed=0), x)
    assert estimate(model_config, batch=2, resolution=resolution).flops == pytest.approx(
        measured, rel=0.02
    )


@pytest.mark.parametrize("resolution", [64, 45])
def test_the_bn_twin_of_nf_regnet_is_counted_exactly(resolution: int) -> None:
    nf = ModelConfig(family="nf_regnet", variant="B0", width=0.5)
    bn = ModelConfig(family="nf_regnet", variant="B0", width=0.5, norm="bn")
    x = torch.randn(2, 3, resolution, resolution)
    flops = estimate(bn, batch=2, resolution=resolution).flops
    # The same convs and classifier (BN is not counted), to the FLOP.
    assert flops == measured_flops(build_model(bn, seed=0), x)
    assert flops == estimate(nf, batch=2, resolution=resolution).flops
    # BN's per-channel statistics are the only tensors the memory model leaves out.
    spp = SPPConfig(**bn.model_dump(), batch=4, resolution=resolution)
    assert estimate(spp).activation_bytes == pytest.approx(measured_activation_bytes(spp), rel=1e-3)


def test_gradients_add_a_backward_pass_as_costly_as_the_forward() -> None:
    config = SPPConfig(depth=26, width=0.25, norm="nf", resolution=32, batch=2, gradients=True)
    x = torch.randn(2, 3, 32, 32)
    measured = measured_flops(build_model(config, seed=0), x, gradients=True)
    assert estimate(config).flops == pytest.approx(measured, rel=0.02)
    forward = estimate(config.model_copy(update={"gradients": False})).flops
    assert estimate(config).flops == 2 * forward


@pytest.mark.parametrize(
    ("config", "resolution"),
    [({"depth": 26, "width": 0.25, "norm": "nf"}, 64),
     ({"family": "nf_regnet", "variant": "B0", "width": 0.25}, 45)],  # odd: the pool wraps
)  # fmt: skip
def test_circular_padding_keeps_the_parameters_and_flops(
    config: dict[str, Any], resolution: int
) -> None:
    zeros, circular = ModelConfig(**config), ModelConfig(**config, padding="circular")
    models = [build_model(c, seed=0) for c in (zeros, circular)]
    assert (
        parameter_count(circular)
        == parameter_count(zeros)
        == sum(p.numel() for p in models[1].parameters())
    )
    x = torch.randn(2, 3, resolution, resolution)
    counted = [measured_flops(model, x) for model in models]
    assert counted[0] == counted[1]  # the border changes what a conv reads, not its work
    costs = [estimate(c, batch=2, resolution=resolution) for c in (zeros, circular)]
    assert costs[0].flops == costs[1].flops and costs[0].parameters == costs[1].parameters


@pytest.mark.parametrize("odd_side", [False, True])
def test_the_circular_avg_pools_padded_copy_is_counted(odd_side: bool) -> None:
    spp = SPPConfig(family="nf_regnet", variant="B0", width=0.25, batch=2, padding="circular",
                    resolution=45 if odd_side else 64)  # fmt: skip
    assert estimate(spp).activation_bytes == pytest.approx(measured_activation_bytes(spp), rel=0.02)


def test_flops_scale_linearly_with_batch_and_quadratically_with_resolution() -> None:
    config = ModelConfig(depth=50, width=0.25)
    base = estimate(config, batch=2, resolution=128).flops
    assert estimate(config, batch=6, resolution=128).flops == 3 * base
    # The classifier does not grow with the image, so the ratio is just under 4.
    assert estimate(config, batch=2, resolution=256).flops / base == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("family", ["resnetv2", "resnetv1"])
def test_resnet50_costs_the_well_known_four_gmacs(family: str) -> None:
    cost = estimate(ModelConfig(family=family, depth=50), batch=1, resolution=224)
    assert cost.flops / 1e9 == pytest.approx(8.2, rel=0.05)  # 4.1 GMACs


# --- activation memory ------------------------------------------------------------------------


def test_activation_memory_grows_with_batch_and_resolution() -> None:
    config = ModelConfig(depth=26, width=0.25)
    base = estimate(config, batch=2, resolution=64).activation_bytes
    assert estimate(config, batch=4, resolution=64).activation_bytes == 2 * base
    assert estimate(config, batch=2, resolution=128).activation_bytes > 3.5 * base


def test_the_live_bytes_counter_sees_tensors_born_and_freed() -> None:
    x = torch.zeros(1000)
    with LiveBytes() as live:
        y = x + 1  # 4000 bytes
        z = y * 2  # 8000 bytes alive
        del y
        w = z.view(10, 100)  # a view allocates nothing
        del z, w
    assert (live.peak, live.now) == (8000, 0)


@pytest.mark.parametrize("config", MEMORY_CASES, ids=lambda c: ModelConfig(**c).label)
def test_activation_memory_matches_a_measured_forward_pass(config: dict[str, Any]) -> None:
    spp = SPPConfig(**config, batch=4, resolution=64)
    measured = measured_activation_bytes(spp)
    # Without autograd the model of what is alive at once is close to exact.
    assert estimate(spp).activation_bytes == pytest.approx(measured, rel=0.1)


@pytest.mark.parametrize("config", MEMORY_CASES, ids=lambda c: ModelConfig(**c).label)
def test_activation_memory_with_gradients_bounds_the_measured_peak(config: dict[str, Any]) -> None:
    spp = SPPConfig(**config, batch=4, resolution=64, gradients=True)
    measured = measured_activation_bytes(spp)
    # Some tensors count twice as saved (a ReLU's output is the next conv's input): an upper bound.
    assert measured <= estimate(spp).activation_bytes <= 2 * measured


# --- the API's view ---------------------------------------------------------------------------


def test_an_spp_config_brings_its_own_batch_and_resolution() -> None:
    spp = SPPConfig(depth=14, width=0.25, batch=3, resolution=48)
    model = ModelConfig(depth=14, width=0.25)
    assert estimate(spp) == estimate(model, batch=3, resolution=48)
    assert estimate(spp, batch=6) == estimate(model, batch=6, resolution=48)
    assert isinstance(estimate(spp), Cost)


def test_a_model_config_needs_batch_and_resolution() -> None:
    with pytest.raises(ValueError, match="batch and a resolution"):
        estimate(ModelConfig(depth=14), batch=2)


def test_importing_the_estimate_does_not_import_torch() -> None:
    code = "import sys, nfcore.spec.cost; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


# --- training: its layers' fixed cost, and what it writes ---------------------------------
# Issue 19 item 7: 0.5% of MAX_TRAIN_FLOPS (6e13) by its FLOPs, it ran about an hour.
DEEP_NARROW_RUN = {"depth": 600, "width": 0.0625, "resolution": 32, "batch": 2, "spp_batch": 2,
                   "steps": 5000, "spp_every": 1, "norm": "nf", "dataset": "gaussian"}  # fmt: skip


def test_layer_calls_count_the_layers_whatever_the_batch_resolution_or_width() -> None:
    calls = estimate(SPPConfig(depth=26, width=0.25, batch=2, resolution=32)).layer_calls
    for changed in ({"batch": 64}, {"resolution": 128}, {"width": 1.0}):
        config = SPPConfig(**{"depth": 26, "width": 0.25, "batch": 2, "resolution": 32, **changed})
        assert estimate(config).layer_calls == calls, changed
    # A ResNet-26 has four more bottleneck blocks than a ResNet-14, each the same calls.
    shallow = estimate(SPPConfig(depth=14, width=0.25)).layer_calls
    deep = estimate(SPPConfig(depth=50, width=0.25)).layer_calls
    assert (deep - calls) / 8 == (calls - shallow) / 4 > 8  # conv, norm, act thrice, / beta, ...


def test_a_deep_narrow_run_costs_its_layers_fixed_cost_not_its_flops() -> None:
    from nfcore.spec.cost import train_costs

    costs = train_costs(TrainConfig(**DEEP_NARROW_RUN))
    flops = costs.total - costs.overhead
    assert flops < 0.02 * 6e13  # what FLOPs alone said (0.5% of MAX_TRAIN_FLOPS plus the SPPs)
    assert costs.total > 2 * 6e13  # what the measured hour says
    assert costs.overhead > 0.95 * costs.total


def test_affordable_steps_is_the_most_steps_within_the_budget() -> None:
    from nfcore.spec.cost import train_costs

    config = TrainConfig(**{**DEEP_NARROW_RUN, "spp_every": 50})
    costs = train_costs(config)
    for budget in (costs.total / 3, costs.total / 1.01, 1.0):
        steps = costs.affordable_steps(config, budget)
        fits = config.model_copy(update={"steps": steps})
        over = config.model_copy(update={"steps": steps + 1})
        assert steps == 0 or costs.total_for(fits) <= budget, budget
        assert costs.total_for(over) > budget, budget
    assert costs.affordable_steps(config, costs.total) == config.steps


@pytest.mark.parametrize("spp_every", [1, 3, None])
def test_written_bytes_bounds_a_runs_result_and_events_closely(spp_every: int | None) -> None:
    import json

    from nfcore.spec.train_result import written_bytes
    from nfcore.training.train import train

    config = TrainConfig(depth=14, width=0.125, norm="nf", maxpool=False, resolution=16, steps=6,
                         batch=4, eval_every=2, eval_examples=8, dataset="gaussian",
                         spp_every=spp_every, device="cpu")  # fmt: skip
    events: list[dict[str, Any]] = []
    result = train(config, events.append, device="cpu").to_json_dict()
    bound = written_bytes(config)
    result_bytes = len(json.dumps(result))  # as the worker writes them (`worker.tasks._json`)
    event_bytes = sum(len(json.dumps(event)) for event in events)
    assert max(result_bytes, event_bytes) <= bound < 2.5 * min(result_bytes, event_bytes)
