"""The `nfcore` command line: `spp`, `gamma`, `models`, `--version`, and its error contract.

Most tests call `nfcore.cli.main.main([...])` in-process (torch is imported once); a few run the
real entry points (`python -m nfcore` and the installed `nfcore` script) in a subprocess to
prove they work and that an error is one line on stderr with no traceback.

The key lists below are the CLI's documented JSON contract, written out here on purpose
rather than imported, so a change to the library's key tables shows up as a failing test.
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import nfcore
from nfcore.cli.main import main

CORE_KEYS = [
    "index",
    "stage",
    "transition",
    "avg_sq_channel_mean",
    "avg_channel_var",
    "residual_avg_channel_var",
    "expected_var",
]
EXTRA_KEYS = ["activation_mean", "avg_pixel_norm"]
GRADIENT_KEYS = [
    "grad_avg_sq_channel_mean",
    "grad_avg_channel_var",
    "grad_residual_avg_channel_var",
]
CONFIG_KEYS = {
    "family", "depth", "layout", "variant", "norm", "order", "conv", "activation", "alpha",
    "gamma", "se_gain", "skipinit", "maxpool", "padding", "width", "stochdepth_rate", "drop_rate",
    "num_classes", "resolution", "batch", "input", "seed", "device", "gradients", "extra_stats",
}  # fmt: skip
BUILTINS = ["relu", "silu", "gelu", "tanh", "identity", "elu", "selu", "softplus", "sigmoid",
            "leaky_relu", "mish"]  # fmt: skip

# A tiny NF-ResNetV2-14: 4 blocks, 32px (the minimum for its stride of 32), well under a second.
SMALL = ["--depth", "14", "--width", "0.125", "--resolution", "32", "--batch", "4"]
SMALL_NF = [*SMALL, "--norm", "nf", "--device", "cpu"]

SCRIPT = Path(sys.executable).with_name("nfcore")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# --- helpers ----------------------------------------------------------------------------------


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    """main(argv) in-process: (exit code, stdout, stderr)."""
    capsys.readouterr()  # drop anything printed before
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def spp_json(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> dict[str, Any]:
    """Run `nfcore spp ... --quiet` with the JSON on stdout and return it parsed."""
    code, out, err = run_cli(capsys, "spp", *argv, "--quiet")
    assert code == 0, err
    assert err == ""
    return json.loads(out)


def assert_one_line_error(code: int, out: str, err: str, names: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err and "Traceback" not in out
    assert err.endswith("\n") and err.count("\n") == 1, f"not one line: {err!r}"
    assert names in err, f"{names!r} not named in {err!r}"
    assert out == ""


def clean_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("NFCORE_DEBUG", None)  # it would turn an internal error into a traceback
    return env


def run_process(argv: list[str | Path], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in argv],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=clean_env(),
        timeout=120,
        check=False,
    )


def csv_matches(text: str, value: Any) -> bool:
    """A CSV cell against the JSON value it should hold (null is an empty cell)."""
    if value is None:
        return text == ""
    if isinstance(value, bool):
        return text == str(value)
    if isinstance(value, int):
        return int(text) == value
    return float(text) == value  # repr round-trips a float exactly


def skip_if_cuda() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU, so --device cuda is valid")


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NFCORE_DEBUG", raising=False)


@pytest.fixture(scope="module")
def small_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One small NF run writing every output; shared by the tests that read its files."""
    folder = tmp_path_factory.mktemp("spp")
    paths = {name: folder / name for name in ("r.json", "r.csv", "spp.html", "spp.png")}
    code = main(
        [
            "spp",
            *SMALL_NF,
            "--quiet",
            "--out",
            str(paths["r.json"]),
            "--csv",
            str(paths["r.csv"]),
            "--plot",
            str(paths["spp.html"]),
            "--plot",
            str(paths["spp.png"]),
        ]
    )
    assert code == 0
    return {"paths": paths, "result": json.loads(paths["r.json"].read_text())}


# --- (b) a small SPP with every output -----------------------------------------------------


def test_spp_json_has_exactly_the_documented_keys(small_run: dict[str, Any]) -> None:
    result = small_run["result"]
    assert set(result) == {"config", "blocks", "meta"}
    assert isinstance(result["blocks"], list)
    for block in result["blocks"]:
        assert list(block) == CORE_KEYS
    config = result["config"]
    assert set(config) == CONFIG_KEYS
    assert config["layout"] == [1, 1, 1, 1]
    assert len(result["blocks"]) == sum(config["layout"]) == result["meta"]["num_blocks"]
    assert [b["index"] for b in result["blocks"]] == list(range(4))
    assert [b["stage"] for b in result["blocks"]] == [0, 1, 2, 3]
    assert all(b["transition"] for b in result["blocks"])  # one block per stage


