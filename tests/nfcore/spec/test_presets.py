"""The paper's SPP figures as presets: what each one configures, and that each still shows its
finding when shrunk to a two-stage, eight-block net (width 0.25, 64 px, batch 2) that runs in
milliseconds.

At that size every signature below holds for seeds 0-19; at width 0.125 and 32 px one seed in
ten or so loses one of them to the noise of eight-channel bottlenecks, so the tests use 0.25.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from statistics import mean

import pytest
import torch
from pydantic import ValidationError

from nfcore.engine.spp import run_spp
from nfcore.spec.config import SPPConfig
from nfcore.spec.presets import (
    BORDER_AT_SCALE,
    PRESET_SCALE,
    PRESETS,
    Preset,
    get_preset,
    rescale_config,
)
from nfcore.spec.result import SPPResult

TINY = {"layout": (4, 4), "width": 0.25, "resolution": 64, "batch": 2, "device": "cpu"}


def configs(preset_id: str) -> list[SPPConfig]:
    return [run.config for run in get_preset(preset_id).runs]


def column(result: SPPResult, key: str) -> list[float]:
    return [getattr(block, key) for block in result.blocks]


def stages(result: SPPResult, key: str) -> list[list[float]]:
    out: list[list[float]] = []
    for block in result.blocks:
        if block.transition:
            out.append([])
        out[-1].append(getattr(block, key))
    return out


# --- what the presets configure -----------------------------------------------------------------


def test_presets_are_the_papers_spp_figures_in_order() -> None:
    assert [p.figure for p in PRESETS] == [1, 2, 6, 7, 8, 9, 10, 11]
    assert [p.id for p in PRESETS] == [f"fig{p.figure}" for p in PRESETS]
    assert len({p.id for p in PRESETS}) == len(PRESETS)


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.id)
def test_every_preset_is_complete_and_valid(preset: Preset) -> None:
    assert preset.title and preset.paper_setting and preset.scaled_setting
    assert 100 < len(preset.caption) < 600
    assert all(run.label for run in preset.runs)
    assert len({run.label for run in preset.runs}) == len(preset.runs)
    for run in preset.runs:
        config = run.config
        # The paper's depth, scaled in width, resolution and batch only.
        assert {key: getattr(config, key) for key in PRESET_SCALE} == PRESET_SCALE
        assert config.layout == (50, 50, 50, 50)
        assert config.input == "gaussian"  # N(0,1), as in every SPP of the paper
        assert SPPConfig.model_validate(config.model_dump()) == config  # canonical
    # The API serves presets as JSON: they must come back unchanged.
    assert Preset.model_validate_json(preset.model_dump_json()) == preset


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.id)
def test_every_preset_says_what_the_border_does_and_has_a_border_free_view(
    preset: Preset,
) -> None:
    assert preset.border.startswith(BORDER_AT_SCALE) and "circular padding" in preset.border
    assert preset.runs_with("zeros") == preset.runs  # the paper's border
    free = preset.runs_with("circular")
    assert [run.label for run in free] == [run.label for run in preset.runs]
    for run, free_run in zip(preset.runs, free, strict=True):
        fields = {**run.config.model_dump(), "padding": "circular"}
        assert free_run.config == SPPConfig(**fields)  # nothing else changes


def test_only_fig6_is_semilog() -> None:
    assert [p.id for p in PRESETS if p.log_y] == ["fig6"]


def test_fig1_compares_the_two_batchnorm_orderings() -> None:
    assert [(c.norm, c.order, c.conv, c.activation) for c in configs("fig1")] == [
        ("bn", "bn-relu-conv", "he", "relu"),
        ("bn", "relu-bn-conv", "he", "relu"),
    ]


def test_fig2_is_relu_bn_conv_against_nf_with_he_init_and_with_scaled_ws() -> None:
    assert [(c.norm, c.order, c.conv, c.alpha, c.gamma) for c in configs("fig2")] == [
        ("bn", "relu-bn-conv", "he", None, None),
        ("nf", None, "he", 1.0, None),
        ("nf", None, "ws", 1.0, "auto"),
    ]


def test_fig6_has_no_normalization() -> None:
    assert [(c.norm, c.conv, c.activation) for c in configs("fig6")] == [("none", "he", "relu")]


def test_fig7_is_linear_without_the_stem_max_pool() -> None:
    runs = configs("fig7")
    assert [c.norm for c in runs] == ["bn", "nf"]
    assert all(c.activation == "identity" and c.maxpool is False for c in runs)
    # The linearized version of Fig. 2's He-init NF net (Section 4.1).
    assert (runs[1].conv, runs[1].alpha) == ("he", 1.0)


def test_fig8_uses_the_he_gain_sqrt2_in_scaled_ws() -> None:
    [config] = configs("fig8")
    assert (config.norm, config.conv, config.activation) == ("nf", "ws", "relu")
    assert config.gamma == pytest.approx(math.sqrt(2), abs=1e-12)


def test_fig9_is_unmodified_squeeze_excite_with_the_corrected_one_beside_it() -> None:
    runs = configs("fig9")
    assert [(c.norm, c.conv, c.gamma, c.se_gain) for c in runs] == [
        ("nf", "ws", "auto", 1.0),
        ("nf", "ws", "auto", 2.0),
    ]


def test_fig10_is_fixup_and_fig11_is_post_activation_batchnorm() -> None:
    # The reference (post-activation) FixUp first, most likely the figure's; ours beside it.
    assert [(c.family, c.norm) for c in configs("fig10")] == [
        ("resnetv1", "fixup"),
        ("resnetv2", "fixup"),
    ]
    labels = [run.label for run in get_preset("fig10").runs]
    assert labels == ["FixUp (reference, post-activation)", "FixUp (pre-activation, ours)"]
    assert [(c.family, c.norm) for c in configs("fig11")] == [("resnetv1", "bn")]


def test_get_preset_names_the_known_ids_when_asked_for_another() -> None:
    assert get_preset("fig8").figure == 8
    with pytest.raises(KeyError, match=r"'fig3'.*fig1, fig2, fig6, fig7, fig8, fig9, fig10, fig11"):
        get_preset("fig3")


def test_a_preset_id_must_name_its_figure() -> None:
    fields = get_preset("fig1").model_dump()
    with pytest.raises(ValidationError, match="does not name figure 2"):
        Preset.model_validate({**fields, "figure": 2})


def test_rescale_config_revalidates_and_swaps_depth_for_layout() -> None:
    base = configs("fig1")[0]
    smaller = rescale_config(base, depth=26, width=0.5)
    assert (smaller.depth, smaller.layout, smaller.width) == (26, (2, 2, 2, 2), 0.5)
    assert smaller.order == base.order
    custom = rescale_config(base, layout=(2, 2))
    assert (custom.depth, custom.layout) == (14, (2, 2))
    with pytest.raises(ValidationError, match="resolution"):
        rescale_config(base, resolution=16)  # below the net's stride of 32
    with pytest.raises(ValueError, match="cannot rescale norm"):
        rescale_config(base, norm="nf")  # would keep the BN net's He init


# --- each preset still shows its finding on a tiny net ------------------------------------------


def fig1(bn_relu: SPPResult, relu_bn: SPPResult) -> None:
    # Var(f) = 1 - 1/pi = 0.68 with BN-ReLU-Conv; the channel mean grows within each stage.
    assert mean(column(bn_relu, "residual_avg_channel_var")) == pytest.approx(0.68, abs=0.12)
    for means in stages(bn_relu, "avg_sq_channel_mean"):
        assert means[-1] > 1.5 * means[0]
    assert mean(column(relu_bn, "residual_avg_channel_var")) == pytest.approx(1.0, abs=0.12)
    assert max(column(relu_bn, "avg_sq_channel_mean")) < 0.2 * min(
        column(bn_relu, "avg_sq_channel_mean")
    )
    for result in (bn_relu, relu_bn):  # linear growth within a stage, reset at the transition
        first, second = stages(result, "avg_channel_var")
        assert first == sorted(first) and second == sorted(second)
        assert second[0] < first[-1] - 1


def fig2(bn: SPPResult, he: SPPResult, ws: SPPResult) -> None:
    # He init: the squared channel mean exceeds the variance (the mean shift of eq. 1) ...
    assert all(
        m > v
        for m, v in zip(
            column(he, "avg_sq_channel_mean"), column(he, "avg_channel_var"), strict=True
        )
    )
    # ... which Scaled WS removes, tracking the ReLU-BN-Conv network (in the first stage: at
    # 8x8 pixels zero padding eats part of the NF variance; the paper sees it at 512 px too).
    assert max(column(ws, "avg_sq_channel_mean")) < 0.1 * min(column(he, "avg_sq_channel_mean"))
    ws_first, bn_first = stages(ws, "avg_channel_var")[0], stages(bn, "avg_channel_var")[0]
    assert ws_first == pytest.approx(bn_first, rel=0.35)


def fig6(none: SPPResult) -> None:
    for key in ("avg_sq_channel_mean", "avg_channel_var", "residual_avg_channel_var"):
        values = column(none, key)
        assert values[-1] > 10 * values[0], key


def fig7(bn: SPPResult, nf: SPPResult) -> None:
    for result in (bn, nf):
        assert max(column(result, "avg_sq_channel_mean")) < 0.05
        residual = stages(result, "residual_avg_channel_var")[0]  # 32 px: little zero padding
        assert mean(residual) == pytest.approx(1.0, abs=0.35)


def fig8(he_gain: SPPResult) -> None:
    # Each conv keeps gamma^2 Var(g) = 2 * 0.34 of the variance: the branches attenuate ...
    assert max(column(he_gain, "residual_avg_channel_var")) < 0.5
    kept = [b.avg_channel_var / b.expected_var for b in he_gain.blocks]  # measured / beta^2
    assert max(kept) < 0.85
    # ... and the transition, dividing by a beta that assumes more variance, shrinks it again.
    assert kept[4] < 0.85 * kept[3]


def fig9(plain: SPPResult, corrected: SPPResult) -> None:
    plain_var = mean(column(plain, "residual_avg_channel_var"))
    corrected_var = mean(column(corrected, "residual_avg_channel_var"))
    assert plain_var < 0.35
    assert corrected_var == pytest.approx(1.0, abs=0.35)
    assert corrected_var > 3 * plain_var  # the gate halves the magnitude: a quarter the variance


def fig10(reference: SPPResult, ours: SPPResult) -> None:
    for fixup in (reference, ours):
        assert set(column(fixup, "residual_avg_channel_var")) == {0.0}
        first, second = stages(fixup, "avg_channel_var")
        assert len(set(first)) == len(set(second)) == 1
        assert first[0] != second[0]
    first, second = stages(reference, "avg_channel_var")
    assert second[0] < 0.7 * first[0]  # the reference's variance falls at the transition


def fig11(v1: SPPResult) -> None:
    assert column(v1, "residual_avg_channel_var") == pytest.approx([1.0] * 8, abs=1e-3)
    first, second = stages(v1, "avg_channel_var")
    assert second[0] < first[-1]


@pytest.fixture
def one_thread() -> Iterator[None]:
    # Nets this small gain nothing from threads, and on a busy 2-core machine two intra-op
    # threads made these runs 50-100x slower (seconds instead of milliseconds).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


SIGNATURES: dict[str, Callable[..., None]] = {
    "fig1": fig1,
    "fig2": fig2,
    "fig6": fig6,
    "fig7": fig7,
    "fig8": fig8,
    "fig9": fig9,
    "fig10": fig10,
    "fig11": fig11,
}


@pytest.mark.usefixtures("one_thread")
@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.id)
def test_each_preset_shows_its_finding_on_a_tiny_net(preset: Preset) -> None:
    results = [run_spp(rescale_config(run.config, **TINY)) for run in preset.runs]
    assert all(len(result.blocks) == 8 for result in results)
    SIGNATURES[preset.id](*results)
