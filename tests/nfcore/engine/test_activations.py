"""Activation lookup, registration and the Scaled WS gain gamma = 1/sqrt(Var g(x)) (Section 4.3)."""

from __future__ import annotations

import math
from collections.abc import Iterator

import pytest
import torch
import torch.nn.functional as F

import nfcore
from nfcore.engine import activations
from nfcore.engine.activations import (
    GammaEstimate,
    gamma_quadrature,
    gamma_sampled,
    gamma_table,
    get_activation,
    he_gain,
    register_activation,
    resolve_gamma,
)
from nfcore.spec import activation_names
from nfcore.spec.config import SPPConfig

RELU_GAMMA = math.sqrt(2 / (1 - 1 / math.pi))  # Section 4.3, Arpit et al. (2016)
ABS_GAMMA = 1 / math.sqrt(1 - 2 / math.pi)  # Var|x| = 1 - E|x|^2 = 1 - 2/pi
PAPER_SILU_GAMMA = 1 / 0.5595  # the constant baked into the paper's NF-RegNet code


@pytest.fixture(autouse=True)
def clean_registry() -> Iterator[None]:
    """Undo any custom registrations (and gains cached for them) after each test."""
    saved = dict(activation_names.CUSTOM_ACTIVATIONS)
    yield
    activation_names.CUSTOM_ACTIVATIONS.clear()
    activation_names.CUSTOM_ACTIVATIONS.update(saved)
    activations._gamma_quadrature_cached.cache_clear()
    activations._gamma_sampled_cached.cache_clear()


# --- lookup ---------------------------------------------------------------------------------


def test_every_builtin_has_a_function() -> None:
    x = torch.linspace(-3, 3, 61)
    for name in activation_names.BUILTIN_ACTIVATIONS:
        y = get_activation(name)(x)
        assert y.shape == x.shape and torch.isfinite(y).all(), name


def test_aliases_and_case_resolve_to_the_same_function() -> None:
    assert get_activation("Swish") is get_activation("silu")
    assert get_activation(" LINEAR ") is get_activation("identity")


def test_builtin_parameters_match_the_documented_forms() -> None:
    x = torch.linspace(-4, 4, 81, dtype=torch.float64)
    exact_gelu = x * 0.5 * (1 + torch.erf(x / math.sqrt(2)))  # erf form, not the tanh one
    torch.testing.assert_close(get_activation("gelu")(x), exact_gelu)
    torch.testing.assert_close(get_activation("leaky_relu")(x), torch.where(x > 0, x, 0.01 * x))
    torch.testing.assert_close(get_activation("elu")(x), torch.where(x > 0, x, torch.expm1(x)))
    torch.testing.assert_close(get_activation("softplus")(x), torch.log1p(torch.exp(x)))
    assert torch.equal(get_activation("identity")(x), x)


def test_unknown_name_lists_the_choices() -> None:
    with pytest.raises(ValueError, match=r"unknown activation 'nope'.*relu"):
        get_activation("nope")


# --- gamma by quadrature --------------------------------------------------------------------


def test_relu_matches_the_closed_form() -> None:
    assert gamma_quadrature("relu") == pytest.approx(RELU_GAMMA, abs=1e-9)
    assert pytest.approx(1.712858, abs=1e-6) == RELU_GAMMA


def test_identity_is_exactly_one() -> None:
    assert gamma_quadrature("identity") == pytest.approx(1.0, abs=1e-12)
    assert gamma_quadrature("linear") == pytest.approx(1.0, abs=1e-12)


def test_silu_matches_the_papers_constant() -> None:
    gamma = gamma_quadrature("silu")
    assert gamma == pytest.approx(1.7868, abs=5e-4)
    assert abs(gamma - PAPER_SILU_GAMMA) < 0.002


