"""`nfcore` / `python -m nfcore`: Signal Propagation Plots from the command line.

    nfcore spp --depth 600 --norm nf --conv ws --width 0.25 --out spp.json --plot spp.png
    nfcore plot bn.json nf.json --out compare.png
    nfcore plot runs/spp.jsonl --out spp.html        # a run nfcore.track measured
    nfcore train --depth 26 --norm nf --width 0.25 --dataset digits --steps 300 --lr 0.05 --out run.json
    nfcore gamma silu
    nfcore models

Bad input ends with one line on stderr that names the option, and exit status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nfcore.cli.options import UsageError, as_flags, build_parser
from nfcore.spec.config import SPPConfig, TrainConfig
from nfcore.spec.edits import with_changes
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.statistics import switches_for

PLOT_SUFFIXES = (".html", ".png", ".svg", ".pdf", ".json")
EXIT_USAGE = 2
EXIT_FAILURE = 1


def config_from_args(
    args: argparse.Namespace, kind: type[SPPConfig] | type[TrainConfig] = SPPConfig
) -> Any:
    """The config the flags describe, on top of --config when given."""
    values: dict[str, Any] = {}
    if args.config is not None:
        values = _read_config_file(args.config)
        if kind is TrainConfig:  # an SPP config's measurement fields do not apply to training
            values = {k: v for k, v in values.items() if k in TrainConfig.model_fields}
            values.pop("num_classes", None)  # the data set decides
    # Every config field with a flag of the same name (`spp` has no training-only flags).
    flags = {k: v for k in kind.model_fields if (v := getattr(args, k, None)) is not None}
    try:
        return kind(**with_changes(values, flags))
    except ValidationError as error:
        raise UsageError(as_flags(describe_validation_error(error))) from None


def _read_config_file(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except OSError as error:
        raise UsageError(f"--config {path}: {error.strerror or error}") from None
    except json.JSONDecodeError as error:
        raise UsageError(
            f"--config {path}: not valid JSON ({error.msg}, line {error.lineno})"
        ) from None
    except UnicodeDecodeError:
        raise UsageError(f"--config {path}: not a text file (expected UTF-8 JSON)") from None
    if isinstance(data, dict) and isinstance(data.get("config"), dict):
        data = data["config"]
    if not isinstance(data, dict):
        raise UsageError(f"--config {path}: expected a JSON object with config fields")
    return data


def _check_plot_paths(flag: str, paths: Sequence[Path]) -> None:
    for path in paths:
        if path.suffix.lower() not in PLOT_SUFFIXES:
            raise UsageError(
                f"{flag} {path}: unsupported format '{path.suffix}'; use {', '.join(PLOT_SUFFIXES)}"
            )


def _check_outputs(args: argparse.Namespace) -> None:
    """Refuse bad output paths before spending minutes on a run."""
    _check_plot_paths("--plot", args.plot)
    for flag, path in (
        ("--out", args.out),
        ("--csv", args.csv),
        *(("--plot", p) for p in args.plot),
    ):
        if path is not None and path.exists() and path.is_dir():
            raise UsageError(f"{flag} {path}: is a directory")


def _write_text(path: Path, text: str) -> None:
    """Write through a temporary file, so an interrupted run never leaves half a file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_result(args: argparse.Namespace, result: Any) -> None:
    """The result JSON to --out (stdout without it) and its CSV to --csv."""
    text = json.dumps(result.to_json_dict(), indent=2)
    if args.out is None:
        print(text)
    else:
        _write_text(args.out, text + "\n")
    if args.csv is not None:
        _write_text(args.csv, result.to_csv())


def _progress_printer(quiet: bool):
    if quiet or not sys.stderr.isatty():
        return None

    def show(done: int, total: int) -> None:
        sys.stderr.write(f"\r  block {done}/{total}")
        if done == total:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return show


def cmd_spp(args: argparse.Namespace) -> int:
    # A panel of Appendix G or of the gradients needs its measurement: as if flagged.
    for switch in switches_for(args.panels or ()):
        setattr(args, switch, True)
    if args.model is not None:
        from nfcore.cli.foreign import foreign_config, run_foreign_spp

        foreign = foreign_config(args)
        _check_outputs(args)
        result = run_foreign_spp(foreign, _progress_printer(args.quiet))
        return _spp_outputs(args, result)
    from nfcore.cli.foreign import check_no_foreign_flags

    check_no_foreign_flags(args)
    config = config_from_args(args)
    _check_outputs(args)
    from nfcore.engine.devices import DeviceUnavailableError  # torch loads once the input is good
    from nfcore.engine.spp import run_spp

    try:
        result = run_spp(config, progress=_progress_printer(args.quiet))
    except DeviceUnavailableError as error:
        raise UsageError(f"--device: {error}") from None
    return _spp_outputs(args, result)


