"""The statistics an SPP measures, as a table: a new statistic is one row and one reduction.

Torch-free, so the result schema, the CSV, the plots, the API and the dashboard can read it.
Each row says where in a block the statistic is taken (`tap`), which reduction of that
tensor gives it (`reduction`, a name in `nfcore.engine.stats.REDUCTIONS`), when it is measured, and
how it is drawn. The engine (`nfcore.engine.spp`) measures a run's rows, the result keeps them in
this order, the CSV's columns follow it and the figure draws one panel per drawn row.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

Tap = Literal["output", "residual", "grad_output", "grad_residual"]
"""Where a statistic is taken: the block's output x_{l+1}, its residual branch f(x) (before
alpha and SkipInit), or dLoss/d of either on the backward pass."""

When = Literal["always", "extra_stats", "gradients"]
"""When a run measures it: every run, with `extra_stats` (Appendix G), or with `gradients`."""


@dataclass(frozen=True)
class Statistic:
    key: str  # the key in a result's blocks and the CSV's column
    tap: Tap
    reduction: str  # a reduction of `nfcore.engine.stats.REDUCTIONS`
    title: str  # the panel's title
    description: str  # what it is, in the paper's terms
    when: When = "always"
    drawn: bool = True  # a panel of the SPP figure by default
    log_axis: bool = False  # drawn on a log scale (gradients are tiny)
    short_title: str = ""  # the panel's title on a narrow screen (default: `title`)

    @property
    def short(self) -> str:
        return self.short_title or self.title


STATISTICS: list[Statistic] = [
    # Section 3, the paper's three panels.
    Statistic("avg_sq_channel_mean", "output", "sq_channel_mean", "Average Channel Squared Mean",
              "mean_C (mean_NHW x)^2: a mean shift shows here (Section 4.1).",
              short_title="Squared mean"),
    Statistic("avg_channel_var", "output", "channel_var", "Average Channel Variance",
              "mean_C var_NHW x: signal explosion or attenuation.", short_title="Variance"),
    Statistic("residual_avg_channel_var", "residual", "channel_var",
              "Residual Average Channel Variance",
              "mean_C var_NHW f(x), before alpha and any SkipInit gain.",
              short_title="Residual variance"),
    # Appendix G.
    Statistic("activation_mean", "output", "mean", "Activation Mean", "mean of x (Appendix G.2).",
              when="extra_stats", drawn=False, short_title="Mean"),
    Statistic("avg_pixel_norm", "output", "pixel_norm", "Average Pixel Norm",
              "mean_NHW ||x[n, :, h, w]||_2 (Appendix G.2).", when="extra_stats", drawn=False,
              short_title="Pixel norm"),
    # The backward pass of a cross-entropy loss: a second row of panels.
    Statistic("grad_avg_sq_channel_mean", "grad_output", "sq_channel_mean",
              "Gradient Average Channel Squared Mean", "mean_C (mean_NHW dL/dx)^2.",
              when="gradients", log_axis=True, short_title="Gradient squared mean"),
    Statistic("grad_avg_channel_var", "grad_output", "channel_var",
              "Gradient Average Channel Variance", "mean_C var_NHW dL/dx.", when="gradients",
              log_axis=True, short_title="Gradient variance"),
    Statistic("grad_residual_avg_channel_var", "grad_residual", "channel_var",
              "Gradient Residual Average Channel Variance",
              "mean_C var_NHW of dLoss/df(x), at the same place as the residual.",
              when="gradients", log_axis=True, short_title="Gradient residual variance"),
]  # fmt: skip


def register_statistic(statistic: Statistic) -> None:
    """Add a row (its reduction goes into `nfcore.engine.stats.REDUCTIONS` under the same name)."""
    if any(row.key == statistic.key for row in STATISTICS):
        raise ValueError(f"a statistic {statistic.key!r} exists already")
    STATISTICS.append(statistic)


def measured(extra_stats: bool, gradients: bool) -> list[Statistic]:
    """The rows a run with these switches measures, in table order."""
    wanted = {
        "always",
        *(["extra_stats"] if extra_stats else []),
        *(["gradients"] if gradients else []),
    }
    return [row for row in STATISTICS if row.when in wanted]


def statistic(key: str) -> Statistic:
    return next(row for row in STATISTICS if row.key == key)


def default_panels(extra_stats: bool, gradients: bool) -> tuple[str, ...]:
    """The keys a figure draws unless told otherwise: the measured rows that are `drawn`
    (the paper's three, and the gradient row when gradients are measured)."""
    return tuple(row.key for row in measured(extra_stats, gradients) if row.drawn)


def panel_keys(keys: Iterable[str]) -> tuple[str, ...]:
    """Statistic keys chosen as panels, in table order (the paper's panel order) and once
    each; ValueError naming an unknown key and the known ones."""
    chosen = set(keys)
    known = [row.key for row in STATISTICS]
    unknown = sorted(chosen - set(known))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise ValueError(f"unknown statistic {names}; choose from {', '.join(known)}")
    return tuple(key for key in known if key in chosen)


def switches_for(keys: Iterable[str]) -> dict[str, bool]:
    """The config switches (`extra_stats`, `gradients`) that measuring `keys` needs."""
    needs = {statistic(key).when for key in keys}
    return {switch: True for switch in ("extra_stats", "gradients") if switch in needs}
