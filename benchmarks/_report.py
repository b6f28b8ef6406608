"""What every benchmark shares: side-by-side timing, machine facts and the one target table."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Figure:
    """One row of the table: a measured figure, its target, and whether it is met.

    `met` is None where the figure is not available (nothing to compare with).
    """

    target_id: str
    name: str
    value: str
    target: str
    met: bool | None
    note: str = ""


def time_side_by_side(
    fns: dict[str, Callable[[], object]],
    repeats: int,
    warmup: int = 1,
    sync: Callable[[], None] = lambda: None,
) -> dict[str, float]:
    """Median seconds of each function, the calls interleaved so drifts in load hit all alike."""
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    sync()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            sync()
            samples[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in samples.items()}


def cpu_model() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def machine_facts(device: str) -> str:
    import torch

    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    gpu = f", GPU {torch.cuda.get_device_name()}" if device == "cuda" else ""
    return (
        f"machine: {usable} usable cores ({os.cpu_count()} online), {cpu_model()}{gpu}\n"
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torch threads {torch.get_num_threads()}, device {device}"
    )


def verdict(met: bool | None) -> str:
    return "n/a" if met is None else ("yes" if met else "NO")


def format_table(figures: list[Figure]) -> str:
    """A Markdown table, readable in a terminal and pasteable into docs/benchmarks.md."""
    rows = [("#", "figure", "measured", "target", "met", "note")]
    rows += [(f.target_id, f.name, f.value, f.target, verdict(f.met), f.note) for f in figures]
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in rows
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)
