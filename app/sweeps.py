"""A sweep of the Sweep page: two config fields and their values over a base config, the
summary statistic, and the grid's cells as the API's jobs finish.

Pure (no Streamlit), like `app.urlstate`, whose query format the base config keeps: a sweep's
URL is the Explorer's query string of the base plus five keys (`x`, `xs`, `y`, `ys`,
`stat`), e.g. `?x=alpha&xs=0.1,0.3,0.5&y=depth&ys=14,26,50&stat=final_var`, so an
Explorer link opened at `/sweeps` starts a sweep from its config. The request is the API's
`POST /v1/sweeps` body; the cells join the sweep's view (`GET /v1/sweeps/{id}`) with the
finished points' results.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

import nfcore
from app import urlstate
from nfcore.spec.config import SPPConfig, config_hash
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.summaries import DEFAULT_SUMMARY, SUMMARIES, Outcome, summarize

ACTIVE_STATES = ("queued", "running")


class BadSweep(ValueError):
    """The sweep asked for cannot be run; the message says which part and why."""


# --- the fields a sweep can vary --------------------------------------------------------------
def _number(text: str) -> float:
    return float(text)


def _whole(text: str) -> int:
    return int(text)


def _word(text: str) -> str:
    return text


def _gamma(text: str) -> str | float:
    return "auto" if text.lower() == "auto" else float(text)


def _flag(text: str) -> bool:
    words = {"true": True, "on": True, "1": True, "false": False, "off": False, "0": False}
    return words[text.lower()]


@dataclass(frozen=True)
class SweepField:
    label: str
    parse: Callable[[str], Any]  # one value as typed; ValueError or KeyError when it is not
    defaults: tuple[Any, ...]  # the values offered when the field is chosen
    kind: str  # words for a value that does not parse


SWEEP_FIELDS: dict[str, SweepField] = {
    "alpha": SweepField("α (alpha)", _number, (0.1, 0.3, 0.5), "a number"),
    "depth": SweepField("Depth", _whole, (14, 26, 50), "a whole number"),
    "gamma": SweepField("γ (gamma)", _gamma, ("auto", 1.0, 1.414214, 2.0), "auto or a number"),
    "activation": SweepField("Activation", _word, ("relu", "silu", "gelu", "tanh"), "a name"),
    "se_gain": SweepField("S+E gain", _number, (0.0, 1.0, 2.0), "a number"),
    "norm": SweepField("Normalization", _word, ("bn", "nf", "none"), "a name"),
    "conv": SweepField("Convolution", _word, ("ws", "he"), "a name"),
    "skipinit": SweepField("SkipInit", _flag, (False, True), "true or false"),
    "width": SweepField("Width multiplier", _number, (0.125, 0.25, 0.5), "a number"),
    "resolution": SweepField("Resolution (px)", _whole, (32, 64, 128), "a whole number"),
    "batch": SweepField("Batch", _whole, (2, 8, 32), "a whole number"),
    "seed": SweepField("Seed", _whole, (0, 1, 2), "a whole number"),
}


def format_value(value: Any) -> str:
    """A grid value as the URL, the values box and the axes write it."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)  # str(float) is its shortest exact repr: the URL round-trips


def format_values(values: Sequence[Any]) -> str:
    return ", ".join(format_value(value) for value in values)


def parse_values(name: str, text: str) -> tuple[Any, ...]:
    """The comma-separated values typed for field `name`, each of the field's JSON type."""
    if name not in SWEEP_FIELDS:
        known = ", ".join(SWEEP_FIELDS)
        raise BadSweep(f"{name!r} cannot be swept here (choose one of {known})")
    row = SWEEP_FIELDS[name]
    values = []
    for part in (piece.strip() for piece in text.split(",")):
        if not part:
            continue
        try:
            value = row.parse(part)
        except (ValueError, KeyError):
            raise BadSweep(f"{name}: {part!r} is not {row.kind}") from None
        if value in values:
            raise BadSweep(f"{name}: {format_value(value)} is given twice")
        values.append(value)
    if not values:
        raise BadSweep(f"{name}: give at least one value, separated by commas")
    return tuple(values)


# --- the sweep --------------------------------------------------------------------------------
@dataclass(frozen=True)
class Axis:
    field: str
    values: tuple[Any, ...]

    @property
    def label(self) -> str:
        return SWEEP_FIELDS[self.field].label


