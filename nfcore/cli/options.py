"""The command line's options: each config flag is built from its field (`Field` metadata is
the one source of its help, default, choices and bounds, as for the API's schema and the
dashboard's widgets); the rest are the commands' own.
"""

from __future__ import annotations

import argparse
import types
from pathlib import Path
from typing import Any, Literal, NoReturn, Union, get_args, get_origin

from pydantic import BaseModel

from nfcore import __version__
from nfcore.spec.activation_names import BUILTIN_ACTIVATIONS
from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.families import FAMILIES
from nfcore.spec.fields import field_bounds
from nfcore.spec.foreign_config import ForeignConfig
from nfcore.spec.norms import NORMS
from nfcore.spec.statistics import STATISTICS, panel_keys


class UsageError(Exception):
    """Input the user can fix; reported as one line."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected blocks per stage like 3,4,6,3, got {text!r}"
        ) from None


def _panel_list(text: str) -> tuple[str, ...]:
    """--panels KEY,KEY: statistic keys, checked against the statistics table."""
    try:
        return panel_keys(part for part in text.replace(" ", "").split(",") if part)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


PANELS_HELP = (
    "statistics to draw, comma-separated keys (default: the paper's three, and the gradient "
    f"row when measured): {', '.join(row.key for row in STATISTICS)}"
)


def as_flags(message: str) -> str:
    """A config error as the flags name it: 'se_gain: ...; depth: ...' -> '--se-gain: ...;
    --depth: ...'."""
    parts = []
    for part in message.split("; "):
        field, sep, rest = part.partition(": ")
        # A field name ('bogus' from an unknown key too), not the 'allowed: ...' of a bound.
        if sep and field.replace("_", "").replace(".", "").isalnum() and field != "allowed":
            field = "--" + field.split(".")[0].replace("_", "-")
        parts.append(f"{field}{sep}{rest}")
    return "; ".join(parts)


def _choices(annotation: Any) -> tuple[Any, ...] | None:
    """The values of a Literal field (`X | None` too), else None."""
    if get_origin(annotation) is Literal:
        return get_args(annotation)
    if get_origin(annotation) in (Union, types.UnionType):
        for arg in get_args(annotation):
            if (found := _choices(arg)) is not None:
                return found
    return None


def _scalar_type(annotation: Any) -> Any:
    """int, float, bool or str: the type of a field, `X | None` read as X."""
    if get_origin(annotation) in (Union, types.UnionType):
        kinds = [a for a in get_args(annotation) if a is not type(None)]
        return kinds[0] if len(kinds) == 1 else str
    return annotation if annotation in (int, float, bool) else str


def _default_text(kind: type[BaseModel], name: str) -> str | None:
    """'default 128', or where the family decides 'default bn; nf for nf_regnet'."""
    info = kind.model_fields[name]
    if info.default is not None and info.default is not False:
        return f"default {info.default}"
    by_family = {row.name: row.defaults[name] for row in FAMILIES.values() if name in row.defaults}
    if not by_family:
        return None
    common = max(set(by_family.values()), key=list(by_family.values()).count)
    others = [f"{value} for {family}" for family, value in by_family.items() if value != common]
    return "; ".join([f"default {common}", *others])


def _bounds_text(kind: type[BaseModel], name: str) -> str | None:
    bounds = field_bounds(kind, name)
    low = f"{bounds.low} {'<' if bounds.low_open else '<='} " if bounds.low is not None else ""
    high = f" {'<' if bounds.high_open else '<='} {bounds.high}" if bounds.high is not None else ""
    return f"{low}{name}{high}" if low or high else None


def _with_model(text: str | None, model_text: str | None) -> str | None:
    """'default 128 (64 with --model)': a flag's default or bounds, and what a `--model` run
    takes instead where that differs."""
    if model_text is None or model_text == text:
        return text
    plain = model_text.removeprefix("default ")
    return f"{text} ({plain} with --model)" if text else f"{model_text} with --model"


