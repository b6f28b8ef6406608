"""Links that last and say what is wrong with them, without the stack (pure functions).

A pin (`?pins=`) and a Train link (`?runs=`) carry their runs' configs as short tokens, so a
link opened after the API's results expired computes them again; an old link's job ids are
still read. A garbled or malicious link is a sentence per bad part, never a traceback, and
keeps its valid parts; every size stays bounded by the config's validation.
"""

from __future__ import annotations

import base64
import json
import zlib
from urllib.parse import parse_qsl, urlencode

import pytest

import nfcore
from app import sweeps, urlstate
from app.api_client import ApiProblem, Submission
from nfcore.spec.config import SPPConfig, TrainConfig, config_hash
from nfcore.spec.presets import PRESETS
from nfcore.spec.train_presets import TRAIN_PRESETS, auto_labels
from nfcore.spec.variants import RESNET_LAYOUTS

TINY = {"depth": 14, "norm": "nf", "width": 0.125, "resolution": 32, "batch": 2}
KNOWN_DEPTHS = ", ".join(str(depth) for depth in RESNET_LAYOUTS)


def through_url(query: dict[str, str]) -> dict[str, str]:
    return dict(parse_qsl(urlencode(query), keep_blank_values=True))


def token_of(data: object, deflate: bool = False) -> str:
    """A token as `urlstate.pack` writes one, of any JSON (or bytes) an attacker chooses."""
    raw = data if isinstance(data, bytes) else json.dumps(data).encode()
    if deflate:
        packer = zlib.compressobj(9, zlib.DEFLATED, -15)
        raw = packer.compress(raw) + packer.flush()
    return ("z" if deflate else "j") + base64.urlsafe_b64encode(raw).decode().rstrip("=")


# --- pins carry their configs ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "config",
    [run.config for preset in PRESETS for run in preset.runs]
    + [SPPConfig(**TINY, alpha=0.6), SPPConfig(norm="nf", layout=(2, 3, 1), gradients=True)],
)
def test_a_pin_carries_its_config_in_a_short_token(config: SPPConfig) -> None:
    pin = urlstate.Pin.of(config)
    assert pin == config_hash(config, nfcore.__version__)  # the pin is its job id
    query = through_url(urlstate.encode_view(TINY_CONFIG, preset=None, pins=[pin], log_y=False))
    assert len(query["pins"]) <= 160  # a few dozen characters per pin
    [read] = urlstate.decode_pins(query)
    assert read == pin and read.config == config and read.problem is None


TINY_CONFIG = SPPConfig(**TINY)


def test_pins_keep_their_order_and_old_links_job_ids() -> None:
    old = "a" * 32  # an old link's pin: only the job id
    pins = [urlstate.Pin.of(SPPConfig(**TINY, alpha=0.6)), urlstate.Pin(old),
            urlstate.Pin.of(SPPConfig(**TINY, seed=3))]  # fmt: skip
    query = through_url(urlstate.encode_view(TINY_CONFIG, preset=None, pins=pins, log_y=False))
    assert query["pins"].split(",")[1] == old
    read = urlstate.decode_pins(query)
    assert read == pins
    assert [pin.config for pin in read] == [pins[0].config, None, pins[2].config]
    # Plain strings (job ids, as the Plugins page links them) are written as they are.
    assert urlstate.encode_view(TINY_CONFIG, preset=None, pins=[old], log_y=False)["pins"] == old


def test_a_pins_token_is_the_fields_that_differ_from_the_defaults() -> None:
    assert urlstate.compact_fields(SPPConfig()) == {}
    config = SPPConfig(**TINY, alpha=0.6)
    assert urlstate.compact_fields(config) == {**TINY, "alpha": 0.6}
    # A paper depth is kept by name, not as its layout.
    assert urlstate.compact_fields(PRESETS[0].runs[0].config)["depth"] == 600


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("zzz", "is not one this dashboard wrote"),
        ("j!!", "is not one this dashboard wrote"),
        ("q" + "A" * 10, "is not one this dashboard wrote"),
        ("j" + "A" * 5000, "is 5001 characters long (at most 4096)"),
        (token_of(b"\x00" * 1_000_000, deflate=True), "is too large or cut short"),
        (token_of([1, 2, 3]), "is not a configuration this dashboard wrote"),
        (token_of(b"{not json"), "is not one this dashboard wrote"),
        (token_of({"depth": 99999}), "is not a valid configuration (depth: Input should be"),
        (token_of({"resolution": 10**9}), "is not a valid configuration (resolution:"),
        (token_of({**TINY, "batch": 10**9}), "is not a valid configuration (batch:"),
        (token_of({"colour": "red"}), "is not a valid configuration (colour: Extra inputs"),
    ],
)
def test_a_bad_pin_is_a_sentence_and_the_others_are_kept(token: str, says: str) -> None:
    good = urlstate.Pin.of(SPPConfig(**TINY, alpha=0.6))
    query = {"pins": f"{good.token},{token}"}
    first, bad = urlstate.decode_pins(query)
    assert first == good and first.config == good.config
    assert bad.config is None
    assert bad.problem.startswith(f"The link's pin 2 {says}")
    assert bad.problem.endswith("; it was unpinned.")
    assert "Traceback" not in bad.problem


