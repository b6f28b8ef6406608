"""The statistics of a foreign network's blocks, taken after the pass from tensors kept
during it (`nfcore.foreign.measure`, and the cached plan's hooks, `nfcore.foreign.plan`).

Why after: a block's tensor reduced as its call ends costs several times what it costs
after the pass (its dozen small operations run between the network's, with caches cold),
and where blocks are found by themselves, which calls are blocks and in which layout is
known only after the pass. So the tensors are kept, up to `KEPT_BYTES`; beyond that each is
reduced as its call ends (`kept` then says no).

How: N,C,H,W maps are reduced by `nfcore.engine.stats.channel_stats` one by one, bit for bit as the
built-in engine reduces them; any other layout (tokens N,L,C, N,H,W,C maps, N,C vectors,
N,C,L sequences) is seen as an M x C matrix (M = every position of every example), and the
matrices of one size are reduced together, stacked: a handful of operations for all the
blocks of a Transformer instead of a dozen per block. Both reduce float32 on the CPU in two
passes (the mean, then the mean square deviation) and take the mean over channels in
float64; on other devices and dtypes, float64 throughout.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import torch
from torch import Tensor

from nfcore.engine.stats import BUILT_IN, channel_stats
from nfcore.foreign.layouts import Layout

# The tensors kept whole during a pass, at most: 64 MiB holds every block output of a
# ResNet-50 at 64 px and batch 8 (about 15 MiB) and of a ViT-Ti at 224 px (about 7 MiB);
# past it, a large input's blocks are reduced as they end, where the time per block is the
# reduction's own and no longer the few operations' overhead.
KEPT_BYTES = 64 * 1024 * 1024
# Elements stacked into one batched reduction at most (a copy of them is made).
STACKED_ELEMENTS = 4 * 1024 * 1024
KEPT_TENSOR_BYTES = 256 * 1024
CHANGED = object()  # a kept tensor the network changed in place after its call ended


class Kept:
    """Tensors kept for reduction after the pass, with their version: an in-place change
    after the call ended (`x += ...` on a block's output) is seen, not measured."""

    def __init__(self, budget: int = KEPT_BYTES) -> None:
        self.budget, self.used = budget, 0
        self.tensors: dict[Hashable, tuple[Tensor, int]] = {}

    def keep(self, key: Hashable, tensor: Tensor) -> bool:
        """Keep `tensor` (torch functions off), or say it is over the budget."""
        size = tensor.numel() * tensor.element_size()
        if size > KEPT_TENSOR_BYTES or self.used + size > self.budget:
            return False
        self.used += size
        self.tensors[key] = (tensor.detach(), tensor._version)
        return True

    def get(self, key: Hashable) -> Any:
        """The tensor, CHANGED, or None (not kept)."""
        kept = self.tensors.get(key)
        if kept is None:
            return None
        return kept[0] if kept[0]._version == kept[1] else CHANGED

    def items(self) -> list[tuple[Hashable, Any]]:
        """Each key with its tensor, or CHANGED, in the order they were kept."""
        return [(key, self.get(key)) for key in self.tensors]

    def clear(self) -> None:
        self.tensors.clear()
        self.used = 0


Wanted = tuple[Hashable, Tensor, Layout, list[tuple[str, str]]]  # key, tensor, layout, rows


@torch.no_grad()
def reduce_all(wanted: list[Wanted]) -> list[tuple[Hashable, str, Tensor]]:
    """(key, row, 0-d tensor) for each tensor's rows [(row key, reduction)], each tensor
    reduced per channel in its layout."""
    out: list[tuple[Hashable, str, Tensor]] = []
    groups: dict[tuple[Any, ...], list[tuple[Hashable, Any, list[tuple[str, str]]]]] = {}
    for key, tensor, layout, rows in wanted:
        if not rows:
            continue
        reductions = {reduction for _, reduction in rows}
        if (
            (tensor.ndim == 4 and layout.axis == 1)
            or tensor.ndim != layout.ndim
            or (reductions - BUILT_IN)
        ):  # N,C,H,W as the built-in engine; a residual of another rank; a statistic added
            stats = channel_stats(layout.view()(tensor), reductions)
            out += [(key, row, stats[reduction]) for row, reduction in rows]
            continue
        matrix = _matrix(tensor, layout.axis)
        means, variances = _per_channel(matrix)
        groups.setdefault((matrix.shape[1], means.dtype, means.device), []).append(
            (key, (means, variances, matrix if "pixel_norm" in reductions else None), rows)
        )
    for members in groups.values():  # the means over channels: a few operations for all
        means = torch.stack([m for _, (m, _, _), _ in members]).double()  # B, C
        variances = torch.stack([v for _, (_, v, _), _ in members]).double()
        stats = {"channel_var": variances.mean(dim=1), "sq_channel_mean": means.square().mean(dim=1),
                 "mean": means.mean(dim=1)}  # fmt: skip
        for index, (key, (_, _, matrix), rows) in enumerate(members):
            for row, reduction in rows:
                if reduction == "pixel_norm":
                    value = matrix.double().square().sum(dim=1).sqrt().mean()
                else:
                    value = stats[reduction][index]
                out.append((key, row, value))
    return out


def _per_channel(y: Tensor) -> tuple[Tensor, Tensor]:
    """The mean and variance of each column of an M x C matrix: two passes in float32 on the
    CPU (as `channel_stats`), float64 elsewhere."""
    if y.device.type != "cpu" or y.dtype != torch.float32:
        variances, means = torch.var_mean(y.double(), dim=0, correction=0)
        return means, variances
    means = y.mean(dim=0)
    return means, (y - means).square_().mean(dim=0)


def _matrix(y: Tensor, axis: int) -> Tensor:
    """The tensor as M x C: its channels as columns, every other position a row."""
    y = y.detach()
    if axis == 1 and y.ndim > 2:
        y = y.movedim(1, -1)
    return y.reshape(-1, y.shape[-1])
