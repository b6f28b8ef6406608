"""The model builder: layouts, widths, initialization, beta/alpha bookkeeping, parameter counts."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nfcore.engine.activations import gamma_quadrature, he_gain
from nfcore.engine.layers import (
    Activation,
    BatchNorm2d,
    CircularAvgPool2d,
    CircularMaxPool2d,
    Conv2d,
    Linear,
    ScalarBias,
    ScaledWSConv2d,
    SqueezeExcite,
    deferred_init,
)
from nfcore.engine.models import Network, _build, _Parts, build_model, init_weights, seeded
from nfcore.spec.catalog import model_catalog
from nfcore.spec.config import ModelConfig
from nfcore.spec.cost import parameter_count
from nfcore.spec.plan import nf_expected_variances
from nfcore.spec.variants import (
    NF_REGNET_PAPER_PARAMS_M,
    NF_REGNET_VARIANTS,
    PAPER_RESNET_DEPTHS,
    RESNET_LAYOUTS,
)

TINY = {"depth": 14, "width": 0.125, "num_classes": 10}

# One tiny network per family and normalization the paper compares (Sections 3-5, Appendix F).
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "bn-relu-conv": {**TINY, "norm": "bn", "order": "bn-relu-conv"},
    "relu-bn-conv": {**TINY, "norm": "bn", "order": "relu-bn-conv"},
    "nf-ws": {**TINY, "norm": "nf"},
    "nf-he": {**TINY, "norm": "nf", "conv": "he"},
    "nf-se-skipinit": {**TINY, "depth": 26, "norm": "nf", "se_gain": 2.0, "skipinit": True},
    "none": {**TINY, "norm": "none"},
    "fixup": {**TINY, "norm": "fixup"},
    "v1-bn": {**TINY, "family": "resnetv1", "norm": "bn"},
    "v1-none": {**TINY, "family": "resnetv1", "norm": "none"},
    "nf-regnet-b0": {"family": "nf_regnet", "variant": "B0", "width": 0.25, "num_classes": 10},
    "bn-regnet-b0": {
        "family": "nf_regnet",
        "variant": "B0",
        "norm": "bn",
        "width": 0.25,
        "num_classes": 10,
    },
}


def model_config(name: str) -> ModelConfig:
    return ModelConfig(**TINY_CONFIGS[name])


def tiny(name: str, **overrides: Any) -> Network:
    return build_model(ModelConfig(**{**TINY_CONFIGS[name], **overrides}), seed=0)


def numel(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def stage_ends_of(layout: tuple[int, ...]) -> list[int]:
    return [end - 1 for end in itertools.accumulate(layout)]


def block_convs(model: Network) -> list[nn.Conv2d]:
    """The convolutions of the residual blocks (branches and shortcuts), without S+E's MLP."""
    se_convs = {id(c) for m in model.modules() if isinstance(m, SqueezeExcite) for c in m.modules()}
    return [m for m in model.blocks.modules() if isinstance(m, nn.Conv2d) and id(m) not in se_convs]


def pooled_relative_std(convs: list[nn.Conv2d], gain: float, scale: float = 1.0) -> float:
    """Std of all weights, each divided by the He std gain * scale / sqrt(fan_in) of its conv."""
    relative = [
        c.weight.detach().flatten() * math.sqrt(c.weight[0].numel()) / (gain * scale) for c in convs
    ]
    return float(torch.cat(relative).std())


# --- layouts ----------------------------------------------------------------------------------


@pytest.mark.parametrize("depth", PAPER_RESNET_DEPTHS)
def test_paper_depths_have_their_blocks_and_stage_ends(depth: int) -> None:
    layout = RESNET_LAYOUTS[depth]
    model = build_model(ModelConfig(depth=depth, norm="nf", width=0.0625), seed=0)
    assert len(model.blocks) == sum(layout)
    # The paper's SPPs mark the end of every stage with a dot (Fig. 1).
    assert model.stage_ends == stage_ends_of(layout)
    assert [b.stage for b in model.blocks] == [s for s, n in enumerate(layout) for _ in range(n)]


