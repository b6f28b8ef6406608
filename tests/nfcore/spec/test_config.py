"""The run config: family defaults, canonical form, cache key, and readable validation errors."""

from __future__ import annotations

import itertools
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from nfcore.spec.config import ModelConfig, SPPConfig, TrainConfig, config_hash
from nfcore.spec.edits import DERIVED_FIELDS, with_changes
from nfcore.spec.families import norm_default_fields
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.variants import PAPER_RESNET_DEPTHS, RESNET_LAYOUTS

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSION = "0.1.0"


def error_message(**fields: Any) -> str:
    """The one-line message a user sees when `SPPConfig(**fields)` is refused."""
    with pytest.raises(ValidationError) as excinfo:
        SPPConfig(**fields)
    return describe_validation_error(excinfo.value)


# --- family defaults --------------------------------------------------------------------------


def test_resnetv2_defaults_are_the_bn_resnet50_baseline() -> None:
    config = SPPConfig()
    assert config.family == "resnetv2"
    assert config.depth == 50
    assert config.layout == (3, 4, 6, 3)
    assert config.norm == "bn"
    assert config.activation == "relu"
    # Section 3: the standard pre-activation block is BN-ReLU-Conv, with He-initialized convs.
    assert config.order == "bn-relu-conv"
    assert config.conv == "he"
    assert config.maxpool is True
    assert (config.alpha, config.gamma, config.variant) == (None, None, None)
    assert (config.se_gain, config.skipinit) == (0.0, False)


def test_nf_resnet_defaults_to_scaled_ws_and_alpha_02() -> None:
    config = SPPConfig(norm="nf")
    # Section 4.2 (Scaled WS), Section 5: alpha = 0.2; gamma from the activation (Section 4.3).
    assert config.conv == "ws"
    assert config.alpha == 0.2
    assert config.gamma == "auto"
    assert config.order is None


def test_nf_regnet_defaults_follow_appendix_d2() -> None:
    config = SPPConfig(family="nf_regnet")
    assert config.variant == "B0"
    assert config.layout == (1, 3, 6, 6)
    assert config.depth is None
    assert config.norm == "nf"
    assert config.conv == "ws"
    # Appendix D.2: SiLU, S+E output doubled (Section 4.4), SkipInit, alpha 0.2.
    assert config.activation == "silu"
    assert config.se_gain == 2.0
    assert config.skipinit is True
    assert config.alpha == 0.2
    assert config.maxpool is None


def test_bn_regnet_is_the_same_network_without_the_nf_defaults() -> None:
    config = SPPConfig(family="nf_regnet", norm="bn")
    nf = SPPConfig(family="nf_regnet")
    assert (config.variant, config.layout, config.activation) == (nf.variant, nf.layout, "silu")
    # Plain He-initialized convs and no alpha/beta, like the BN ResNets ...
    assert (config.conv, config.alpha, config.gamma, config.order) == ("he", None, None, None)
    # ... and neither of the NF-specific fixes: plain S+E (BN follows it), no SkipInit.
    assert (config.se_gain, config.skipinit) == (1.0, False)
    assert config.label == "BN-RegNet-B0 (he, silu, SE x1)"
    assert nf.label == "NF-RegNet-B0 (ws, silu, alpha=0.2, SE x2, SkipInit)"


def test_bn_regnet_keeps_se_gain_and_skipinit_when_given() -> None:
    config = SPPConfig(family="nf_regnet", norm="bn", se_gain=2.0, skipinit=True, variant="B2")
    assert (config.se_gain, config.skipinit) == (2.0, True)
    assert config.label == "BN-RegNet-B2 (he, silu, SE x2, SkipInit)"
    assert SPPConfig(family="nf_regnet", norm="bn", se_gain=0.0).se_gain == 0.0