def test_a_link_pins_at_most_a_dozen_runs() -> None:
    pins = [urlstate.Pin.of(SPPConfig(**TINY, seed=seed)) for seed in range(20)]
    read = urlstate.decode_pins({"pins": ",".join(pin.token for pin in pins)})
    assert read[: urlstate.MAX_PINS] == pins[: urlstate.MAX_PINS]
    [extra] = read[urlstate.MAX_PINS :]
    assert extra.problem == (
        f"The link pins 20 runs; the Explorer draws at most {urlstate.MAX_PINS}, so the last "
        f"{20 - urlstate.MAX_PINS} were unpinned."
    )
    assert urlstate.decode_pins({"pins": f"{pins[0].token},{pins[0].token}"}) == pins[:1]


# --- Train links carry their runs ------------------------------------------------------------------
@pytest.mark.parametrize("preset", TRAIN_PRESETS, ids=lambda preset: preset.id)
def test_a_train_link_carries_its_runs_configs(preset: object) -> None:
    configs = preset.configs()  # type: ignore[attr-defined]
    labels = [None] * (len(configs) - 1) + ["my run"]
    token = urlstate.encode_train_runs(configs, labels)
    assert len(token) <= 300  # one short token for all of them (Table 2: six runs)
    assert through_url({"runs": token})["runs"] == token
    decoded = urlstate.decode_train_runs(token)
    assert [config for config, _, _ in decoded] == configs
    assert [label for _, label, _ in decoded] == labels
    assert all(problem is None for _, _, problem in decoded)
    job_ids = [config_hash(config, nfcore.__version__) for config, _, _ in decoded]
    assert job_ids == [config_hash(config, nfcore.__version__) for config in configs]


def test_a_bad_run_of_a_train_link_is_left_out_with_a_sentence() -> None:
    good = {"depth": 14, "steps": 3, "dataset": "gaussian"}
    token = token_of([good, {"depth": 14, "steps": 10**9}, {"depth": 14, "lr": "fast"}])
    decoded = urlstate.decode_train_runs(token)
    assert decoded[0] == (TrainConfig(**good), None, None)
    assert decoded[1][0] is None and decoded[1][2].startswith(
        "The link's run 2 is not a valid training run (steps: Input should be less than or equal"
    )
    assert decoded[2][2].startswith("The link's run 3 is not a valid training run (lr: ")


@pytest.mark.parametrize(
    ("token", "says"),
    [
        ("nonsense!", "is not one this dashboard wrote"),
        (token_of({"depth": 14}), "The link's runs are not runs this dashboard wrote"),
        (token_of([{"depth": 14}] * 17), "The link carries 17 runs; the Train page takes 1 to 16"),
        (token_of([]), "The link carries 0 runs"),
    ],
)
def test_a_train_link_that_cannot_be_read_is_a_sentence(token: str, says: str) -> None:
    with pytest.raises(urlstate.BadQuery, match=says.replace("(", r"\(")):
        urlstate.decode_train_runs(token)


# --- link messages: a sentence per bad field, the other fields kept -------------------------------
@pytest.mark.parametrize("depth", ["99999", "2402", "1001", "1"])
def test_a_depth_without_a_layout_names_the_depths_there_are(depth: str) -> None:
    config, notes = urlstate.read_link({"depth": depth, "width": "0.125", "alpha": "0.4"})
    assert notes == [
        f"The link's depth={depth} was left out: {depth} has no block layout (known depths: "
        f"{KNOWN_DEPTHS}); give a custom per-stage layout instead."
    ]
    assert (config.width, config.alpha, config.depth) == (0.125, 0.4, 50)


def test_every_bad_field_has_its_sentence_and_the_good_ones_stay() -> None:
    query = {"depth": "14", "alpha": "abc", "resolution": "8", "width": "0.125", "seed": "3"}
    config, notes = urlstate.read_link(query)
    assert (config.depth, config.width, config.seed) == (14, 0.125, 3)
    assert config.alpha == 0.2 and config.resolution == urlstate.APP_DEFAULTS["resolution"]
    assert len(notes) == 2
    assert notes[0].startswith("The link's alpha=abc was left out: Input should be a valid number")
    assert notes[1] == (
        "The link's resolution=8 was left out: 8 is too small: this network downsamples by 32, "
        "so the resolution must be at least 32."
    )
    # The URL the page writes then holds what is shown: the good fields only.
    assert urlstate.encode_config(config) == {"depth": "14", "width": "0.125", "seed": "3"}


def test_a_long_bad_value_is_quoted_short() -> None:
    _, [note] = urlstate.read_link({"norm": "x" * 5000})
    assert len(note) < 200 and "xxx..." in note


