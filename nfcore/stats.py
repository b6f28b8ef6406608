"""The SPP statistics of Section 3 and Appendices F and G, accumulated in float64.

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
range (a finite signal above about 1e19) is recomputed in float64.
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


def _var_mean(chunk: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel population variance and mean of an N x C x H x W chunk, as float64."""
    if chunk.device.type == "cpu" and chunk.dtype == torch.float32:
        mean = chunk.mean(dim=(0, 2, 3), keepdim=True)
        var = (chunk - mean).square_().mean(dim=(0, 2, 3))
        if bool(torch.isfinite(var).all()):
            return var.double(), mean.flatten().double()
    var, mean = torch.var_mean(chunk.double(), dim=(0, 2, 3), correction=0)  # as np.var
    return var, mean


def _fast_cpu_stats(y: Tensor, variance_only: bool) -> dict[str, Tensor] | None:
    """The common case in few ops (each costs dispatch time next to a small conv): a float32
    CPU tensor small enough for one chunk. None when it does not apply or overflowed."""
    if y.device.type != "cpu" or y.dtype != torch.float32 or y.numel() > CPU_CHUNK_ELEMENTS:
        return None
    mean = y.mean(dim=(0, 2, 3), keepdim=True)
    avg_var = (y - mean).square_().mean(dim=(0, 2, 3)).mean()
    if variance_only:
        stats = {"avg_channel_var": avg_var.double()}
    else:
        stats = {
            "avg_sq_channel_mean": mean.square().mean().double(),
            "avg_channel_var": avg_var.double(),
        }
    return stats if all(math.isfinite(v) for v in map(float, stats.values())) else None


@torch.no_grad()
def channel_stats(y: Tensor, extra: bool = False, variance_only: bool = False) -> dict[str, Tensor]:
    """The statistics of `y` as float64 scalars (still on y's device).

    `variance_only` (the residual branch) computes avg_channel_var alone.
    """
    if not extra and (fast := _fast_cpu_stats(y, variance_only)) is not None:
        return fast
    means, variances = [], []
    pixel_sq = (
        torch.zeros((y.shape[0], *y.shape[2:]), dtype=torch.float64, device=y.device)
        if extra
        else None
    )
    elements = CPU_CHUNK_ELEMENTS if y.device.type == "cpu" else CHUNK_ELEMENTS
    for chunk in _channel_chunks(y, elements):
        var, mean = _var_mean(chunk)
        means.append(mean)
        variances.append(var)
        if pixel_sq is not None:
            pixel_sq += chunk.double().square().sum(dim=1)  # N,H,W
    channel_mean, channel_var = torch.cat(means), torch.cat(variances)
    stats = {
        "avg_sq_channel_mean": channel_mean.square().mean(),
        "avg_channel_var": channel_var.mean(),
    }
    if variance_only:
        return {"avg_channel_var": stats["avg_channel_var"]}
    if pixel_sq is not None:
        stats["activation_mean"] = channel_mean.mean()  # every channel has N*H*W elements
        stats["avg_pixel_norm"] = pixel_sq.sqrt().mean()
    return stats