def test_switching_nf_regnet_and_its_bn_twin_swaps_the_norms_defaults() -> None:
    nf = SPPConfig(family="nf_regnet", width=0.5)
    bn = SPPConfig(family="nf_regnet", width=0.5, norm="bn")
    # The explorer and the CLI vary a saved canonical config one field at a time.
    assert SPPConfig(**with_changes(nf.model_dump(), {"norm": "bn"})) == bn
    assert SPPConfig(**with_changes(bn.model_dump(), {"norm": "nf"})) == nf
    assert config_hash(SPPConfig(**with_changes(nf.model_dump(), {"norm": "bn"})), VERSION) == (
        config_hash(bn, VERSION)
    )
    # A value the user chose (not the old norm's default) is kept, as is one set with the norm.
    chosen = SPPConfig(family="nf_regnet", se_gain=0.5, skipinit=False)
    switched = SPPConfig(**with_changes(chosen.model_dump(), {"norm": "bn"}))
    assert (switched.se_gain, switched.skipinit) == (0.5, False)
    both = SPPConfig(**with_changes(nf.model_dump(), {"norm": "bn", "skipinit": True}))
    assert (both.se_gain, both.skipinit) == (1.0, True)
    # The config's own method is the same rule, keeping the config's kind.
    assert nf.edited({"norm": "bn"}) == bn and chosen.edited({"norm": "bn"}) == switched
    trained = TrainConfig(family="nf_regnet", width=0.5).edited({"norm": "bn"})
    assert isinstance(trained, TrainConfig) and trained.alpha is None and trained.se_gain == 1.0


def test_switching_a_resnets_norm_keeps_its_se_gain_and_skipinit() -> None:
    # ResNet defaults do not depend on the norm: nothing to swap.
    nf = SPPConfig(norm="nf", se_gain=2.0, skipinit=True)
    bn = SPPConfig(**with_changes(nf.model_dump(), {"norm": "bn"}))
    assert (bn.norm, bn.conv, bn.alpha, bn.se_gain, bn.skipinit) == ("bn", "he", None, 2.0, True)


# --- canonical form ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "field"),
    [
        ({"norm": "nf", "order": "relu-bn-conv"}, "order"),
        ({"norm": "none", "order": "relu-bn-conv"}, "order"),
        ({"family": "resnetv1", "order": "relu-bn-conv"}, "order"),
        ({"norm": "bn", "alpha": 0.5}, "alpha"),
        ({"norm": "fixup", "alpha": 0.5}, "alpha"),
        ({"norm": "nf", "conv": "he", "gamma": 1.5}, "gamma"),
        ({"norm": "bn", "gamma": "auto"}, "gamma"),
        ({"family": "nf_regnet", "maxpool": True}, "maxpool"),
        ({"family": "nf_regnet", "depth": 101}, "depth"),
        ({"family": "nf_regnet", "norm": "bn", "alpha": 0.5}, "alpha"),
        ({"family": "nf_regnet", "norm": "bn", "order": "relu-bn-conv"}, "order"),
        ({"depth": 50, "variant": "B3"}, "variant"),
    ],
)
def test_fields_that_do_not_apply_are_null(given: dict[str, Any], field: str) -> None:
    config = SPPConfig(**given)
    assert getattr(config, field) is None
    # So the request hashes like the same request without the irrelevant field.
    without = {k: v for k, v in given.items() if k != field}
    assert config == SPPConfig(**without)
    assert config_hash(config, VERSION) == config_hash(SPPConfig(**without), VERSION)


def test_fixup_has_no_skipinit() -> None:
    assert SPPConfig(norm="fixup", skipinit=True).skipinit is False


def test_activation_aliases_and_case_are_canonical() -> None:
    assert SPPConfig(activation="linear").activation == "identity"
    assert SPPConfig(activation="Swish").activation == "silu"
    assert SPPConfig(activation=" ReLU ") == SPPConfig(activation="relu")


def test_gamma_auto_is_case_insensitive_and_numbers_are_floats() -> None:
    assert SPPConfig(norm="nf", gamma="AUTO").gamma == "auto"
    assert SPPConfig(norm="nf", gamma="1.5").gamma == 1.5
    # Fig. 8 uses the He gain sqrt(2) in place of the ReLU gamma.
    assert SPPConfig(norm="nf", gamma=math.sqrt(2)).gamma == pytest.approx(math.sqrt(2))


def test_layout_and_depth_name_the_same_network() -> None:
    by_depth = SPPConfig(depth=50)
    by_layout = SPPConfig(layout=(3, 4, 6, 3))
    by_list = SPPConfig(layout=[3, 4, 6, 3])
    assert by_depth == by_layout == by_list
    assert by_layout.depth == 50
    assert config_hash(by_depth, VERSION) == config_hash(by_layout, VERSION)
    assert config_hash(by_depth, VERSION) == config_hash(by_list, VERSION)


