"""One number per SPP: what a sweep's phase diagram colours each point by.

A summary is a row of data, like a statistic (`nfcore.spec.statistics`): its key (in URLs and
CSV columns), its title, what it says in the paper's terms, and the reduction over a
result's blocks. Torch-free and pure: a reduction reads the result JSON the API returns
(`SPPResult.to_json_dict()`), where a value that overflowed float32 is null.

A reduction gives an `Outcome`: a value, or none with a short `tag` saying why ("overflow",
"never"), and a `note`, a sentence for hover texts and CSVs.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

Block = Mapping[str, Any]

# A signal "well propagated" keeps its variance within a factor 2 of the unit variance of the
# Gaussian input (Section 3: BN-ReLU-Conv and NF networks stay near 1, unnormalized ones grow
# or vanish exponentially with depth).
VARIANCE_RANGE = (0.5, 2.0)


@dataclass(frozen=True)
class Outcome:
    """A summary of one SPP: `value`, or None with a `tag` (a word fit for a heatmap cell)."""

    value: float | None
    tag: str = ""
    note: str = ""  # why there is no value, or what the value leaves out


@dataclass(frozen=True)
class Summary:
    key: str
    title: str  # the menu's entry and the colour bar's title
    description: str  # what it is, in the paper's terms
    reduce: Callable[[Sequence[Block]], Outcome]
    decades: bool = True  # may be coloured on a log scale (a block index may not)


def _overflow(blocks: Sequence[Block], key: str) -> int | None:
    """The index of the first block whose `key` overflowed (null in the JSON), if any."""
    return next((int(b["index"]) for b in blocks if b.get(key) is None), None)


def _overflowed(index: int | None) -> Outcome:
    return Outcome(None, "overflow", f"the signal overflowed float32 from block {index} on")


def final_variance(blocks: Sequence[Block]) -> Outcome:
    """The average channel variance of the last block's output: how far the signal has
    grown (or shrunk) by the end of the network."""
    value = blocks[-1].get("avg_channel_var")
    if value is None:
        return _overflowed(_overflow(blocks, "avg_channel_var"))
    return Outcome(float(value))


def max_mean_ratio(blocks: Sequence[Block]) -> Outcome:
    """The largest ratio of the average squared channel mean to the average channel variance
    over the blocks: a mean shift (Section 4.1) makes it grow with depth."""
    ratios = [
        float(b["avg_sq_channel_mean"]) / float(b["avg_channel_var"])
        for b in blocks
        if b.get("avg_sq_channel_mean") is not None and b.get("avg_channel_var")
    ]
    first_overflow = _overflow(blocks, "avg_channel_var")
    if not ratios:
        if first_overflow is not None:
            return _overflowed(first_overflow)
        return Outcome(None, "n/a", "no block has a positive variance")
    if first_overflow is not None:
        note = f"over the blocks before the overflow at block {first_overflow}"
        return Outcome(max(ratios), note=note)
    return Outcome(max(ratios))


def last_stage_residual_variance(blocks: Sequence[Block]) -> Outcome:
    """The residual branch's average channel variance f(x), averaged over the blocks of the
    last stage: Scaled WS keeps it near 1 (Section 4.2); He init and mean shifts do not."""
    last_stage = max(int(b["stage"]) for b in blocks)
    values = [b.get("residual_avg_channel_var") for b in blocks if int(b["stage"]) == last_stage]
    if any(value is None for value in values):
        return _overflowed(_overflow(blocks, "residual_avg_channel_var"))
    return Outcome(sum(float(v) for v in values) / len(values))


def block_leaving_range(blocks: Sequence[Block]) -> Outcome:
    """The index (0-based, as in the result and its CSV) of the first block whose output
    variance is outside VARIANCE_RANGE; none when the signal stays within it throughout."""
    low, high = VARIANCE_RANGE
    for block in blocks:
        value = block.get("avg_channel_var")
        if value is None or not low <= float(value) <= high:
            return Outcome(int(block["index"]))
    return Outcome(None, "never", f"the variance stays within [{low:g}, {high:g}] in every block")


SUMMARIES: list[Summary] = [
    Summary("final_var", "Final-block variance",
            "Average channel variance of the last block's output.", final_variance),
    Summary("max_mean_ratio", "Max squared mean / variance",
            "Largest ratio of the squared channel mean to the channel variance over the blocks "
            "(a mean shift, Section 4.1).", max_mean_ratio),
    Summary("last_stage_residual_var", "Residual variance, last stage",
            "Residual branch's average channel variance, averaged over the last stage's blocks.",
            last_stage_residual_variance),
    Summary("leaves_range", "Block leaving [0.5, 2]",
            "First block whose output variance is below 0.5 or above 2 (0-based index).",
            block_leaving_range, decades=False),
]  # fmt: skip
DEFAULT_SUMMARY = "final_var"


def summary(key: str) -> Summary:
    """The row of `key`; a KeyError names the known ones."""
    for row in SUMMARIES:
        if row.key == key:
            return row
    known = ", ".join(row.key for row in SUMMARIES)
    raise KeyError(f"no summary statistic {key!r} (choose {known})")


def summarize(result: Mapping[str, Any], key: str) -> Outcome:
    """The summary `key` of one SPP result (the API's JSON)."""
    row = summary(key)
    blocks = result.get("blocks") if isinstance(result, Mapping) else None
    if not blocks:
        return Outcome(None, "n/a", "the result has no blocks")
    return row.reduce(blocks)
