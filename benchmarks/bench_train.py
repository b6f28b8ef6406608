"""Training speed of NF-ResNets next to BN-ResNets (the paper's Table 4 analogue), side by side.

    .venv/bin/python -m benchmarks.bench_train [--quick] [--device cpu|cuda]

One training step = forward in train mode, cross-entropy on random labels, backward, SGD with
Nesterov momentum 0.9. The NF and BN twins of each size alternate step by step, so load drifts
hit both; the figure is the ratio of their median steps per second.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks._report import Figure, format_table, time_side_by_side

SPEED_LIMIT = 1.0  # target 4: NF steps/s over BN steps/s, at least
SIZES = [(16, 64), (32, 64), (16, 128), (32, 128)]  # (batch, pixels)
QUICK_SIZES = [(16, 64)]


def _trainer(fields: dict, batch: int, resolution: int, device: str) -> Callable[[], None]:
    """One SGD step of a fresh model on a fixed random batch."""
    import torch
    import torch.nn.functional as F

    from nfcore.config import ModelConfig
    from nfcore.models import build_model

    model = build_model(ModelConfig(**fields), seed=0).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9, nesterov=True)
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(batch, 3, resolution, resolution, generator=generator).to(device)
    labels = torch.randint(model.fc.out_features, (batch,), generator=generator).to(device)

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()

    return step


def run(quick: bool, device: str) -> list[Figure]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    figures = []
    for batch, resolution in QUICK_SIZES if quick else SIZES:
        nf = _trainer({"depth": 50, "norm": "nf", "width": 0.25}, batch, resolution, device)
        bn = _trainer({"depth": 50, "norm": "bn", "width": 0.25}, batch, resolution, device)
        times = time_side_by_side({"nf": nf, "bn": bn}, 3 if quick else 9, warmup=2, sync=sync)
        ratio = times["bn"] / times["nf"]  # steps/s NF over steps/s BN
        figures.append(Figure(
            "4", f"train steps/s NF / BN, ResNet-50 w0.25 N{batch} {resolution}px",
            f"{ratio:.2f}", f">= {SPEED_LIMIT}", ratio >= SPEED_LIMIT,
            f"{1 / times['nf']:.2f} / {1 / times['bn']:.2f} steps/s",
        ))  # fmt: skip
    figures.append(Figure(
        "4", "train steps/s NF-RegNet-B0 / BN twin", "-", f">= {SPEED_LIMIT}", None,
        "not available: nfcore has no BN NF-RegNet (nf_regnet allows norm 'nf' only)",
    ))  # fmt: skip
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    print(format_table(run(args.quick, args.device)))


if __name__ == "__main__":
    main()
