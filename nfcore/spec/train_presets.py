"""Ready-made sets of short training runs to compare (torch-free).

A preset is a data table: the settings every run shares (data set, steps, recipe) and one
mapping per run (the model, and optionally its own batch size and learning rate, in
`TrainConfig`'s terms, and a legend label); `run_config` turns a run and the settings into the
`TrainConfig` that is submitted. The dashboard's Train page shows the runs in its runs table
and the settings in its controls. Every preset validates (tests check it).

Sizes are chosen for a CPU worker: ResNet-26 at width 0.25 on the scikit-learn digits at
32 px for 200 steps, rather than the paper's ResNet-50 on ImageNet for many epochs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Final

from nfcore.spec.config import TrainConfig
from nfcore.spec.families import family
from nfcore.spec.norms import NORMS

# Where every preset departs from TrainConfig's defaults: fewer steps (a CPU finishes 200 in
# about a minute), more frequent evaluation (a curve of eight points rather than four) and an
# SPP every 25 steps, nine in all, to scrub through on the Train page. An SPP of these
# networks costs under 1% of the run (a forward pass of 8 Gaussian images against 200 training
# steps), far inside the API's MAX_TRAIN_FLOPS; the SPPs do not change the training itself.
DEFAULT_SETTINGS: Final[Mapping[str, Any]] = MappingProxyType(
    {"steps": 200, "eval_every": 25, "spp_every": 25}
)


@dataclass(frozen=True)
class TrainPreset:
    """Runs to compare, the settings they share, and what the user should see."""

    id: str
    title: str
    caption: str
    settings: Mapping[str, Any]
    runs: tuple[Mapping[str, Any], ...]

    def all_settings(self) -> dict[str, Any]:
        """The shared settings: the preset's own over DEFAULT_SETTINGS (TrainConfig's
        defaults for the rest)."""
        return {**DEFAULT_SETTINGS, **self.settings}

    def configs(self) -> list[TrainConfig]:
        settings = self.all_settings()
        return [run_config(settings, run) for run in self.runs]


def run_config(settings: Mapping[str, Any], run: Mapping[str, Any]) -> TrainConfig:
    """The config of one run: the shared settings, the run's model and its overrides.

    Blank values (None) fall back to the shared setting or the config's default; the label
    names the run, not its config. Pydantic's ValidationError says what is wrong otherwise
    (`describe_validation_error` words it).
    """
    fields = {name: value for name, value in settings.items() if value is not None}
    fields |= {name: value for name, value in run.items() if name != "label" and value is not None}
    return TrainConfig(**fields)


def short_name(config: TrainConfig) -> str:
    """'NF-ResNet-26', 'BN-ResNet-50': the model as the paper's tables name it."""
    row = family(config.family)
    row_of_norm = NORMS.get(str(config.norm))
    prefix = row_of_norm.prefix if row_of_norm else str(config.norm)
    return f"{prefix}-{row.table_name}-{row.size_name(config.depth, config.variant)}"


def auto_labels(configs: Sequence[TrainConfig]) -> list[str]:
    """A legend label per run: the model's short name, plus what tells it from the others.

    Batch, learning rate, width and activation are named when they differ between the runs,
    SkipInit when it differs between runs of the same model, so the runs read e.g.
    'BN-ResNet-26, batch 4' and 'NF-ResNet-26, batch 4' rather than repeating every setting.
    """
    parts: dict[str, Callable[[TrainConfig], str]] = {
        "batch": lambda c: f"batch {c.batch}",
        "lr": lambda c: f"lr {c.lr:g}",
        "width": lambda c: f"width {c.width:g}",
        "activation": lambda c: str(c.activation),
    }
    varying = [name for name in parts if len({getattr(c, name) for c in configs}) > 1]
    skipinit_by_name: dict[str, set[bool]] = {}
    for config in configs:
        skipinit_by_name.setdefault(short_name(config), set()).add(bool(config.skipinit))
    labels = []
    for config in configs:
        extra = [parts[name](config) for name in varying]
        name = short_name(config)
        if len(skipinit_by_name[name]) > 1:
            extra.append("SkipInit" if config.skipinit else "no SkipInit")
        labels.append(", ".join([name, *extra]))
    return labels


BN_VS_NF = TrainPreset(
    id="bn-vs-nf",
    title="BN-ResNet vs NF-ResNet",
    caption=(
        "A BatchNorm ResNet-26 and a Normalizer-Free ResNet-26 (Scaled WS, α = 0.2, SkipInit) "
        "trained with the same recipe. Both should learn the digits; the paper's point is that "
        "the NF-ResNet gets there without any batch statistics."
    ),
    settings={},
    runs=(
        {"norm": "bn", "depth": 26, "width": 0.25, "activation": "relu", "skipinit": False},
        {"norm": "nf", "depth": 26, "width": 0.25, "activation": "relu", "skipinit": True},
    ),
)