def test_a_sweep_link_keeps_its_good_parts_and_says_once_what_it_left_out() -> None:
    query = {**{k: str(v) for k, v in TINY.items()}, "alpha": "-1", "x": "colour",
             "xs": "1,2", "y": "depth", "ys": "14,deep", "stat": "mean"}  # fmt: skip
    sweep, notes = sweeps.read_sweep_link(query)
    assert sweep.base == SPPConfig(**TINY)
    assert (sweep.x.field, sweep.y.field) == ("alpha", "depth")
    assert sweep.y.values == sweeps.SWEEP_FIELDS["depth"].defaults
    assert [note.split(" was left out")[0] for note in notes] == [
        "The link's alpha=-1", "The link's x=colour", "The link's ys=14,deep", "The link's stat=mean",
    ]  # fmt: skip
    assert all(note.count("The link") == 1 and "invalid" not in note for note in notes)
    # A good sweep link says nothing and runs as it is.
    good = sweeps.encode_sweep(sweep)
    assert sweeps.read_sweep_link(good) == (sweep, [])
    # Both axes on one field: the y axis is left out.
    sweep, notes = sweeps.read_sweep_link({"x": "depth", "y": "depth"})
    assert (sweep.x.field, sweep.y.field) == ("depth", "alpha")
    assert notes == ["The link's axes both vary depth; the y axis was left out."]


# --- a Train link's runs come back: followed where the API has them, else trained again ------------
class FakeApi:
    """The API as `train_runs.revive` sees it: jobs it knows, results it still has, and what
    it refuses; records what was POSTed."""

    def __init__(self, jobs: dict[str, dict], results: set[str], refused: set[str]) -> None:
        self.jobs, self.results, self.refused = jobs, results, refused
        self.posted: list[str] = []

    def job(self, job_id: str, wait: float = 0.0) -> dict:
        if job_id not in self.jobs:
            raise ApiProblem(f"no job {job_id!r} (it may have expired)", status=404)
        return self.jobs[job_id]

    def result(self, job_id: str) -> dict:
        if job_id not in self.results:
            raise ApiProblem("the result expired", status=410)
        return {"steps": [], "evals": []}

    def submit_train(self, body: dict) -> Submission:
        job_id = config_hash(TrainConfig.model_validate(body), nfcore.__version__)
        self.posted.append(job_id)
        if job_id in self.refused:
            raise ApiProblem("steps: 4 is over this API's budget", status=422)
        return Submission(job_id, job={"id": job_id, "state": "queued",
                                       "progress": {"done": 0, "total": body["steps"]}})  # fmt: skip


def test_a_train_links_runs_are_followed_or_trained_again(monkeypatch: pytest.MonkeyPatch) -> None:
    from app import train_runs

    base = {"depth": 14, "steps": 4, "dataset": "gaussian"}
    kept, expired, gone, canceled, refused = [
        TrainConfig(**base, seed=seed) for seed in range(5)
    ]  # fmt: skip
    ids = {name: config_hash(config, nfcore.__version__) for name, config in
           zip(("kept", "expired", "gone", "canceled", "refused"),
               (kept, expired, gone, canceled, refused), strict=True)}  # fmt: skip
    view = {"kind": "train", "state": "finished", "progress": {"done": 4, "total": 4}}
    api = FakeApi(
        jobs={ids["kept"]: view, ids["expired"]: view,
              ids["canceled"]: {**view, "state": "canceled"}},
        results={ids["kept"]},
        refused={ids["refused"]},
    )  # fmt: skip
    monkeypatch.setattr(train_runs, "get_client", lambda: api)
    monkeypatch.setattr(train_runs, "cached_result", api.result)
    configs = [kept, expired, gone, canceled, refused, kept]
    runs, notices = train_runs.revive(configs, [None, "mine", None, None, None, None])

    assert [run.job_id for run in runs] == [ids["kept"], ids["expired"], ids["gone"],
                                            ids["canceled"], None]  # fmt: skip
    assert [run.state for run in runs] == ["finished", "queued", "queued", "canceled", "rejected"]
    assert api.posted == [ids["expired"], ids["gone"], ids["refused"]]  # only what is gone
    assert runs[1].label == "mine" and runs[4].error == "steps: 4 is over this API's budget"
    assert [run.config for run in runs] == [c.model_dump(mode="json") for c in configs[:5]]
    names = auto_labels(configs)
    assert notices == [
        ("info", f"The link's run {names[5]} repeats an earlier run; it is shown once."),
        ("info", f"The results of mine and {names[2]} had expired, so they are trained again, "
                 "with the same settings and seeds."),
    ]  # fmt: skip
    # The link the page writes for these runs carries the user's label, not the others'.
    configs_back, labels = train_runs.link_labels(runs[:4])
    assert configs_back == configs[:4] and labels == [None, "mine", None, None]


def test_a_train_links_label_is_plain_text() -> None:
    token = token_of([{"depth": 14, "label": "[see](javascript:alert(1)) <b>x</b>\n" + "y" * 300}])
    [(_, label, _)] = urlstate.decode_train_runs(token)
    assert label is not None and len(label) == urlstate.MAX_LABEL_CHARS
    assert not set("[]<>\n") & set(label)
    assert urlstate.decode_train_runs(token_of([{"depth": 14, "label": " [] "}]))[0][1] is None
