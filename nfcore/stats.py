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


@torch.no_grad()
def channel_stats(y: Tensor, extra: bool = False) -> dict[str, Tensor]:
    """The statistics of `y` as float64 scalars (still on y's device)."""
    channels = y.shape[1]
    sq_mean_sum = torch.zeros((), dtype=torch.float64, device=y.device)
    var_sum = torch.zeros_like(sq_mean_sum)
    mean_sum = torch.zeros_like(sq_mean_sum)
    pixel_sq = (
        torch.zeros((y.shape[0], *y.shape[2:]), dtype=torch.float64, device=y.device)
        if extra
        else None
    )
    for chunk in _channel_chunks(y):
        chunk = chunk.double()
        mean = chunk.mean(dim=(0, 2, 3), keepdim=True)  # 1,c,1,1
        var = (chunk - mean).square().mean(dim=(0, 2, 3))  # population variance, as np.var
        sq_mean_sum += mean.square().sum()
        var_sum += var.sum()
        mean_sum += mean.sum()
        if pixel_sq is not None:
            pixel_sq += chunk.square().sum(dim=1)  # N,H,W
    stats = {
        "avg_sq_channel_mean": sq_mean_sum / channels,
        "avg_channel_var": var_sum / channels,
    }
    if pixel_sq is not None:
        stats["activation_mean"] = mean_sum / channels  # every channel has N*H*W elements
        stats["avg_pixel_norm"] = pixel_sq.sqrt().mean()
    return stats