def _spp_outputs(args: argparse.Namespace, result: Any) -> int:
    """The result JSON, CSV, figures and summary an `spp` run writes."""
    _write_result(args, result)
    if args.plot:
        from nfcore.plots.spp import spp_figure, write_figure

        figure = spp_figure(result, log_y=args.log_y, panels=args.panels)
        for path in args.plot:
            write_figure(figure, path)
    if not args.quiet:
        _summary(result, [p for p in (args.out, args.csv, *args.plot) if p is not None])
    return 0


def _summary(result: Any, written: Sequence[Path]) -> None:
    meta, last = result.meta, result.blocks[-1]

    def fmt(value: float | None) -> str:
        return "overflow" if value is None else f"{value:.4g}"

    unmeasured = result.foreign and result.config.residual is None
    residual = "not measured (--residual)" if unmeasured else fmt(last.residual_avg_channel_var)
    lines = [
        f"{meta.model}: {meta.num_blocks} blocks, {meta.parameter_count:,} parameters, "
        f"{meta.device}, {meta.seconds:.2f} s",
        f"last block: avg channel var {fmt(last.avg_channel_var)}, avg sq channel mean "
        f"{fmt(last.avg_sq_channel_mean)}, residual var {residual}",
    ]
    if result.foreign:
        from nfcore.cli.foreign import measured_how

        lines += measured_how(meta)
    if meta.nonfinite_from_block is not None:
        lines.append(f"the signal overflowed float32 from block {meta.nonfinite_from_block} on")
    lines += [f"wrote {path}" for path in written]
    sys.stderr.write("\n".join(lines) + "\n")


def _read_result(path: Path) -> Any:
    from nfcore.spec.result import SPPResult

    try:
        return SPPResult.model_validate_json(path.read_text())
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (expected an SPP result JSON)") from None
    except OSError as error:
        raise UsageError(f"{path}: {error.strerror or error}") from None
    except ValidationError as error:
        raise UsageError(
            f"{path}: not an nfcore SPP result ({describe_validation_error(error)})"
        ) from None


def cmd_plot(args: argparse.Namespace) -> int:
    _check_plot_paths("--out", args.plot)
    if args.label is not None and len(args.label) != len(args.results):
        raise UsageError(f"--label: got {len(args.label)} labels for {len(args.results)} results")
    tracked = [path.suffix.lower() == ".jsonl" for path in args.results]
    if any(tracked):
        return _plot_tracked(args, tracked)
    results = [_read_result(path) for path in args.results]
    from nfcore.plots.spp import spp_figure, write_figure

    try:
        figure = spp_figure(
            results, log_y=args.log_y, labels=args.label, title=args.title, panels=args.panels
        )
    except ValueError as error:  # "panels: ...": a panel none of the results measured
        raise UsageError(as_flags(str(error))) from None
    for path in args.plot:
        write_figure(figure, path)
        sys.stderr.write(f"wrote {path}\n")
    return 0


def _plot_tracked(args: argparse.Namespace, tracked: Sequence[bool]) -> int:
    """`nfcore plot run.jsonl ...`: runs `nfcore.track` wrote, scrubbed through step by step."""
    if not all(tracked):
        raise UsageError("results: give either result JSON files or tracked runs (.jsonl), "
                         "not both")  # fmt: skip
    for flag, value in (("--title", args.title), ("--panels", args.panels)):
        if value is not None:
            raise UsageError(f"{flag}: not available for tracked runs (.jsonl)")
    from nfcore.spec.tracked import read_tracked

    try:
        runs = [read_tracked(path) for path in args.results]
    except ValueError as error:  # "<file>, line 3: ..."
        raise UsageError(str(error)) from None
    from nfcore.plots.spp import write_figure
    from nfcore.plots.tracked import tracked_figure

    try:
        figure = tracked_figure(*runs, labels=args.label, log_y=args.log_y)
    except ValueError as error:  # a file without a measurement
        raise UsageError(f"results: {error}") from None
    for path in args.plot:
        write_figure(figure, path)
        sys.stderr.write(f"wrote {path}\n")
    return 0


def _train_printer(quiet: bool, total: int):
    """Step progress on a terminal; held-out evaluations and a collapse always (unless quiet)."""
    tty = sys.stderr.isatty()

    def show(event: dict[str, Any]) -> None:
        if quiet:
            return
        kind, step = event["kind"], event["step"]
        if kind == "step" and tty:
            loss = "nan" if event["loss"] is None else f"{event['loss']:.4f}"
            sys.stderr.write(f"\r  step {step}/{total}  loss {loss}  lr {event['lr']:.4g}")
        elif kind == "eval":
            ema = (
                f", EMA {event['ema_accuracy']:.2%}"
                if event.get("ema_accuracy") is not None
                else ""
            )
            sys.stderr.write(
                f"{chr(10) if tty else ''}  step {step}: held-out accuracy "
                f"{event['accuracy']:.2%}{ema}\n"
            )
        elif kind == "collapse":
            sys.stderr.write(f"\n  collapsed at step {step}: {event['reason']}\n")
        sys.stderr.flush()

    return show


