"""Scaled WS is "free at inference" (Section 4.2): its cached eval path against a plain conv.

    .venv/bin/python benchmarks/bench_scaled_ws.py

Times one forward of a stack of 3x3 convolutions, side by side in one run:
  plain      nn.Conv2d, the floor;
  ws eval    ScaledWSConv2d in eval mode under no_grad: standardizes once, then reuses;
  ws train   ScaledWSConv2d re-standardizing every call (train mode, grad enabled),
and prints each as a ratio to `plain`. Small spatial sizes make the weight's share of the
work largest, which is where caching matters most.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from nfcore.layers import ScaledWSConv2d

SHAPES = [  # (channels, spatial size, batch)
    (256, 8, 1),
    (512, 4, 1),
    (64, 32, 8),
]


def _time(module: nn.Module, x: torch.Tensor, repeats: int = 50) -> float:
    for _ in range(5):  # warm-up: oneDNN primitives, allocator
        module(x)
    start = time.perf_counter()
    for _ in range(repeats):
        module(x)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    torch.manual_seed(0)
    print(f"{'channels x px x N':<20} {'plain ms':>9} {'ws eval x':>10} {'ws train x':>11}")
    for channels, size, batch in SHAPES:
        plain = nn.Sequential(*[nn.Conv2d(channels, channels, 3, padding=1) for _ in range(4)])
        ws = nn.Sequential(*[ScaledWSConv2d(channels, channels, 3, padding=1) for _ in range(4)])
        x = torch.randn(batch, channels, size, size)
        with torch.no_grad():
            t_plain = _time(plain, x)
            ws.eval()
            t_eval = _time(ws, x)
        ws.train()
        with torch.enable_grad():
            t_train = _time(ws, x)
        label = f"{channels} x {size} x {batch}"
        print(
            f"{label:<20} {t_plain * 1e3:>9.3f} {t_eval / t_plain:>10.2f} {t_train / t_plain:>11.2f}"
        )


if __name__ == "__main__":
    main()
