"""The SPP statistics of Section 3 and Appendices F and G.

For an N x C x H x W tensor y (the paper writes NHWC; the reductions are the same), the
built-in reductions, which `nfcore.spec.statistics` rows name:
  sq_channel_mean  mean_C (mean_NHW y)^2         np.mean(np.mean(y, axis=[0,1,2]) ** 2)
  channel_var      mean_C var_NHW y              np.mean(np.var(y, axis=[0,1,2]))
  mean             mean y                        (Appendix G.2)
  pixel_norm       mean_NHW ||y[n, :, h, w]||_2  (Appendix G.2)
Channels are processed in chunks so that the temporary copy stays small next to y itself.

On CUDA each chunk is cast to float64 and reduced by `torch.var_mean`. On the CPU a float32
chunk is reduced in two passes, the mean and then the mean of squared deviations (pairwise
summation; about 1e-7 relative to float64, checked by the tests): ATen's var_mean over N, H
and W of an NCHW tensor takes a strided path about three times slower, which made the
statistics cost more than the small convolutions of a 64 px SPP. A variance beyond float32's
range (a finite signal above about 1e19) is recomputed in float64. A tensor that fits one
chunk costs a handful of ops, each of which counts next to a small convolution.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import Tensor

# Elements of y copied at once (float64 on CUDA, centered float32 on the CPU): bounds the extra
# memory to 256 MiB on CUDA and 16 MiB on the CPU.
CHUNK_ELEMENTS = 32 * 1024 * 1024
CPU_CHUNK_ELEMENTS = 4 * 1024 * 1024


def _channel_chunks(y: Tensor, elements: int) -> list[Tensor]:
    per_channel = max(1, y[:, 0].numel())
    step = max(1, elements // per_channel)
    return [y[:, c : c + step] for c in range(0, y.shape[1], step)]


def _stats(y: Tensor, wanted: frozenset[str], exact: bool) -> dict[str, Tensor]:
    """The built-in reductions in `wanted` as float64 scalars; `exact`: reduce float64
    copies, else float32 in two passes (mean, then mean of squared deviations)."""
    means, variances = [], []
    pixel_sq = (
        torch.zeros((y.shape[0], *y.shape[2:]), dtype=torch.float64, device=y.device)
        if "pixel_norm" in wanted
        else None
    )
    for chunk in _channel_chunks(y, CHUNK_ELEMENTS if exact else CPU_CHUNK_ELEMENTS):
        # Per channel, shaped 1 x C x 1 x 1: chunks join on dim 1, no reshape in between.
        if exact:
            var, mean = torch.var_mean(chunk.double(), dim=(0, 2, 3), keepdim=True, correction=0)
        else:
            mean = chunk.mean(dim=(0, 2, 3), keepdim=True)
            var = (chunk - mean).square_().mean(dim=(0, 2, 3), keepdim=True)
        means.append(mean)
        variances.append(var)
        if pixel_sq is not None:
            pixel_sq += chunk.double().square().sum(dim=1)  # N,H,W
    channel_mean = means[0] if len(means) == 1 else torch.cat(means, dim=1)
    channel_var = variances[0] if len(variances) == 1 else torch.cat(variances, dim=1)
    stats = {}
    if "channel_var" in wanted:
        stats["channel_var"] = channel_var.mean().double()
    if "sq_channel_mean" in wanted:
        stats["sq_channel_mean"] = channel_mean.square().mean().double()
    if "mean" in wanted:
        stats["mean"] = channel_mean.mean().double()  # every channel has N*H*W
    if pixel_sq is not None:
        stats["pixel_norm"] = pixel_sq.sqrt().mean()
    return stats


BUILT_IN: frozenset[str] = frozenset({"channel_var", "sq_channel_mean", "mean", "pixel_norm"})
"""The reductions `channel_stats` computes together, in one pass over the tensor's chunks."""

REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {}
"""Reductions beyond the built-in ones, by the name a `nfcore.spec.statistics` row gives: a
function of the N x C x H x W tensor to a 0-d tensor (a new statistic's one reduction)."""


@torch.no_grad()
def channel_stats(y: Tensor, reductions: Iterable[str]) -> dict[str, Tensor]:
    """The named reductions of `y` as 0-d tensors on y's device (float64 for the built-ins)."""
    wanted = frozenset(reductions)
    unknown = wanted - BUILT_IN - REDUCTIONS.keys()
    if unknown:
        raise KeyError(f"no reduction named {', '.join(sorted(unknown))}")
    built_in = wanted & BUILT_IN
    exact = y.device.type != "cpu" or y.dtype != torch.float32
    stats = _stats(y, built_in, exact) if built_in else {}
    if built_in and not exact and not all(math.isfinite(float(v)) for v in stats.values()):
        stats = _stats(y, built_in, exact=True)  # beyond float32's range
    for name in wanted - BUILT_IN:
        stats[name] = REDUCTIONS[name](y)
    return stats
