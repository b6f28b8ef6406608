"""A family is a row of data: a new one validates, builds, is costed and measured without
touching any other module (`nfcore.spec.families`, read by the config, the plan, the builder, the
cost model, the presets' names, the CLI and the dashboard)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from nfcore.engine.models import build_model
from nfcore.engine.spp import run_spp
from nfcore.spec.config import SPPConfig
from nfcore.spec.cost import estimate, parameter_count
from nfcore.spec.edits import with_changes
from nfcore.spec.families import FAMILIES, FamilyRow, family
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.plan import plan
from nfcore.spec.train_presets import short_name
from tests.nfcore.spec.test_cost import measured_flops

# Made up for this test: ResNet's 7x7 stem without its max-pool, NF-RegNet's inverted
# bottlenecks laid out by the ResNet depth table, and no head; NF by default, BN allowed.
HYBRID = FamilyRow(
    "hybrid", "HybridNet", "A made-up hybrid", "Hybrid", ("nf", "bn"),
    {"depth": 14, "norm": "nf", "activation": "silu", "se_gain": 2.0, "skipinit": False},
    norm_defaults={"bn": {"se_gain": 1.0}},
    stem="resnet", block="nf_regnet", head="none",
)  # fmt: skip

SMALL = {"family": "hybrid", "width": 0.25, "resolution": 32, "batch": 4}


@pytest.fixture
def hybrid(monkeypatch: pytest.MonkeyPatch) -> Iterator[FamilyRow]:
    monkeypatch.setitem(FAMILIES, HYBRID.name, HYBRID)
    yield HYBRID


def test_an_unknown_family_is_refused_naming_the_rows() -> None:
    with pytest.raises(ValidationError) as caught:
        SPPConfig(**SMALL)
    message = describe_validation_error(caught.value)
    assert message.startswith("family: Input should be 'resnetv2', 'resnetv1' or 'nf_regnet'")


def test_a_new_row_validates_with_its_own_defaults_norms_and_name(hybrid: FamilyRow) -> None:
    config = SPPConfig(**SMALL)
    assert (config.depth, config.norm, config.activation, config.se_gain) == (14, "nf", "silu", 2.0)
    assert config.conv == "ws" and config.alpha == 0.2  # what NF means in every family
    assert config.maxpool is True  # the ResNet stem offers its max-pool
    assert config.label.startswith("NF-HybridNet-14 ")
    assert short_name(config) == "NF-Hybrid-14"
    twin = SPPConfig(**with_changes(config.model_dump(), {"norm": "bn"}))
    assert twin.se_gain == 1.0 and twin.conv == "he"  # the row's norm default, swapped
    with pytest.raises(ValidationError, match="norm: 'fixup' is not available for hybrid"):
        SPPConfig(**SMALL, norm="fixup")
    assert "hybrid" in SPPConfig.model_json_schema()["properties"]["family"]["enum"]
    with_layout = with_changes(
        {**SMALL, "family": "resnetv2", "layout": (2, 1)}, {"family": "hybrid"}
    )
    assert SPPConfig(**with_layout).stage_layout == (2, 1)  # sized by depth: a layout carries


def test_a_new_row_is_planned_from_its_parts(hybrid: FamilyRow) -> None:
    config = SPPConfig(**SMALL, maxpool=False)
    layers = plan(config)
    assert len(layers.blocks) == 4 and [b.stage for b in layers.blocks] == [0, 1, 2, 3]
    assert [b.stride for b in layers.blocks] == [1, 2, 2, 2]  # the first stage is not strided
    assert config.total_stride == 2 * 2**3
    assert layers.num_features == layers.blocks[-1].cout  # no head: the last block's channels


def test_a_new_row_builds_and_costs_exactly(hybrid: FamilyRow) -> None:
    for norm in ("nf", "bn"):
        config = SPPConfig(**SMALL, norm=norm)
        model = build_model(config, seed=0)
        cost = estimate(config)
        assert (
            cost.parameters == parameter_count(config) == sum(p.numel() for p in model.parameters())
        )
        x = torch.randn(config.batch, 3, config.resolution, config.resolution)
        assert cost.flops == measured_flops(model.eval(), x)


def test_a_new_row_has_a_signal_propagation_plot(hybrid: FamilyRow) -> None:
    result = run_spp(SPPConfig(**SMALL))
    assert result.meta.model.startswith("NF-HybridNet-14")
    assert len(result.blocks) == 4
    assert [b.stage for b in result.blocks] == [0, 1, 2, 3]
    assert all(b.transition for b in result.blocks)  # each block starts a stage
    assert all(b.avg_channel_var > 0 and b.residual_avg_channel_var > 0 for b in result.blocks)
    assert family("hybrid") is HYBRID


# Made up too: a family sized by variants of its own names, as NF-RegNet is by B0-B5.
TINYNET = FamilyRow(
    "tinynet", "TinyNet", "A made-up family with its own variants", "TinyNet", ("nf", "bn"),
    {"variant": "F0", "norm": "nf", "activation": "silu", "se_gain": 2.0, "skipinit": True},
    norm_defaults={"bn": {"se_gain": 1.0, "skipinit": False}},
    sized_by="variant",
    variants={"F0": {"width": (16, 24, 32, 48), "depth": (1, 1, 2, 1)},
              "F1": {"width": (16, 32, 48, 64), "depth": (1, 2, 2, 2)}},
    stem="nf_regnet", block="nf_regnet", head="conv_norm_act", first_stage_strided=True,
)  # fmt: skip


def test_a_family_names_its_own_variants(monkeypatch: pytest.MonkeyPatch) -> None:
    """The config takes a variant any family names (it was a fixed list, B0-B5, so a row
    with its own variants could not be used), and each family checks its own."""
    monkeypatch.setitem(FAMILIES, TINYNET.name, TINYNET)
    config = SPPConfig(family="tinynet", variant="F1", resolution=32, batch=2)
    assert config.stage_layout == (1, 2, 2, 2) and config.label.startswith("NF-TinyNet-F1 ")
    assert config.edited({"variant": "F0"}).stage_layout == (1, 1, 2, 1)
    assert run_spp(config.edited({"variant": "F0"})).meta.num_blocks == 5
    with pytest.raises(ValidationError, match="variant: 'B0' is not a variant of tinynet"):
        SPPConfig(family="tinynet", variant="B0")
    with pytest.raises(ValidationError, match="variant: 'F0' is not a variant of nf_regnet"):
        SPPConfig(family="nf_regnet", variant="F0")
    enum = SPPConfig.model_json_schema()["properties"]["variant"]["enum"]
    assert {"B0", "F0", "F1"} <= set(enum)