def cmd_train(args: argparse.Namespace) -> int:
    config = config_from_args(args, TrainConfig)
    _check_outputs(args)
    _check_plot_paths("--spp-plot", args.spp_plot)
    from nfcore.engine.devices import DeviceUnavailableError
    from nfcore.training.data import DataUnavailableError  # torch loads once the input is good
    from nfcore.training.train import train

    try:
        result = train(config, _train_printer(args.quiet, config.steps), data_dir=args.data_dir)
    except DeviceUnavailableError as error:
        raise UsageError(f"--device: {error}") from None
    except DataUnavailableError as error:
        raise UsageError(f"--data-dir: {error}") from None
    _write_result(args, result)
    from nfcore.plots.spp import write_figure

    if args.plot:
        from nfcore.plots.training import training_figure

        curves = training_figure([(config.label, result.to_json_dict())])
        for path in args.plot:
            write_figure(curves, path)
    if args.spp_plot:
        from nfcore.plots.spp import spp_figure

        snapshots = [result.spp[0], result.spp[-1]]
        figure = spp_figure(
            [s.result for s in snapshots],
            labels=[f"step {s.step}" for s in snapshots],
            title=f"{config.label}: before and after training",
        )
        for path in args.spp_plot:
            write_figure(figure, path)
    if not args.quiet:
        _train_summary(result, [p for p in (args.out, args.csv, *args.plot, *args.spp_plot) if p])
    return 0


def _train_summary(result: Any, written: Sequence[Path]) -> None:
    meta, final = result.meta, result.final_eval
    lines = [
        f"{meta.model}: {len(result.steps)} steps on {result.config.dataset}, "
        f"{meta.parameter_count:,} parameters, {meta.device}, {meta.seconds:.1f} s "
        f"({meta.steps_per_second or 0:.1f} steps/s)"
    ]
    if result.collapse is not None:
        lines.append(f"COLLAPSED at step {result.collapse.step}: {result.collapse.reason}")
    if final is not None:
        lines.append(f"held-out accuracy {final.accuracy:.2%} after {final.step} steps")
    lines += [f"wrote {path}" for path in written]
    sys.stderr.write("\n".join(lines) + "\n")


def cmd_gamma(args: argparse.Namespace) -> int:
    from nfcore.engine.activations import gamma_table

    try:
        rows = gamma_table([args.name] if args.name else None)
    except ValueError as error:
        raise UsageError(f"gamma: {error}") from None
    if args.json:
        print(json.dumps([dataclasses.asdict(row) for row in rows], indent=2))
        return 0
    print(f"{'activation':<12} {'quadrature':>12} {'sampled (D.1)':>14} {'closed form':>12}")
    for row in rows:
        analytic = f"{row.analytic:.6f}" if row.analytic is not None else "-"
        print(f"{row.name:<12} {row.quadrature:>12.6f} {row.sampled:>14.6f} {analytic:>12}")
    return 0


def cmd_models(args: argparse.Namespace) -> int:
    from nfcore.spec.catalog import model_catalog

    rows = model_catalog()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'family':<10} {'norm':<5} {'depth/variant':<14} {'blocks per stage':<18} {'parameters':>14}"
    )
    for row in rows:
        name = str(row["depth"] if row["variant"] is None else row["variant"])
        layout = ",".join(str(n) for n in row["layout"])
        print(
            f"{row['family']:<10} {row['norm']:<5} {name:<14} {layout:<18} {row['parameters']:>14,}"
        )
    return 0


def cmd_blocks(args: argparse.Namespace) -> int:
    from nfcore.cli.foreign import cmd_blocks as blocks

    return blocks(args)


COMMANDS = {
    "spp": cmd_spp,
    "blocks": cmd_blocks,
    "train": cmd_train,
    "plot": cmd_plot,
    "gamma": cmd_gamma,
    "models": cmd_models,
}


def main(argv: Sequence[str] | None = None) -> int:
    # The environment, read here only: CIFAR10_DIR (--data-dir's default) and NFCORE_DEBUG
    # (let an unexpected error raise, with its traceback).
    cifar10_dir, debug = os.environ.get("CIFAR10_DIR"), bool(os.environ.get("NFCORE_DEBUG"))
    try:
        args = build_parser(cifar10_dir, __doc__ or "").parse_args(argv)
        return COMMANDS[args.command](args)
    except UsageError as error:
        sys.stderr.write(f"nfcore: error: {error}\n")
        return EXIT_USAGE
    except BrokenPipeError:
        # The reader went away (`nfcore spp | head`): not an error worth a message.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_FAILURE
    except KeyboardInterrupt:
        sys.stderr.write("nfcore: interrupted\n")
        return 130
    except Exception as error:
        if debug:
            raise
        sys.stderr.write(f"nfcore: error: {type(error).__name__}: {error}\n")
        return EXIT_FAILURE


if __name__ == "__main__":
    sys.exit(main())