def test_spp_config_is_full_and_canonical(small_run: dict[str, Any]) -> None:
    config = small_run["result"]["config"]
    expected = {"family": "resnetv2", "depth": 14, "norm": "nf", "conv": "ws", "width": 0.125,
                "resolution": 32, "batch": 4, "seed": 0, "device": "cpu", "alpha": 0.2,
                "gamma": "auto", "activation": "relu", "input": "gaussian", "order": None,
                "variant": None, "gradients": False, "extra_stats": False}  # fmt: skip
    assert {k: config[k] for k in expected} == expected
    # Canonical: validating it again changes nothing.
    from nfcore.spec.config import SPPConfig

    assert SPPConfig(**config).model_dump(mode="json") == config


def test_spp_meta(small_run: dict[str, Any]) -> None:
    meta = small_run["result"]["meta"]
    assert meta["version"] == nfcore.__version__
    assert meta["device"] == "cpu"
    assert isinstance(meta["seconds"], float | int) and meta["seconds"] >= 0
    assert isinstance(meta["parameter_count"], int) and meta["parameter_count"] > 0
    assert meta["gamma"] == pytest.approx(1.712859, abs=1e-6)  # auto gain of relu
    assert meta["nonfinite_from_block"] is None


def test_spp_nf_expected_var_is_a_number(small_run: dict[str, Any]) -> None:
    blocks = small_run["result"]["blocks"]
    for block in blocks:
        for key in CORE_KEYS[3:]:
            assert isinstance(block[key], float) and math.isfinite(block[key]), (key, block)
    # Var(x) = 1 + alpha^2 after the first block of a stage (alpha = 0.2).
    assert blocks[0]["expected_var"] == pytest.approx(1.04)


def test_spp_csv_matches_the_json(small_run: dict[str, Any]) -> None:
    text = small_run["paths"]["r.csv"].read_text()
    rows = list(csv.reader(text.splitlines()))
    assert rows[0] == CORE_KEYS
    blocks = small_run["result"]["blocks"]
    assert len(rows) - 1 == len(blocks)
    for row, block in zip(rows[1:], blocks, strict=True):
        for key, cell in zip(rows[0], row, strict=True):
            assert csv_matches(cell, block[key]), (key, cell, block[key])


def test_spp_png_and_html_plots(small_run: dict[str, Any]) -> None:
    png = small_run["paths"]["spp.png"].read_bytes()
    assert png.startswith(PNG_MAGIC)
    assert len(png) > 1000
    html = small_run["paths"]["spp.html"].read_text(encoding="utf-8")
    assert "<html" in html.lower()
    assert "plotly" in html.lower()


def test_bn_expected_var_is_null_in_json_and_empty_in_csv(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out, table = tmp_path / "bn.json", tmp_path / "bn.csv"
    code, stdout, _ = run_cli(
        capsys, "spp", *SMALL, "--norm", "bn", "--device", "cpu", "--quiet", "--out", out,
        "--csv", table,
    )  # fmt: skip
    assert code == 0 and stdout == ""
    blocks = json.loads(out.read_text())["blocks"]
    assert len(blocks) == 4
    assert all(b["expected_var"] is None for b in blocks)
    assert all(isinstance(b["avg_channel_var"], float) for b in blocks)
    rows = list(csv.DictReader(table.read_text().splitlines()))
    assert [r["expected_var"] for r in rows] == [""] * 4
    assert [float(r["avg_channel_var"]) for r in rows] == [b["avg_channel_var"] for b in blocks]


def test_layout_decides_the_number_of_blocks(capsys: pytest.CaptureFixture[str]) -> None:
    no_depth = [arg for arg in SMALL_NF if arg not in ("--depth", "14")]
    result = spp_json(capsys, *no_depth, "--layout", "1,2")
    assert result["config"]["layout"] == [1, 2]
    assert result["config"]["depth"] == 3 * 3 + 2
    assert len(result["blocks"]) == 3
    assert [b["stage"] for b in result["blocks"]] == [0, 1, 1]
    assert [b["transition"] for b in result["blocks"]] == [True, True, False]


def test_depth_and_layout_that_disagree_are_refused(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "spp", *SMALL_NF, "--layout", "1,2")
    assert code == 2
    assert err.strip() == (
        "nfcore: error: --depth: 14 does not match layout 1,2 (a 11-layer net); give one of them"
    )


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        (
            ["--norm", "nf", "--activation", "silu", "--alpha", "0.3", "--gamma", "1.5",
             "--se-gain", "2", "--skipinit", "--no-maxpool", "--num-classes", "10", "--seed",
             "3", "--input", "digits"],
            {"norm": "nf", "conv": "ws", "activation": "silu", "alpha": 0.3, "gamma": 1.5,
             "se_gain": 2.0, "skipinit": True, "maxpool": False, "num_classes": 10, "seed": 3,
             "input": "digits"},
        ),
        (
            ["--norm", "bn", "--order", "relu-bn-conv", "--conv", "he", "--activation", "swish"],
            {"norm": "bn", "order": "relu-bn-conv", "conv": "he", "activation": "silu",
             "alpha": None, "gamma": None},
        ),
        (
            ["--family", "resnetv1", "--norm", "none"],
            {"family": "resnetv1", "norm": "none", "order": None},
        ),
        (
            ["--norm", "fixup", "--conv", "he"],
            {"norm": "fixup", "conv": "he", "skipinit": False},
        ),
        (
            ["--family", "nf_regnet", "--variant", "B0", "--depth", "50"],
            {"family": "nf_regnet", "variant": "B0", "depth": None, "layout": [1, 3, 6, 6],
             "activation": "silu", "se_gain": 2.0, "skipinit": True},
        ),
    ],
    ids=["nf-flags", "bn-order", "resnetv1", "fixup", "nf_regnet"],
)  # fmt: skip
def test_model_flags_land_in_the_config(
    capsys: pytest.CaptureFixture[str], flags: list[str], expected: dict[str, Any]
) -> None:
    result = spp_json(capsys, *SMALL, "--batch", "2", "--device", "cpu", *flags)
    assert {k: result["config"][k] for k in expected} == expected
    assert len(result["blocks"]) == sum(result["config"]["layout"])
    if isinstance(expected.get("gamma"), float):
        assert result["meta"]["gamma"] == expected["gamma"]


