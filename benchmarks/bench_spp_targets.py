"""The SPP engine's targets (issue 7): time and memory next to a plain pass, gradients, scaling.

    .venv/bin/python -m benchmarks.bench_spp_targets [--quick] [--device cpu|cuda]

Time ratios are measured in this process, the SPP and the plain pass interleaved, medians of
several repeats after a warm-up. Peak memory needs a fresh process per measurement (see
`bench_spp.measure`), so the memory ratios and the scaling table run in child processes.
"""

from __future__ import annotations

import argparse
import statistics

from benchmarks._report import Figure, format_table, time_side_by_side
from benchmarks.bench_spp import run_child

OVERHEAD_LIMIT = 1.15  # target 1: run_spp / plain no_grad forward
MEMORY_LIMIT = 1.2  # target 2: peak resident growth of run_spp / plain forward
GRADIENT_LIMIT = 1.3  # target 5: run_spp(gradients=True) / plain forward+backward
LINEAR_SPREAD = 2.0  # target 7: time per block (per pixel) may vary by at most this factor

SMALL = {"width": 0.25, "resolution": 64, "batch": 8}
NETWORKS = {
    "NF-ResNetV2-600": {"depth": 600, "norm": "nf", **SMALL},
    "BN-ResNetV2-600": {"depth": 600, "norm": "bn", **SMALL},
    "NF-RegNet-B0": {"family": "nf_regnet", "variant": "B0", "resolution": 64, "batch": 8},
}
QUICK_NETWORKS = {  # --quick: the same families, shallow
    "NF-ResNetV2-50": {"depth": 50, "norm": "nf", **SMALL},
    "BN-ResNetV2-50": {"depth": 50, "norm": "bn", **SMALL},
    "NF-RegNet-B0": NETWORKS["NF-RegNet-B0"],
}
DEPTHS = (50, 101, 200, 600)
RESOLUTIONS = (32, 64, 128, 256)


