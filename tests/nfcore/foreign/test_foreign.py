"""SPPs of networks nfcore did not build: blocks found by themselves, the same numbers as the
built-in engine, statistics as independent hooks compute them, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from nfcore import measure
from nfcore.cli.main import main
from nfcore.engine.models import build_model
from nfcore.engine.spp import run_spp
from nfcore.foreign.discovery import (
    FactoryError,
    SelectionError,
    auto_blocks,
    build_foreign,
    load_factory,
)
from nfcore.spec.config import SPPConfig
from nfcore.spec.result import SPPResult

# --- networks written here, in the layouts people use --------------------------------------


class Bottleneck(nn.Module):
    """torchvision's: relu(bn3(conv3(...)) + downsample(x))."""

    def __init__(self, cin: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(cin, planes, 1, bias=False), nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3, self.bn3 = (
            nn.Conv2d(planes, 4 * planes, 1, bias=False),
            nn.BatchNorm2d(4 * planes),
        )
        self.relu = nn.ReLU(inplace=True)
        self.downsample = None
        if stride != 1 or cin != 4 * planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, 4 * planes, 1, stride, bias=False), nn.BatchNorm2d(4 * planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class TorchvisionStyle(nn.Module):
    def __init__(self, layers: tuple[int, ...] = (2, 1, 2, 1), width: int = 8) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, width, 7, 2, 3, bias=False), nn.BatchNorm2d(width)
        self.relu, self.maxpool = nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1)
        cin = width
        for index, count in enumerate(layers):
            planes = width * 2**index
            blocks = [Bottleneck(cin, planes, 1 if index == 0 else 2)]
            blocks += [Bottleneck(4 * planes, planes) for _ in range(count - 1)]
            setattr(self, f"layer{index + 1}", nn.Sequential(*blocks))
            cin = 4 * planes
        self.fc = nn.Linear(cin, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for index in range(1, 5):
            x = getattr(self, f"layer{index}")(x)
        return self.fc(x.mean(dim=(2, 3)))


class SE(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Conv2d(channels, 4, 1), nn.Conv2d(4, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True)))))