@pytest.mark.parametrize("name", TINY_CONFIGS)
def test_transitions_are_exactly_the_first_block_of_each_stage(name: str) -> None:
    model = tiny(name)
    layout = model_config(name).stage_layout
    firsts = {end + 1 for end in [-1, *stage_ends_of(layout)[:-1]]}
    assert [b.transition for b in model.blocks] == [i in firsts for i in range(sum(layout))]


@pytest.mark.parametrize("name", TINY_CONFIGS)
def test_forward_gives_one_logit_per_class(name: str) -> None:
    model = tiny(name)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    out = model(x)
    assert out.shape == (2, 10)
    assert torch.isfinite(out).all()


def test_width_multiplier_scales_every_channel_count() -> None:
    model = build_model(ModelConfig(depth=50, width=0.25), seed=0)
    stem = model.stem[0]
    assert stem.out_channels == 16  # 64 * 0.25
    stage_out = {b.stage: b.branch[-1].out_channels for b in model.blocks}
    assert stage_out == {0: 64, 1: 128, 2: 256, 3: 512}  # (256, 512, 1024, 2048) * 0.25
    # The bottleneck is a quarter of the block's output width.
    assert model.blocks[-1].branch[0].out_channels == 128
    assert model.fc.in_features == 512


# --- parameter counts -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TINY_CONFIGS)
def test_parameter_count_equals_the_built_models(name: str) -> None:
    assert parameter_count(model_config(name)) == numel(tiny(name))


def test_bn_resnet50_v1_has_torchvisions_parameter_count() -> None:
    # torchvision.models.resnet50(): 25,557,032 parameters.
    assert parameter_count(ModelConfig(family="resnetv1", depth=50, norm="bn")) == 25_557_032


@pytest.mark.parametrize("variant", list(NF_REGNET_VARIANTS))
def test_nf_regnet_parameter_counts_match_table3(variant: str) -> None:
    count = parameter_count(ModelConfig(family="nf_regnet", variant=variant))
    assert count / 1e6 == pytest.approx(NF_REGNET_PAPER_PARAMS_M[variant], rel=0.01)


def test_nf_regnet_b0_parameter_count_is_unchanged_by_its_bn_twin() -> None:
    # The catalog's figure (Table 3: 8.6M); the BN twin reuses the NF builder.
    assert parameter_count(ModelConfig(family="nf_regnet", variant="B0")) == 8_595_372


def conv_layout(model: nn.Module) -> list[tuple]:
    """Every conv in module order (S+E's MLP included): its weight's shape, stride, padding."""
    return [
        (tuple(m.weight.shape), m.stride, m.padding, m.groups)
        for m in model.modules()
        if isinstance(m, nn.Conv2d)
    ]


@pytest.mark.parametrize("variant", ["B0", "B3"])
def test_bn_regnet_is_nf_regnet_with_batchnorm_instead_of_the_nf_parts(variant: str) -> None:
    nf = build_model(ModelConfig(family="nf_regnet", variant=variant), seed=0)
    bn = build_model(ModelConfig(family="nf_regnet", variant=variant, norm="bn"), seed=0)
    # The same convs (S+E included), pooling shortcuts, blocks and final 1x1 expansion conv ...
    assert conv_layout(bn) == conv_layout(nf)
    assert [b.transition for b in bn.blocks] == [b.transition for b in nf.blocks]
    assert [b.stage for b in bn.blocks] == [b.stage for b in nf.blocks]
    assert bn.fc.in_features == nf.fc.in_features
    assert len([m for m in bn.modules() if isinstance(m, SqueezeExcite)]) == len(bn.blocks)
    # ... as plain convs, so the parameters differ only by the BN affine parameters, Scaled
    # WS's gains and biases, and SkipInit's scalars.
    assert not [m for m in bn.modules() if isinstance(m, ScaledWSConv2d)]
    assert not [n for n, _ in bn.named_parameters() if "skipinit" in n]
    norms = [m for m in bn.modules() if isinstance(m, nn.BatchNorm2d)]
    assert not [m for m in nf.modules() if isinstance(m, nn.BatchNorm2d)]
    assert len(norms) == 3 * len(bn.blocks) + 1  # pre, two in the branch; the head
    bn_affine = sum(2 * m.num_features for m in norms)
    ws_gains = sum(2 * m.out_channels for m in nf.modules() if isinstance(m, ScaledWSConv2d))
    assert numel(bn) - bn_affine == numel(nf) - ws_gains - len(nf.blocks)