def field_option(
    group: Any,
    kind: type[BaseModel],
    name: str,
    *,
    help: str | None = None,
    model_kind: type[BaseModel] | None = None,
    **overrides: Any,
) -> None:
    """`--name` for the config field `name`: its description, default and bounds as help, its
    Literal values (or the family or norm table) as choices, its type; a flag left out is None, so
    the config (or --config) decides. `model_kind`: the config of a `--model` run, which
    shares the flag; where its default or bounds differ, the help says both."""
    info = kind.model_fields[name]
    parts = [(help or info.description or name).rstrip(".")]
    for describe in (_default_text, _bounds_text):
        text = describe(kind, name)
        if model_kind is not None:
            text = _with_model(text, describe(model_kind, name))
        if text:
            parts.append(text)
    options: dict[str, Any] = {"help": "; ".join(parts).replace("%", "%%")}
    tables = {"family": FAMILIES, "norm": NORMS}  # rows registered now
    choices = list(tables[name]) if name in tables else _choices(info.annotation)
    if "type" in overrides:
        choices = None  # e.g. gamma: 'auto' or a number
    scalar = _scalar_type(info.annotation)
    if scalar is bool:
        # A field with its own default (False) is switched on; one the family decides is either.
        tristate = info.default is None
        options["action"] = argparse.BooleanOptionalAction if tristate else "store_true"
        options["default"] = None
    elif choices is not None and all(isinstance(c, str) for c in choices):
        options["choices"] = choices
    else:
        options["type"] = scalar
    options.update(overrides)
    group.add_argument("--" + name.replace("_", "-"), **options)