# Table 2 of the paper: ResNet-50 on ImageNet at batch sizes 4 and 8, learning rates 0.01 and
# 0.025. Here ResNet-26 at width 0.25 on the digits, with a batch-64 pair for reference. Its
# learning rate is 0.05: scaling 0.025 linearly from batch 8 gives 0.2, at which the NF-ResNet's
# loss explodes within 15 steps, and at 0.1 it still can (it depends on the CPU's thread count).
# The NF-ResNets leave out SkipInit: with their residual gains starting at zero they learn
# little in 200 steps at these small learning rates (measured on a 2-core CPU, seed 0, held-out
# accuracy after 200 steps: NF with SkipInit 30% at batch 8 and 17% at batch 4). Without it,
# measured on a 2-core CPU over seeds 0-4 with two threads and seeds 0-1 with one (seven runs
# of each): batch 64, BN 97-99% and NF 97-99%; batch 8, BN 90.5-92.5% and NF 93-95.5%;
# batch 4, BN 65.7-77.7% and NF 83.6-91.6% (NF ahead by 9-22 points with each seed). Another
# machine gave BN 80.5% at batch 4: the numbers move with the CPU, its thread count and the seed.
_TABLE2_BATCHES: Final[tuple[tuple[int, float], ...]] = ((64, 0.05), (8, 0.025), (4, 0.01))
TABLE2 = TrainPreset(
    id="table2",
    title="Table 2: training at small batch sizes",
    caption=(
        "BatchNorm estimates its statistics from the batch, so at batch 4 or 8 they are noisy "
        "and differ from the running averages used at test time; an NF-ResNet has no such "
        "dependence. What you should see: at batch 64 and 8 the two reach a similar held-out "
        "accuracy, while at batch 4 the BN-ResNet falls clearly behind the NF-ResNet. Measured "
        "on a 2-core CPU (seeds 0-4 on two threads, 0-1 on one): 97-99% for both at batch 64, "
        "BN 90-93% and NF 93-96% at batch 8, and BN 66-78% against NF 84-92% at batch 4. Your "
        "numbers will differ (another machine gave BN 80.5% at batch 4): they move with the "
        "CPU, its thread count and the seed; the gap at batch 4 is what stays. The paper's "
        "Table 2 shows the same with ResNet-50 on ImageNet. Learning rates follow the paper: "
        "0.025 at batch 8, 0.01 at batch 4, and 0.05 at batch 64 (at 0.1 the NF-ResNet can "
        "blow up there: try it). Every run takes the same 200 steps, so a smaller batch sees "
        "fewer examples: compare BN with NF at the same batch size, not across batch sizes. The "
        "NF-ResNets here leave out SkipInit, whose zero-initialized gains learn too slowly for "
        "200 small-batch steps (tick it in the table to see)."
    ),
    settings={"steps": 200, "eval_every": 25, "spp_every": 25, "batch": 64, "lr": 0.05},
    runs=tuple(
        {
            "norm": norm,
            "depth": 26,
            "width": 0.25,
            "activation": "relu",
            "skipinit": False,
            "batch": batch,
            "lr": lr,
        }
        for batch, lr in _TABLE2_BATCHES
        for norm in ("bn", "nf")
    ),
)

QUICK = TrainPreset(
    id="quick",
    title="Quick check",
    caption=(
        "Two tiny networks (ResNet-14 at width 0.125, 32 px) for 20 steps: a few seconds, to "
        "check that training works end to end. Too short to learn much."
    ),
    settings={
        "resolution": 32,
        "batch": 8,
        "steps": 20,
        "eval_every": 10,
        "eval_examples": 100,
        "spp_every": 4,
    },
    runs=(
        {"norm": "bn", "depth": 14, "width": 0.125, "activation": "relu", "skipinit": False},
        {"norm": "nf", "depth": 14, "width": 0.125, "activation": "relu", "skipinit": True},
    ),
)

TRAIN_PRESETS: Final[tuple[TrainPreset, ...]] = (BN_VS_NF, TABLE2, QUICK)
DEFAULT_PRESET: Final[TrainPreset] = BN_VS_NF


def get_train_preset(preset_id: str) -> TrainPreset:
    for preset in TRAIN_PRESETS:
        if preset.id == preset_id:
            return preset
    known = ", ".join(preset.id for preset in TRAIN_PRESETS)
    raise KeyError(f"no training preset {preset_id!r}; known: {known}")