def test_bn_regnet_normalizes_before_every_activation() -> None:
    model = tiny("bn-regnet-b0")
    for block in model.blocks:
        # Pre-activation as in BN-ResNetV2: BN then g, with no alpha and beta. (nfcore's Conv2d
        # and BatchNorm2d are PyTorch's whose default init the builder skips.)
        assert [type(m) for m in block.pre] == [BatchNorm2d, Activation]
        assert (block.beta, block.alpha, block.expected_var) == (1.0, 1.0, None)
        kinds = [type(m) for m in block.branch]
        assert kinds == [Conv2d, BatchNorm2d, Activation, Conv2d, SqueezeExcite,
                         BatchNorm2d, Activation, Conv2d]  # fmt: skip
        assert block.branch[4].se_gain == 1.0  # plain S+E: BN renormalizes right after it
    assert [type(m) for m in model.head] == [Conv2d, BatchNorm2d, Activation]


def test_bn_regnet_convs_are_he_initialized_for_what_they_read() -> None:
    model = build_model(ModelConfig(family="nf_regnet", variant="B0", norm="bn", width=0.5))
    # Block convs read g(BN(.)): He gain 1/sqrt(E[g^2]) for SiLU (Fig. 8); the stem reads the
    # image and the final conv the last block's sum: gain 1.
    assert pooled_relative_std(block_convs(model), he_gain("silu")) == pytest.approx(1, abs=0.03)
    assert pooled_relative_std([model.stem, model.head[0]], 1.0) == pytest.approx(1, abs=0.03)


def test_model_catalog_lists_every_depth_and_variant() -> None:
    rows = model_catalog()
    for family, norm in (("resnetv2", "nf"), ("resnetv2", "bn"), ("resnetv1", "bn")):
        depths = [r["depth"] for r in rows if (r["family"], r["norm"]) == (family, norm)]
        assert sorted(depths) == sorted(RESNET_LAYOUTS)
    regnets = [r for r in rows if r["family"] == "nf_regnet"]
    assert [r["variant"] for r in regnets] == ["B0", "B1", "B2", "B3", "B4", "B5"]
    for row in rows:
        assert isinstance(row["parameters"], int) and row["parameters"] > 0
    v1_50 = next(r for r in rows if (r["family"], r["norm"], r["depth"]) == ("resnetv1", "bn", 50))
    assert v1_50["parameters"] == 25_557_032
    assert v1_50["layout"] == [3, 4, 6, 3]


# --- beta, alpha and the expected variance (Section 4.5) ---------------------------------------


@pytest.mark.parametrize(
    "config",
    [
        ModelConfig(depth=50, norm="nf", alpha=0.5, width=0.0625),
        ModelConfig(family="nf_regnet", variant="B0", width=0.25),
    ],
    ids=["nf-resnet50", "nf-regnet-b0"],
)
def test_nf_blocks_track_the_expected_variance(config: ModelConfig) -> None:
    model = build_model(config, seed=0)
    alpha = float(config.alpha)
    var_in = 1.0  # Var(x_0) = 1: the stem preserves the unit-variance input
    for block in model.blocks:
        assert block.alpha == alpha
        # beta_l = sqrt(Var(x_l)), so the branch and the transition's shortcut see unit variance.
        assert block.beta == pytest.approx(math.sqrt(var_in))
        # Var(x_{l+1}) = Var(x_l) + alpha^2; a transition's skip sees x / beta, so it resets.
        expected = (1.0 if block.transition else var_in) + alpha**2
        assert block.expected_var == pytest.approx(expected)
        var_in = block.expected_var
    assert model.blocks[0].beta == 1.0
    assert [(b.beta, b.expected_var) for b in model.blocks] == nf_expected_variances(
        config.stage_layout, alpha
    )


