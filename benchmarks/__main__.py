"""Every benchmark in one run, one table: each figure, its target, and whether it is met.

    .venv/bin/python -m benchmarks                 # about 10 minutes on 2 CPU cores
    .venv/bin/python -m benchmarks --quick         # a smoke run, under 2 minutes
    .venv/bin/python -m benchmarks --device cuda   # the models on a GPU (the service too)

Targets (issue 7), each a ratio measured side by side in this run:
  1 SPP time / plain no_grad forward <= 1.15     2 SPP peak memory / plain forward <= 1.2
  3 eval Scaled WS / folded plain conv <= 1.05   4 training steps/s NF / BN >= 1.0
  5 gradient SPP / plain forward+backward <= 1.3 6 cache-hit GET result p99 < 20 ms, 0 errors
  7 SPP time linear in depth and in pixels (time per block, per pixel within 2x)
Targets of issue 15 (the live Explorer), rows "15.<target>": 15.1 the browser (bench_explorer),
15.3 a fresh SPP against its floor, 15.4 a scalar move on a kept network, 15.7 a class of 64
browsers on cached results with API_WORKERS 1 and 2.
Target of issue 19, row "19.5": 2000 concurrent waits on a queued job all answered (none 503),
and GET /healthz under 0.5 s meanwhile.
Target of issue 20, rows "20.6": `measure` of a network written elsewhere (a torchvision-style
ResNet-50, a ViT, a Swin) / a plain forward of it <= 1.3 (bench_foreign, on the CPU).
Target of issue 21, rows "21.1": a fresh network's SPP (build_model + run_spp) / its floor (drawing
its weights once + a plain forward) <= 1.25, and build_model drawing once against twice
(bench_fresh).
Target of issue 24, row "24": training one's own network with `nfcore.track(every=50)` / without
it <= 1.05 (bench_track).
"""

from __future__ import annotations

import argparse
import os
import time

from benchmarks import (
    bench_api,
    bench_explorer,
    bench_foreign,
    bench_fresh,
    bench_scaled_ws,
    bench_spp_targets,
    bench_track,
    bench_train,
)
from benchmarks._report import format_table, load_average, machine_facts


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smaller and shorter: a smoke run")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--skip-service", action="store_true", help="no Redis/worker/API stack")
    args = parser.parse_args()

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
        os.environ["OMP_NUM_THREADS"] = str(args.threads)  # the child processes too
    began = time.monotonic()
    print(machine_facts(args.device))
    print(f"load average before: {load_average()}", flush=True)
    if os.getloadavg()[0] > 0.5 * (os.cpu_count() or 1):
        print("warning: the machine is busy; OpenMP threads contending for cores skew every ratio")
    figures, extras = bench_spp_targets.run(args.quick, args.device)
    fresh_figures, fresh_breakdown = bench_fresh.run(args.quick, args.device)
    figures += fresh_figures
    extras.append(f"Fresh SPP against its floor (medians, ms):\n{fresh_breakdown}")
    figures += bench_scaled_ws.whole_network(args.quick, args.device)
    figures += bench_train.run(args.quick, args.device)
    figures += bench_foreign.overhead(args.quick, 3 if args.quick else 7)
    figures += bench_track.run(args.quick, args.device)
    if not args.skip_service:
        figures += bench_api.service_figures(5.0 if args.quick else 20.0, args.device)
        figures += bench_api.classroom_figures(5.0 if args.quick else 10.0)
        figures += bench_api.waiting_figures(500 if args.quick else bench_api.WAITERS)
        explorer_figures, explorer_notes = bench_explorer.run(args.quick)
        figures += explorer_figures
        extras.append(
            f"Explorer in Chromium (medians, seconds from the browser event):\n{explorer_notes}"
        )
    figures.sort(key=lambda figure: figure.target_id)
    print()
    print("\n\n".join(extras))
    print()
    print(format_table(figures))
    met = [f.met for f in figures if f.met is not None]
    print(f"\n{sum(met)} of {len(met)} targets met; {len(figures) - len(met)} figures without one")
    print(f"load average after: {load_average()}; total {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
