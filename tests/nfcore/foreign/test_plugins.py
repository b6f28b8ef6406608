"""Model plugins are operator-installed code, but their arguments come from anyone who can
POST: every argument that sizes work must have bounds, or the plugin does not load."""

from __future__ import annotations

import json
from enum import StrEnum
from importlib.metadata import EntryPoint
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

from contract.plugins import read_description
from nfcore.foreign import plugins
from nfcore.foreign.plugins import (
    PluginError,
    arguments_model,
    load,
    require_bounds,
    unbounded_arguments,
)


class Activation(StrEnum):
    relu = "relu"
    gelu = "gelu"


class Stage(BaseModel):
    blocks: Annotated[int, Field(ge=1, le=8)] = 2


def bounded(
    depth: Annotated[int, Field(ge=1, le=64)] = 8,
    alpha: Annotated[float, Field(gt=0.0, le=1.0)] = 0.2,
    size: Literal[14, 26] = 14,
    activation: Activation = Activation.relu,
    name: Annotated[str, Field(max_length=20)] = "net",
    layout: Annotated[list[Annotated[int, Field(ge=1, le=4)]], Field(max_length=4)] = [1, 1],  # noqa: B006
    stage: Stage | None = None,
    se: bool = False,
) -> None:
    """Every argument is bounded: a number on both sides, a string or list in length."""


def unbounded(depth: int = 8, width: Annotated[float, Field(ge=0)] = 1.0) -> None:
    """The issue's example plugins declared `depth: int`: a million blocks was a valid job."""


def test_a_plugin_whose_numbers_have_bounds_loads() -> None:
    model = arguments_model("bounded", bounded)
    require_bounds("bounded", model)  # no error
    schema = model.model_json_schema()
    assert schema["properties"]["depth"]["maximum"] == 64
    assert unbounded_arguments(schema) == []


def test_a_plugin_with_an_unbounded_number_does_not_load_and_says_which(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    point = EntryPoint("wide", f"{__name__}:unbounded", plugins.GROUP)
    monkeypatch.setattr(plugins, "installed", lambda: {"wide": point})
    with pytest.raises(PluginError) as refused:
        load("wide")
    message = str(refused.value)
    assert message.startswith("plugin 'wide': argument 'depth' (a number) has no lower and no ")
    assert "argument 'width' (a number) has no upper bound" in message
    assert "Annotated[int, Field(ge=1, le=64)]" in message  # says how to fix it


@pytest.mark.parametrize(
    ("annotation", "words"),
    [
        (str, "argument 'x' (a string) has no maximum length"),
        (list[Annotated[int, Field(ge=0, le=1)]], "argument 'x' (a list) has no maximum length"),
        (Annotated[list[int], Field(max_length=3)], "argument 'x[]' (a number) has no lower"),
        (tuple[int, int], "argument 'x[0]' (a number) has no lower"),
        (Annotated[dict[str, Any], Field(max_length=3)], "argument 'x[key]' may be of any type"),
        (Any, "argument 'x' has no type that can be bounded"),
    ],
    ids=["str", "list", "list-items", "tuple", "dict-values", "any"],
)
def test_strings_lists_and_dicts_need_a_maximum_length_too(annotation: Any, words: str) -> None:
    def factory(x=None) -> None:
        pass

    factory.__annotations__ = {"x": annotation}  # this module's annotations are strings
    with pytest.raises(PluginError, match="plugin 'p': ") as refused:
        require_bounds("p", arguments_model("p", factory))
    assert words in str(refused.value)


class Tree(BaseModel):
    children: Annotated[list[Tree], Field(max_length=2)] = []


def test_a_type_that_contains_itself_has_no_bound() -> None:
    def factory(tree: Tree | None = None) -> None:
        pass

    with pytest.raises(PluginError, match=r"argument 'tree.children\[\]' contains itself"):
        require_bounds("p", arguments_model("p", factory))


def test_the_example_plugins_load_with_their_bounds_advertised() -> None:
    for name in ("tv_resnet", "nf_tv_resnet", "mixer"):
        description = load(name).description()
        assert unbounded_arguments(description["arguments"]) == [], name
    mixer = load("mixer").description()["arguments"]["properties"]
    assert mixer["depth"]["maximum"] == 256 and mixer["tokens"]["const"] == 16


def test_the_example_plugins_descriptions_are_read_by_the_api() -> None:
    """Issue 20: a plugin that leaves its layout to the network (channels "auto", the default
    now) was refused by the API's reading of its description, so the page lost tv_resnet."""
    for name in ("tv_resnet", "nf_tv_resnet", "mixer"):
        description = load(name).description()
        assert read_description(name, json.dumps(description))["channels"] == (
            "last" if name == "mixer" else "auto"
        )


def test_non_finite_arguments_are_refused_by_the_arguments_model() -> None:
    plugin = load("nf_tv_resnet")
    with pytest.raises(PluginError, match="alpha"):
        plugin.validated({"alpha": float("nan")})
