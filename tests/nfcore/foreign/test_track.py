"""`nfcore.track`: SPPs measured while a network of one's own trains, without changing it.

The network is written here, not built by nfcore: a stem with a BatchNorm kept frozen in eval
mode (as when fine-tuning), a noise layer that draws from the global RNG in every mode, two
residual blocks with BatchNorm, dropout and a linear head. Each of those is something a
careless measurement would change (the frozen norm's mode, the RNG stream, the running
statistics), so bit-identical weights after training with and without the tracker mean the
tracker put them all back.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import nfcore
from nfcore.cli.main import main
from nfcore.plots.tracked import tracked_figure
from nfcore.spec.result import SPPResult
from nfcore.spec.tracked import read_tracked

STEPS = 30
WIDTH = 8
PIXELS = 16
# The blocks named: the noise layer adds to its input too, and would be found as a block.
SMALL = {"resolution": PIXELS, "batch": 4, "blocks": ["blocks.*"], "residual": ["blocks.*.bn2"]}


class Block(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        residual = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(x + residual)


class Noise(nn.Module):
    """Gaussian noise in every mode: draws from the global RNG whenever it runs."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.01 * torch.randn_like(x)


class SmallNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, WIDTH, 3, padding=1, bias=False)
        self.stem_norm = nn.BatchNorm2d(WIDTH)
        self.noise = Noise()
        self.blocks = nn.Sequential(Block(WIDTH), Block(WIDTH))
        self.drop = nn.Dropout(0.3)
        self.head = nn.Linear(WIDTH, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.noise(F.relu(self.stem_norm(self.stem(x))))
        x = self.blocks(x)
        return self.head(self.drop(x.mean((2, 3))))


def small_net() -> SmallNet:
    torch.manual_seed(0)
    model = SmallNet().train()
    model.stem_norm.eval()  # frozen: training must not switch it back
    return model


def train(model: nn.Module, tracker: Any = None, steps: int = STEPS) -> None:
    """SGD with momentum on random images and labels; the tracker after each step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    data = torch.Generator().manual_seed(1)
    for step in range(steps):
        x = torch.randn(8, 3, PIXELS, PIXELS, generator=data)
        y = torch.randint(4, (8,), generator=data)
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        if tracker is not None:
            tracker.step(step, loss=loss.item())


def snapshot(model: nn.Module) -> dict[str, Any]:
    """What training reads besides the weights' values."""
    return {
        "modes": [m.training for m in model.modules()],
        "state": {k: v.clone() for k, v in model.state_dict().items()},
        "grads": [None if p.grad is None else p.grad.clone() for p in model.parameters()],
        "requires": [p.requires_grad for p in model.parameters()],
        "rng": torch.get_rng_state(),
    }


def assert_same(before: dict[str, Any], after: dict[str, Any]) -> None:
    assert after["modes"] == before["modes"]
    assert after["requires"] == before["requires"]
    assert torch.equal(after["rng"], before["rng"])
    for key, value in before["state"].items():  # weights, running stats, num_batches_tracked
        assert torch.equal(after["state"][key], value), key
    for old, new in zip(before["grads"], after["grads"], strict=True):
        assert (old is None and new is None) or torch.equal(old, new)


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[nn.Module, Path]:
    path = tmp_path_factory.mktemp("track") / "runs" / "spp.jsonl"
    model = small_net()
    with nfcore.track(model, every=5, out=path, **SMALL) as tracker:
        train(model, tracker)
    return model, path


def test_tracked_training_ends_with_bit_identical_weights(
    tracked_run: tuple[nn.Module, Path],
) -> None:
    tracked, _ = tracked_run
    plain = small_net()
    train(plain)
    for (name, a), (_, b) in zip(
        tracked.state_dict().items(), plain.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    assert not tracked.stem_norm.training and tracked.blocks[0].bn1.training


def test_each_due_step_is_one_line_with_its_result(tracked_run: tuple[nn.Module, Path]) -> None:
    _, path = tracked_run
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["step"] for line in lines] == [0, 5, 10, 15, 20, 25]
    for line in lines:
        assert set(line) == {"step", "wall_time", "loss", "result"}
        result = SPPResult.model_validate(line["result"])
        assert [b.name for b in result.blocks] == ["blocks.0", "blocks.1"]
        assert result.config.resolution == PIXELS
    wall_times = [line["wall_time"] for line in lines]
    assert wall_times == sorted(wall_times)
    # The network trains, so its SPP moves: the lines are not one measurement repeated.
    variances = {line["result"]["blocks"][1]["avg_channel_var"] for line in lines}
    assert len(variances) == len(lines)


def test_a_measurement_puts_back_modes_statistics_gradients_and_rng(tmp_path: Path) -> None:
    model = small_net()
    train(model, steps=2)  # running statistics moved, gradients present
    before = snapshot(model)
    tracker = nfcore.track(model, every=1, out=tmp_path / "spp.jsonl", gradients=True, **SMALL)
    for step in range(2):  # traced, then by the plan
        assert tracker.step(step) is not None
        assert_same(before, snapshot(model))
    tracker.close()


def test_the_second_measurement_reuses_the_plan(tmp_path: Path) -> None:
    from nfcore.foreign.plan import plan_of

    model = small_net()
    tracker = nfcore.track(model, every=1, out=tmp_path / "spp.jsonl", **SMALL)
    first = tracker.step(0)
    plan = plan_of(model)
    second = tracker.step(1)
    tracker.close()
    assert plan is not None and plan_of(model) is plan
    assert first is not None and second is not None
    assert first.to_json_dict()["blocks"] == second.to_json_dict()["blocks"]  # same weights


def test_a_list_of_steps_and_a_probe_batch(tmp_path: Path) -> None:
    model = small_net()
    probe = torch.randn(4, 3, PIXELS, PIXELS, generator=torch.Generator().manual_seed(5))
    path = tmp_path / "spp.jsonl"
    with nfcore.track(
        model, every=[0, 7, 29], out=path, probe=probe, blocks=["blocks.*"]
    ) as tracker:
        train(model, tracker)
    records = read_tracked(path)
    assert [r.step for r in records] == [0, 7, 29]
    assert records[0].result.config.batch == 4
    assert "measured on the batch given by the caller" in (records[0].result.meta.notes or [])


def test_a_closed_tracker_refuses_to_measure(tmp_path: Path) -> None:
    tracker = nfcore.track(small_net(), every=1, out=tmp_path / "spp.jsonl", **SMALL)
    tracker.close()
    with pytest.raises(ValueError, match="closed"):
        tracker.step(0)


@pytest.mark.parametrize(
    ("arguments", "named"),
    [
        ({"every": 0}, "every: must be > 0"),
        ({"every": []}, "every: the list of steps is empty"),
        ({"every": [3, -1]}, "every: steps must be whole numbers"),
        ({"every": 2.5}, "every: expected"),
        ({"device": "cpu"}, "device: a tracker measures the model where it is"),
        ({"resolutoin": 16}, "resolutoin: not an option of measure()"),
        ({"batch": 0}, "batch: "),
        ({"probe": torch.zeros(2, 3, 8, 8), "batch": 2}, "batch: the probe batch given"),
    ],
)
def test_bad_arguments_are_one_line_errors_naming_them(
    tmp_path: Path, arguments: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValueError) as error:
        nfcore.track(small_net(), out=tmp_path / "spp.jsonl", **arguments)
    assert str(error.value).startswith(named)
    assert "\n" not in str(error.value)


def test_an_unwritable_out_path_is_refused_at_once(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=r"^out: .* is a directory$"):
        nfcore.track(small_net(), out=tmp_path)
    (tmp_path / "file").write_text("")
    with pytest.raises(ValueError, match=r"^out: cannot write"):
        nfcore.track(small_net(), out=tmp_path / "file" / "spp.jsonl")


def test_the_file_reads_back_into_the_scrubbing_figure(tracked_run: tuple[nn.Module, Path]) -> None:
    _, path = tracked_run
    records = read_tracked(path)
    assert [r.step for r in records] == [0, 5, 10, 15, 20, 25]
    assert all(r.loss is not None for r in records)
    figure = tracked_figure(records)
    assert [frame.name for frame in figure.frames] == ["0", "5", "10", "15", "20", "25"]
    slider = figure.layout.sliders[0]
    assert [step.label for step in slider.steps] == ["0", "5", "10", "15", "20", "25"]
    loss = next(trace for trace in figure.data if trace.name == "SmallNet")
    assert list(loss.x) == [0, 5, 10, 15, 20, 25]


def test_a_malformed_line_is_named_by_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"step": 0, "result": {}}\n')
    with pytest.raises(ValueError, match=r"bad.jsonl, line 1: not an SPP result"):
        read_tracked(path)
    path.write_text("\n" + '{"step": -1, "result": {}}\n')
    with pytest.raises(ValueError, match=r"line 2: step must be a whole number"):
        read_tracked(path)
    path.write_text("{not json\n")
    with pytest.raises(ValueError, match=r"line 1: not valid JSON"):
        read_tracked(path)


