"""The command line for networks of one's own: `nfcore spp --model` and `nfcore blocks`.

    nfcore spp --model mynets.py:build_resnet --model-args '{"depth": 50}' --out r.json --plot r.html
    nfcore spp --model mypkg.nets:build --blocks 'stages.*.blocks.*' --residual 'stages.*.blocks.*.conv3'
    nfcore blocks --model mynets.py:build_resnet      # its blocks, what was left out, and why

`--model` is MODULE:FACTORY, MODULE a dotted import path or a .py file; the factory is called
with `--model-args` (a JSON object) after the seed is set, and returns an nn.Module.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from nfcore.cli.options import UsageError, as_flags
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.result import SPPMeta

# The built-in network's flags, which do not apply to --model.
MODEL_FLAGS = ("family", "depth", "layout", "variant", "norm", "order", "conv", "activation",
               "alpha", "gamma", "se_gain", "skipinit", "maxpool", "width", "num_classes")  # fmt: skip


FOREIGN_FLAGS = ("model_args", "blocks", "residual", "input_shape", "channels", "name")


def check_no_foreign_flags(args: argparse.Namespace) -> None:
    """The flags of `--model` without it: an error, not silently ignored."""
    given = [
        f"--{n.replace('_', '-')}" for n in FOREIGN_FLAGS if getattr(args, n, None) is not None
    ]
    if given:
        raise UsageError(f"{', '.join(given)}: applies to your own network only; give --model too")


def model_args(args: argparse.Namespace) -> dict[str, Any]:
    if args.model_args is None:
        return {}
    try:
        value = json.loads(args.model_args)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--model-args: not valid JSON ({error.msg}, column {error.colno})"
        ) from None
    if not isinstance(value, dict):
        raise UsageError(
            f"--model-args: expected a JSON object of keyword arguments, got {args.model_args!r}"
        )
    return value


def foreign_config(args: argparse.Namespace) -> ForeignConfig:
    """The config of `nfcore spp --model ...`; a built-in model flag is an error."""
    given = [
        f"--{name.replace('_', '-')}"
        for name in MODEL_FLAGS
        if getattr(args, name, None) is not None
    ]
    if given:
        raise UsageError(
            f"{', '.join(given)}: does not apply to --model (the factory builds the network)"
        )
    if getattr(args, "config", None) is not None:
        raise UsageError("--config: does not apply to --model")
    fields: dict[str, Any] = {"model": args.model, "model_args": model_args(args)}
    for name in ("blocks", "residual", "input_shape", "channels", "name", "resolution", "batch",
                 "input", "seed", "device", "gradients", "extra_stats"):  # fmt: skip
        value = getattr(args, name, None)
        if value is not None:
            fields[name] = value
    try:
        return ForeignConfig(**fields)
    except ValidationError as error:
        raise UsageError(as_flags(describe_validation_error(error))) from None


def build(config: ForeignConfig) -> Any:
    """The network of a --model config, built from its factory (torch loads here)."""
    from nfcore.foreign.discovery import FactoryError, build_foreign, load_factory

    assert config.model is not None
    try:
        factory = load_factory(config.model)
        return build_foreign(factory, dict(config.model_args), config.seed, config.model)
    except FactoryError as error:
        raise UsageError(f"--model: {error}") from None


def run_foreign_spp(config: ForeignConfig, progress: Any) -> Any:
    from nfcore.engine.devices import DeviceUnavailableError
    from nfcore.foreign.discovery import SelectionError
    from nfcore.foreign.measure import measure_config

    model = build(config)
    try:
        return measure_config(model, config, progress=progress)
    except SelectionError as error:
        raise UsageError(str(error)) from None
    except DeviceUnavailableError as error:
        raise UsageError(f"--device: {error}") from None


def measured_how(meta: SPPMeta) -> list[str]:
    """The summary's lines on how a foreign network was measured: the axes each channel's
    statistics were taken over, the block tensors' layout, and every note of the engine (a
    choice it made from the network's evidence, or one it would not make), in its words."""
    lines = []
    if meta.reduced_over is not None:
        layout = f" (block tensors {meta.layout})" if meta.layout else ""
        lines.append(f"statistics per channel over {meta.reduced_over}{layout}")
    lines += [f"note: {note}" for note in meta.notes or ()]
    return lines


def cmd_blocks(args: argparse.Namespace) -> int:
    if args.model is None:
        raise UsageError("--model: give the network, MODULE:FACTORY")
    config = foreign_config(args)
    from nfcore.foreign.discovery import SelectionError, discover
    from nfcore.foreign.measure import foreign_input

    model = build(config)
    x = foreign_input(config.model_copy(update={"batch": 2}))
    spec = "auto" if config.blocks == "auto" else list(config.blocks)
    try:
        found = discover(model, x, spec, channels=config.channels).as_json()
    except SelectionError as error:
        raise UsageError(str(error)) from None
    if args.json:
        print(json.dumps(found, indent=2))
    else:
        sys.stdout.write(blocks_report(found))
    return 0


def blocks_report(found: dict[str, Any]) -> str:
    """`nfcore blocks` as text: a row per block with its stage, shapes, layout and why it was
    chosen; then the near candidates left out and why; then the notes (the layout and why,
    how the blocks were found, tied blocks), each said once."""
    rows = found["blocks"]
    width = max(len(row["name"]) for row in rows)
    lines = [f"{'#':>3}  {'block':<{width}}  stage  {'in -> out (per example)':<30} layout  why"]
    for row in rows:
        shape = f"{tuple(row['input_shape'])} -> {tuple(row['output_shape'])}"
        mark = "*" if row["transition"] else " "
        layout = row.get("layout") or ""
        lines.append(f"{row['index']:>3}  {row['name']:<{width}}  {row['stage']:>3}{mark}   "
                     f"{shape:<30} {layout:<7} {row['why']}")  # fmt: skip
    stages = max(row["stage"] for row in rows) + 1
    lines.append(f"{len(rows)} blocks in {stages} stages; * marks a transition (the shape changes)")
    left_out = found.get("left_out") or []
    if left_out:
        lines.append("left out:")
        lines += [f"  {item['name']}: {item['why']}" for item in left_out]
    lines += [f"note: {note}" for note in found.get("notes") or ()]
    return "\n".join(lines) + "\n"