# --- (c) --gradients and --extra-stats -------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "keys"),
    [
        (["--gradients"], CORE_KEYS + GRADIENT_KEYS),
        (["--extra-stats"], CORE_KEYS + EXTRA_KEYS),
        (["--gradients", "--extra-stats"], CORE_KEYS + EXTRA_KEYS + GRADIENT_KEYS),
    ],
    ids=["gradients", "extra-stats", "both"],
)
def test_optional_statistics_add_exactly_their_keys(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], keys: list[str]
) -> None:
    table = tmp_path / "r.csv"
    result = spp_json(capsys, *SMALL_NF, *flags, "--csv", table)
    assert result["config"]["gradients"] == ("--gradients" in flags)
    assert result["config"]["extra_stats"] == ("--extra-stats" in flags)
    for block in result["blocks"]:
        assert set(block) == set(keys)
        for key in set(keys) - set(CORE_KEYS):
            assert isinstance(block[key], float) and math.isfinite(block[key]), (key, block)
    header, *rows = list(csv.reader(table.read_text().splitlines()))
    assert set(header) == set(keys) and len(header) == len(keys)
    assert header == list(result["blocks"][0])  # same column order as the JSON
    assert len(rows) == len(result["blocks"])


def test_panels_draw_the_chosen_statistics_and_switch_on_their_measurement(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    figure, table = tmp_path / "spp.json", tmp_path / "r.csv"
    panels = "activation_mean,avg_channel_var,grad_avg_channel_var"
    result = spp_json(capsys, *SMALL_NF, "--panels", panels, "--plot", figure, "--csv", table)
    # Appendix G and the gradients are measured without --extra-stats or --gradients ...
    assert result["config"]["extra_stats"] is result["config"]["gradients"] is True
    assert all(isinstance(block["activation_mean"], float) for block in result["blocks"])
    # ... the figure has exactly the chosen panels, forward ones in the first row ...
    spec = json.loads(figure.read_text())
    titles = [annotation["text"] for annotation in spec["layout"]["annotations"]]
    assert titles == ["Average Channel Variance", "Activation Mean",
                      "Gradient Average Channel Variance"]  # fmt: skip
    [curve] = [t for t in spec["data"] if t["xaxis"] == "x2" and t["mode"] == "lines"]
    assert curve["y"] == [block["activation_mean"] for block in result["blocks"]]
    # ... and the CSV keeps every measured statistic, the chosen one among them.
    header = table.read_text().splitlines()[0].split(",")
    assert header == CORE_KEYS + EXTRA_KEYS + GRADIENT_KEYS


def test_unknown_panels_are_one_line_naming_the_known_keys(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, err = run_cli(capsys, "spp", *SMALL_NF, "--panels", "avg_channel_var,bogus")
    assert_one_line_error(code, out, err, "--panels")
    assert "'bogus'" in err and "activation_mean" in err and "grad_avg_channel_var" in err


def test_plot_panels_must_be_measured_by_a_result(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any], tmp_path: Path
) -> None:
    saved = small_run["paths"]["r.json"]  # measured without Appendix G
    code, out, err = run_cli(capsys, "plot", saved, "--panels", "avg_pixel_norm",
                             "--out", tmp_path / "f.json")  # fmt: skip
    assert_one_line_error(code, out, err, "--panels")
    assert "avg_pixel_norm" in err and "avg_channel_var" in err
    code, _, err = run_cli(capsys, "plot", saved, "--panels", "residual_avg_channel_var",
                           "--out", tmp_path / "f.json")  # fmt: skip
    assert code == 0, err
    spec = json.loads((tmp_path / "f.json").read_text())
    assert [a["text"] for a in spec["layout"]["annotations"]] == [
        "Residual Average Channel Variance"
    ]


# --- (d) --config ------------------------------------------------------------------------------


def test_config_from_a_config_file_reproduces_the_blocks_bit_for_bit(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any], tmp_path: Path
) -> None:
    first = small_run["result"]
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps(first["config"]))
    again = spp_json(capsys, "--config", config_file)
    assert again["config"] == first["config"]
    assert again["blocks"] == first["blocks"]  # exact float equality
    assert again["meta"]["parameter_count"] == first["meta"]["parameter_count"]


