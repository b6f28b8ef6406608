"""The SPP statistics of Section 3 and Appendices F and G.

For an N x C x H x W tensor y (the paper writes NHWC; the reductions are the same):
  avg_sq_channel_mean = mean_C (mean_NHW y)^2         np.mean(np.mean(y, axis=[0,1,2]) ** 2)
  avg_channel_var     = mean_C var_NHW y              np.mean(np.var(y, axis=[0,1,2]))
  activation_mean     = mean y                        (Appendix G.2)
  avg_pixel_norm      = mean_NHW ||y[n, :, h, w]||_2  (Appendix G.2)
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


def _stats(y: Tensor, extra: bool, variance_only: bool, exact: bool) -> dict[str, Tensor]:
    """The statistics as float64 scalars; `exact`: reduce float64 copies, else float32 in two
    passes (mean, then mean of squared deviations)."""
    means, variances = [], []
    pixel_sq = (
        torch.zeros((y.shape[0], *y.shape[2:]), dtype=torch.float64, device=y.device)
        if extra
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
    stats = {"avg_channel_var": channel_var.mean().double()}
    if not variance_only:
        stats["avg_sq_channel_mean"] = channel_mean.square().mean().double()
    if pixel_sq is not None:
        stats["activation_mean"] = channel_mean.mean().double()  # every channel has N*H*W
        stats["avg_pixel_norm"] = pixel_sq.sqrt().mean()
    return stats


@torch.no_grad()
def channel_stats(y: Tensor, extra: bool = False, variance_only: bool = False) -> dict[str, Tensor]:
    """The statistics of `y` as float64 scalars (still on y's device).

    `variance_only` (the residual branch) computes avg_channel_var alone.
    """
    exact = y.device.type != "cpu" or y.dtype != torch.float32
    stats = _stats(y, extra, variance_only, exact)
    if not exact and not all(math.isfinite(float(v)) for v in stats.values()):
        stats = _stats(y, extra, variance_only, exact=True)  # beyond float32's range
    return stats
