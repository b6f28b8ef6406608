"""The summaries of a sweep's phase diagram, on hand-made SPP results (the API's JSON)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from nfcore.spec.result import block_keys
from nfcore.spec.summaries import SUMMARIES, VARIANCE_RANGE, Outcome, summarize, summary


def result(
    variances: list[float | None],
    *,
    means: list[float | None] | None = None,
    residuals: list[float | None] | None = None,
    stages: list[int] | None = None,
) -> dict[str, Any]:
    """A result JSON with these per-block statistics (null: overflowed float32)."""
    count = len(variances)
    means = means or [0.0] * count
    residuals = residuals or [1.0] * count
    stages = stages or [0] * count
    blocks = [
        {"index": i, "stage": stages[i], "transition": i == 0 or stages[i] != stages[i - 1],
         "avg_sq_channel_mean": means[i], "avg_channel_var": variances[i],
         "residual_avg_channel_var": residuals[i], "expected_var": None}
        for i in range(count)
    ]  # fmt: skip
    assert set(blocks[0]) == set(block_keys(extra_stats=False, gradients=False))
    return {"config": {}, "blocks": blocks, "meta": {}}


def test_final_block_variance_is_the_last_blocks() -> None:
    assert summarize(result([1.0, 1.5, 3.25]), "final_var") == Outcome(3.25)


def test_an_overflow_has_no_value_and_says_where_it_began() -> None:
    outcome = summarize(result([1.0, 1e30, None, None]), "final_var")
    assert outcome.value is None
    assert outcome.tag == "overflow"
    assert "from block 2" in outcome.note


def test_an_overflow_in_the_first_block_is_named_block_0() -> None:
    outcome = summarize(result([None, None]), "final_var")
    assert "from block 0" in outcome.note


def test_max_mean_ratio_is_the_largest_ratio_over_the_blocks() -> None:
    # Ratios 0.1, 0.5, 0.25: the middle block's.
    outcome = summarize(result([1.0, 2.0, 4.0], means=[0.1, 1.0, 1.0]), "max_mean_ratio")
    assert outcome.value == pytest.approx(0.5)
    assert outcome.note == ""


def test_max_mean_ratio_after_an_overflow_covers_the_blocks_before_it() -> None:
    outcome = summarize(result([1.0, 2.0, None], means=[0.5, 0.2, None]), "max_mean_ratio")
    assert outcome.value == pytest.approx(0.5)
    assert "before the overflow at block 2" in outcome.note


def test_max_mean_ratio_skips_a_block_of_zero_variance() -> None:
    outcome = summarize(result([0.0, 2.0], means=[0.0, 1.0]), "max_mean_ratio")
    assert outcome.value == pytest.approx(0.5)
    assert summarize(result([0.0], means=[0.0]), "max_mean_ratio").tag == "n/a"


def test_residual_variance_averages_the_last_stage_only() -> None:
    outcome = summarize(
        result([1.0] * 5, residuals=[9.0, 9.0, 0.5, 1.0, 1.5], stages=[0, 0, 1, 1, 1]),
        "last_stage_residual_var",
    )
    assert outcome.value == pytest.approx(1.0)


def test_residual_overflow_in_the_last_stage_has_no_value() -> None:
    outcome = summarize(
        result([1.0] * 3, residuals=[1.0, 2.0, None], stages=[0, 1, 1]),
        "last_stage_residual_var",
    )
    assert (outcome.value, outcome.tag) == (None, "overflow")


@pytest.mark.parametrize(
    ("variances", "index"),
    [
        ([1.0, 1.9, 2.1, 1.0], 2),  # grows past 2 at block 2
        ([1.0, 0.6, 0.4], 2),  # falls under 0.5
        ([3.0, 1.0], 0),  # outside from the start
        ([1.0, None], 1),  # an overflow has left the range
        ([0.5, 2.0], None),  # the bounds are inside
    ],
)
def test_block_leaving_the_range(variances: list[float | None], index: int | None) -> None:
    outcome = summarize(result(variances), "leaves_range")
    assert outcome.value == index
    if index is None:
        low, high = VARIANCE_RANGE
        assert outcome.tag == "never"
        assert f"[{low:g}, {high:g}]" in outcome.note


def test_a_block_index_is_never_coloured_in_decades() -> None:
    assert not summary("leaves_range").decades
    assert all(row.decades for row in SUMMARIES if row.key != "leaves_range")


def test_unknown_summary_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match="final_var, max_mean_ratio"):
        summary("colour")


def test_a_result_without_blocks_has_no_value() -> None:
    for row in SUMMARIES:
        assert summarize({"blocks": []}, row.key) == Outcome(
            None, "n/a", "the result has no blocks"
        )


def test_summaries_load_no_torch() -> None:
    """The dashboard, which never loads torch, summarizes results with this module."""
    code = "import sys, nfcore.spec.summaries; assert 'torch' not in sys.modules, 'torch loaded'"
    subprocess.run([sys.executable, "-c", code], check=True)
