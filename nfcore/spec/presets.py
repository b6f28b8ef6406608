"""The paper's Signal Propagation Plots as ready-made configs (torch-free).

One `Preset` per SPP figure of Brock, De & Smith (2021): Figs. 1 and 2 (Sections 3-4) and
Figs. 6-11 (Appendix F). Each preset holds the runs the figure compares, a caption saying what
the paper found and why, both the paper's setting and the smaller one used here, and what the
convs' zero border does at that smaller size (`runs_with("circular")` is the figure without
it). The API serves them at /v1/presets; the dashboard sets its controls from them.

Every run keeps the paper's depth, 600 layers, because the findings are about how signals grow
with depth; width, resolution and batch are scaled down so that a run takes one or two seconds
on a laptop CPU. `rescale_config` shrinks a preset further for a slower machine.
"""

from __future__ import annotations

import math
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nfcore.spec.config import SPPConfig

PAPER_DEPTH: Final[int] = 600  # ResNetV2-600 / ResNet-600 in every SPP figure of the paper
# Measured on a 2-core CPU: 0.5-0.8 s per 600-layer run, 1.7 s without the stem max-pool (Fig. 7).
PRESET_SCALE: Final[dict[str, Any]] = {
    "depth": PAPER_DEPTH,
    "width": 0.25,
    "resolution": 128,
    "batch": 8,
    "seed": 0,
}
SCALED_SETTING: Final[str] = (
    "The paper's 600 layers, but width 0.25, 128 px and batch 8 (seed 0), so each run takes "
    "one or two seconds on a laptop CPU."
)
PAPER_INPUT: Final[str] = "N(0,1) input at 512 px"
# At 128 px the last stage is 4x4: a zero-padded 3x3 conv there reads (10/12)^2 = 69% real
# values, against (46/48)^2 = 92% at the paper's 512 px (16x16).
BORDER_AT_SCALE: Final[str] = (
    "At 128 px the last stage is 4x4 pixels, so the zero border is 31% of what its 3x3 convs "
    "read (8% at the paper's 512 px)."
)
HE_RELU_GAIN: Final[float] = math.sqrt(2)  # He et al. (2015)'s ReLU gain, Fig. 8's gamma
# What `rescale_config` may change: the size of the run and how it is measured, not the model.
RESCALABLE_FIELDS: Final[frozenset[str]] = frozenset(
    {
        "depth",
        "layout",
        "width",
        "resolution",
        "batch",
        "seed",
        "device",
        "input",
        "gradients",
        "extra_stats",
        # The border matters only because the image is smaller than the paper's.
        "padding",
    }
)


class PresetRun(BaseModel):
    """One curve of a figure: its legend text and the run that draws it."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    label: str = Field(min_length=1, description="Legend text, e.g. 'BN-ReLU-Conv'.")
    config: SPPConfig


class Preset(BaseModel):
    """One of the paper's SPP figures: the runs it compares and what it shows."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str = Field(pattern=r"^fig\d+$", description="'fig' and the figure number, e.g. 'fig1'.")
    figure: int = Field(ge=1, description="Figure number in the paper.")
    title: str = Field(min_length=1)
    caption: str = Field(
        min_length=1, description="The paper's finding and its mechanism, in plain words."
    )
    runs: tuple[PresetRun, ...] = Field(min_length=1)
    log_y: bool = Field(False, description="Plot on a semilog scale (Fig. 6: signals explode).")
    paper_setting: str = Field(description="What the paper ran.")
    scaled_setting: str = Field(description="What this preset runs instead, and why.")
    border: str = Field(
        min_length=1,
        description="What the zero border of the convs does at the scaled-down size, and "
        "what the border-free view (circular padding) shows instead.",
    )

    @model_validator(mode="after")
    def _check_id(self) -> Preset:
        if self.id != f"fig{self.figure}":
            raise ValueError(f"id: {self.id!r} does not name figure {self.figure}")
        return self

    def runs_with(self, padding: str) -> tuple[PresetRun, ...]:
        """The figure's runs with this border: "circular" is its border-free view."""
        return tuple(
            run if run.config.padding == padding
            else PresetRun(label=run.label, config=rescale_config(run.config, padding=padding))
            for run in self.runs
        )  # fmt: skip


def rescale_config(config: SPPConfig, **changes: Any) -> SPPConfig:
    """A preset run at another size (width, resolution, batch, depth or layout, seed, ...).

    The config is rebuilt from its fields and validated again, which `model_copy(update=...)`
    would skip. A new depth replaces the layout and a new layout the depth. Only the fields in
    `RESCALABLE_FIELDS` may change: the others were filled in from the architecture (a BN net's
    He init, say), so changing e.g. the norm here would not give the config a user would get
    by asking for that norm. ValueError names any other field.
    """
    refused = sorted(set(changes) - RESCALABLE_FIELDS)
    if refused:
        raise ValueError(
            f"cannot rescale {', '.join(refused)}; only {', '.join(sorted(RESCALABLE_FIELDS))}"
        )
    return config.edited(changes)