class TimmBlock(nn.Module):
    """A pre-activation block whose branch Sequential holds an S+E: not a block itself."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.branch = nn.Sequential(
            nn.ReLU(), nn.Conv2d(channels, channels, 3, padding=1), SE(channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.branch(x)


class Stage(nn.Module):
    def __init__(self, cin: int, cout: int, depth: int) -> None:
        super().__init__()
        self.downsample = nn.Conv2d(cin, cout, 3, 2, 1)
        self.blocks = nn.Sequential(*[TimmBlock(cout) for _ in range(depth)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.downsample(x))


class TimmStyle(nn.Module):
    def __init__(self, depths: tuple[int, ...] = (2, 3, 1)) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        widths = [8 * 2**i for i in range(len(depths))]
        self.stages = nn.Sequential(
            *[
                Stage(8 if i == 0 else widths[i - 1], w, d)
                for i, (w, d) in enumerate(zip(widths, depths, strict=True))
            ]
        )
        self.head = nn.Linear(widths[-1], 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.stages(self.stem(x)).mean((2, 3)))


class MixerBlock(nn.Module):
    """Token mixing then channel mixing on N x L x C tokens."""

    def __init__(self, tokens: int, channels: int) -> None:
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(channels), nn.LayerNorm(channels)
        self.tokens = nn.Sequential(
            nn.Linear(tokens, 2 * tokens), nn.GELU(), nn.Linear(2 * tokens, tokens)
        )
        self.mlp = nn.Sequential(
            nn.Linear(channels, 2 * channels), nn.GELU(), nn.Linear(2 * channels, channels)
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.tokens(self.norm1(x).transpose(1, 2)).transpose(1, 2)
        return x + self.mlp(self.norm2(x))


def mixer(depth: int = 4, tokens: int = 16, channels: int = 32) -> nn.Module:
    return nn.Sequential(*[MixerBlock(tokens, channels) for _ in range(depth)])


def seeded(make, seed: int = 0) -> nn.Module:
    return build_foreign(make, {}, seed, make.__name__)


# --- finding the blocks --------------------------------------------------------------------


def test_auto_finds_the_blocks_of_a_torchvision_style_resnet() -> None:
    result = measure(seeded(TorchvisionStyle), resolution=32, batch=4)
    names = [b.name for b in result.blocks]
    assert names == ["layer1.0", "layer1.1", "layer2.0", "layer3.0", "layer3.1", "layer4.0"]
    assert [b.stage for b in result.blocks] == [0, 0, 1, 2, 2, 3]
    assert [b.transition for b in result.blocks] == [True, False, True, True, False, True]
    assert result.meta.stage_ends == [1, 2, 4, 5] and result.meta.reduced_over == "N,H,W"


def test_auto_finds_the_blocks_of_a_timm_style_net_not_its_stages_or_its_se() -> None:
    result = measure(seeded(TimmStyle), resolution=16, batch=4)
    names = [b.name for b in result.blocks]
    assert names == ["stages.0.blocks.0", "stages.0.blocks.1", "stages.1.blocks.0",
                     "stages.1.blocks.1", "stages.1.blocks.2", "stages.2.blocks.0"]  # fmt: skip
    assert [b.stage for b in result.blocks] == [0, 0, 1, 1, 1, 2]
    assert not any(b.transition for b in result.blocks)  # each stage downsamples before its blocks


def test_auto_finds_nfcores_own_blocks_and_stages() -> None:
    config = SPPConfig(depth=26, norm="nf", width=0.25, resolution=32, batch=4)
    blocks = auto_blocks(build_model(config, seed=0))
    assert [b.name for b in blocks] == [f"blocks.{i}" for i in range(8)]
    result = measure(build_model(config, seed=0), resolution=32, batch=4)
    assert [b.stage for b in result.blocks] == [b.stage for b in run_spp(config).blocks]


def test_explicit_patterns_give_the_same_numbers_as_auto() -> None:
    model = seeded(TorchvisionStyle)
    auto = measure(model, resolution=32, batch=4)
    explicit = measure(model, resolution=32, batch=4, blocks=["layer*.*"])
    assert explicit.to_json_dict()["blocks"] == auto.to_json_dict()["blocks"]
    by_function = measure(
        model, resolution=32, batch=4, blocks=lambda name, m: isinstance(m, Bottleneck)
    )
    assert by_function.to_json_dict()["blocks"] == auto.to_json_dict()["blocks"]


# --- the same numbers ---------------------------------------------------------------------


def test_nfcores_resnetv2_50_measured_as_a_foreign_module_equals_nfcore_spp() -> None:
    config = SPPConfig(depth=50, norm="nf", width=0.25, resolution=32, batch=4, gradients=True)
    expected = run_spp(config).to_json_dict()["blocks"]
    result = measure(build_model(config, seed=config.seed), resolution=32, batch=4,
                     residual=["blocks.*.residual_tap"], gradients=True)  # fmt: skip
    got = result.to_json_dict()["blocks"]
    assert len(got) == len(expected) == 16
    for mine, theirs in zip(got, expected, strict=True):
        assert mine.pop("name").startswith("blocks.")
        assert mine == theirs  # bit for bit: the same input, hooks and reductions


def test_statistics_agree_with_independent_hooks() -> None:
    model = seeded(TorchvisionStyle)
    outputs: list[np.ndarray] = []
    residuals: list[np.ndarray] = []
    handles = [m.register_forward_hook(lambda _m, _i, o: outputs.append(o.detach().double().numpy().copy()))
               for m in (model.layer1[0], model.layer3[1])]  # fmt: skip
    handles.append(model.layer3[1].bn3.register_forward_hook(
        lambda _m, _i, o: residuals.append(o.detach().double().numpy().copy())))  # fmt: skip
    result = measure(model, resolution=32, batch=4, residual=["layer*.*.bn3"])
    for handle in handles:
        handle.remove()
    assert len(outputs) == 2 and len(residuals) == 1  # one pass: no pass of its own to find blocks
    for block, y in ((result.blocks[0], outputs[0]), (result.blocks[4], outputs[1])):
        assert block.avg_channel_var == pytest.approx(np.mean(np.var(y, axis=(0, 2, 3))), rel=1e-5)
        assert block.avg_sq_channel_mean == pytest.approx(
            np.mean(np.mean(y, axis=(0, 2, 3)) ** 2), rel=1e-5
        )
    f = residuals[0]
    assert result.blocks[4].residual_avg_channel_var == pytest.approx(
        np.mean(np.var(f, axis=(0, 2, 3))), rel=1e-5
    )


def test_without_residual_patterns_the_residual_is_null_not_a_guess() -> None:
    result = measure(seeded(TorchvisionStyle), resolution=32, batch=4)
    assert all(b.residual_avg_channel_var is None for b in result.blocks)
    assert "residual_avg_channel_var" in result.to_csv().splitlines()[0]


def test_token_blocks_are_measured_per_channel_over_batch_and_tokens() -> None:
    model = build_foreign(mixer, {"depth": 3}, 0, "mixer")
    outputs: list[np.ndarray] = []
    handle = model[2].register_forward_hook(
        lambda _m, _i, o: outputs.append(o.detach().double().numpy())
    )
    result = measure(model, input_shape=(16, 32), channels="last", batch=4)
    handle.remove()
    assert [b.name for b in result.blocks] == ["0", "1", "2"]
    assert result.meta.reduced_over == "N,L"
    y = outputs[-1]  # N, L, C, of the measured pass
    assert result.blocks[2].avg_channel_var == pytest.approx(
        np.mean(np.var(y, axis=(0, 1))), rel=1e-5
    )
    assert result.blocks[2].avg_sq_channel_mean == pytest.approx(
        np.mean(np.mean(y, axis=(0, 1)) ** 2), rel=1e-5
    )


def test_a_foreign_result_round_trips_and_overlays_with_a_paper_network(tmp_path: Path) -> None:
    from nfcore.plots.spp import spp_figure

    foreign = measure(seeded(TorchvisionStyle), resolution=32, batch=4, name="my resnet")
    again = SPPResult.model_validate_json(json.dumps(foreign.to_json_dict()))
    assert again.foreign and again.config.label == "my resnet"
    figure = spp_figure(
        [again, run_spp(SPPConfig(depth=14, norm="nf", width=0.25, resolution=32, batch=4))]
    )
    assert {trace.name for trace in figure.data} >= {"my resnet"}


# --- errors -------------------------------------------------------------------------------


def test_a_pattern_that_matches_nothing_names_it_and_the_candidates() -> None:
    with pytest.raises(
        SelectionError, match=r"'stages\.\*' matches no module; .*layer1, layer1\.0"
    ):
        measure(seeded(TorchvisionStyle), blocks=["stages.*"], resolution=32, batch=2)


def test_auto_on_a_network_without_repeated_blocks_says_what_to_do() -> None:
    with pytest.raises(SelectionError, match=r"no residual blocks.*name the blocks to measure"):
        measure(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), resolution=16, batch=2)


def test_factories_that_raise_or_return_no_module_are_named(tmp_path: Path) -> None:
    with pytest.raises(FactoryError, match="broken raised RuntimeError: no"):
        build_foreign(lambda: (_ for _ in ()).throw(RuntimeError("no")), {}, 0, "broken")
    with pytest.raises(FactoryError, match=r"returned a dict, not a torch nn\.Module"):
        build_foreign(dict, {}, 0, "dict")
    with pytest.raises(FactoryError, match="is not MODULE:FACTORY"):
        load_factory("nets.py")


NETS = """
import torch
from torch import nn
from tests.nfcore.foreign.test_foreign import TorchvisionStyle

