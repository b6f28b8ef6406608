"""The command line for networks of one's own: `nfcore spp --model` and `nfcore blocks`.

    nfcore spp --model mynets.py:build_resnet --model-args '{"depth": 50}' --out r.json --plot r.html
    nfcore spp --model mypkg.nets:build --blocks 'stages.*.blocks.*' --residual 'stages.*.blocks.*.conv3'
    nfcore blocks --model mynets.py:build_resnet      # the blocks it would measure, and why

`--model` is MODULE:FACTORY, MODULE a dotted import path or a .py file; the factory is called
with `--model-args` (a JSON object) after the seed is set, and returns an nn.Module.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from pydantic import ValidationError

from nfcore.cli_options import UsageError, as_flags, field_option
from nfcore.fields import describe_validation_error
from nfcore.foreign_config import ForeignConfig

# The built-in network's flags, which do not apply to --model.
MODEL_FLAGS = ("family", "depth", "layout", "variant", "norm", "order", "conv", "activation",
               "alpha", "gamma", "se_gain", "skipinit", "maxpool", "width", "num_classes")  # fmt: skip


def _patterns(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _shape(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace("x", ",").split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a shape like 64 or 16,32, got {text!r}"
        ) from None


def add_model_source(group: Any) -> None:
    """--model and --model-args, shared by `spp` and `blocks`."""
    group.add_argument("--model", metavar="MODULE:FACTORY",
                       help="measure your own network: a factory in a module or .py file that "
                       "returns an nn.Module (the built-in model flags then do not apply)")  # fmt: skip
    group.add_argument(
        "--model-args", metavar="JSON", help="keyword arguments of the factory, a JSON object"
    )


def add_selection(group: Any) -> None:
    """--blocks, --residual, --input-shape, --channels (config fields of `ForeignConfig`)."""
    group.add_argument("--blocks", type=_patterns, action="extend", metavar="PATTERNS",
                       help="the blocks: glob patterns over module names, '*' one dotted "
                       "component, comma-separated or repeated (default: found by themselves)")  # fmt: skip
    group.add_argument("--residual", type=_patterns, action="extend", metavar="PATTERNS",
                       help="each block's residual branch f(x), as patterns (default: not measured)")  # fmt: skip
    field_option(group, ForeignConfig, "input_shape", type=_shape,
                 help="One example's input shape for a non-image network, e.g. 64 or 16,32")  # fmt: skip
    field_option(group, ForeignConfig, "channels")
    field_option(group, ForeignConfig, "name", help="The network's name in legends")


def add_foreign_group(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("your own network (--model)")
    add_model_source(group)
    add_selection(group)


def add_blocks_command(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("blocks", help="the blocks `nfcore spp --model` would measure, and why")
    group = p.add_argument_group("network")
    add_model_source(group)
    add_selection(group)
    field_option(group, ForeignConfig, "resolution")
    field_option(group, ForeignConfig, "seed")
    p.add_argument("--json", action="store_true", help="print JSON")


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
    from nfcore.foreign import FactoryError, build_foreign, load_factory

    assert config.model is not None
    try:
        factory = load_factory(config.model)
        return build_foreign(factory, dict(config.model_args), config.seed, config.model)
    except FactoryError as error:
        raise UsageError(f"--model: {error}") from None


def run_foreign_spp(config: ForeignConfig, progress: Any) -> Any:
    from nfcore.devices import DeviceUnavailableError
    from nfcore.foreign import SelectionError
    from nfcore.foreign_spp import measure_config

    model = build(config)
    try:
        return measure_config(model, config, progress=progress)
    except SelectionError as error:
        raise UsageError(str(error)) from None
    except DeviceUnavailableError as error:
        raise UsageError(f"--device: {error}") from None


def cmd_blocks(args: argparse.Namespace) -> int:
    if args.model is None:
        raise UsageError("--model: give the network, MODULE:FACTORY")
    config = foreign_config(args)
    from nfcore.foreign import SelectionError, block_shapes, find_blocks, stages_and_transitions
    from nfcore.foreign_spp import foreign_input

    model = build(config)
    x = foreign_input(config.model_copy(update={"batch": 2}))
    try:
        found = find_blocks(model, list(config.blocks) if config.blocks != "auto" else "auto")
        shapes = block_shapes(model, found, x)
    except SelectionError as error:
        raise UsageError(str(error)) from None
    stages, transitions = stages_and_transitions(found, shapes)
    rows = [
        {"index": i, "name": b.name, "stage": stages[i], "transition": transitions[i],
         "input_shape": list(shapes[i][0][1:]), "output_shape": list(shapes[i][1][1:]), "why": b.why}
        for i, b in enumerate(found)
    ]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    width = max(len(row["name"]) for row in rows)
    print(f"{'#':>3}  {'block':<{width}}  stage  {'in -> out (per example)':<30} why")
    for row in rows:
        shape = f"{tuple(row['input_shape'])} -> {tuple(row['output_shape'])}"
        mark = "*" if row["transition"] else " "
        print(
            f"{row['index']:>3}  {row['name']:<{width}}  {row['stage']:>3}{mark}   {shape:<30} {row['why']}"
        )
    sys.stdout.write(
        f"{len(rows)} blocks in {max(stages) + 1} stages; * marks a transition (the shape changes)\n"
    )
    return 0