def test_the_cli_plots_a_tracked_run(
    tracked_run: tuple[nn.Module, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, path = tracked_run
    out = tmp_path / "spp.html"
    assert main(["plot", str(path), "--out", str(out)]) == 0
    html = out.read_text()
    assert "SPP at step " in html and '"name":"25"' in html.replace(" ", "")
    assert capsys.readouterr().err == f"wrote {out}\n"


def test_the_cli_names_a_bad_tracked_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"step": 0}\n')
    assert main(["plot", str(bad), "--out", str(tmp_path / "x.html")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("nfcore: error: ") and "line 1" in err and err.count("\n") == 1
    assert not (tmp_path / "x.html").exists()


def test_to_pandas_has_a_row_per_block_and_statistic(
    tracked_run: tuple[nn.Module, Path],
) -> None:
    result = read_tracked(tracked_run[1])[-1].result
    frame = result.to_pandas()
    statistics = ["avg_sq_channel_mean", "avg_channel_var", "residual_avg_channel_var",
                  "expected_var"]  # fmt: skip
    assert list(frame.columns) == ["model", "block", "name", "stage", "depth", "statistic",
                                   "value"]  # fmt: skip
    assert len(frame) == 2 * len(statistics)
    assert list(frame["statistic"][:4]) == statistics
    assert sorted(set(frame["depth"])) == [0.5, 1.0]
    row = frame[(frame["name"] == "blocks.1") & (frame["statistic"] == "avg_channel_var")]
    assert row["value"].item() == result.blocks[1].avg_channel_var


def legend(figure: go.Figure) -> list[str]:
    return [trace.name for trace in figure.data if trace.showlegend is not False]


def test_figure_and_notebook_display(tracked_run: tuple[nn.Module, Path]) -> None:
    first, last = (read_tracked(tracked_run[1])[i].result for i in (0, -1))
    figure = first.figure()
    assert isinstance(figure, go.Figure)
    assert legend(figure) == ["SmallNet"]
    overlaid = first.figure(last, labels=["start", "end"])
    assert legend(overlaid) == ["start", "end"]
    html = first._repr_html_()
    assert html.startswith("<div") and "cdn.plot.ly" in html and "blocks.1" in html


def test_compare_overlays_networks_with_unique_labels() -> None:
    a, b = small_net().eval(), SmallNet().eval()
    labelled = nfcore.compare({"mine": a, "other": b}, **SMALL)
    assert legend(labelled) == ["mine", "other"]
    unnamed = nfcore.compare([a, b], **SMALL)
    assert legend(unnamed) == ["SmallNet", "SmallNet (2)"]  # one class, told apart
    with pytest.raises(ValueError, match=r"^models\[1\]: expected a torch.nn.Module"):
        nfcore.compare([a, "b"])


def test_a_diverged_loss_is_kept_as_a_gap_not_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "spp.jsonl"
    with nfcore.track(small_net(), every=1, out=path, **SMALL) as tracker:
        tracker.step(0, loss=float("nan"))
        tracker.step(1, loss=torch.tensor(0.5))
    assert [r.loss for r in read_tracked(path)] == [None, 0.5]