@pytest.mark.parametrize("depth", PAPER_RESNET_DEPTHS)
def test_paper_depths_have_their_layouts(depth: int) -> None:
    config = SPPConfig(depth=depth)
    assert config.layout == RESNET_LAYOUTS[depth]
    assert config.depth == depth


def test_resnet600_keeps_the_papers_name() -> None:
    config = SPPConfig(depth=600)
    assert config.layout == (50, 50, 50, 50)
    assert config.num_blocks == 200
    # 3 * 200 + 2 = 602 layers, but the paper calls it ResNet-600 (Fig. 1).
    assert config.depth == 600


def test_custom_layout_gets_three_layers_per_block_plus_two() -> None:
    config = SPPConfig(layout=(2, 3, 4, 1))
    assert config.depth == 3 * 10 + 2 == 32
    assert config.layout == (2, 3, 4, 1)


def test_input_key_order_does_not_change_the_hash() -> None:
    fields = {"norm": "nf", "depth": 101, "activation": "silu", "seed": 3, "width": 0.5}
    forward = SPPConfig(**fields)
    backward = SPPConfig(**dict(reversed(list(fields.items()))))
    assert config_hash(forward, VERSION) == config_hash(backward, VERSION)


def test_hash_depends_on_the_library_version() -> None:
    config = SPPConfig()
    assert config_hash(config, "0.1.0") != config_hash(config, "0.1.1")
    assert config_hash(config, VERSION) == config_hash(SPPConfig(), VERSION)


def test_every_field_changes_the_hash() -> None:
    changes: list[dict[str, Any]] = [
        {"family": "resnetv1"},
        {"depth": 101},
        {"layout": (2, 3, 4, 1)},
        {"family": "nf_regnet", "variant": "B1"},
        {"norm": "nf"},
        {"order": "relu-bn-conv"},
        {"norm": "nf", "conv": "he"},
        {"activation": "silu"},
        {"norm": "nf", "alpha": 0.3},
        {"norm": "nf", "gamma": 1.5},
        {"se_gain": 2.0},
        {"skipinit": True},
        {"maxpool": False},
        {"padding": "circular"},
        {"width": 0.5},
        {"stochdepth_rate": 0.1},
        {"drop_rate": 0.25},
        {"num_classes": 10},
        {"resolution": 64},
        {"batch": 8},
        {"input": "digits"},
        {"seed": 1},
        {"device": "cpu"},
        {"gradients": True},
        {"extra_stats": True},
    ]
    hashes = [config_hash(SPPConfig(), VERSION)]
    hashes += [config_hash(SPPConfig(**change), VERSION) for change in changes]
    assert len(set(hashes)) == len(hashes)
    # Every field of the schema is covered by some change above.
    changed = {key for change in changes for key in change}
    assert changed == set(SPPConfig.model_fields)


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"norm": "nf", "depth": 600, "alpha": 0.5, "gamma": 1.5},
        {"family": "resnetv1", "norm": "none", "activation": "linear"},
        {"family": "nf_regnet", "variant": "B5", "width": 0.25},
        {"family": "nf_regnet", "norm": "bn", "variant": "B1", "se_gain": 2.0},
        {"layout": (2, 3, 4, 1), "norm": "fixup", "maxpool": False, "resolution": 16},
        {"order": "relu-bn-conv", "input": "digits", "gradients": True, "seed": 7},
    ],
)
def test_json_round_trip_gives_the_same_config(fields: dict[str, Any]) -> None:
    # What the API receives and the worker re-validates must be the same run.
    config = SPPConfig(**fields)
    again = SPPConfig(**config.model_dump(mode="json"))
    assert again == config
    assert config_hash(again, VERSION) == config_hash(config, VERSION)


def test_config_is_frozen() -> None:
    config = SPPConfig()
    with pytest.raises(ValidationError):
        config.depth = 101  # type: ignore[misc]
    assert config.depth == 50


def test_unknown_fields_are_refused() -> None:
    message = error_message(dpeth=101)
    assert message.startswith("dpeth:")
    assert "not permitted" in message
    # The model config alone has no input fields.
    with pytest.raises(ValidationError, match="resolution"):
        ModelConfig(resolution=64)


# --- validation messages ----------------------------------------------------------------------