@dataclass(frozen=True)
class Sweep:
    """What the page shows: the grid `x` by `y` over `base`, coloured by `statistic`."""

    base: SPPConfig
    x: Axis
    y: Axis
    statistic: str = DEFAULT_SUMMARY

    def __post_init__(self) -> None:
        if self.x.field == self.y.field:
            raise BadSweep(f"both axes vary {self.x.field}: choose two different fields")
        if self.statistic not in {row.key for row in SUMMARIES}:
            known = ", ".join(row.key for row in SUMMARIES)
            raise BadSweep(f"stat: no summary statistic {self.statistic!r} (choose {known})")

    @property
    def size(self) -> int:
        return len(self.x.values) * len(self.y.values)

    def request(self) -> dict[str, Any]:
        """The body of POST /v1/sweeps: the base's canonical fields and the two axes."""
        grid = {self.x.field: list(self.x.values), self.y.field: list(self.y.values)}
        return {"base": self.base.model_dump(mode="json"), "grid": grid}

    def point_config(self, x_value: Any, y_value: Any) -> SPPConfig:
        """The config of one point, edited from the base as the API does (`with_changes`)."""
        changes = {self.x.field: x_value, self.y.field: y_value}
        try:
            return self.base.edited(changes)
        except ValidationError as error:
            raise BadSweep(
                f"point {json.dumps(changes)}: {describe_validation_error(error)}"
            ) from None


DEFAULT_SWEEP = Sweep(
    base=urlstate.default_config(),
    x=Axis("alpha", SWEEP_FIELDS["alpha"].defaults),
    y=Axis("depth", SWEEP_FIELDS["depth"].defaults),
)


def has_sweep(query: Mapping[str, str]) -> bool:
    """The link names a sweep (its axes), so opening it runs the sweep."""
    return "x" in query or "y" in query


def decode_sweep(query: Mapping[str, str]) -> Sweep:
    """The sweep a query string describes; missing keys take the default sweep's. BadSweep
    names the first part that is wrong (`read_sweep_link` keeps the others instead)."""
    try:
        base = urlstate.strict_config(query)
    except urlstate.BadQuery as problem:
        raise BadSweep(str(problem)) from None
    axes = []
    for name_key, values_key, default in (
        ("x", "xs", DEFAULT_SWEEP.x),
        ("y", "ys", DEFAULT_SWEEP.y),
    ):
        name = query.get(name_key, default.field)
        if name not in SWEEP_FIELDS:
            known = ", ".join(SWEEP_FIELDS)
            raise BadSweep(f"{name_key}: {name!r} cannot be swept here (choose one of {known})")
        text = query.get(values_key)
        values = SWEEP_FIELDS[name].defaults if text is None else parse_values(name, text)
        axes.append(Axis(name, values))
    return Sweep(base, axes[0], axes[1], query.get("stat", DEFAULT_SUMMARY))


def read_sweep_link(query: Mapping[str, str]) -> tuple[Sweep, list[str]]:
    """The sweep of a link, and a sentence per part of it that was left out (a base field, an
    axis, its values, the statistic), each replaced by the default sweep's; the link's other
    parts are kept."""
    base, notes = urlstate.read_link(query)
    known = ", ".join(SWEEP_FIELDS)
    axes: list[Axis] = []
    for name_key, values_key, default in (
        ("x", "xs", DEFAULT_SWEEP.x),
        ("y", "ys", DEFAULT_SWEEP.y),
    ):
        name = query.get(name_key, default.field)
        if name not in SWEEP_FIELDS:
            notes.append(f"The link's {name_key}={urlstate.shown(name)} was left out: it cannot "
                         f"be swept here (choose one of {known}).")  # fmt: skip
            name = default.field
        text = query.get(values_key)
        values = SWEEP_FIELDS[name].defaults
        if text is not None and name == query.get(name_key, default.field):
            try:
                values = parse_values(name, text)
            except BadSweep as problem:
                notes.append(f"The link's {values_key}={urlstate.shown(text)} was left out: "
                             f"{problem}.")  # fmt: skip
        axes.append(Axis(name, values))
    x, y = axes
    if x.field == y.field:
        notes.append(f"The link's axes both vary {x.field}; the y axis was left out.")
        other = next(name for name in (DEFAULT_SWEEP.y.field, DEFAULT_SWEEP.x.field, *SWEEP_FIELDS)
                     if name != x.field)  # fmt: skip
        y = Axis(other, SWEEP_FIELDS[other].defaults)
    statistic = query.get("stat", DEFAULT_SUMMARY)
    if statistic not in {row.key for row in SUMMARIES}:
        choices = ", ".join(row.key for row in SUMMARIES)
        notes.append(f"The link's stat={urlstate.shown(statistic)} was left out: it is no "
                     f"summary statistic (choose {choices}).")  # fmt: skip
        statistic = DEFAULT_SUMMARY
    return Sweep(base, x, y, statistic), notes


