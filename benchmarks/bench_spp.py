"""SPP engine cost next to a plain `no_grad` forward pass of the same network, side by side.

    .venv/bin/python benchmarks/bench_spp.py            # the sizes below
    .venv/bin/python benchmarks/bench_spp.py --quick    # smaller, for a smoke run

For each network it prints the forward time and the peak memory growth of (a) a plain
`torch.no_grad()` forward and (b) `run_spp`, and their ratios. The SPP's promise is a ratio
near 1 for memory (no block's activations are kept) and a modest time overhead (the float64
statistics). Each measurement runs in a fresh process so the peaks do not mix; on a GPU the
peak is `torch.cuda.max_memory_allocated`, on the CPU the resident set sampled every 0.5 ms
with glibc told to give every large tensor its own mapping (so the set follows live tensors).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

CASES = {
    "NF-ResNetV2-600 w0.25 128px N8": {
        "depth": 600,
        "norm": "nf",
        "width": 0.25,
        "resolution": 128,
        "batch": 8,
    },
    "BN-ResNetV2-50 w1 224px N16": {
        "depth": 50,
        "norm": "bn",
        "width": 1.0,
        "resolution": 224,
        "batch": 16,
    },
    "NF-RegNet-B0 224px N16": {
        "family": "nf_regnet",
        "variant": "B0",
        "resolution": 224,
        "batch": 16,
    },
}
ROOT = Path(__file__).resolve().parents[1]

QUICK = {
    "NF-ResNetV2-50 w0.25 64px N8": {
        "depth": 50,
        "norm": "nf",
        "width": 0.25,
        "resolution": 64,
        "batch": 8,
    },
    "BN-ResNetV2-26 w0.5 64px N8": {
        "depth": 26,
        "norm": "bn",
        "width": 0.5,
        "resolution": 64,
        "batch": 8,
    },
}


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def measure(config_json: str, mode: str, repeats: int) -> dict:
    """Runs in the child process: time and peak memory growth of one mode."""
    import torch

    from nfcore.engine.devices import resolve_device
    from nfcore.engine.inputs import input_batch
    from nfcore.engine.models import build_model
    from nfcore.engine.spp import measurement_mode, run_spp
    from nfcore.spec.config import SPPConfig

    config = SPPConfig.model_validate_json(config_json)
    device = resolve_device(config.device)
    model = build_model(config, seed=config.seed).to(device)
    x = input_batch(config.input, config.batch, config.resolution, config.seed).to(device)

    def plain() -> None:
        with measurement_mode(model, device), torch.no_grad():
            model(x)

    def spp() -> None:
        run_spp(config, model=model)

    fn = plain if mode == "plain" else spp
    fn()  # warm-up: allocator, caches, the Scaled WS weights
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    peak, stop = [_rss_bytes()], threading.Event()
    base_rss = peak[0]

    def sample() -> None:
        while not stop.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / repeats
    stop.set()
    sampler.join()
    cuda = device.type == "cuda"
    grow = torch.cuda.max_memory_allocated() - base if cuda else peak[0] - base_rss
    return {"seconds": seconds, "peak_growth_mb": grow / 2**20, "device": device.type}


def run_child(config: dict, mode: str, repeats: int) -> dict:
    from nfcore.spec.config import SPPConfig

    payload = SPPConfig(**config).model_dump_json()
    code = (
        "import json, sys; sys.path.insert(0, 'benchmarks'); from bench_spp import measure; "
        f"print(json.dumps(measure({payload!r}, {mode!r}, {repeats})))"
    )
    # glibc otherwise keeps freed blocks and moves its mmap threshold, so the resident set would
    # measure the allocator's history rather than the live tensors; a fixed threshold maps
    # every large tensor on its own and unmaps it on free.
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536"}
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True, env=env,
        cwd=ROOT,
    )  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small networks, for a smoke run")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    cases = QUICK if args.quick else CASES
    header = f"{'network':<34} {'plain s':>9} {'spp s':>9} {'time x':>7} {'plain MB':>9} {'spp MB':>9} {'mem x':>7}"
    print(header)
    print("-" * len(header))
    for name, config in cases.items():
        plain = run_child(config, "plain", args.repeats)
        spp = run_child(config, "spp", args.repeats)
        mem_ratio = spp["peak_growth_mb"] / max(plain["peak_growth_mb"], 1e-9)
        print(
            f"{name:<34} {plain['seconds']:>9.3f} {spp['seconds']:>9.3f} "
            f"{spp['seconds'] / plain['seconds']:>7.2f} {plain['peak_growth_mb']:>9.1f} "
            f"{spp['peak_growth_mb']:>9.1f} {mem_ratio:>7.2f}"
        )
    print(f"device: {plain['device']}; peak growth = memory above the warmed-up baseline")


if __name__ == "__main__":
    main()