def test_unknown_depth_lists_the_known_depths() -> None:
    message = error_message(depth=51)
    assert message.startswith("depth:")
    assert "51" in message
    assert "50, 101, 152, 200, 288, 600" in message
    assert "layout" in message


def test_unknown_activation_lists_the_choices() -> None:
    message = error_message(activation="nope")
    assert message.startswith("activation:")
    assert "'nope'" in message
    assert "relu" in message and "silu" in message and "identity" in message


@pytest.mark.parametrize(
    ("width", "allowed"),
    [(-1, "greater than 0"), (0, "greater than 0"), (5, "less than or equal to 4")],
)
def test_width_out_of_range_says_the_bound(width: float, allowed: str) -> None:
    message = error_message(width=width)
    assert message.startswith("width:")
    assert allowed in message
    assert str(width) in message


@pytest.mark.parametrize(
    ("fields", "minimum"),
    [
        ({"resolution": 16}, 32),  # stride-2 stem, max-pool, three stride-2 stages
        ({"resolution": 8, "maxpool": False}, 16),
        ({"family": "nf_regnet", "resolution": 16}, 32),  # stride-2 stem and four stages
    ],
)
def test_resolution_below_the_total_stride_says_the_minimum(
    fields: dict[str, Any], minimum: int
) -> None:
    message = error_message(**fields)
    assert message.startswith("resolution:")
    assert f"at least {minimum}" in message
    assert SPPConfig(**{**fields, "resolution": minimum}).resolution == minimum


def test_resnet_without_maxpool_accepts_16_pixels() -> None:
    assert SPPConfig(resolution=16, maxpool=False).total_stride == 16


@pytest.mark.parametrize("alpha", [math.nan, math.inf, "nan"])
def test_nonfinite_alpha_is_refused(alpha: Any) -> None:
    message = error_message(norm="nf", alpha=alpha)
    assert message.startswith("alpha:")
    assert "finite" in message


@pytest.mark.parametrize("gamma", ["abc", -1, 0, math.nan, math.inf])
def test_bad_gamma_says_auto_or_a_positive_number(gamma: Any) -> None:
    message = error_message(norm="nf", gamma=gamma)
    assert message.startswith("gamma:")
    assert "'auto'" in message
    assert repr(gamma) in message


def test_fixup_with_scaled_ws_is_refused() -> None:
    message = error_message(norm="fixup", conv="ws")
    assert message.startswith("conv:")
    assert "fixup" in message
    assert "he" in message


@pytest.mark.parametrize(
    ("family", "norm", "allowed"),
    [("nf_regnet", "fixup", "choose nf, bn"), ("resnetv1", "nf", "choose bn, none")],
)
def test_norm_not_available_for_family_lists_the_choices(
    family: str, norm: str, allowed: str
) -> None:
    message = error_message(family=family, norm=norm)
    assert message.startswith("norm:")
    assert f"'{norm}'" in message and family in message
    assert allowed in message


def test_batchnorm_with_one_value_per_channel_is_refused() -> None:
    # ResNet-50 at 32px ends at 1x1, so a batch of 1 leaves BN a single value to normalize.
    message = error_message(norm="bn", batch=1, resolution=32)
    assert message.startswith("batch:")
    assert "at least 2" in message
    # A bigger image, a bigger batch, or no BatchNorm are all fine.
    assert SPPConfig(norm="bn", batch=1, resolution=64).batch == 1
    assert SPPConfig(norm="bn", batch=2, resolution=32).batch == 2
    assert SPPConfig(norm="nf", batch=1, resolution=32).batch == 1


def test_several_problems_are_all_reported() -> None:
    message = error_message(width=0, batch=0)
    assert "width:" in message and "batch:" in message


# --- torch-free import ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "statement",
    [
        "import nfcore.spec.config as c; c.config_hash(c.SPPConfig(norm='nf', activation='silu'), 'v')",
        "import nfcore; nfcore.__version__",
        "import nfcore.spec.plan as p, nfcore.spec.config as c; p.plan(c.SPPConfig(family='nf_regnet'))",
        "import nfcore.spec.edits, nfcore.spec.fields, nfcore.cli.options",
        "import api.main; api.main.create_app()",
    ],
)
def test_config_import_and_validation_do_not_load_torch(statement: str) -> None:
    # STYLE.md: the API validates configs without loading torch.
    code = f"import sys; {statement}; assert 'torch' not in sys.modules, 'torch was imported'"
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr


# --- one rule of what follows what ---------------------------------------------------------------
RULE_BASES = [
    {}, {"norm": "nf"}, {"norm": "nf", "conv": "he"}, {"norm": "bn", "order": "relu-bn-conv"},
    {"norm": "fixup"}, {"norm": "none"}, {"family": "resnetv1"}, {"family": "nf_regnet"},
    {"family": "nf_regnet", "norm": "bn"}, {"norm": "nf", "gamma": 1.5, "alpha": 0.3},
    {"layout": (1, 2, 1)}, {"depth": 101, "norm": "nf", "se_gain": 1.0, "skipinit": True},
]  # fmt: skip
RULE_VALUES: dict[str, list] = {
    "family": ["resnetv2", "resnetv1", "nf_regnet"], "depth": [14, 50, 600],
    "layout": [(2, 2), (1, 1, 1, 1)], "variant": ["B0", "B3"],
    "norm": ["bn", "nf", "none", "fixup"], "order": ["bn-relu-conv", "relu-bn-conv"],
    "conv": ["ws", "he"], "activation": ["relu", "silu", "gelu"], "alpha": [0.1, 0.5],
    "gamma": ["auto", 1.2], "se_gain": [0.0, 1.0, 2.0], "skipinit": [True, False],
    "maxpool": [True, False], "padding": ["zeros", "circular"],
}  # fmt: skip


def valid(fields: dict) -> SPPConfig | None:
    try:
        return SPPConfig(**fields)
    except ValidationError:
        return None


def test_every_field_whose_default_depends_on_another_is_in_the_rule() -> None:
    """Walk every field: where changing F changes the filled-in value of a field D the user
    left out, a change of F must drop D (`DERIVED_FIELDS`, or a norm's own defaults), or an
    edited config would keep a value derived from the old F."""
    norm_defaults = norm_default_fields()
    missing = set()
    for base in RULE_BASES:
        given = {"width": 0.25, "resolution": 64, "batch": 8, **base}
        for field, values in RULE_VALUES.items():
            configs = [c for v in values if (c := valid({**given, field: v})) is not None]
            for first, second in itertools.combinations(configs, 2):
                for other in ModelConfig.model_fields:
                    if other in given or other == field:
                        continue
                    if getattr(first, other) == getattr(second, other):
                        continue
                    derived = DERIVED_FIELDS.get(field, ())
                    if other not in derived and not (field == "norm" and other in norm_defaults):
                        missing.add((field, other))
    assert not missing, f"changing the first field changes the second's default: {missing}"


@pytest.mark.parametrize("base", RULE_BASES, ids=str)
def test_an_edit_keeps_every_field_that_does_not_follow_the_changed_one(base: dict) -> None:
    """A change of F touches F and what follows F, nothing else (a field that stops applying,
    such as the BN order of an NF net, reads null)."""
    config = SPPConfig(width=0.25, resolution=64, batch=8, **base)
    norm_defaults = norm_default_fields()
    for field, values in RULE_VALUES.items():
        follows = set(DERIVED_FIELDS.get(field, ())) | {field}
        if field == "norm":
            follows |= norm_defaults
        for value in values:
            edited = valid(with_changes(config.model_dump(), {field: value}))
            if edited is None:
                continue  # e.g. FixUp with Scaled WS: refused with its own sentence
            for other in ModelConfig.model_fields:
                if other in follows:
                    continue
                before, after = getattr(config, other), getattr(edited, other)
                assert after == before or after in (None, False), (base, field, value, other)


def test_a_change_between_resnet_families_keeps_the_depth() -> None:
    v2 = SPPConfig(depth=101, width=0.25)
    assert SPPConfig(**with_changes(v2.model_dump(), {"family": "resnetv1"})).depth == 101
    custom = SPPConfig(layout=(1, 2, 1), width=0.25)
    edited = SPPConfig(**with_changes(custom.model_dump(), {"family": "resnetv1"}))
    assert edited.layout == (1, 2, 1)
    regnet = SPPConfig(**with_changes(v2.model_dump(), {"family": "nf_regnet"}))
    assert regnet.variant == "B0" and regnet.depth is None
