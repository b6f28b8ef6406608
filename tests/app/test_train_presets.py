"""The Train page's presets: every run is a valid TrainConfig, and Table 2 is the paper's."""

from __future__ import annotations

import pytest

from app.train_controls import RUN_COLUMNS, SETTING_FIELDS
from nfcore.spec.config import TrainConfig
from nfcore.spec.train_presets import (
    DEFAULT_PRESET,
    DEFAULT_SETTINGS,
    TABLE2,
    TRAIN_PRESETS,
    auto_labels,
    get_train_preset,
    run_config,
)


@pytest.mark.parametrize("preset", TRAIN_PRESETS, ids=lambda preset: preset.id)
def test_every_preset_run_validates(preset) -> None:
    assert len(preset.runs) >= 2
    assert set(preset.settings) <= set(SETTING_FIELDS)
    for run in preset.runs:
        assert set(run) <= set(RUN_COLUMNS)
    configs = preset.configs()
    assert all(isinstance(config, TrainConfig) for config in configs)
    assert len({config.model_dump_json() for config in configs}) == len(configs)  # no repeats
    labels = auto_labels(configs)
    assert len(set(labels)) == len(labels)
    assert get_train_preset(preset.id) is preset


def test_table2_trains_bn_and_nf_at_small_batches_with_the_papers_rates() -> None:
    configs = TABLE2.configs()
    pairs = {(config.norm, config.batch): config.lr for config in configs}
    assert pairs == {("bn", 64): 0.05, ("nf", 64): 0.05, ("bn", 8): 0.025, ("nf", 8): 0.025,
                     ("bn", 4): 0.01, ("nf", 4): 0.01}  # fmt: skip
    for config in configs:
        assert (config.dataset, config.resolution, config.depth, config.width, config.steps) == (
            "digits", 32, 26, 0.25, 200,
        )  # fmt: skip
    assert auto_labels(configs)[-2:] == ["BN-ResNet-26, batch 4, lr 0.01",
                                         "NF-ResNet-26, batch 4, lr 0.01"]  # fmt: skip


def test_run_config_fills_blanks_from_the_settings() -> None:
    row = dict.fromkeys(RUN_COLUMNS) | {"norm": "nf", "depth": 14, "width": 0.125}
    config = run_config(DEFAULT_SETTINGS, row)
    assert (config.batch, config.lr, config.steps) == (32, 0.1, 200)
    assert config.skipinit is False and config.activation == "relu"
    config = run_config(DEFAULT_SETTINGS, row | {"batch": 4, "lr": 0.01, "label": "mine"})
    assert (config.batch, config.lr) == (4, 0.01)
    with pytest.raises(ValueError, match="BatchNorm cannot train at batch size 1"):
        run_config(DEFAULT_SETTINGS, row | {"norm": "bn", "batch": 1})


def test_auto_labels_name_what_differs() -> None:
    assert auto_labels(DEFAULT_PRESET.configs()) == ["BN-ResNet-26", "NF-ResNet-26"]
    row = dict.fromkeys(RUN_COLUMNS) | {"norm": "nf", "depth": 26}
    configs = [run_config(DEFAULT_SETTINGS, row | {"skipinit": flag}) for flag in (True, False)]
    assert auto_labels(configs) == ["NF-ResNet-26, SkipInit", "NF-ResNet-26, no SkipInit"]


def test_unknown_preset_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="known: bn-vs-nf, table2, quick"):
        get_train_preset("table9")