def test_nf_resnet50_variance_at_each_stage_end() -> None:
    model = build_model(ModelConfig(depth=50, norm="nf", width=0.0625), seed=0)
    ends = [model.blocks[i].expected_var for i in model.stage_ends]
    # Stages of 3, 4, 6, 3 blocks with alpha = 0.2: 1 + n * 0.04.
    assert ends == pytest.approx([1.12, 1.16, 1.24, 1.12])


@pytest.mark.parametrize(
    "name", ["bn-relu-conv", "relu-bn-conv", "none", "fixup", "v1-bn", "bn-regnet-b0"]
)
def test_other_blocks_have_unit_beta_and_alpha_and_no_expected_variance(name: str) -> None:
    for block in tiny(name).blocks:
        assert (block.beta, block.alpha, block.expected_var) == (1.0, 1.0, None)


@pytest.mark.parametrize(
    ("config", "g"),
    [
        (ModelConfig(**{**TINY, "norm": "nf", "alpha": 0.5}), F.relu),
        (ModelConfig(family="nf_regnet", variant="B0", width=0.25, alpha=0.5), F.silu),
    ],
    ids=["nf-resnetv2", "nf-regnet"],
)
def test_transition_shortcut_reads_the_activation_divided_by_beta(
    config: ModelConfig, g: Any
) -> None:
    model = build_model(config, seed=0)
    transitions = [block for block in model.blocks if block.transition]
    block_inputs: list[Tensor] = []
    shortcut_inputs: list[Tensor] = []
    handles = [
        b.register_forward_pre_hook(lambda _m, a: block_inputs.append(a[0])) for b in transitions
    ]
    handles += [
        b.shortcut.register_forward_pre_hook(lambda _m, a: shortcut_inputs.append(a[0]))
        for b in transitions
    ]
    with torch.no_grad():
        model(torch.randn(2, 3, 32, 32))
    for handle in handles:
        handle.remove()
    assert len(block_inputs) == len(shortcut_inputs) == len(config.stage_layout)
    for block, x, shortcut_in in zip(transitions, block_inputs, shortcut_inputs, strict=True):
        # Section 4.5 / Fig. 4: the transition's skip path convolves g(x) / beta, not x.
        torch.testing.assert_close(shortcut_in, g(x) / block.beta)
        if block.beta != 1.0:
            assert not torch.allclose(shortcut_in, g(x))


# --- initialization ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("config", "act"),
    [
        (ModelConfig(**{**TINY, "norm": "nf"}), "relu"),
        (ModelConfig(**{**TINY, "norm": "nf", "activation": "silu"}), "silu"),
        (ModelConfig(family="nf_regnet", variant="B0", width=0.25), "silu"),
    ],
    ids=["nf-relu", "nf-silu", "nf-regnet"],
)
def test_scaled_ws_gamma_is_the_activation_gain_except_on_linear_inputs(
    config: ModelConfig, act: str
) -> None:
    model = build_model(config, seed=0)
    ws = {name: m for name, m in model.named_modules() if isinstance(m, ScaledWSConv2d)}
    # The stem reads the image and NF-RegNet's final conv the last block's sum: no g before them.
    linear_inputs = {"stem", "stem.0", "head.0"}
    assert {n for n in ws if n in linear_inputs} == (
        {"stem", "head.0"} if config.family == "nf_regnet" else {"stem.0"}
    )
    for name, conv in ws.items():
        expected = 1.0 if name in linear_inputs else gamma_quadrature(act)  # Section 4.3
        assert conv.gamma == pytest.approx(expected), name


def test_a_numeric_gamma_is_used_as_given() -> None:
    # Fig. 8: Scaled WS with the He gain sqrt(2) instead of the ReLU gamma.
    model = build_model(ModelConfig(**{**TINY, "norm": "nf", "gamma": math.sqrt(2)}), seed=0)
    assert all(m.gamma == pytest.approx(math.sqrt(2)) for m in block_convs(model))
    assert model.stem[0].gamma == 1.0


