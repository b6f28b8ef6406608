"""Training speed of NF networks next to their BN twins (the paper's Tables 4 and 5), side by side.

    .venv/bin/python -m benchmarks.bench_train [--quick] [--device cpu|cuda]

Two pairs: NF-ResNet-50 / BN-ResNet-50 (Table 4; width 0.25), and NF-RegNet-B0 / its BN twin
(Table 5's point; full width): the same network with BN before every activation, plain S+E and
no SkipInit (`ModelConfig(family="nf_regnet", norm="bn")`). The paper's Table 5 compares with
BN EfficientNets instead, a different network; the twin isolates the cost of the normalization.

One training step = `nfcore.training.train.Trainer.step`, what a training job runs: forward in train
mode, label-smoothed cross-entropy on random labels, backward, gradient norm, SGD with Nesterov
momentum 0.9 and weight decay on weights only. The NF and BN twins of each size alternate step
by step, so load drifts hit both; the figure is the ratio of their median steps per second.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable

from benchmarks._report import Figure, format_table, time_side_by_side

SPEED_LIMIT = 1.0  # target 4: NF steps/s over BN steps/s, at least
SIZES = [(16, 64), (32, 64), (16, 128), (32, 128)]  # (batch, pixels)
QUICK_SIZES = [(16, 64)]
# The figure's name: (fields of the NF network, of its BN twin); each pair at the same width.
PAIRS: dict[str, tuple[dict, dict]] = {
    "NF / BN, ResNet-50 w0.25": (
        {"depth": 50, "norm": "nf", "width": 0.25},
        {"depth": 50, "norm": "bn", "width": 0.25},
    ),
    "NF-RegNet-B0 / BN twin": (
        {"family": "nf_regnet", "variant": "B0", "norm": "nf"},
        {"family": "nf_regnet", "variant": "B0", "norm": "bn"},
    ),
}


def _trainer(fields: dict, batch: int, resolution: int, device: str) -> Callable[[], None]:
    """One optimizer step of `nfcore.training.train` (the recipe a training job runs: Nesterov SGD,
    label smoothing, weight decay on weights only) on Gaussian images with random labels."""
    import torch

    from nfcore.spec.config import TrainConfig
    from nfcore.training.data import load_dataset
    from nfcore.training.train import Trainer

    config = TrainConfig(
        **fields, dataset="gaussian", batch=batch, resolution=resolution, steps=10**6
    )
    data = load_dataset("gaussian", resolution, seed=0)
    trainer = Trainer(config, None, torch.device(device), data)
    indices = torch.arange(batch)
    count = iter(range(1, 10**6))

    def step() -> None:
        trainer.step(next(count), indices)

    return step


def run(quick: bool, device: str) -> list[Figure]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    figures = []
    for name, (nf_fields, bn_fields) in PAIRS.items():
        for batch, resolution in QUICK_SIZES if quick else SIZES:
            nf = _trainer(nf_fields, batch, resolution, device)
            bn = _trainer(bn_fields, batch, resolution, device)
            times = time_side_by_side({"nf": nf, "bn": bn}, 3 if quick else 9, warmup=2, sync=sync)
            ratio = times["bn"] / times["nf"]  # steps/s NF over steps/s BN
            figures.append(Figure(
                "4", f"train steps/s {name} N{batch} {resolution}px",
                f"{ratio:.2f}", f">= {SPEED_LIMIT}", ratio >= SPEED_LIMIT,
                f"{1 / times['nf']:.2f} / {1 / times['bn']:.2f} steps/s",
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
