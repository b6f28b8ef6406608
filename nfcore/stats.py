"""The SPP statistics of Section 3 and Appendices F and G, accumulated in float64.

For an N x C x H x W tensor y (the paper writes NHWC; the reductions are the same):
  avg_sq_channel_mean = mean_C (mean_NHW y)^2         np.mean(np.mean(y, axis=[0,1,2]) ** 2)
  avg_channel_var     = mean_C var_NHW y              np.mean(np.var(y, axis=[0,1,2]))
  activation_mean     = mean y                        (Appendix G.2)
  avg_pixel_norm      = mean_NHW ||y[n, :, h, w]||_2  (Appendix G.2)
Channels are processed in chunks so that the float64 copy stays small next to y itself.
"""

from __future__ import annotations

import torch
from torch import Tensor

# Elements of y converted to float64 at once: bounds the extra memory to 256 MiB.
CHUNK_ELEMENTS = 32 * 1024 * 1024


def _channel_chunks(y: Tensor) -> list[Tensor]:
    per_channel = max(1, y[:, 0].numel())
    step = max(1, CHUNK_ELEMENTS // per_channel)
    return [y[:, c : c + step] for c in range(0, y.shape[1], step)]


def _work_dtype(y: Tensor) -> torch.dtype:
    # PyTorch's CPU reductions already accumulate float32 in float64 (ATen's acc_type), so on
    # the CPU a float32 view is reduced in float64 without a float64 copy; CUDA reductions
    # accumulate in float32, so there the chunk is cast to float64 first.
    return torch.float32 if y.device.type == "cpu" else torch.float64


@torch.no_grad()
def channel_stats(y: Tensor, extra: bool = False) -> dict[str, Tensor]:
    """The statistics of `y` as float64 scalars (still on y's device)."""
    dtype = _work_dtype(y)
    means, variances = [], []
    pixel_sq = (
        torch.zeros((y.shape[0], *y.shape[2:]), dtype=torch.float64, device=y.device)
        if extra
        else None
    )
    for chunk in _channel_chunks(y):
        var, mean = torch.var_mean(chunk.to(dtype), dim=(0, 2, 3), correction=0)  # as np.var
        if dtype != torch.float64 and not bool(torch.isfinite(var).all()):
            # A finite signal above ~1e19 has a variance beyond float32's range.
            var, mean = torch.var_mean(chunk.double(), dim=(0, 2, 3), correction=0)
        means.append(mean.double())
        variances.append(var.double())
        if pixel_sq is not None:
            pixel_sq += chunk.double().square().sum(dim=1)  # N,H,W
    channel_mean, channel_var = torch.cat(means), torch.cat(variances)
    stats = {
        "avg_sq_channel_mean": channel_mean.square().mean(),
        "avg_channel_var": channel_var.mean(),
    }
    if pixel_sq is not None:
        stats["activation_mean"] = channel_mean.mean()  # every channel has N*H*W elements
        stats["avg_pixel_norm"] = pixel_sq.sqrt().mean()
    return stats