@pytest.mark.parametrize(
    ("overrides", "block_gain"),
    [
        ({"norm": "bn", "order": "bn-relu-conv"}, math.sqrt(2)),  # convs read relu(BN(x))
        ({"norm": "none"}, math.sqrt(2)),
        ({"norm": "nf", "conv": "he"}, math.sqrt(2)),
        ({"family": "resnetv1", "norm": "bn"}, math.sqrt(2)),
        ({"norm": "bn", "order": "relu-bn-conv"}, 1.0),  # convs read BN(relu(x)): linear
        ({"norm": "none", "activation": "silu"}, he_gain("silu")),
    ],
    ids=["bn-relu-conv", "none", "nf-he", "v1-bn", "relu-bn-conv", "none-silu"],
)
def test_he_init_gain_depends_on_what_the_conv_reads(
    overrides: dict[str, Any], block_gain: float
) -> None:
    model = build_model(ModelConfig(**{**TINY, "width": 0.25, **overrides}), seed=0)
    # Fig. 8: He init N(0, gain^2 / fan_in), gain sqrt(2) after ReLU; the stem reads the image.
    assert pooled_relative_std([model.stem[0]], gain=1.0) == pytest.approx(1.0, abs=0.06)
    assert pooled_relative_std(block_convs(model), block_gain) == pytest.approx(1.0, abs=0.03)


def test_fixup_zeroes_the_last_conv_and_scales_the_others() -> None:
    config = ModelConfig(depth=50, norm="fixup", width=0.25)
    model = build_model(config, seed=0)
    num_blocks = config.num_blocks  # L = 16
    first_two, shortcuts = [], []
    for block in model.blocks:
        convs = [m for m in block.branch if isinstance(m, nn.Conv2d)]
        assert len(convs) == 3
        # Zhang et al. (2019): the branch's last layer starts at zero ...
        assert torch.equal(convs[2].weight, torch.zeros_like(convs[2].weight))
        first_two += convs[:2]
        if block.shortcut is not None:
            shortcuts.append(block.shortcut)
    # ... and the others are He init scaled by L^(-1/(2m-2)) = L^(-1/4) for m = 3 layers.
    scale = num_blocks ** (-1 / 4)
    assert pooled_relative_std(first_two, math.sqrt(2), scale) == pytest.approx(1.0, abs=0.03)
    assert pooled_relative_std(shortcuts, math.sqrt(2)) == pytest.approx(1.0, abs=0.05)


@pytest.mark.parametrize("name", ["nf-se-skipinit", "nf-regnet-b0"])
def test_skipinit_adds_one_zero_gain_per_block(name: str) -> None:
    model = tiny(name)
    gains = {n: p for n, p in model.named_parameters() if n.endswith("skipinit_gain")}
    assert len(gains) == len(model.blocks)
    # De & Smith (2020): each residual branch is multiplied by a learnable scalar starting at 0.
    assert all(p.item() == 0.0 for p in gains.values())


@pytest.mark.parametrize("name", ["nf-ws", "bn-regnet-b0"])
def test_no_skipinit_gain_when_off(name: str) -> None:
    model = tiny(name)  # the BN twin of NF-RegNet turns it off by default
    assert not [n for n, _ in model.named_parameters() if "skipinit" in n]


def test_bn_regnet_takes_se_gain_and_skipinit_when_given() -> None:
    model = tiny("bn-regnet-b0", se_gain=2.0, skipinit=True)
    assert {m.se_gain for m in model.modules() if isinstance(m, SqueezeExcite)} == {2.0}
    assert len([n for n, _ in model.named_parameters() if "skipinit" in n]) == len(model.blocks)


def test_squeeze_excite_uses_the_configured_gain() -> None:
    model = tiny("nf-regnet-b0")
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert len(se) == len(model.blocks)
    assert {m.se_gain for m in se} == {2.0}  # Section 4.4


def test_stochastic_depth_rate_grows_linearly_with_depth() -> None:
    model = tiny("nf-ws", depth=26, stochdepth_rate=0.1)
    rates = [b.drop_path.rate for b in model.blocks]
    assert rates[0] == 0.0
    steps = [b - a for a, b in itertools.pairwise(rates)]
    assert steps == pytest.approx([steps[0]] * len(steps))
    assert 0 < rates[-1] <= 0.1


# --- reproducibility --------------------------------------------------------------------------