def _setup(config_fields: dict, device: str) -> tuple:
    """(config, torch device, model, input batch, synchronize) for one network."""
    import torch

    from nfcore.engine.devices import resolve_device
    from nfcore.engine.inputs import input_batch
    from nfcore.engine.models import build_model
    from nfcore.spec.config import SPPConfig

    config = SPPConfig(**config_fields, device=device)
    dev = resolve_device(device)
    model = build_model(config, seed=config.seed).to(dev)
    x = input_batch(config.input, config.batch, config.resolution, config.seed).to(dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    return config, dev, model, x, sync


def overhead(networks: dict, device: str, repeats: int) -> list[Figure]:
    """Target 1: run_spp against a plain no_grad forward under the same measurement_mode."""
    return [_overhead(name, fields, device, repeats) for name, fields in networks.items()]


def _overhead(name: str, fields: dict, device: str, repeats: int) -> Figure:
    import torch

    from nfcore.engine.spp import measurement_mode, run_spp

    config, dev, model, x, sync = _setup(fields, device)

    def plain() -> None:
        with measurement_mode(model, dev), torch.no_grad():
            model(x)

    times = time_side_by_side(
        {"plain": plain, "spp": lambda: run_spp(config, model=model)}, repeats, sync=sync
    )
    ratio = times["spp"] / times["plain"]
    return Figure(
        "1", f"SPP time / plain fwd, {name} 64px N8", f"{ratio:.2f}",
        f"<= {OVERHEAD_LIMIT}", ratio <= OVERHEAD_LIMIT,
        f"{1e3 * times['spp']:.0f} / {1e3 * times['plain']:.0f} ms",
    )  # fmt: skip


FRESH_LIMIT = 1.25  # issue 15, target 3: build + SPP of a new network / the floor
SCALAR_LIMIT = 1.1  # issue 15, target 4: an alpha move on a kept network / a plain forward


def fresh_and_scalar(networks: dict, device: str, repeats: int) -> list[Figure]:
    """Issue 15, targets 3 and 4, against honest floors.

    - The floor of a new network: drawing that many N(0,1) numbers once, plus one plain
      inference forward of the built network with its standardized weights cached (eval,
      no_grad, after a warm-up pass). A worker's path: `build_model` + `run_spp`.
    - An alpha move: `ModelCache` hit (retune) + `run_spp`, against the same plain forward.
    - The issue-7 figure again, SPP of a built network against that plain forward.
    """
    figures = []
    for name, fields in networks.items():
        figures += _fresh_and_scalar(name, fields, device, repeats)
    return figures


def _fresh_and_scalar(name: str, fields: dict, device: str, repeats: int) -> list[Figure]:
    import torch

    from nfcore.engine.model_cache import ModelCache
    from nfcore.engine.models import build_model
    from nfcore.engine.spp import run_spp

    config, dev, model, x, sync = _setup(fields, device)
    model.eval()
    with torch.no_grad():
        model(x)  # the Scaled WS weights standardized once and cached
    count = sum(p.numel() for p in model.parameters())
    cache = ModelCache(max_bytes=2**34)
    cache.model(config, dev)
    moves = iter(range(10**6))

    def plain() -> None:
        with torch.no_grad():
            model(x)

    def fresh() -> None:
        run_spp(config, model=build_model(config, seed=config.seed).to(dev))

    def alpha_move() -> None:
        alpha = 0.1 + (next(moves) % 50) / 100  # a new alpha each call
        moved = config.model_copy(update={"alpha": alpha}) if config.alpha else config
        run_spp(moved, model=cache.model(moved, dev))

    times = time_side_by_side(
        {
            "plain": plain,
            "draw": lambda: torch.randn(count, device=dev),
            "fresh": fresh,
            "spp": lambda: run_spp(config, model=model),
            "alpha": alpha_move,
        },
        repeats,
        sync=sync,
    )
    floor = times["draw"] + times["plain"]
    fresh_ratio = times["fresh"] / floor
    spp_ratio = times["spp"] / times["plain"]
    alpha_ratio = times["alpha"] / times["plain"]
    ms = {key: f"{1e3 * value:.0f}" for key, value in times.items()}
    return [
        Figure(
            "15.3", f"fresh SPP / floor, {name} 64px N8", f"{fresh_ratio:.2f}",
            f"<= {FRESH_LIMIT}", fresh_ratio <= FRESH_LIMIT,
            f"build+SPP {ms['fresh']} ms; draw {ms['draw']} + plain fwd {ms['plain']} ms",
        ),
        Figure(
            "15.3", f"SPP / plain fwd (weights cached), {name}", f"{spp_ratio:.2f}", "-", None,
            f"{ms['spp']} / {ms['plain']} ms: the issue-7 ratio against an honest denominator",
        ),
        Figure(
            "15.4", f"alpha move, kept network / plain fwd, {name}", f"{alpha_ratio:.2f}",
            f"<= {SCALAR_LIMIT}", alpha_ratio <= SCALAR_LIMIT,
            f"{ms['alpha']} / {ms['plain']} ms (ModelCache hit + retune + SPP)",
        ),
    ]  # fmt: skip


def memory(depths: tuple[int, ...], device: str, repeats: int) -> list[Figure]:
    """Target 2: peak memory growth of run_spp over a plain forward, each in a fresh process."""
    figures = []
    for depth in depths:
        config = {"depth": depth, "norm": "nf", **SMALL, "device": device}
        plain = run_child(config, "plain", repeats)
        spp = run_child(config, "spp", repeats)
        ratio = spp["peak_growth_mb"] / max(plain["peak_growth_mb"], 1e-9)
        figures.append(Figure(
            "2", f"SPP peak mem / plain fwd, NF-ResNetV2-{depth}", f"{ratio:.2f}",
            f"<= {MEMORY_LIMIT}", ratio <= MEMORY_LIMIT,
            f"{spp['peak_growth_mb']:.1f} / {plain['peak_growth_mb']:.1f} MB",
        ))  # fmt: skip
    return figures


def gradients(networks: dict, device: str, repeats: int) -> list[Figure]:
    """Target 5: run_spp(gradients=True) against forward+backward w.r.t. the input only."""
    return [_gradients(name, fields, device, repeats) for name, fields in networks.items()]


def _gradients(name: str, fields: dict, device: str, repeats: int) -> Figure:
    import torch
    import torch.nn.functional as F

    from nfcore.engine.spp import measurement_mode, run_spp

    config, dev, model, x, sync = _setup({**fields, "gradients": True}, device)
    generator = torch.Generator().manual_seed(config.seed + 1)
    labels = torch.randint(config.num_classes, (x.shape[0],), generator=generator).to(dev)
    for p in model.parameters():
        p.requires_grad_(False)  # run_spp freezes them too, and restores the flags

    def plain() -> None:
        with measurement_mode(model, dev), torch.enable_grad():
            logits = model(x.detach().requires_grad_(True))
            F.cross_entropy(logits, labels).backward()

    times = time_side_by_side(
        {"plain": plain, "spp": lambda: run_spp(config, model=model)}, repeats, sync=sync
    )
    ratio = times["spp"] / times["plain"]
    return Figure(
        "5", f"grad SPP / plain fwd+bwd, {name} 64px N8", f"{ratio:.2f}",
        f"<= {GRADIENT_LIMIT}", ratio <= GRADIENT_LIMIT,
        f"{1e3 * times['spp']:.0f} / {1e3 * times['plain']:.0f} ms",
    )  # fmt: skip


def scaling(
    depths: tuple[int, ...], resolutions: tuple[int, ...], device: str, repeats: int
) -> tuple[str, list[Figure]]:
    """Target 7: SPP time and peak memory against depth (64 px) and resolution (depth 50).

    Returns the printed sweep and two figures: the spread (max / min) of time per block and
    of time per pixel, which a linear cost keeps near 1.
    """
    from nfcore.spec.config import SPPConfig

    lines = [
        f"{'sweep':<26} {'blocks':>6} {'spp ms':>8} {'ms/block':>9} {'ms/kpx':>8} {'peak MB':>8}"
    ]
    per_block, per_pixel = [], []
    points = [(d, 64) for d in depths] + [(50, r) for r in resolutions if r != 64]
    for depth, resolution in points:
        fields = {"depth": depth, "norm": "nf", "width": 0.25, "batch": 8,
                  "resolution": resolution, "device": device}  # fmt: skip
        blocks = SPPConfig(**fields).num_blocks
        spp = run_child(fields, "spp", repeats)
        ms = 1e3 * spp["seconds"]
        kpx = resolution * resolution / 1e3
        if resolution == 64:
            per_block.append(ms / blocks)
        if depth == 50:
            per_pixel.append((resolution, ms / kpx))
        lines.append(
            f"NF-ResNetV2-{depth} {resolution:>3}px {'':<6} {blocks:>6} {ms:>8.1f} "
            f"{ms / blocks:>9.2f} {ms / kpx:>8.2f} {spp['peak_growth_mb']:>8.1f}"
        )
    per_pixel = [value for _, value in sorted(per_pixel)]  # by resolution
    # The largest two resolutions: where a fixed per-layer cost no longer hides the pixels.
    top = per_pixel[-2] / per_pixel[-1]
    notes = {
        "depth": f"median {statistics.median(per_block):.2f} ms/block",
        "pixels": f"{min(per_pixel):.2f}-{max(per_pixel):.2f} ms/kpx; the top two sizes {top:.2f}x",
    }
    figures = []
    for label, values, axis in (("depth", per_block, "ms/block"), ("pixels", per_pixel, "ms/kpx")):
        spread = max(values) / min(values)
        figures.append(Figure(
            "7", f"SPP time linear in {label} ({axis} max/min)", f"{spread:.2f}",
            f"<= {LINEAR_SPREAD}", spread <= LINEAR_SPREAD, notes[label],
        ))  # fmt: skip
    return "\n".join(lines), figures


def run(quick: bool, device: str) -> tuple[list[Figure], list[str]]:
    """All SPP targets; the figures for the table and the sweep tables to print above it."""
    networks = QUICK_NETWORKS if quick else NETWORKS
    repeats = 3 if quick else 11
    figures = overhead(networks, device, repeats)
    figures += fresh_and_scalar(networks, device, 3 if quick else 5)
    figures += memory((50,) if quick else (50, 600), device, 2 if quick else 3)
    figures += gradients(
        {k: v for k, v in networks.items() if k.startswith("NF-ResNet")}, device, repeats
    )
    sweep, scale_figures = scaling(
        (50, 101) if quick else DEPTHS, (32, 64, 128) if quick else RESOLUTIONS,
        device, 2 if quick else 5,
    )  # fmt: skip
    return figures + scale_figures, [f"SPP scaling (width 0.25, batch 8):\n{sweep}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args()
    figures, extras = run(args.quick, args.device)
    print("\n\n".join(extras))
    print(format_table(figures))


if __name__ == "__main__":
    main()
