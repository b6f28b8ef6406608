"""The normalizations as rows of data: what the config, the plan, the cost model, the CLI, the
API schema and the dashboard read about a norm, instead of comparing its name.

Torch-free (the API validates configs with it). A row says how a norm is named (in model
names, menus and messages), what it defaults or refuses (its conv, NF's alpha, SkipInit),
whether it depends on batch statistics (then a batch must give it at least two values per
channel), and which parts the plan (`nfcore.spec.plan`) gives every network with it: BatchNorm
layers, FixUp's scalar biases and rescaled initialization, or g alone; and whether its blocks
carry the Normalizer-Free alpha and beta (Section 4.5). A norm of one's own made of these
parts is one more row (`register_norm`); a family offers it by naming it in its `norms`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Parts = Literal["batchnorm", "fixup", "none"]
"""What the plan puts around every g and conv: batchnorm: a BatchNorm before g (or after, in
ReLU-BN-Conv), after each conv of a post-activation branch and shortcut, in the stem and the
head; fixup: FixUp's scalar biases before every conv and g, its scalar multiplier at the end
of a branch, He init rescaled by L^(-1/4) with the last conv zero (Zhang et al., 2019), and
ResNetV1's reference FixUp block; none: g alone."""


@dataclass(frozen=True)
class NormRow:
    name: str  # the config's `norm`
    prefix: str  # in model names: 'NF-ResNetV2-50', 'BN-RegNet-B0'
    title: str  # the dashboard's menu entry, and what messages call it: 'BatchNorm'
    parts: Parts = "none"
    # Conv choices; the first is the default. `conv_reason` says why the others do not apply.
    convs: tuple[str, ...] = ("he", "ws")
    conv_reason: str = ""
    # Normalizer-Free scaling (Section 4.5): the default alpha, None where blocks are not
    # scaled (alpha = beta = 1, no alpha field and no expected variance).
    alpha: float | None = None
    skipinit: bool = True  # SkipInit applies (else it is always off)
    batch_statistics: bool = False  # needs two or more values per channel (batch checks)

    @property
    def scaled(self) -> bool:
        """Its blocks compute x + alpha f(x / beta) with the expected variance (NF)."""
        return self.alpha is not None


NORMS: dict[str, NormRow] = {}


def register_norm(row: NormRow) -> NormRow:
    """Add a norm (a name not taken); a family that lists it validates, plans, builds, is
    costed and measured with it like with the others."""
    if row.name in NORMS:
        raise ValueError(f"a norm {row.name!r} exists already")
    if not row.convs or any(conv not in ("ws", "he") for conv in row.convs):
        raise ValueError(f"norm {row.name!r}: convs must name 'ws' and/or 'he'")
    NORMS[row.name] = row
    return row


def norm(name: str) -> NormRow:
    """The row of a norm, or a ValueError naming the norms there are."""
    try:
        return NORMS[name]
    except KeyError:
        raise ValueError(
            f"{name!r} is not a norm; choose {', '.join(repr(n) for n in NORMS)}"
        ) from None


register_norm(
    NormRow("bn", "BN", "BatchNorm", parts="batchnorm", batch_statistics=True)
)  # fmt: skip
register_norm(
    # Section 4: Scaled WS by default, x_{l+1} = x_l + alpha f(x_l / beta_l) with alpha 0.2.
    NormRow("nf", "NF", "Normalizer-Free", convs=("ws", "he"), alpha=0.2)
)  # fmt: skip
register_norm(NormRow("none", "Unnormalized", "None"))
register_norm(
    # FixUp's init is part of the method: Scaled WS would undo its rescaled branch convs.
    NormRow("fixup", "FixUp", "FixUp", parts="fixup", convs=("he",),
            conv_reason="which has its own initialization", skipinit=False)
)  # fmt: skip
