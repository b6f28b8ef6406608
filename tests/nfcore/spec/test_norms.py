"""A norm is a row of data: a new one validates, is planned, built, costed and measured
without touching any other module (`nfcore.spec.norms`, read by the config, the plan, the
builder's retune, the cost model, the CLI's choices, the API schema and the dashboard menu)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from nfcore.cli.options import UsageError, build_parser
from nfcore.engine.models import build_model, retune
from nfcore.engine.spp import run_spp
from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.cost import estimate, parameter_count
from nfcore.spec.families import FAMILIES
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.norms import NORMS, NormRow, norm, register_norm
from nfcore.spec.plan import BatchNorm, Bias, flat, nf_expected_variances, plan
from nfcore.spec.train_presets import short_name
from tests.nfcore.spec.test_cost import measured_flops

# Made up for this test: BatchNorm layers in a Normalizer-Free block (alpha and beta scale
# every residual branch), He init only, no SkipInit. Nothing else in the tree knows it.
SCALED_BN = NormRow(
    "scaled_bn", "SBN", "Scaled BatchNorm", parts="batchnorm", convs=("he",),
    conv_reason="whose BatchNorm layers undo any weight scaling", alpha=0.3, skipinit=False,
    batch_statistics=True,
)  # fmt: skip

SMALL = {"depth": 14, "width": 0.25, "resolution": 32, "batch": 4}


@pytest.fixture
def scaled_bn(monkeypatch: pytest.MonkeyPatch) -> Iterator[NormRow]:
    """The norm registered, and offered by ResNetV2 (a family lists the norms it offers)."""
    register_norm(SCALED_BN)
    row = FAMILIES["resnetv2"]
    monkeypatch.setitem(
        FAMILIES, "resnetv2", dataclasses.replace(row, norms=(*row.norms, SCALED_BN.name))
    )
    try:
        yield SCALED_BN
    finally:
        del NORMS[SCALED_BN.name]


def test_an_unknown_norm_is_refused_naming_the_rows() -> None:
    with pytest.raises(ValidationError) as caught:
        SPPConfig(**SMALL, norm="scaled_bn")
    message = describe_validation_error(caught.value)
    assert message.startswith("norm: Input should be 'bn', 'nf', 'none' or 'fixup'")
    with pytest.raises(ValueError, match="a norm 'bn' exists already"):
        register_norm(NormRow("bn", "BN2", "Another BatchNorm"))
    with pytest.raises(ValueError, match="'gn' is not a norm; choose 'bn', 'nf', 'none', 'fixup'"):
        norm("gn")


def test_the_built_in_rows_say_what_the_config_did_by_name() -> None:
    assert [(r.prefix, r.convs[0], r.alpha, r.skipinit) for r in NORMS.values()] == [
        ("BN", "he", None, True), ("NF", "ws", 0.2, True),
        ("Unnormalized", "he", None, True), ("FixUp", "he", None, False),
    ]  # fmt: skip
    assert [name for name, row in NORMS.items() if row.batch_statistics] == ["bn"]
    with pytest.raises(ValidationError, match="conv: 'ws' does not apply to fixup, which has its "
                       "own initialization; use he"):  # fmt: skip
        SPPConfig(**SMALL, norm="fixup", conv="ws")


def test_a_new_norm_validates_with_its_own_defaults_and_name(scaled_bn: NormRow) -> None:
    config = SPPConfig(**SMALL, norm="scaled_bn", skipinit=True)
    assert (config.conv, config.alpha, config.gamma) == ("he", 0.3, None)
    assert config.order == "bn-relu-conv"  # BatchNorm's place is a choice in ResNetV2
    assert config.skipinit is False  # does not apply to this norm
    assert config.label == "SBN-ResNetV2-14 (bn-relu-conv, he, relu, alpha=0.3)"
    assert short_name(TrainConfig(**SMALL, norm="scaled_bn")) == "SBN-ResNet-14"
    assert config.edited({"alpha": 0.5}).alpha == 0.5
    with pytest.raises(ValidationError, match="conv: 'ws' does not apply to scaled_bn, whose "
                       "BatchNorm layers undo any weight scaling; use he"):  # fmt: skip
        SPPConfig(**SMALL, norm="scaled_bn", conv="ws")
    # Batch statistics: the same checks, and the same sentences, as BatchNorm's.
    with pytest.raises(ValidationError, match="batch: 1 at this resolution leaves Scaled "
                       "BatchNorm one value per channel"):  # fmt: skip
        SPPConfig(**{**SMALL, "batch": 1}, norm="scaled_bn")  # one pixel in the last stage
    with pytest.raises(ValidationError, match="batch: Scaled BatchNorm cannot train at batch "
                       "size 1"):  # fmt: skip
        TrainConfig(**{**SMALL, "batch": 1}, norm="scaled_bn")
    with pytest.raises(ValidationError, match="norm: 'scaled_bn' is not available for resnetv1"):
        SPPConfig(**SMALL, family="resnetv1", norm="scaled_bn")
    schema = SPPConfig.model_json_schema()["properties"]["norm"]
    assert schema["anyOf"][0]["enum"] == ["bn", "nf", "none", "fixup", "scaled_bn"]


def test_the_cli_offers_a_new_norm(scaled_bn: NormRow) -> None:
    args = build_parser().parse_args(["spp", "--norm", "scaled_bn"])
    assert args.norm == "scaled_bn"
    with pytest.raises(
        UsageError, match=r"\(choose from 'bn', 'nf', 'none', 'fixup', 'scaled_bn'\)"
    ):
        build_parser().parse_args(["spp", "--norm", "gn"])


def test_a_new_norm_is_planned_from_its_parts(scaled_bn: NormRow) -> None:
    config = SPPConfig(**SMALL, norm="scaled_bn")
    layers = plan(config)
    expected = nf_expected_variances(config.stage_layout, 0.3)
    assert [(b.alpha, b.beta, b.expected_var) for b in layers.blocks] == [
        (0.3, beta, var) for beta, var in expected
    ]
    kinds = [type(layer) for block in layers.blocks for layer in flat(block.branch)]
    assert kinds.count(BatchNorm) == 2 * len(layers.blocks)  # before each g of the branch
    assert Bias not in kinds
    assert isinstance(next(flat(layers.head)), BatchNorm)  # the pre-activation net's last BN


def test_a_new_norm_builds_and_costs_exactly(scaled_bn: NormRow) -> None:
    config = SPPConfig(**SMALL, norm="scaled_bn")
    model = build_model(config, seed=0)
    cost = estimate(config)
    assert cost.parameters == parameter_count(config) == sum(p.numel() for p in model.parameters())
    x = torch.randn(config.batch, 3, config.resolution, config.resolution)
    assert cost.flops == measured_flops(model.eval(), x)
    # The builder's retune reads the same row: alpha 0.5 gives a fresh build's blocks.
    other = config.edited({"alpha": 0.5})
    retune(model, other)
    fresh = build_model(other, seed=0)
    assert [(b.alpha, b.beta, b.expected_var) for b in model.blocks] == [
        (b.alpha, b.beta, b.expected_var) for b in fresh.blocks
    ]


def test_a_new_norm_has_a_signal_propagation_plot(scaled_bn: NormRow) -> None:
    result = run_spp(SPPConfig(**SMALL, norm="scaled_bn"))
    assert result.meta.model.startswith("SBN-ResNetV2-14")
    assert len(result.blocks) == 4
    assert all(b.expected_var is not None for b in result.blocks)  # a scaled norm's
    assert all(b.avg_channel_var > 0 and b.residual_avg_channel_var > 0 for b in result.blocks)
    # BatchNorm renormalizes every branch: its variance at initialization is about 1.
    assert all(0.5 < b.residual_avg_channel_var < 2 for b in result.blocks)
