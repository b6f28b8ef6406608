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

from nfcore.engine.layers import ScaledWSConv2d

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


# --- target 3 of `python -m benchmarks`: a whole network, folded ------------------------------
FOLD_LIMIT = 1.05  # eval-mode NF-ResNet-50 / the same network with plain convs, at most


def fold_scaled_ws(model: nn.Module) -> nn.Module:
    """A copy of `model` whose ScaledWSConv2d layers are plain nn.Conv2d with W_hat baked in."""
    import copy

    folded = copy.deepcopy(model)
    for parent in folded.modules():
        for name, child in list(parent.named_children()):
            if not isinstance(child, ScaledWSConv2d):
                continue
            conv = nn.Conv2d(
                child.in_channels, child.out_channels, child.kernel_size, child.stride,
                child.padding, child.dilation, child.groups, bias=child.bias is not None,
            )  # fmt: skip
            with torch.no_grad():
                conv.weight.copy_(child.standardized_weight())
                if child.bias is not None:
                    conv.bias.copy_(child.bias)
            setattr(parent, name, conv.to(child.weight.device))
    return folded.eval()


def whole_network(quick: bool, device: str) -> list:
    """Target 3: eval-mode NF-ResNet-50 (cached W_hat) against its folded plain-conv copy."""
    return [_whole_network(width, quick, device) for width in ((0.25,) if quick else (0.25, 0.5))]


def _whole_network(width: float, quick: bool, device: str) -> object:
    from benchmarks._report import Figure, time_side_by_side
    from nfcore.engine.models import build_model
    from nfcore.spec.config import ModelConfig

    model = build_model(ModelConfig(depth=50, norm="nf", width=width), seed=0).to(device).eval()
    folded = fold_scaled_ws(model)
    x = torch.randn(8, 3, 64, 64, generator=torch.Generator().manual_seed(0)).to(device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    with torch.no_grad():
        gap = (model(x) - folded(x)).abs().max().item()
        times = time_side_by_side(
            {"ws": lambda: model(x), "folded": lambda: folded(x)},
            5 if quick else 15, warmup=2, sync=sync,
        )  # fmt: skip
    ratio = times["ws"] / times["folded"]
    return Figure(
        "3", f"eval fwd Scaled WS / folded conv, NF-ResNet-50 w{width} 64px N8",
        f"{ratio:.3f}", f"<= {FOLD_LIMIT}", ratio <= FOLD_LIMIT,
        f"{1e3 * times['ws']:.1f} / {1e3 * times['folded']:.1f} ms, max abs diff {gap:.1e}",
    )  # fmt: skip