def build(width=8):
    return TorchvisionStyle(width=width)

def broken():
    raise RuntimeError("out of ideas")

def not_a_module():
    return 42
"""


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "{nets}:build", "--model-args", "{{nope"], "--model-args: not valid JSON"),
        (["--model", "{nets}:build", "--model-args", "[8]"], "--model-args: expected a JSON object"),
        (["--model", "{nets}:build", "--model-args", '{{"depth": 3}}'], "unexpected keyword argument 'depth'"),
        (["--model", "{nets}:broken"], "broken raised RuntimeError: out of ideas"),
        (["--model", "{nets}:not_a_module"], "returned a int, not a torch nn.Module"),
        (["--model", "{nets}:build", "--blocks", "stem.*"], "blocks: 'stem.*' matches no module"),
        (["--model", "{nets}:missing"], "has no callable 'missing'"),
        (["--model", "nowhere/nets.py:build"], "nowhere/nets.py: no such file"),
        (["--model", "{nets}:build", "--norm", "nf"], "--norm: does not apply to --model"),
    ],
    ids=["json", "not-object", "bad-arg", "raises", "not-module", "no-match", "no-factory",
         "no-file", "model-flag"],
)  # fmt: skip
def test_the_cli_says_what_is_wrong_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    nets = tmp_path / "nets.py"
    nets.write_text(NETS)
    argv = ["spp", *(a.format(nets=nets) for a in args), "--resolution", "32", "--batch", "2"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err, err


def test_the_cli_measures_a_file_factory_and_lists_its_blocks(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    nets = tmp_path / "nets.py"
    nets.write_text(NETS)
    out = tmp_path / "r.json"
    argv = ["spp", "--model", f"{nets}:build", "--model-args", '{"width": 4}', "--resolution", "32",
            "--batch", "4", "--residual", "layer*.*.bn3", "--out", str(out), "--quiet"]  # fmt: skip
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["config"]["model_args"] == {"width": 4} and len(data["blocks"]) == 6
    assert (
        data["blocks"][0]["name"] == "layer1.0"
        and data["blocks"][0]["residual_avg_channel_var"] > 0
    )
    # The same command gives the same numbers: the seed is set before the factory runs.
    assert main(argv) == 0 and json.loads(out.read_text())["blocks"] == data["blocks"]
    assert main(["blocks", "--model", f"{nets}:build", "--resolution", "32", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["blocks"]
    assert [(r["name"], r["stage"], r["transition"]) for r in rows][:3] == [
        ("layer1.0", 0, True), ("layer1.1", 0, False), ("layer2.0", 1, True)
    ]  # fmt: skip


class ResidualMLP(nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(width, width), nn.ReLU(), nn.Linear(width, width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc(x)


def test_an_mlp_is_measured_per_channel_over_the_batch() -> None:
    model = nn.Sequential(*[ResidualMLP(32) for _ in range(4)], nn.Linear(32, 10))
    outputs: list[np.ndarray] = []
    handle = model[3].register_forward_hook(
        lambda _m, _i, o: outputs.append(o.detach().double().numpy())
    )
    result = measure(model, input_shape=(32,), batch=16, residual=["*.fc"], gradients=True)
    handle.remove()
    assert [b.name for b in result.blocks] == ["0", "1", "2", "3"]
    assert result.meta.reduced_over == "N" and [b.stage for b in result.blocks] == [0, 0, 0, 0]
    assert result.blocks[3].avg_channel_var == pytest.approx(
        np.mean(np.var(outputs[-1], axis=0)), rel=1e-5
    )
    assert all(b.grad_avg_channel_var > 0 for b in result.blocks)  # cross-entropy on the logits


def test_the_cli_takes_a_dotted_module_path(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["blocks", "--model", "nfcore_example_plugins.nets:mixer", "--model-args", '{"depth": 2}',
            "--input-shape", "16,64", "--channels", "last", "--json"]  # fmt: skip
    assert main(argv) == 0
    assert [row["name"] for row in json.loads(capsys.readouterr().out)["blocks"]] == ["0", "1"]


def test_the_flags_of_model_without_it_are_an_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["spp", "--depth", "14", "--residual", "blocks.*.residual_tap", "--name", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err
        == "nfcore: error: --residual, --name: applies to your own network only; give --model too"
    )
