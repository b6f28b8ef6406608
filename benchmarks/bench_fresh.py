"""A fresh network's SPP against its floor (issue 21, target 1), and `build_model` before/after.

    .venv/bin/python -m benchmarks.bench_fresh [--quick] [--device cpu|cuda]

A depth, width or seed change builds a new network and measures it: `build_model` +
`run_spp`. Its floor is what no implementation can avoid: drawing that many N(0,1) numbers
once, plus one plain no-grad forward of the same network (eval mode, no hooks, its Scaled WS
weights standardized and cached by a warm-up pass). All timed side by side in this process
(interleaved calls, a warm-up, medians), so the machine's load hits every column alike.

`build_model` before is the 0.1.0 way, reproduced: the network constructed with PyTorch's
default init (every conv drawn once there) and the garbage collector on, then `init_weights`
drawing every weight again. After: constructed without drawing (`deferred_init`), collection
paused, each weight drawn once.
"""

from __future__ import annotations

import argparse
import statistics
import time

from benchmarks._report import (
    Figure,
    format_table,
    load_average,
    machine_facts,
    time_side_by_side,
)
from benchmarks.bench_spp_targets import NETWORKS, QUICK_NETWORKS, _setup

FRESH_LIMIT = 1.25  # issue 21, target 1: build + SPP of a new network / its floor


def _fresh(name: str, fields: dict, device: str, repeats: int) -> tuple[list[Figure], str]:
    import torch

    from nfcore.engine.models import _build, _Parts, build_model, init_weights, seeded
    from nfcore.engine.spp import run_spp

    config, dev, model, x, sync = _setup(fields, device)
    model.eval()
    with torch.no_grad():
        model(x)  # the Scaled WS weights standardized once and cached
    count = sum(p.numel() for p in model.parameters())
    parts = _Parts.of(config)
    split: dict[str, list[float]] = {"build": [], "spp": []}

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def fresh() -> None:
        start = time.perf_counter()
        built = build_model(config, seed=config.seed).to(dev)
        sync()
        middle = time.perf_counter()
        run_spp(config, model=built)
        split["build"].append(middle - start)
        split["spp"].append(time.perf_counter() - middle)

    def build_before() -> None:  # 0.1.0: PyTorch's default init, then init_weights
        with seeded(config.seed):
            init_weights(_build(parts).to(dev))

    times = time_side_by_side(
        {
            "plain": plain,
            "draw": lambda: torch.randn(count, device=dev),
            "fresh": fresh,
            "build_before": build_before,
            "build_after": lambda: build_model(config, seed=config.seed).to(dev),
        },
        repeats,
        sync=sync,
    )
    floor = times["draw"] + times["plain"]
    ratio = times["fresh"] / floor
    build_ratio = times["build_after"] / times["build_before"]
    ms = {key: f"{1e3 * value:.0f}" for key, value in times.items()}
    build_ms, spp_ms = (f"{1e3 * statistics.median(split[key]):.0f}" for key in ("build", "spp"))
    figures = [
        Figure(
            "21.1", f"fresh SPP / floor, {name} 64px N8", f"{ratio:.2f}",
            f"<= {FRESH_LIMIT}", ratio <= FRESH_LIMIT,
            f"build+SPP {ms['fresh']} ms; draw {ms['draw']} + plain fwd {ms['plain']} ms",
        ),
        Figure(
            "21.1", f"build_model after / before, {name}", f"{build_ratio:.2f}", "-", None,
            f"{ms['build_after']} / {ms['build_before']} ms (before: drawn twice, as 0.1.0)",
        ),
    ]  # fmt: skip
    line = (
        f"{name:<16} {count / 1e6:>7.2f} {ms['draw']:>6} {ms['plain']:>6} {ms['fresh']:>6} "
        f"{build_ms:>6} {spp_ms:>6} {ratio:>6.2f} {ms['build_before']:>7} {ms['build_after']:>6}"
    )
    return figures, line


def run(quick: bool, device: str) -> tuple[list[Figure], str]:
    """The figures for the table, and the breakdown to print above it (milliseconds)."""
    networks = QUICK_NETWORKS if quick else NETWORKS
    lines = [
        f"{'network':<16} {'Mparam':>7} {'draw':>6} {'plain':>6} {'fresh':>6} {'build':>6} "
        f"{'SPP':>6} {'ratio':>6} {'bld0.1':>7} {'bld0.2':>6}"
    ]
    figures = []
    for name, fields in networks.items():
        network_figures, line = _fresh(name, fields, device, 3 if quick else 7)
        figures += network_figures
        lines.append(line)
    legend = (
        "fresh = build + SPP of a new network (the build and SPP columns: its two parts); "
        "floor = draw + plain; bld0.1 / bld0.2: build_model drawing twice / once"
    )
    return figures, "\n".join([*lines, legend])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    print(machine_facts(args.device))
    print(f"load average before: {load_average()}", flush=True)
    figures, breakdown = run(args.quick, args.device)
    print(f"Fresh SPP against its floor (medians, ms):\n{breakdown}\n")
    print(format_table(figures))
    print(f"load average after: {load_average()}")


if __name__ == "__main__":
    main()
