"""The statistics table: a new statistic is one row and one reduction, and it shows up in the
result's JSON, the CSV and the figure without touching the engine, the schema or the plots."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator

import pytest
import torch
from torch import Tensor

from nfcore.engine import stats
from nfcore.engine.spp import run_spp
from nfcore.plots.spp import spp_figure
from nfcore.spec import statistics
from nfcore.spec.config import SPPConfig
from nfcore.spec.result import SPPResult
from nfcore.spec.statistics import STATISTICS, Statistic, register_statistic

TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2, "device": "cpu"}


def negative_fraction(y: Tensor) -> Tensor:
    """The fraction of an output's values below zero (half, for a centered signal)."""
    return (y < 0).double().mean()


@pytest.fixture
def made_up() -> Iterator[Statistic]:
    row = Statistic("negative_fraction", "output", "negative_fraction", "Negative Fraction",
                    "the fraction of the block output's values below zero")  # fmt: skip
    stats.REDUCTIONS["negative_fraction"] = negative_fraction
    register_statistic(row)
    yield row
    STATISTICS.remove(row)
    del stats.REDUCTIONS["negative_fraction"]


def test_a_made_up_statistic_is_in_the_json_the_csv_and_the_figure(made_up: Statistic) -> None:
    result = run_spp(SPPConfig(**TINY))

    blocks = result.to_json_dict()["blocks"]
    assert all(0.2 < block["negative_fraction"] < 0.8 for block in blocks)
    again = SPPResult.model_validate(json.loads(json.dumps(result.to_json_dict())))
    assert [b.negative_fraction for b in again.blocks] == [b["negative_fraction"] for b in blocks]

    rows = list(csv.DictReader(io.StringIO(result.to_csv())))
    assert [float(row["negative_fraction"]) for row in rows] == [
        block["negative_fraction"] for block in blocks
    ]

    figure = spp_figure(result)
    titles = [annotation.text for annotation in figure.layout.annotations]
    assert "Negative Fraction" in titles
    curves = [trace for trace in figure.data if trace.mode == "lines" and trace.xaxis == "x4"]
    assert list(curves[0].y) == [block["negative_fraction"] for block in blocks]


def test_the_built_in_rows_are_the_papers_and_appendix_gs() -> None:
    keys = [row.key for row in STATISTICS]
    assert keys[:3] == ["avg_sq_channel_mean", "avg_channel_var", "residual_avg_channel_var"]
    assert [row.key for row in statistics.measured(False, False)] == keys[:3]
    assert {row.key for row in statistics.measured(True, True)} == set(keys)
    with pytest.raises(ValueError, match="exists already"):
        register_statistic(STATISTICS[0])


def test_an_unknown_reduction_is_named() -> None:
    with pytest.raises(KeyError, match="no reduction named kurtosis"):
        stats.channel_stats(torch.zeros(2, 2, 2, 2), {"kurtosis"})