def _run(label: str, **model: Any) -> PresetRun:
    return PresetRun(label=label, config=SPPConfig(**PRESET_SCALE, **model))


PRESETS: Final[tuple[Preset, ...]] = (
    Preset(
        id="fig1",
        figure=1,
        title="BatchNorm ResNetV2-600: BN-ReLU-Conv vs ReLU-BN-Conv",
        caption=(
            "With BatchNorm the variance grows linearly within each stage and resets to about 1 "
            "at each transition, whose shortcut conv reads a normalized input. In BN-ReLU-Conv "
            "the last conv of each branch reads a rectified input with a positive mean, so every "
            "branch adds a channel mean: the squared channel mean grows with depth, and part of "
            "the branch's output goes into that mean, leaving Var(f) ≈ 0.68. ReLU-BN-Conv feeds "
            "the convs centered inputs: no mean shift, and Var(f) ≈ 1."
        ),
        runs=(
            _run("BN-ReLU-Conv", norm="bn", order="bn-relu-conv"),
            _run("ReLU-BN-Conv", norm="bn", order="relu-bn-conv"),
        ),
        paper_setting=f"ResNetV2-600 with BatchNorm, ReLU and He init; {PAPER_INPUT}.",
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "BatchNorm renormalizes every branch, so the border changes almost nothing here: the "
            "border-free view (circular padding) draws the same curves."
        ),
    ),
    Preset(
        id="fig2",
        figure=2,
        title="Normalizer-free ResNetV2-600: He init vs Scaled Weight Standardization",
        caption=(
            "Without normalization and with He-initialized weights (α = 1), the squared channel "
            "mean grows with depth until it exceeds the variance, and the residual branches' "
            "variance stays below 1. ReLU outputs have a positive mean and any drawn weight row "
            "has a non-zero mean, so by eq. 1 every channel's output is shifted. Scaled WS gives "
            "each weight row zero mean and a variance-preserving gain γ, which removes the shift: "
            "the SPP is almost identical to BatchNorm with ReLU-BN-Conv."
        ),
        runs=(
            _run("BN, ReLU-BN-Conv", norm="bn", order="relu-bn-conv"),
            _run("NF, He init, α=1", norm="nf", conv="he", alpha=1.0),
            _run("NF, Scaled WS, α=1", norm="nf", conv="ws", alpha=1.0),
        ),
        paper_setting=f"ResNetV2-600 with ReLU, three variants; {PAPER_INPUT}.",
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "In the NF nets it lowers the residual-branch variance stage by stage: with Scaled WS "
            "0.94, 0.84, 0.65 and 0.36 (stage means), and the variance with it. Without the "
            "border (circular padding) it stays at 0.99-1.03 in every stage and the Scaled WS SPP "
            "is almost identical to BatchNorm's, as the paper finds. The border also dilutes the "
            "He-init net's channel mean in the late stages; without it the squared channel mean "
            "grows to about 230 in the last stage (46 with the border)."
        ),
    ),
    Preset(
        id="fig6",
        figure=6,
        title="ResNetV2-600 without normalization (semilog)",
        caption=(
            "With ReLU and He initialization but no normalization, the signal explodes: the "
            "squared channel mean, the variance and the residual-branch variance all grow by "
            "orders of magnitude with depth, so the plot needs a logarithmic y-axis. Nothing "
            "downscales the input of each residual branch, as BatchNorm (or β in an NF-ResNet) "
            "does, so each branch's output grows with the signal it receives and the growth "
            "compounds block after block."
        ),
        runs=(_run("No normalization", norm="none"),),
        log_y=True,
        paper_setting=f"ResNetV2-600 with ReLU and He init, no normalization; {PAPER_INPUT}.",
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "The signal explodes with or without the border (circular padding): by orders of "
            "magnitude either way."
        ),
    ),
    Preset(
        id="fig7",
        figure=7,
        title="Linear activations: BatchNorm vs normalizer-free",
        caption=(
            "To find where the mean shift of Fig. 2 comes from, the ReLUs are removed. With "
            "linear activations the squared channel means stay near zero at every depth, for "
            "BatchNorm and for the normalizer-free network alike, and the residual-branch "
            "variance stays around 1, so the ReLU's positive mean causes the shift. The stem's "
            "max-pool is removed so that the first blocks get centered inputs (a max has a "
            "positive mean)."
        ),
        runs=(
            _run("BatchNorm, linear", norm="bn", activation="identity", maxpool=False),
            _run(
                "NF, He init, α=1, linear",
                norm="nf",
                conv="he",
                alpha=1.0,
                activation="identity",
                maxpool=False,
            ),
        ),
        paper_setting=(
            f"ResNetV2-600s with linear activations and no stem max-pool; {PAPER_INPUT}. The NF "
            "net is the He-init, α = 1 net of Fig. 2 without its ReLUs (Section 4.1)."
        ),
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "It lowers the NF net's residual-branch variance to 0.55 in the last stage (stage "
            "mean); without the border (circular padding) it stays around 1 (0.97-1.00), as the "
            "paper says. BatchNorm renormalizes and is unaffected."
        ),
    ),
    Preset(
        id="fig8",
        figure=8,
        title="NF-ResNetV2-600 with Scaled WS and γ = √2",
        caption=(
            "He et al.'s ReLU gain √2 is 1/√E[g(x)²], but a variance-preserving layer needs "
            "1/√Var(g(x)), which is larger because a ReLU's output has a positive mean. With "
            "γ = √2 the signal attenuates block after block in the first stage, and each "
            "transition shrinks it further because its β assumes a larger incoming variance "
            "than actually arrives."
        ),
        runs=(_run("NF, Scaled WS, γ=√2", norm="nf", conv="ws", gamma=HE_RELU_GAIN),),
        paper_setting=f"NF-ResNetV2-600 with ReLU and Scaled WS, γ = √2; {PAPER_INPUT}.",
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "The attenuation comes from γ, not from the border: the border-free view (circular "
            "padding) draws nearly the same curves."
        ),
    ),
    Preset(
        id="fig9",
        figure=9,
        title="NF-ResNetV2-600 with Squeeze-and-Excite: unmodified vs ×2",
        caption=(
            "Squeeze-and-Excite multiplies each channel by a sigmoid gate in [0, 1], so, like an "
            "underestimated γ, an unmodified S+E block attenuates the signal through the "
            "network. At initialization it halves the signal's magnitude, so multiplying the "
            "S+E output by 2 restores a residual-branch variance near 1 (Section 4.4); that "
            "corrected run is added here for comparison."
        ),
        runs=(
            _run("Unmodified S+E", norm="nf", conv="ws", se_gain=1.0),
            _run("S+E ×2 (corrected)", norm="nf", conv="ws", se_gain=2.0),
        ),
        paper_setting=(
            f"NF-ResNetV2-600 with ReLU, Scaled WS with the correct γ and unmodified S+E; "
            f"{PAPER_INPUT}. The paper's figure has no ×2 run."
        ),
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "It lowers the corrected run's residual-branch variance to 0.57 in the last stage "
            "(stage mean); without the border (circular padding) it stays at 1.0 in every stage. "
            "The unmodified run attenuates either way."
        ),
    ),
    Preset(
        id="fig10",
        figure=10,
        title="ResNet-600 with FixUp: the reference (post-activation) and ours (pre-activation)",
        caption=(
            "FixUp initializes the last layer of every residual branch to zero, so at "
            "initialization each branch adds nothing: the residual-branch variance is 0 and the "
            "variance is constant within a stage. The shortcut convolutions at stage transitions "
            "still change the scale, so the variance resets across stages. In the reference "
            "network it falls at every transition (0.080, 0.040, 0.018, 0.009 by stage here); "
            "the pre-activation FixUp keeps it at 0.73-0.61."
        ),
        runs=(
            _run("FixUp (reference, post-activation)", family="resnetv1", norm="fixup"),
            _run("FixUp (pre-activation, ours)", norm="fixup"),
        ),
        paper_setting=(
            f"ResNet-600 with FixUp and ReLU; {PAPER_INPUT}. The caption says only "
            "'ResNet-600'; the FixUp network released with the paper (nfnets/fixup_resnet.py) "
            "is post-activation, so the figure most likely shows that one, the first run here. "
            "The second applies FixUp's rules to this project's pre-activation ResNetV2."
        ),
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "The zero-initialized branches add nothing with either border; without the border "
            "(circular padding) the variance of each stage shifts a little: in the last stage "
            "0.0075 instead of 0.0088 (reference), 0.53 instead of 0.61 (ours)."
        ),
    ),
    Preset(
        id="fig11",
        figure=11,
        title="Post-activation ResNetV1-600 with BatchNorm",
        caption=(
            "The original post-activation ResNet ends every residual branch with BatchNorm, so "
            "the residual-branch variance is exactly 1 throughout the model. BatchNorm also "
            "follows the 1x1 shortcut convolution of each stage transition, so the variance "
            "resets there too."
        ),
        runs=(_run("ResNetV1, BatchNorm", family="resnetv1", norm="bn"),),
        paper_setting=f"ResNet-600 V1 (post-activation) with BatchNorm and ReLU; {PAPER_INPUT}.",
        scaled_setting=SCALED_SETTING,
        border=(
            f"{BORDER_AT_SCALE} "
            "BatchNorm ends every branch, so the residual-branch variance is exactly 1 with "
            "either border; the border-free view (circular padding) draws nearly the same curves."
        ),
    ),
)

_BY_ID: Final[dict[str, Preset]] = {preset.id: preset for preset in PRESETS}


def get_preset(preset_id: str) -> Preset:
    """The preset with this id (e.g. 'fig1'); KeyError naming the known ids otherwise."""
    try:
        return _BY_ID[preset_id]
    except KeyError:
        raise KeyError(f"unknown preset {preset_id!r}; choose one of {', '.join(_BY_ID)}") from None
