"""docs/architecture.md, "How to add ... A dashboard control", tried with a made-up one.

A `Control` row for a config field that has no widget (the classifier's outputs,
`num_classes`), registered with `app.controls.register_control` and nothing else: the
Explorer's sidebar draws it, it shows the config's value (and a link's), a change goes
through the shared callback into the config and the URL, a refused value is explained
under it, and its help is the field's description. The API has no worker here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from app import controls, urlstate
from nfcore.spec.config import SPPConfig
from nfcore.spec.families import FAMILIES
from nfcore.spec.norms import NORMS, NormRow
from tests.app.conftest import clear_app_caches
from tests.app.test_controls import open_explorer, run

TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}

# Made up for this test: no bounds of its own, so the config's own refusal is what a user sees.
CLASSES = controls.Control("num_classes", "Classifier outputs", st.number_input, "input",
                           options={"step": 1})  # fmt: skip


@pytest.fixture(autouse=True)
def page_against_an_api(api_server: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """The page submits and moves on: no worker, no waiting; the control registered (and
    gone after the test)."""
    monkeypatch.setenv("API_URL", api_server)
    monkeypatch.setenv("APP_FOLLOW_SECONDS", "0")
    monkeypatch.setenv("APP_SUBMIT_WAIT_SECONDS", "0")
    monkeypatch.delenv("API_TOKEN", raising=False)
    monkeypatch.setattr(controls, "CONTROLS", {})
    monkeypatch.setattr(controls, "HELP", dict(controls.HELP))
    controls.register_control(CLASSES)
    clear_app_caches()
    yield api_server
    clear_app_caches()


def classes(at: AppTest) -> Any:
    version = at.session_state["controls_version"]
    [widget] = [w for w in at.number_input if w.key == f"w_num_classes@{version}"]
    return widget


def test_a_registered_control_shows_and_changes_the_config_and_the_url() -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    widget = classes(at)
    assert (widget.label, widget.value) == ("Classifier outputs", 1000)
    assert widget.help == SPPConfig.model_fields["num_classes"].description
    assert controls.widget_values(at.session_state["config"])["num_classes"] == 1000

    widget.set_value(10)
    run(at)
    config: SPPConfig = at.session_state["config"]
    assert config.num_classes == 10 and config.depth == 14  # one change, the rest kept
    assert at.query_params["num_classes"] == "10"
    assert urlstate.decode_config(at.query_params) == config
    assert classes(at).value == 10

    linked = open_explorer(urlstate.encode_config(SPPConfig(**TINY, num_classes=7)))
    assert classes(linked).value == 7  # a link's value is shown


def test_a_refused_value_is_undone_and_explained_under_the_control() -> None:
    at = open_explorer(urlstate.encode_config(SPPConfig(**TINY)))
    classes(at).set_value(1)
    run(at)
    assert [error.value for error in at.error if "num_classes" in error.value] == [
        "num_classes: Input should be greater than or equal to 2 (got 1); allowed: "
        "2 <= num_classes <= 100000"
    ]
    assert at.session_state["config"].num_classes == 1000
    assert classes(at).value == 1000


def test_a_field_is_registered_once() -> None:
    with pytest.raises(ValueError, match="'num_classes' has a control already"):
        controls.register_control(CLASSES)
    with pytest.raises(ValueError, match="the field 'batch' has a control already"):
        controls.register_control(controls.Control("batch", "Batch again", st.number_input))
    with pytest.raises(ValueError, match="'classes' is not a config field"):
        controls.register_control(controls.Control("classes", "Classes", st.number_input))


def test_the_normalization_menu_offers_a_registered_norm(monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/architecture.md, "A norm": the menu reads the norm rows (tests/nfcore/spec/
    test_norms.py tries the rest); a family offers the norm by naming it."""
    monkeypatch.setitem(NORMS, "madeup", NormRow("madeup", "MU", "A made-up norm"))
    row = FAMILIES["resnetv1"]
    monkeypatch.setitem(
        FAMILIES, "resnetv1", dataclasses.replace(row, norms=(*row.norms, "madeup"))
    )
    assert controls.norm_titles("resnetv1") == {
        "bn": "BatchNorm", "nf": "Normalizer-Free", "none": "None",
        "fixup": "FixUp (reference, post-activation)", "madeup": "A made-up norm",
    }  # fmt: skip
    config = SPPConfig(**{**TINY, "family": "resnetv1", "norm": "madeup"})
    shown = controls.widget_values(config)
    assert shown["norm_options"] == ("bn", "none", "fixup", "madeup")
    assert (shown["conv"], shown["skipinit"]) == ("he", False)  # a choice of conv, SkipInit