def test_config_accepts_a_whole_result_json(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    first = small_run["result"]
    again = spp_json(capsys, "--config", small_run["paths"]["r.json"])
    assert again["config"] == first["config"]
    assert again["blocks"] == first["blocks"]


def test_a_flag_overrides_the_config_file(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    first = small_run["result"]
    again = spp_json(
        capsys, "--config", small_run["paths"]["r.json"], "--seed", "1", "--alpha", "0.5"
    )
    assert again["config"]["seed"] == 1
    assert again["config"]["alpha"] == 0.5
    unchanged = {k: v for k, v in first["config"].items() if k not in ("seed", "alpha")}
    assert {k: again["config"][k] for k in unchanged} == unchanged
    assert again["blocks"] != first["blocks"]
    assert again["blocks"][0]["expected_var"] == pytest.approx(1.25)


def test_a_flag_adds_gradients_to_a_config_file(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    again = spp_json(capsys, "--config", small_run["paths"]["r.json"], "--gradients")
    assert again["config"]["gradients"] is True
    assert set(again["blocks"][0]) == set(CORE_KEYS + GRADIENT_KEYS)
    forward = [{k: b[k] for k in CORE_KEYS} for b in again["blocks"]]
    assert forward == small_run["result"]["blocks"]  # the forward pass is the same


def test_depth_flag_overrides_the_config_files_depth(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    # The file is canonical, so it holds both depth 14 and layout [1, 1, 1, 1]; --depth 26
    # must win over both (the contract: a flag given with --config overrides the file).
    again = spp_json(capsys, "--config", small_run["paths"]["r.json"], "--depth", "26")
    assert again["config"]["depth"] == 26
    assert again["config"]["layout"] == [2, 2, 2, 2]
    assert len(again["blocks"]) == 8


def test_layout_flag_overrides_the_config_files_layout(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    again = spp_json(capsys, "--config", small_run["paths"]["r.json"], "--layout", "2,1")
    assert again["config"]["layout"] == [2, 1]
    assert len(again["blocks"]) == 3


# --- (e) stdout, (f) seeds ----------------------------------------------------------------------


def test_without_out_the_json_goes_to_stdout_and_the_summary_to_stderr(
    capsys: pytest.CaptureFixture[str],
    small_run: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "spp", *SMALL_NF)
    assert code == 0
    result = json.loads(out)  # stdout is the JSON and nothing else
    assert result["blocks"] == small_run["result"]["blocks"]
    assert "Traceback" not in err
    assert "blocks" in err  # the human summary
    assert list(tmp_path.iterdir()) == []


def test_quiet_prints_nothing_on_stderr(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "spp", *SMALL_NF, "--quiet", "--out", tmp_path / "r.json")
    assert code == 0 and out == "" and err == ""
    assert (tmp_path / "r.json").exists()


def test_same_seed_same_blocks_other_seed_other_blocks(
    capsys: pytest.CaptureFixture[str], small_run: dict[str, Any]
) -> None:
    same = spp_json(capsys, *SMALL_NF, "--seed", "0")
    assert same["blocks"] == small_run["result"]["blocks"]
    other = spp_json(capsys, *SMALL_NF, "--seed", "1")
    assert other["config"]["seed"] == 1
    assert other["blocks"] != small_run["result"]["blocks"]
    assert all(
        a["avg_channel_var"] != b["avg_channel_var"]
        for a, b in zip(other["blocks"], small_run["result"]["blocks"], strict=True)
    )


# --- (g) bad input --------------------------------------------------------------------------

BAD_SPP = [
    pytest.param(["--activation", "nope"], "--activation", id="unknown-activation"),
    pytest.param(["--depth", "51"], "--depth", id="depth-without-layout"),
    pytest.param(["--depth", "0"], "--depth", id="depth-zero"),
    pytest.param(["--width", "-1"], "--width", id="negative-width"),
    pytest.param(["--width=-0.5"], "--width", id="negative-width-equals"),
    pytest.param(["--width", "0"], "--width", id="zero-width"),
    pytest.param(["--resolution", "16"], "--resolution", id="resolution-below-stride"),
    pytest.param(["--resolution", "2000"], "--resolution", id="resolution-too-large"),
    pytest.param(["--resolution", "abc"], "--resolution", id="resolution-not-int"),
    pytest.param(["--alpha", "nan"], "--alpha", id="alpha-nan"),
    pytest.param(["--alpha", "inf"], "--alpha", id="alpha-inf"),
    pytest.param(["--width", "NaN"], "--width", id="width-nan"),
    pytest.param(["--gamma", "nan"], "--gamma", id="gamma-nan"),
    pytest.param(["--gamma", "-1"], "--gamma", id="gamma-negative"),
    pytest.param(["--se-gain", "nan"], "--se-gain", id="se-gain-nan"),
    pytest.param(["--batch", "0"], "--batch", id="batch-zero"),
    pytest.param(["--seed", "-1"], "--seed", id="seed-negative"),
    pytest.param(["--norm", "layer"], "--norm", id="unknown-norm"),
    pytest.param(["--family", "vgg"], "--family", id="unknown-family"),
    pytest.param(["--input", "cifar"], "--input", id="unknown-input"),
    pytest.param(["--family", "nf_regnet", "--variant", "B9"], "--variant", id="unknown-variant"),
    pytest.param(["--family", "resnetv1", "--norm", "nf"], "--norm", id="norm-not-in-family"),
    pytest.param(["--layout", "3,x"], "--layout", id="layout-not-ints"),
    pytest.param(["--layout", "0,1"], "--layout", id="layout-zero"),
    pytest.param(["--layout", "1,1,1,1,1"], "--layout", id="layout-five-stages"),
    pytest.param(["--layout", ",,"], "--layout", id="layout-empty"),
    pytest.param(["--plot", "{tmp}/spp.gif"], "--plot", id="plot-suffix"),
    pytest.param(["--plot", "{tmp}/spp"], "--plot", id="plot-no-suffix"),
    pytest.param(["--config", "{tmp}/missing.json"], "--config", id="config-missing"),
    pytest.param(["--config", "{tmp}/not.json"], "--config", id="config-not-json"),
    pytest.param(["--config", "{tmp}/list.json"], "--config", id="config-not-object"),
    pytest.param(["--config", "{tmp}/binary.json"], "--config", id="config-not-utf8"),
    pytest.param(["--config", "{tmp}"], "--config", id="config-directory"),
    pytest.param(["--config", "{tmp}/extra.json"], "--bogus", id="config-unknown-field"),
    pytest.param(["--csv", "{tmp}"], "--csv", id="csv-is-directory"),
    pytest.param(["--bogus"], "--bogus", id="unknown-option"),
    pytest.param(["--depth"], "--depth", id="missing-value"),
    pytest.param(["--out", "{tmp}"], "--out", id="out-is-directory"),
    pytest.param(["--device", "gpu"], "--device", id="unknown-device"),
    pytest.param(["--device", "cuda"], "--device", id="cuda-without-gpu"),
]


def _bad_input_files(tmp_path: Path) -> None:
    (tmp_path / "not.json").write_text("depth: 14\n")
    (tmp_path / "list.json").write_text("[14, 26]\n")
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00{")
    (tmp_path / "extra.json").write_text('{"depth": 14, "bogus": 1}')


@pytest.mark.parametrize(("flags", "names"), BAD_SPP)
def test_bad_spp_input_is_one_line_exit_2_and_writes_nothing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, flags: list[str], names: str
) -> None:
    if flags == ["--device", "cuda"]:
        skip_if_cuda()
    _bad_input_files(tmp_path)
    existing = tmp_path / "existing.json"
    existing.write_text("keep me\n")
    before = sorted(p.name for p in tmp_path.iterdir())
    flags = [f.format(tmp=tmp_path) for f in flags]
    code, out, err = run_cli(
        capsys, "spp", *SMALL_NF, "--quiet", "--out", existing,
        "--csv", tmp_path / "new.csv", "--plot", tmp_path / "new.html", *flags,
    )  # fmt: skip
    assert_one_line_error(code, out, err, names)
    assert err.startswith("nfcore: error: ")
    assert existing.read_text() == "keep me\n"  # untouched by a failed run
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing new, no temp files


def test_several_problems_are_still_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "spp", "--width", "-1", "--alpha", "nan", "--depth", "51")
    assert_one_line_error(code, out, err, "--width")
    assert "--alpha" in err


@pytest.mark.parametrize(
    ("argv", "names"),
    [([], "command"), (["fit"], "fit"), (["spp", "extra"], "extra")],
    ids=["no-command", "unknown-command", "stray-argument"],
)
def test_bad_command_line_is_one_line(
    capsys: pytest.CaptureFixture[str], argv: list[str], names: str
) -> None:
    assert_one_line_error(*run_cli(capsys, *argv), names)


# --- (h) gamma ---------------------------------------------------------------------------------


def test_gamma_relu_shows_quadrature_and_sampled(capsys: pytest.CaptureFixture[str]) -> None:
    from nfcore.engine.activations import gamma_sampled

    code, out, err = run_cli(capsys, "gamma", "relu")
    assert code == 0 and err == ""
    assert "quadrature" in out and "sampled" in out
    (line,) = [row for row in out.splitlines() if row.split()[:1] == ["relu"]]
    numbers = line.split()[1:]
    assert numbers[0] == "1.712859"  # 1/sqrt((1 - 1/pi)/2), by quadrature
    sampled = gamma_sampled("relu")
    assert numbers[1] == f"{sampled:.6f}"
    assert numbers[1] != numbers[0]
    assert float(numbers[1]) == pytest.approx(1.712859, rel=0.01)


def test_gamma_lists_every_builtin(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "gamma")
    assert code == 0 and err == ""
    names = [row.split()[0] for row in out.splitlines()[1:]]
    assert names[: len(BUILTINS)] == BUILTINS
    assert re.search(r"^identity\s+1\.000000\s", out, re.MULTILINE)


def test_gamma_alias(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "gamma", "swish")
    assert code == 0
    assert re.search(r"^silu\s+1\.78", out, re.MULTILINE)


def test_gamma_unknown_is_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run_cli(capsys, "gamma", "nope")
    assert_one_line_error(code, out, err, "nope")
    assert "relu" in err  # names the choices


@pytest.mark.parametrize("argv", [["gamma", "--json"], ["gamma", "relu", "--json"]])
def test_gamma_json(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    rows = json.loads(out)
    assert isinstance(rows, list)
    for row in rows:
        assert set(row) == {"name", "quadrature", "sampled", "analytic"}
    by_name = {row["name"]: row for row in rows}
    assert by_name["relu"]["quadrature"] == pytest.approx(1.712859, abs=1e-6)
    assert by_name["relu"]["analytic"] == pytest.approx(1.712859, abs=1e-6)
    assert by_name["relu"]["sampled"] != by_name["relu"]["quadrature"]
    if len(argv) == 2:
        assert [row["name"] for row in rows][: len(BUILTINS)] == BUILTINS
    else:
        assert list(by_name) == ["relu"]


# --- (i) models ----------------------------------------------------------------------------


@pytest.fixture
def fresh_gain_caches() -> None:
    """Forget cached activation gains, as in a fresh `nfcore models` process.

    Otherwise whether `models` works would depend on which earlier test warmed the caches.
    """
    from nfcore.engine import activations

    for name in ("_he_gain_cached", "_gamma_quadrature_cached", "_gamma_sampled_cached"):
        cache = getattr(activations, name, None)
        if cache is not None:
            cache.cache_clear()


def check_models_table(out: str) -> None:
    lines = out.splitlines()
    assert "parameters" in lines[0]
    cells = [line.split() for line in lines[1:]]
    names = {row[2] for row in cells}
    assert {"50", "101", "152", "200", "288", "600"} <= names
    assert {"B0", "B1", "B2", "B3", "B4", "B5"} <= names
    assert {row[0] for row in cells} == {"resnetv2", "resnetv1", "nf_regnet"}
    resnet50 = [row for row in cells if row[2] == "50"]
    assert resnet50 and all(re.fullmatch(r"25,5\d\d,\d\d\d", row[-1]) for row in resnet50)
    # torchvision's ResNet-50 has 25,557,032 parameters; the BN ResNetV1-50 is that network.
    assert ["resnetv1", "bn", "50", "3,4,6,3", "25,557,032"] in cells


def test_models_table(capsys: pytest.CaptureFixture[str], fresh_gain_caches: None) -> None:
    code, out, err = run_cli(capsys, "models")
    assert code == 0, err
    check_models_table(out)


def test_models_json(capsys: pytest.CaptureFixture[str], fresh_gain_caches: None) -> None:
    code, out, err = run_cli(capsys, "models", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert {row["depth"] for row in rows if row["depth"]} >= {50, 101, 152, 200, 288, 600}
    assert [row["variant"] for row in rows if row["variant"]] == ["B0", "B1", "B2", "B3", "B4",
                                                                   "B5"]  # fmt: skip
    for row in rows:
        assert {"family", "norm", "depth", "variant", "layout", "parameters"} <= set(row)
        assert isinstance(row["parameters"], int) and row["parameters"] > 0
    (v1_50,) = [r for r in rows if r["family"] == "resnetv1" and r["depth"] == 50]
    assert v1_50["parameters"] == 25_557_032
    assert v1_50["layout"] == [3, 4, 6, 3]


# --- (j) --version -----------------------------------------------------------------------------


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"nfcore {nfcore.__version__}"


# --- (a) the real entry points ---------------------------------------------------------------


def test_python_dash_m_runs_an_spp(tmp_path: Path) -> None:
    proc = run_process([sys.executable, "-m", "nfcore", "spp", *SMALL_NF, "--quiet"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr == ""
    result = json.loads(proc.stdout)
    assert len(result["blocks"]) == 4
    assert list(result["blocks"][0]) == CORE_KEYS


@pytest.mark.parametrize(
    ("entry", "flags", "names"),
    [
        ("script", ["--activation", "nope"], "--activation"),
        ("module", ["--device", "cuda"], "--device"),
    ],
    ids=["script-activation", "module-cuda"],
)
def test_entry_points_fail_with_one_stderr_line(
    tmp_path: Path, entry: str, flags: list[str], names: str
) -> None:
    if names == "--device":
        skip_if_cuda()
    command = [SCRIPT] if entry == "script" else [sys.executable, "-m", "nfcore"]
    out_file = tmp_path / "r.json"
    proc = run_process([*command, "spp", *SMALL, *flags, "--out", out_file], tmp_path)
    assert_one_line_error(proc.returncode, proc.stdout, proc.stderr, names)
    assert not out_file.exists()


def test_installed_script_version_and_models(tmp_path: Path) -> None:
    assert SCRIPT.exists(), f"console script missing at {SCRIPT}"
    version = run_process([SCRIPT, "--version"], tmp_path)
    assert version.returncode == 0
    assert version.stdout.strip() == f"nfcore {nfcore.__version__}"
    models = run_process([SCRIPT, "models"], tmp_path)
    assert "Traceback" not in models.stderr
    assert models.returncode == 0, models.stderr
    check_models_table(models.stdout)


# --- your own network: what the user reads -----------------------------------------------------


def test_spp_help_states_the_defaults_of_both_kinds_of_run(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Issue 20 item 7: the help showed 128 px and batch 16, which a --model run (64, 8)
    does not use. Both defaults come from the configs' fields."""
    from nfcore.spec.config import SPPConfig
    from nfcore.spec.foreign_config import ForeignConfig

    with pytest.raises(SystemExit):
        main(["spp", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag, name in (("--resolution RESOLUTION", "resolution"), ("--batch BATCH", "batch")):
        found = re.search(rf"{flag} .*?; default (\d+) \((\d+) with --model\)", text)
        assert found, f"{flag}: the help states no 'default N (M with --model)'"
        ours, foreign = (int(number) for number in found.groups())
        assert ours == SPPConfig.model_fields[name].default
        assert foreign == ForeignConfig.model_fields[name].default
        assert ours != foreign  # 128 and 64, 16 and 8: the reason to say both
    # A flag whose default is the same for both says it once.
    assert "--seed SEED Seeds the weights and the input batch; default 0; 0 <=" in text


def foreign_run(notes: list[str] | None) -> Any:
    """A token network's result as the engine gives it, with its meta's notes."""
    from nfcore.spec.foreign_config import ForeignConfig
    from nfcore.spec.result import BlockStats, SPPMeta, SPPResult

    config = ForeignConfig(model="nets.py:vit", input_shape=(16, 32))
    blocks = [BlockStats(index=i, stage=0, transition=False, name=f"blocks.{i}",
                         avg_sq_channel_mean=0.01, avg_channel_var=1.0, residual_avg_channel_var=None,
                         expected_var=None) for i in range(2)]  # fmt: skip
    meta = SPPMeta(version="0.1.0", torch_version="2.13.0", device="cpu", seconds=0.1,
                   parameter_count=1000, gamma=None, model=config.label, num_blocks=2,
                   stage_ends=[1], reduced_over="N,L", layout="NLC", notes=notes)  # fmt: skip
    return SPPResult(config=config, blocks=blocks, meta=meta)


def test_spp_model_says_the_axes_the_layout_and_every_note_of_the_engine(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 20: a choice the engine made on a foreign network (its layout from the network's
    evidence, tied blocks) is said on stderr, not only kept in the JSON's meta."""
    import nfcore.cli.foreign

    notes = ["layout NLC (tokens): the LayerNorm after each block normalizes its last axis (32)",
             "blocks.1 is called twice (a tied block): rows blocks.1#0 and blocks.1#1"]  # fmt: skip
    monkeypatch.setattr(
        nfcore.cli.foreign, "run_foreign_spp", lambda config, progress: foreign_run(notes)
    )
    code, out, err = run_cli(capsys, "spp", "--model", "nets.py:vit", "--input-shape", "16,32")
    assert code == 0, err
    assert json.loads(out)["meta"]["notes"] == notes  # the JSON keeps them too
    lines = err.splitlines()
    assert "statistics per channel over N,L (block tensors NLC)" in lines
    assert [line for line in lines if line.startswith("note: ")] == [f"note: {n}" for n in notes]
    # --quiet keeps stderr empty, as documented; the notes stay in the JSON.
    code, out, err = run_cli(capsys, "spp", "--model", "nets.py:vit", "--quiet")
    assert code == 0 and err == "" and json.loads(out)["meta"]["notes"] == notes


STEM_NETS = """
from torch import nn


class Block(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.conv = nn.Conv2d(width, width, 3, padding=1)

    def forward(self, x):
        return x + self.conv(x)


def build(width=4):
    # A LeViT-like stem of repeated convs (not residual), then two stages of residual blocks.
    stem = nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.Conv2d(width, width, 3, padding=1))
    return nn.Sequential(stem, nn.Sequential(Block(width), Block(width)),
                         nn.Sequential(Block(width), Block(width)))
"""


def test_blocks_says_why_each_block_was_chosen_what_was_left_out_and_the_notes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Issue 20: `nfcore blocks` says per block why it was chosen, which near candidates
    were left out and why (the stem's repeated convs), and the engine's notes."""
    nets = tmp_path / "stem_nets.py"
    nets.write_text(STEM_NETS)
    argv = ["blocks", "--model", f"{nets}:build", "--resolution", "8"]
    code, out, err = run_cli(capsys, *argv, "--json")
    assert code == 0, err
    found = json.loads(out)
    assert [row["name"] for row in found["blocks"]] == ["1.0", "1.1", "2.0", "2.1"]
    assert all(row["why"] for row in found["blocks"])
    assert "0" in {item["name"] for item in found["left_out"]}  # the stem
    assert all(item["why"] for item in found["left_out"]) and found["notes"]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    lines = out.splitlines()
    for row in found["blocks"]:  # each block's row ends with why it was chosen
        assert any(line.split()[1] == row["name"] and line.endswith(row["why"]) for line in lines)
    left = lines[lines.index("left out:") + 1 :]
    for item in found["left_out"]:
        assert f"  {item['name']}: {item['why']}" in left
    assert [line for line in lines if line.startswith("note: ")] == [
        f"note: {note}" for note in found["notes"]
    ]


def test_the_blocks_report_prints_what_the_engine_says() -> None:
    """The text of `nfcore blocks` from the engine's answer, given here."""
    from nfcore.cli.foreign import blocks_report

    found = {
        "blocks": [
            {"index": 0, "name": "stages.0.b1", "stage": 0, "transition": True,
             "input_shape": [8, 16, 16], "output_shape": [16, 8, 8], "layout": "NHWC",
             "why": "its output adds a projection of its input to a branch"},
        ],
        "left_out": [{"name": "stem.conv1", "why": "not residual: its output does not add its input"}],
        "notes": ["channels last (NHWC): the LayerNorm after it normalizes its last axis (16)"],
    }  # fmt: skip
    text = blocks_report(found)
    assert "stages.0.b1" in text and "NHWC" in text
    assert text.splitlines()[1].endswith("its output adds a projection of its input to a branch")
    assert "left out:\n  stem.conv1: not residual: its output does not add its input\n" in text
    assert text.endswith("note: channels last (NHWC): the LayerNorm after it normalizes its last "
                         "axis (16)\n")  # fmt: skip


TOKEN_NETS = """
from torch import nn


class Mix(nn.Module):
    def forward(self, x):
        return x + x.tanh()


def build():
    return nn.Sequential(Mix(), Mix())
"""


@pytest.mark.parametrize("command", ["spp", "blocks"])
def test_a_layout_the_network_does_not_tell_is_refused_in_one_line_saying_what_to_pass(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, command: str
) -> None:
    """Issue 20: N,L,C tokens with no layer reading them were measured as if L were the
    channels, silently. Now the command refuses, in one line that says which flag decides."""
    nets = tmp_path / "token_nets.py"
    nets.write_text(TOKEN_NETS)
    code, out, err = run_cli(capsys, command, "--model", f"{nets}:build", "--input-shape", "16,8")
    assert_one_line_error(code, out, err, "layout")
    assert "--channels last|first" in err and out == ""
    code, out, err = run_cli(capsys, command, "--model", f"{nets}:build", "--input-shape", "16,8",
                             "--channels", "last", *(["--quiet"] if command == "spp" else []))  # fmt: skip
    assert code == 0, err