def test_seeded_build_is_reproducible_and_leaves_the_global_rng_alone() -> None:
    config = ModelConfig(**TINY_CONFIGS["nf-se-skipinit"])
    rng_before = torch.random.get_rng_state()
    first = build_model(config, seed=3).state_dict()
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    second = build_model(config, seed=3).state_dict()
    other = build_model(config, seed=4).state_dict()
    assert first.keys() == second.keys() == other.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)
    assert not all(torch.equal(first[k], other[k]) for k in first)


# Every family and every layer kind with parameters or buffers: BN, Scaled WS, He, S+E,
# SkipInit, FixUp's scalars (its reference network too), NF-RegNet and its BN twin.
INIT_CONFIGS = {
    **TINY_CONFIGS,
    "fixup-reference": {**TINY, "family": "resnetv1", "norm": "fixup"},
    "bn-regnet-se-skipinit": {
        **TINY_CONFIGS["bn-regnet-b0"],
        "se_gain": 2.0,
        "skipinit": True,
    },
}


@pytest.mark.parametrize("name", sorted(INIT_CONFIGS))
def test_init_weights_sets_every_parameter_and_buffer_as_build_model_does(name: str) -> None:
    """Nothing is left to the construction: every tensor overwritten with garbage, then
    `init_weights` gives exactly `build_model`'s network, all finite."""
    config = ModelConfig(**INIT_CONFIGS[name])
    expected = build_model(config, seed=5).state_dict()
    with deferred_init():
        model = _build(_Parts.of(config))
    with torch.no_grad():
        for tensor in itertools.chain(model.parameters(), model.buffers()):
            tensor.fill_(math.nan if tensor.is_floating_point() else 12345)
    with seeded(5):
        init_weights(model)
    state = model.state_dict()
    assert state.keys() == expected.keys()
    for key, value in state.items():
        assert not value.is_floating_point() or bool(value.isfinite().all()), key
        assert torch.equal(value, expected[key]), key


@pytest.mark.parametrize("name", ["nf-se-skipinit", "bn-regnet-b0", "fixup"])
def test_construction_draws_no_random_number_and_init_draws_each_weight_once(name: str) -> None:
    config = ModelConfig(**TINY_CONFIGS[name])
    with seeded(0):
        with deferred_init():
            model = _build(_Parts.of(config))
        after_construction = torch.random.get_rng_state()
        assert torch.equal(after_construction, seeded_state(0))  # nothing drawn
        init_weights(model)
        drawn = torch.random.get_rng_state()
    # One draw per weight: the same count of normal numbers as the network's weights
    # advance a fresh generator to the same state (the S+E convs' uniform draws apart).
    se = [m for m in model.modules() if isinstance(m, SqueezeExcite)]
    assert not torch.equal(drawn, after_construction)
    if not se:
        with seeded(0):
            for module in model.modules():
                if isinstance(module, nn.Conv2d | nn.Linear):
                    torch.empty(module.weight.shape).normal_()
            assert torch.equal(torch.random.get_rng_state(), drawn)


def seeded_state(seed: int) -> Tensor:
    with seeded(seed):
        return torch.random.get_rng_state()


def test_layers_built_directly_keep_pytorchs_default_init() -> None:
    """Outside the builder (a plugin, a test) the layers initialize as PyTorch's do."""
    with seeded(0):
        ours = [ScaledWSConv2d(8, 16, 3), Conv2d(8, 16, 3), Linear(8, 4)]
        se = SqueezeExcite(16, 4, Activation(F.relu, "relu"), 2.0)
    with seeded(0):
        theirs = [nn.Conv2d(8, 16, 3), nn.Conv2d(8, 16, 3), nn.Linear(8, 4)]
        se_convs = [nn.Conv2d(16, 4, 1), nn.Conv2d(4, 16, 1)]
    for mine, reference in zip(
        [*ours, se.se_conv0, se.se_conv1], [*theirs, *se_convs], strict=True
    ):
        assert torch.equal(mine.weight, reference.weight)
        assert torch.equal(mine.bias, reference.bias)


def test_init_weights_refuses_a_module_it_does_not_know() -> None:
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.PReLU())
    with pytest.raises(TypeError, match="PReLU"):
        init_weights(model)