def test_other_builtins() -> None:
    assert gamma_quadrature("tanh") == pytest.approx(1.5925, abs=5e-4)
    # SELU's constants were chosen so that N(0,1) is its fixed point: Var = 1.
    assert gamma_quadrature("selu") == pytest.approx(1.0, abs=2e-3)
    assert gamma_quadrature("sigmoid") == pytest.approx(4.8013, abs=5e-4)
    assert gamma_quadrature("leaky_relu") == pytest.approx(RELU_GAMMA, rel=0.01)


def test_leaky_relu_matches_its_closed_form() -> None:
    slope = 0.01
    var = (1 + slope**2) / 2 - (1 - slope) ** 2 / (2 * math.pi)
    assert gamma_quadrature("leaky_relu") == pytest.approx(var**-0.5, abs=1e-10)


def test_quadrature_accepts_a_callable() -> None:
    assert gamma_quadrature(torch.abs) == pytest.approx(ABS_GAMMA, abs=1e-9)
    assert gamma_quadrature(F.silu) == gamma_quadrature("silu")


# --- gamma by the Appendix D.1 sampling recipe ----------------------------------------------


@pytest.mark.parametrize("name", activation_names.BUILTIN_ACTIVATIONS)
def test_sampled_agrees_with_quadrature(name: str) -> None:
    assert gamma_sampled(name) == pytest.approx(gamma_quadrature(name), rel=0.015)


def test_sampled_is_deterministic_per_seed() -> None:
    # A callable bypasses the name cache, so this really samples twice.
    first = gamma_sampled(F.silu, seed=2)
    assert gamma_sampled(F.silu, seed=2) == first
    assert gamma_sampled("silu", seed=2) == first
    assert gamma_sampled(F.silu, seed=3) != first


def test_sampled_bias_vanishes_without_the_population_variance_factor() -> None:
    # Population variance over dim values underestimates Var by (dim-1)/dim, so the estimate is
    # 0.2% high; with 16x the paper's vectors the sampling noise (about 0.05%) is smaller.
    gamma = gamma_sampled("relu", num_vectors=16384, dim=256, seed=0)
    assert gamma == pytest.approx(RELU_GAMMA * math.sqrt(256 / 255), rel=1e-3)
    assert gamma * math.sqrt(255 / 256) == pytest.approx(RELU_GAMMA, rel=1e-3)
    assert gamma / RELU_GAMMA - 1 > 1e-3  # the bias is there to undo


# --- custom activations ---------------------------------------------------------------------


def test_registered_callable_is_usable_everywhere() -> None:
    register_activation("Double_ReLU", lambda x: torch.relu(x) * 2)
    register_activation("abs", torch.abs)

    assert get_activation("double_relu")(torch.tensor([-1.0, 3.0])).tolist() == [0.0, 6.0]
    assert gamma_quadrature("double_relu") == pytest.approx(RELU_GAMMA / 2, abs=1e-9)
    assert gamma_quadrature("ABS") == pytest.approx(ABS_GAMMA, abs=1e-9)
    assert gamma_sampled("abs") == pytest.approx(ABS_GAMMA, rel=0.015)

    table = gamma_table()
    names = [row.name for row in table]
    assert names == [*activation_names.BUILTIN_ACTIVATIONS, "double_relu", "abs"]
    row = table[-1]
    assert row.quadrature == pytest.approx(ABS_GAMMA, abs=1e-9) and row.analytic is None

    config = SPPConfig(activation="Abs", norm="nf")
    assert config.activation == "abs"
    assert resolve_gamma(config.gamma, config.activation) == pytest.approx(ABS_GAMMA, abs=1e-9)


def test_unregistered_name_fails_config_validation() -> None:
    with pytest.raises(ValueError, match="activation"):
        SPPConfig(activation="abs")


def test_reregistering_replaces_the_function_and_its_cached_gamma() -> None:
    register_activation("scaled", lambda x: torch.relu(x) * 2)
    assert gamma_quadrature("scaled") == pytest.approx(RELU_GAMMA / 2, abs=1e-9)
    sampled = gamma_sampled("scaled")
    register_activation("scaled", lambda x: torch.relu(x) * 4)
    assert gamma_quadrature("scaled") == pytest.approx(RELU_GAMMA / 4, abs=1e-9)
    assert gamma_sampled("scaled") == pytest.approx(sampled / 2, rel=1e-6)


