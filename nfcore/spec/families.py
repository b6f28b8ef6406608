"""The network families as rows of data: what the config, the builder, the cost model, the
presets and the dashboard read about a family, instead of comparing its name.

Torch-free (the API validates configs with it). A row says which normalizations the family
offers, the defaults a user may leave out (and those that also depend on the norm), how its
size is chosen (a depth table or a variant table), and which stem, block and head the
builder assembles (`nfcore.engine.models`, costed the same way by `nfcore.spec.cost`). A family of one's
own is one more row (`register_family`), made of these parts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from nfcore.spec.variants import NF_REGNET_VARIANTS

Stem = Literal["resnet", "resnet_postact", "nf_regnet"]
"""resnet: a 7x7 stride-2 conv (and the optional 3x3 max-pool); resnet_postact: the same with
BN (when normalized) and g after the conv, as post-activation nets start; nf_regnet: a 3x3
stride-2 conv (Appendix D.2)."""

Block = Literal["resnet_v2", "resnet_v1", "nf_regnet"]
"""The residual block: the pre-activation bottleneck (Fig. 4), the post-activation one
(Fig. 5), or NF-RegNet's inverted bottleneck with grouped 3x3 conv and S+E (Appendix D.2)."""

Head = Literal["norm_act", "none", "conv_norm_act"]
"""Before global pooling: the pre-activation nets' last norm and g; nothing (FixUp's scalar
bias alone); or NF-RegNet's 1x1 expansion conv to 1280 * w channels, then g (Appendix C)."""


@dataclass(frozen=True)
class FamilyRow:
    name: str  # the config's `family`
    label: str  # in model names: 'NF-ResNetV2-50', 'BN-RegNet-B0'
    title: str  # the dashboard's menu entry
    table_name: str  # as the paper's tables name its nets: 'NF-ResNet-50', 'NF-RegNet-B0'
    norms: tuple[str, ...]  # the first is not the default: `defaults["norm"]` is
    defaults: Mapping[str, Any]
    # Defaults that also depend on the norm, over `defaults` for that norm.
    norm_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    sized_by: Literal["depth", "variant"] = "depth"  # RESNET_LAYOUTS, or `variants`
    variants: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stem: Stem = "resnet"
    block: Block = "resnet_v2"
    head: Head = "norm_act"
    first_stage_strided: bool = False  # the first block of stage 0 halves the size too
    bn_order: bool = False  # BN's place before or after g is a choice (Fig. 1)
    catalog_norms: tuple[str, ...] = ("bn",)  # the norms /v1/models lists its sizes with
    # What a norm is called in this family where the plain name would mislead (menus, help).
    norm_titles: Mapping[str, str] = field(default_factory=dict)

    @property
    def has_maxpool(self) -> bool:
        return self.stem != "nf_regnet"

    def size_name(self, depth: int | None, variant: str | None) -> str:
        """'50' or 'B0': what follows the family in a model's name."""
        return str(variant if self.sized_by == "variant" else depth)


FAMILIES: dict[str, FamilyRow] = {}


def register_family(row: FamilyRow) -> FamilyRow:
    """Add a family (a name not taken); it validates, builds and is costed like the others."""
    if row.name in FAMILIES:
        raise ValueError(f"a family {row.name!r} exists already")
    FAMILIES[row.name] = row
    return row


def family(name: str) -> FamilyRow:
    """The row of a family, or a ValueError naming the families there are."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a family; choose {', '.join(repr(n) for n in FAMILIES)}"
        ) from None


DEFAULT_FAMILY = "resnetv2"


def family_defaults(family_name: str, norm: str | None = None) -> dict[str, Any]:
    """The values filled in for fields left out: the family row's, then its norm's (`norm`
    None: the family's default norm); nothing for a name that is not a family."""
    row = FAMILIES.get(family_name)
    if row is None:
        return {}
    defaults = dict(row.defaults)
    defaults.update(row.norm_defaults.get(norm or defaults.get("norm", ""), {}))
    return defaults


def norm_default_fields() -> set[str]:
    """Fields whose default depends on the norm in some family (NF-RegNet's S+E gain and
    SkipInit): a change of norm swaps them while they hold the old norm's default."""
    return {key for row in FAMILIES.values() for d in row.norm_defaults.values() for key in d}


register_family(
    FamilyRow(
        "resnetv2", "ResNetV2", "ResNetV2 (pre-activation)", "ResNet",
        ("bn", "nf", "none", "fixup"),
        {"depth": 50, "norm": "bn", "activation": "relu", "se_gain": 0.0, "skipinit": False},
        bn_order=True, catalog_norms=("nf", "bn"),
        # FixUp's rules on this project's pre-activation block: not the reference network.
        norm_titles={"fixup": "FixUp (pre-activation, ours)"},
    )
)  # fmt: skip
register_family(
    FamilyRow(
        "resnetv1", "ResNetV1", "ResNetV1 (post-activation)", "ResNet", ("bn", "none", "fixup"),
        {"depth": 50, "norm": "bn", "activation": "relu", "se_gain": 0.0, "skipinit": False},
        stem="resnet_postact", block="resnet_v1", head="none",
        # The FixUp network released with the paper (deepmind-research nfnets/fixup_resnet.py).
        norm_titles={"fixup": "FixUp (reference, post-activation)"},
    )
)  # fmt: skip
register_family(
    FamilyRow(
        # "bn": NF-RegNet's batch-normalized twin, the baseline of its speed comparison
        # (Table 5). Appendix D.2: SiLU, S+E corrected by 2, SkipInit gain, alpha 0.2.
        "nf_regnet", "RegNet", "NF-RegNet (or its BN twin)", "RegNet", ("nf", "bn"),
        {"variant": "B0", "norm": "nf", "activation": "silu", "se_gain": 2.0, "skipinit": True},
        # The twin keeps the S+E layers but not the NF-specific fixes: the factor 2 undoes
        # the S+E attenuation that an unnormalized net would carry forward (Section 4.4), and
        # there the BN after the S+E renormalizes it anyway (plain S+E, gain 1); the paper's
        # BN baselines use no SkipInit. Both can still be set explicitly.
        norm_defaults={"bn": {"se_gain": 1.0, "skipinit": False}},
        sized_by="variant", variants=NF_REGNET_VARIANTS, stem="nf_regnet", block="nf_regnet",
        head="conv_norm_act", first_stage_strided=True, catalog_norms=("nf",),
    )
)  # fmt: skip