# --- circular padding -------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["nf-ws", "v1-bn", "nf-regnet-b0"])
def test_circular_padding_wraps_every_border_and_keeps_the_weights(name: str) -> None:
    zeros, circular = tiny(name), tiny(name, padding="circular")
    # The border draws no random numbers: the same seed gives the same weights.
    assert zeros.state_dict().keys() == circular.state_dict().keys()
    for key, value in zeros.state_dict().items():
        assert torch.equal(value, circular.state_dict()[key]), key
    convs = [m for m in circular.modules() if isinstance(m, nn.Conv2d)]
    wide = [c for c in convs if c.kernel_size != (1, 1)]
    assert wide and all(c.padding_mode == "circular" for c in wide)
    # A 1x1 conv has no border: another mode would only copy its input.
    assert all(c.padding_mode == "zeros" for c in convs if c.kernel_size == (1, 1))
    pools = [m for m in circular.modules() if isinstance(m, nn.MaxPool2d | nn.AvgPool2d)]
    assert pools and all(isinstance(m, CircularMaxPool2d | CircularAvgPool2d) for m in pools)
    assert not any(isinstance(m, CircularMaxPool2d | CircularAvgPool2d) for m in zeros.modules())


# --- the reference FixUp (post-activation) ----------------------------------------------------


def test_the_reference_fixup_is_post_activation_with_its_scalars_and_fan_out_init() -> None:
    """deepmind-research nfnets/fixup_resnet.py: g(skip + f(x + b)), a scalar bias before
    every conv and activation, a multiplier at the branch's end; the last conv zero, the
    others N(0, 2 / fan_out) scaled by L^(-1/4), the shortcut N(0, 2 / fan_out)."""
    config = ModelConfig(family="resnetv1", depth=50, norm="fixup", width=0.25)
    model = build_model(config, seed=0)
    scale = config.num_blocks ** (-1 / 4)

    def relative_std(convs: list[nn.Conv2d], gain: float, by_fan_out: bool) -> float:
        def fan(c: nn.Conv2d) -> int:
            return c.weight.shape[0] * c.weight[0, 0].numel() if by_fan_out else c.weight[0].numel()

        relative = [c.weight.detach().flatten() * math.sqrt(fan(c)) / gain for c in convs]
        return float(torch.cat(relative).std())

    first_two, shortcuts = [], []
    for block in model.blocks:
        assert isinstance(block.pre, ScalarBias) and isinstance(block.post, Activation)
        kinds = [type(m).__name__ for m in block.branch]
        assert kinds == ["Conv2d", "ScalarBias", "Activation", "ScalarBias", "Conv2d",
                         "ScalarBias", "Activation", "ScalarBias", "Conv2d", "ScalarScale",
                         "ScalarBias"]  # fmt: skip
        convs = [m for m in block.branch if isinstance(m, nn.Conv2d)]
        assert torch.equal(convs[2].weight, torch.zeros_like(convs[2].weight))
        first_two += convs[:2]
        if block.shortcut is not None:
            shortcuts.append(block.shortcut)
    relu = math.sqrt(2)
    assert relative_std(first_two, relu * scale, by_fan_out=True) == pytest.approx(1, abs=0.03)
    # Against the fan-in they are wider than He init's: conv0 narrows 4x to the bottleneck.
    assert relative_std(first_two, relu * scale, by_fan_out=False) > 1.2
    assert relative_std(shortcuts, relu, by_fan_out=True) == pytest.approx(1, abs=0.05)
    # The stem reads the image: gain 1 over its fan-in, then its bias, g and the max-pool.
    assert relative_std([model.stem[0]], 1.0, by_fan_out=False) == pytest.approx(1, abs=0.06)
    assert [type(m).__name__ for m in model.stem] == [
        "Conv2d", "ScalarBias", "Activation", "MaxPool2d"
    ]  # fmt: skip
    assert isinstance(model.head, ScalarBias)  # before the classifier
    scalars = [p for p in model.parameters() if p.dim() == 0]
    assert len(scalars) == 7 * config.num_blocks + 2