def encode_sweep(sweep: Sweep) -> dict[str, str]:
    """The sweep's query string: the base as the Explorer writes it, then the axes and stat."""
    return {
        **urlstate.encode_config(sweep.base),
        "x": sweep.x.field,
        "xs": ",".join(format_value(value) for value in sweep.x.values),
        "y": sweep.y.field,
        "ys": ",".join(format_value(value) for value in sweep.y.values),
        "stat": sweep.statistic,
    }


def explorer_link(config: SPPConfig) -> str:
    """The Explorer (the dashboard's default page) showing `config`."""
    return "/?" + urlencode(urlstate.encode_config(config))


# --- the cells as the jobs finish ---------------------------------------------------------------
@dataclass(frozen=True)
class Cell:
    """One grid point: its job's state and, once finished, its summary and its SPP's shape."""

    x: Any
    y: Any
    state: str  # a job state, or "expired" once the API no longer knows the job
    job_id: str | None = None
    label: str = ""
    done: int = 0
    total: int = 0
    outcome: Outcome | None = None
    variance: tuple[float | None, ...] = field(default=())  # avg_channel_var per block
    error: str | None = None

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES


def _key(value: Any) -> str:
    return json.dumps(value)


def _points(sweep: Sweep, view: Mapping[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """The view's points by their (x, y) values, each with its `state` and `job_id`; a cached
    point whose job record expired is named by its config's hash, as the API names jobs."""
    points = {}
    for point in view.get("points", []):
        params = point.get("params") or {}
        x_value, y_value = params.get(sweep.x.field), params.get(sweep.y.field)
        job = point.get("job")
        job_id = job["id"] if job is not None else None
        if job is None and point.get("cached"):
            try:
                job_id = config_hash(sweep.point_config(x_value, y_value), nfcore.__version__)
            except BadSweep:
                job_id = None
        state = str(job["state"]) if job is not None else ("finished" if job_id else "expired")
        points[_key(x_value), _key(y_value)] = {**point, "state": state, "job_id": job_id}
    return points


def finished_ids(sweep: Sweep, view: Mapping[str, Any]) -> list[str]:
    """The job ids of the points whose results can be fetched."""
    points = _points(sweep, view).values()
    return [p["job_id"] for p in points if p["state"] == "finished" and p["job_id"]]


def ended(view: Mapping[str, Any]) -> bool:
    """No point of the sweep is queued or running any more."""
    jobs = [point.get("job") or {} for point in view.get("points", [])]
    return not any(job.get("state") in ACTIVE_STATES for job in jobs)


def grid_cells(
    sweep: Sweep, view: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
) -> list[Cell]:
    """The cells in grid order (x outer, y inner), from the sweep's view and the results
    fetched so far (by job id); a finished point whose result is not fetched yet stays
    without a summary."""
    points = _points(sweep, view)
    cells = []
    for x_value in sweep.x.values:
        for y_value in sweep.y.values:
            point = points.get((_key(x_value), _key(y_value)))
            if point is None:
                cells.append(Cell(x_value, y_value, "expired"))
                continue
            job = point.get("job") or {}
            progress = job.get("progress") or {}
            result = results.get(point["job_id"]) if point["job_id"] else None
            outcome = summarize(result, sweep.statistic) if result is not None else None
            blocks = (result or {}).get("blocks") or []
            label = job.get("label") or ((result or {}).get("meta") or {}).get("model") or ""
            cells.append(Cell(
                x_value, y_value, point["state"], job_id=point["job_id"], label=label,
                done=int(progress.get("done", 0)), total=int(progress.get("total", 0)),
                outcome=outcome, variance=tuple(b.get("avg_channel_var") for b in blocks),
                error=job.get("error"),
            ))  # fmt: skip
    return cells


def csv_text(sweep: Sweep, cells: Sequence[Cell]) -> str:
    """One row per point: the two fields, the statistic (empty when it has no value, with the
    note saying why), the job's state and id, and the model's label."""
    out = io.StringIO()
    columns = [sweep.x.field, sweep.y.field, sweep.statistic, "note", "state", "job_id", "label"]
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for cell in cells:
        outcome = cell.outcome
        value = "" if outcome is None or outcome.value is None else repr(outcome.value)
        note = (outcome.note if outcome else "") or (cell.error or "")
        writer.writerow([format_value(cell.x), format_value(cell.y), value, note, cell.state,
                         cell.job_id or "", cell.label])  # fmt: skip
    return out.getvalue()