@pytest.mark.parametrize("name", ["relu", " ReLU ", "swish", "linear"])
def test_builtin_names_and_aliases_cannot_be_shadowed(name: str) -> None:
    with pytest.raises(ValueError, match="built-in name or alias"):
        register_activation(name, torch.abs)
    assert get_activation("relu") is F.relu


def test_bad_registrations_are_refused() -> None:
    with pytest.raises(ValueError, match="non-empty"):
        register_activation("  ", torch.abs)
    with pytest.raises(ValueError, match="callable"):
        register_activation("three", 3)  # type: ignore[arg-type]
    assert activation_names.CUSTOM_ACTIVATIONS == {}


def test_lazy_package_export() -> None:
    assert nfcore.register_activation is register_activation


# --- undefined gains ------------------------------------------------------------------------


@pytest.mark.parametrize("fn", [lambda x: x * 0, lambda x: x * 0 + 0.3, lambda x: x * math.nan])
def test_zero_or_nonfinite_variance_is_refused(fn: activations.ActivationFn) -> None:
    with pytest.raises(ValueError, match="zero/non-finite variance under N\\(0,1\\); gamma"):
        gamma_quadrature(fn)
    with pytest.raises(ValueError, match="zero/non-finite variance"):
        gamma_sampled(fn)


def test_zero_variance_by_name_names_the_activation() -> None:
    register_activation("dead", lambda x: x * 0)
    with pytest.raises(ValueError, match="activation 'dead' has zero/non-finite variance"):
        gamma_quadrature("dead")


def test_non_elementwise_callable_is_refused() -> None:
    with pytest.raises(ValueError, match="elementwise"):
        gamma_quadrature(lambda x: x.sum())


# --- table and resolve_gamma ----------------------------------------------------------------


def test_gamma_table_has_closed_forms_where_known() -> None:
    table = {row.name: row for row in gamma_table()}
    assert list(table) == list(activation_names.BUILTIN_ACTIVATIONS)
    assert table["relu"].analytic == pytest.approx(RELU_GAMMA, abs=1e-15)
    assert table["identity"].analytic == 1.0
    assert table["leaky_relu"].analytic == pytest.approx(table["leaky_relu"].quadrature, abs=1e-10)
    assert all(table[n].analytic is None for n in ("silu", "gelu", "tanh", "sigmoid", "mish"))
    for row in table.values():
        assert isinstance(row, GammaEstimate)
        assert row.sampled == pytest.approx(row.quadrature, rel=0.015)


def test_gamma_table_for_chosen_names_resolves_aliases() -> None:
    assert [row.name for row in gamma_table(["Swish", "relu"])] == ["silu", "relu"]


def test_resolve_gamma() -> None:
    assert resolve_gamma("auto", "relu") == pytest.approx(RELU_GAMMA, abs=1e-9)
    assert resolve_gamma(" AUTO ", "swish") == gamma_quadrature("silu")
    assert resolve_gamma(math.sqrt(2), "relu") == math.sqrt(2)  # Figure 8's He gain
    assert resolve_gamma(None, "relu") == 1.0
    for bad in (0.0, -1.0, math.inf, "big"):
        with pytest.raises(ValueError, match="gamma must be"):
            resolve_gamma(bad, "relu")


def test_he_gain_is_one_over_root_second_moment() -> None:
    # Figure 8's caption: the He gain sqrt(1 / E[g(x)^2]) is sqrt(2) for ReLU.
    assert he_gain("relu") == pytest.approx(math.sqrt(2), abs=1e-9)
    assert he_gain("linear") == pytest.approx(1.0, abs=1e-12)
    assert he_gain("relu") < gamma_quadrature("relu")
