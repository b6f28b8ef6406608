"""What an SPP run returns: per-block statistics, the config that made them, and run facts.

Torch-free: the API, the worker's cache and the dashboard read and write these. Non-finite
values (a signal that overflowed float32, Fig. 6) are stored as null so the JSON stays
valid; `meta.nonfinite_from_block` says where that began.
"""

from __future__ import annotations

import csv
import importlib
import io
import math
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from nfcore.spec.config import SPPConfig
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.statistics import measured

# Keys of every block besides its statistics (`nfcore.spec.statistics`), and where they stand.
PLACE_KEYS: tuple[str, ...] = ("index", "stage", "transition")
EXPECTED_KEY = "expected_var"  # the analytic beta^2, after the statistics every run measures


NAME_KEY = "name"  # a foreign network's block: its module name, after its place
FOREIGN_META_KEYS = ("reduced_over", "layout", "notes")  # what only a foreign network's meta has


def block_keys(extra_stats: bool, gradients: bool, named: bool = False) -> tuple[str, ...]:
    """The keys of a block, in JSON and CSV column order: its place (and, for a foreign
    network, its module name), the statistics every run measures, the expected variance, then
    those of Appendix G and of the backward pass."""
    rows = measured(extra_stats, gradients)
    always = tuple(row.key for row in rows if row.when == "always")
    optional = tuple(row.key for row in rows if row.when != "always")
    place = (*PLACE_KEYS, NAME_KEY) if named else PLACE_KEYS
    return (*place, *always, EXPECTED_KEY, *optional)


class BlockStats(BaseModel):
    """Statistics of one residual block's output x_{l+1} and its residual branch f(x).

    The fields are the built-in rows of `nfcore.spec.statistics`; a statistic registered there
    later is kept as an extra field of the same name."""

    model_config = ConfigDict(extra="allow")

    index: int = Field(description="Block index, 0-based, in forward order.")
    stage: int = Field(description="Stage the block belongs to, 0-based.")
    transition: bool = Field(
        description="First block of a stage: a shortcut convolution (in a foreign network, "
        "an output shape other than the input's)."
    )
    name: str | None = Field(None, description="A foreign network's block: its module name.")
    avg_sq_channel_mean: float | None = Field(description="mean_C (mean_NHW x)^2.")
    avg_channel_var: float | None = Field(description="mean_C var_NHW x.")
    residual_avg_channel_var: float | None = Field(
        description="mean_C var_NHW f(x), before alpha and any SkipInit gain."
    )
    expected_var: float | None = Field(description="Analytic Var(x_{l+1}) of NF models (beta^2).")
    activation_mean: float | None = None
    avg_pixel_norm: float | None = None
    grad_avg_sq_channel_mean: float | None = None
    grad_avg_channel_var: float | None = None
    grad_residual_avg_channel_var: float | None = Field(
        None, description="mean_C var_NHW of dLoss/df(x), at the same place as the residual."
    )


class SPPMeta(BaseModel):
    version: str
    torch_version: str
    device: str
    seconds: float
    parameter_count: int
    gamma: float | None = Field(description="The Scaled WS gain used (resolved when 'auto').")
    model: str = Field(description="Human-readable model name.")
    num_blocks: int
    stage_ends: list[int] = Field(description="Block index of the last block of each stage.")
    nonfinite_from_block: int | None = Field(
        None, description="First block whose statistics overflowed float32 (null when none)."
    )
    reduced_over: str | None = Field(
        None,
        description="A foreign network's statistics: the axes each channel's statistics were "
        "taken over, e.g. 'N,H,W' or 'N,L' (null: N,H,W of image tensors).",
    )
    layout: str | None = Field(
        None,
        description="A foreign network's block tensors: NCHW, NHWC, NCL, NLC (tokens) or NC "
        "(vectors), joined by '+' in block order where they differ (NCHW+NLC); the first of "
        "`notes` says why (null: NCHW of nfcore's networks).",
    )
    notes: list[str] | None = Field(
        None,
        description="Sentences a user must see about choices made on a foreign network (its "
        "layout and why, how its blocks were found, tied blocks); null for nfcore's networks.",
    )


class SPPResult(BaseModel):
    config: SPPConfig | ForeignConfig  # a network of nfcore's, or one of the user's own
    blocks: list[BlockStats]
    meta: SPPMeta

    @property
    def foreign(self) -> bool:
        return isinstance(self.config, ForeignConfig)

    def block_keys(self) -> tuple[str, ...]:
        """The keys this run's blocks carry, in column order."""
        return block_keys(self.config.extra_stats, self.config.gradients, named=self.foreign)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented JSON: every block carries exactly the keys that were asked for."""
        keys = self.block_keys()
        meta = self.meta.model_dump(mode="json")
        if not self.foreign:  # NCHW images, blocks by plan: the built-in networks' JSON as before
            for key in FOREIGN_META_KEYS:
                meta.pop(key)
        return {
            "config": self.config.model_dump(mode="json"),
            "blocks": [{k: getattr(b, k, None) for k in keys} for b in self.blocks],
            "meta": meta,
        }

    def to_csv(self) -> str:
        """One row per block, the same keys as the JSON blocks."""
        keys = self.block_keys()
        out = io.StringIO()
        writer = csv.DictWriter(out, fieldnames=list(keys), lineterminator="\n")
        writer.writeheader()
        for block in self.blocks:
            values = {k: getattr(block, k, None) for k in keys}
            writer.writerow({k: "" if v is None else v for k, v in values.items()})
        return out.getvalue()

    def to_pandas(self) -> Any:
        """A long pandas DataFrame: one row per block and statistic, with the block's index,
        name (a foreign network's module; else "block <index>"), stage, depth as a fraction of
        the network ((index + 1) / blocks: the last block is 1.0, so networks of different
        depth line up) and the model's label. Needs pandas (`pip install pandas`)."""
        try:
            pandas = importlib.import_module("pandas")
        except ImportError:
            raise ImportError("SPPResult.to_pandas needs pandas: pip install pandas") from None
        place = (*PLACE_KEYS, NAME_KEY)
        statistics = [key for key in self.block_keys() if key not in place]
        count = len(self.blocks)
        rows = [
            {"model": self.meta.model, "block": block.index,
             "name": block.name or f"block {block.index}", "stage": block.stage,
             "depth": (block.index + 1) / count, "statistic": key,
             "value": getattr(block, key, None)}
            for block in self.blocks for key in statistics
        ]  # fmt: skip
        columns = ["model", "block", "name", "stage", "depth", "statistic", "value"]
        return pandas.DataFrame(rows, columns=columns)

    def figure(self, *others: SPPResult, **options: Any) -> Any:
        """This run's Signal Propagation Plot, with `others` overlaid: the Plotly figure the
        dashboard draws (`nfcore.plots.spp.spp_figure`; `options` are its keywords)."""
        # By name, at call time: the spec layer sits under the plots (import-linter forbids a
        # static import of them here) and stays importable without Plotly; drawing is asked for.
        plots = importlib.import_module("nfcore.plots.spp")
        return plots.spp_figure([self, *others], **options)

    def _repr_html_(self) -> str:
        """Jupyter's rich display: the figure (plotly.js from its CDN, as Plotly's notebook
        output does when not embedded)."""
        html: str = self.figure().to_html(full_html=False, include_plotlyjs="cdn")
        return html


def finite_or_none(value: float) -> float | None:
    """The value, or None (JSON null) for NaN and Inf."""
    return value if math.isfinite(value) else None
