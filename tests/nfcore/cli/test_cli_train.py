"""`nfcore train`: a short run from the command line, its outputs, and its one-line errors."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from nfcore.cli.main import main
from tests.nfcore.training.test_data import write_cifar10

TINY = ["--depth", "14", "--width", "0.125", "--no-maxpool", "--resolution", "16", "--batch", "8"]


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line_error(code: int, out: str, err: str, names: str) -> None:
    assert code == 2, (code, err)
    assert "Traceback" not in err
    assert err.count("\n") == 1, f"not one line: {err!r}"
    assert names in err, f"{names!r} not named in {err!r}"
    assert out == ""


@pytest.fixture(autouse=True)
def _no_debug(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NFCORE_DEBUG", raising=False)
    monkeypatch.delenv("CIFAR10_DIR", raising=False)


def test_train_writes_result_csv_curves_and_spps(capsys, tmp_path):
    paths = {name: tmp_path / name for name in ("run.json", "run.csv", "curves.html", "spp.html")}
    code, out, err = run_cli(
        capsys, "train", *TINY, "--norm", "nf", "--steps", "10", "--eval-every", "5",
        "--out", paths["run.json"], "--csv", paths["run.csv"], "--plot", paths["curves.html"],
        "--spp-plot", paths["spp.html"],
    )  # fmt: skip
    assert code == 0, err
    assert out == ""
    result = json.loads(paths["run.json"].read_text())
    assert result["status"] == "finished"
    assert [e["step"] for e in result["evals"]] == [5, 10]
    assert [s["step"] for s in result["spp"]] == [0, 10]
    assert result["config"]["norm"] == "nf" and result["config"]["num_classes"] == 10
    rows = list(csv.DictReader(io.StringIO(paths["run.csv"].read_text())))
    assert len(rows) == 10 and float(rows[0]["loss"]) == result["steps"][0]["loss"]
    assert float(rows[4]["eval_accuracy"]) == result["evals"][0]["accuracy"]
    assert "plotly" in paths["curves.html"].read_text()[:5000].lower()
    assert paths["spp.html"].stat().st_size > 1000
    assert "held-out accuracy" in err and "wrote" in err


def test_train_reports_a_collapse_and_still_writes_the_result(capsys, tmp_path):
    out_path = tmp_path / "c.json"
    code, _, err = run_cli(
        capsys, "train", *TINY, "--norm", "nf", "--steps", "30", "--lr", "100", "--out", out_path
    )
    assert code == 0
    assert "COLLAPSED at step" in err
    assert json.loads(out_path.read_text())["status"] == "collapsed"


def test_train_errors_are_one_line_naming_the_option(capsys, tmp_path):
    assert_one_line_error(*run_cli(capsys, "train", "--norm", "bn", "--batch", "1"), "--batch")
    assert_one_line_error(*run_cli(capsys, "train", "--lr", "0"), "--lr")
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", "imagenet"), "--dataset")
    assert_one_line_error(*run_cli(capsys, "train", "--dataset", "cifar10"), "--data-dir")
    code, out, err = run_cli(
        capsys, "train", "--dataset", "cifar10", "--data-dir", tmp_path / "missing"
    )
    assert_one_line_error(code, out, err, "does not exist")
    assert_one_line_error(
        *run_cli(capsys, "train", "--steps", "10", "--warmup-steps", "10"), "--warmup-steps"
    )
    target = tmp_path / "keep.json"
    target.write_text("precious")
    code, out, err = run_cli(capsys, "train", "--plot", tmp_path / "x.bmp", "--out", target)
    assert_one_line_error(code, out, err, "--plot")
    assert target.read_text() == "precious"  # nothing is touched by a refused run


def test_train_on_cifar10_from_the_environment(capsys, tmp_path, monkeypatch):
    folder = write_cifar10(tmp_path / "cifar-10-batches-py", train_sizes=(8, 8, 8, 8, 8))
    monkeypatch.setenv("CIFAR10_DIR", str(tmp_path))
    out_path = tmp_path / "c.json"
    code, _, err = run_cli(
        capsys, "train", *TINY, "--norm", "nf", "--dataset", "cifar10", "--steps", "2",
        "--quiet", "--out", out_path,
    )  # fmt: skip
    assert code == 0, err
    assert json.loads(out_path.read_text())["meta"]["train_examples"] == 40
    assert folder.exists()


def test_train_from_a_saved_spp_config(capsys, tmp_path):
    spp = tmp_path / "spp.json"
    assert main(["spp", *TINY, "--norm", "nf", "--quiet", "--out", str(spp)]) == 0
    out_path = tmp_path / "t.json"
    code, _, err = run_cli(
        capsys, "train", "--config", spp, "--steps", "2", "--quiet", "--out", out_path
    )
    assert code == 0, err
    config = json.loads(out_path.read_text())["config"]
    assert config["norm"] == "nf" and config["depth"] == 14 and config["batch"] == 8
