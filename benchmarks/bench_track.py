"""The cost of tracking SPPs while one's own network trains (issue 24), side by side.

    .venv/bin/python -m benchmarks.bench_track [--quick] [--device cpu|cuda]

A small ResNet written here (not nfcore's: a stem, BatchNorm residual blocks, a linear head)
trains with SGD and momentum on random images, in windows of `EVERY` steps. Two copies train
alternately, window by window: one plain, one with `nfcore.track(model, every=EVERY)`, which
measures once per window (the first measurement, which traces the network, falls in the
warm-up, as it falls once in a long run). The figure is the median tracked window's time
over the median plain one's: what `every=50` adds to a training run.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks._report import Figure, format_table, time_side_by_side

EVERY = 50  # the tracker's period, and the steps of one timed window
OVERHEAD_LIMIT = 1.05  # tracked window / plain window, at most
# (width, blocks, batch, pixels) of the network and its training batches.
SIZES = [(32, 4, 16, 32)]
QUICK_SIZES = [(16, 4, 16, 16)]


def _network(width: int, blocks: int):  # -> nn.Module (torch imported lazily)
    import torch.nn.functional as F
    from torch import nn

    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
            self.bn2 = nn.BatchNorm2d(width)

        def forward(self, x):
            residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
            return F.relu(x + residual)

    class SmallResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.stem = nn.Sequential(
                nn.Conv2d(3, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU()
            )
            self.blocks = nn.Sequential(*(Block() for _ in range(blocks)))
            self.head = nn.Linear(width, 10)

        def forward(self, x):
            return self.head(self.blocks(self.stem(x)).mean((2, 3)))

    return SmallResNet()


def _trainer(
    width: int, blocks: int, batch: int, pixels: int, device: str, out: Path | None
) -> tuple[Callable[[], None], Any]:
    """A window of EVERY training steps, and its tracker (with `out`: tracked into that file;
    else None)."""
    import torch
    import torch.nn.functional as F

    import nfcore

    torch.manual_seed(0)
    model = _network(width, blocks).to(device).train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, pixels, pixels, device=device)
    y = torch.randint(10, (batch,), device=device)
    tracker = None if out is None else nfcore.track(model, every=EVERY, out=out,
                                                    resolution=pixels, batch=8)  # fmt: skip
    count = iter(range(10**9))

    def window() -> None:
        for _ in range(EVERY):
            step = next(count)
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            if tracker is not None:
                tracker.step(step)

    return window, tracker


def run(quick: bool, device: str) -> list[Figure]:
    import torch

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    figures = []
    with tempfile.TemporaryDirectory() as folder:
        for width, blocks, batch, pixels in QUICK_SIZES if quick else SIZES:
            out = Path(folder) / f"spp-{width}-{blocks}.jsonl"
            plain, _ = _trainer(width, blocks, batch, pixels, device, None)
            tracked, tracker = _trainer(width, blocks, batch, pixels, device, out)
            times = time_side_by_side({"plain": plain, "tracked": tracked},
                                      3 if quick else 5, warmup=1, sync=sync)  # fmt: skip
            tracker.close()
            ratio = times["tracked"] / times["plain"]
            # Each measurement's own time (after the first, which traced): the overhead the
            # ratio should show, without the noise of timing whole windows.
            measured = statistics.median(r.result.meta.seconds for r in tracker.records[1:])
            figures.append(Figure(
                "24", f"tracked / plain training, every={EVERY}, w{width} {blocks} blocks "
                f"N{batch} {pixels}px", f"{ratio:.3f}", f"<= {OVERHEAD_LIMIT}",
                ratio <= OVERHEAD_LIMIT,
                f"{times['plain'] / EVERY * 1e3:.1f} ms/step plain, "
                f"{times['tracked'] / EVERY * 1e3:.1f} ms/step tracked; a measurement "
                f"{measured * 1e3:.1f} ms = {measured / times['plain']:.1%} of a plain window",
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