def _add_model_args(p: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    model = p.add_argument_group("model")
    for name in ("family", "depth"):
        field_option(model, SPPConfig, name)
    field_option(model, SPPConfig, "layout", type=_int_list,
                 help="Custom ResNet blocks per stage (1 to 4 stages, e.g. 2,2,2,2); overrides depth")  # fmt: skip
    for name in ("variant", "norm", "order", "conv"):
        field_option(model, SPPConfig, name)
    field_option(model, SPPConfig, "activation",
                 help=f"Nonlinearity g: {', '.join(BUILTIN_ACTIVATIONS)}")  # fmt: skip
    field_option(model, SPPConfig, "alpha")
    field_option(model, SPPConfig, "gamma", type=str)
    for name in ("se_gain", "skipinit", "maxpool", "padding", "width"):
        field_option(model, SPPConfig, name)
    return model


# --- your own network (--model): `spp --model` and `blocks` ----------------------------------


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


def _add_spp(sub: argparse._SubParsersAction, description: str) -> None:
    p = sub.add_parser("spp", help="compute a Signal Propagation Plot", description=description,
                       formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    model = _add_model_args(p)
    field_option(model, SPPConfig, "num_classes")
    run = p.add_argument_group("input and measurement")
    for name in ("resolution", "batch", "input", "seed", "device", "gradients", "extra_stats"):
        field_option(run, SPPConfig, name, model_kind=ForeignConfig)  # --model runs share them
    run.add_argument(
        "--config", type=Path, help="start from a config JSON (or a result JSON's config)"
    )
    add_foreign_group(p)
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="result JSON (default: print it to stdout)")
    out.add_argument("--csv", type=Path,
                     help="per-block CSV: every measured statistic, whatever --panels draws")  # fmt: skip
    out.add_argument("--plot", type=Path, action="append", default=[],
                     help="figure: .html, .png, .svg, .pdf or .json (repeatable)")  # fmt: skip
    out.add_argument("--log-y", action="store_true", help="semilog plot (as Fig. 6)")
    out.add_argument("--panels", type=_panel_list,
                     help=PANELS_HELP + "; a panel of Appendix G or of the gradients switches "
                     "on --extra-stats or --gradients")  # fmt: skip
    out.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")


TRAIN_RECIPE = ("batch", "steps", "lr", "warmup_steps", "momentum", "weight_decay",
                "label_smoothing", "ema_decay", "clip_grad_norm", "eval_every", "eval_examples",
                "spp_every", "spp_batch", "collapse_factor", "seed", "device")  # fmt: skip


def _add_train(sub: argparse._SubParsersAction, cifar10_dir: str | None) -> None:
    p = sub.add_parser(
        "train",
        help="a short training run, with SPPs before and after",
        description="Train a model with the paper's recipe scaled down (SGD + Nesterov, warm-up "
        "and cosine decay, label smoothing, weight decay on weights only), with the SPP measured "
        "before and after. Exit status 0 also when the run collapsed (the summary says so).",
    )
    model = _add_model_args(p)
    for name in ("stochdepth_rate", "drop_rate"):
        field_option(model, TrainConfig, name)
    data = p.add_argument_group("data")
    field_option(data, TrainConfig, "dataset")
    data.add_argument(
        "--data-dir",
        type=Path,
        default=cifar10_dir or None,
        help="CIFAR-10 python-version folder (default: $CIFAR10_DIR)",
    )
    field_option(data, TrainConfig, "resolution")
    recipe = p.add_argument_group("recipe")
    for name in TRAIN_RECIPE:
        field_option(recipe, TrainConfig, name)
    recipe.add_argument(
        "--config", type=Path, help="start from a config JSON (or a result JSON's config)"
    )
    out = p.add_argument_group("output")
    out.add_argument("--out", type=Path, help="result JSON (default: print it to stdout)")
    out.add_argument("--csv", type=Path, help="per-step CSV")
    out.add_argument("--plot", type=Path, action="append", default=[],
                     help="training curves: .html, .png, .svg, .pdf or .json (repeatable)")  # fmt: skip
    out.add_argument("--spp-plot", type=Path, action="append", default=[],
                     help="the SPPs before and after training, overlaid (repeatable)")  # fmt: skip
    out.add_argument("--quiet", action="store_true", help="no progress or summary on stderr")


def build_parser(cifar10_dir: str | None = None, description: str = "") -> argparse.ArgumentParser:
    """The parser of every command; `cifar10_dir` is the `--data-dir` default ($CIFAR10_DIR,
    read by `nfcore.cli.main.main`, the only place the command line reads the environment)."""
    parser = _Parser(
        prog="nfcore", description="Signal propagation in normalized and Normalizer-Free ResNets."
    )
    parser.add_argument("--version", action="version", version=f"nfcore {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    _add_spp(sub, description)
    _add_train(sub, cifar10_dir)
    gamma = sub.add_parser("gamma", help="nonlinearity gains gamma = 1/sqrt(Var g(x))")
    gamma.add_argument("name", nargs="?", help="activation name (default: all)")
    gamma.add_argument("--json", action="store_true", help="print JSON")
    plot = sub.add_parser("plot", help="overlay saved SPP results in one figure (as Fig. 2), or "
                          "scrub through tracked training runs (.jsonl)")  # fmt: skip
    plot.add_argument(
        "results", type=Path, nargs="+",
        help="result JSON files written by `nfcore spp`, or JSON-lines files written by "
        "nfcore.track (a figure with a slider over the measured steps)",
    )  # fmt: skip
    plot.add_argument("--out", type=Path, action="append", required=True, dest="plot",
                      help="figure: .html, .png, .svg, .pdf or .json (repeatable)")  # fmt: skip
    plot.add_argument("--label", action="append", help="legend label per result, in order")
    plot.add_argument("--title", help="figure title")
    plot.add_argument("--log-y", action="store_true", help="semilog plot (as Fig. 6)")
    plot.add_argument("--panels", type=_panel_list,
                      help=PANELS_HELP + "; each must be measured by one of the results")  # fmt: skip
    add_blocks_command(sub)
    models = sub.add_parser("models", help="families, depths and variants with parameter counts")
    models.add_argument("--json", action="store_true", help="print JSON")
    return parser
