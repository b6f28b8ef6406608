"""Training runs as the Train page follows them: planned from the table, submitted, polled.

A row of the runs table and the shared settings make a `PlannedRun`: its validated config,
or the sentence saying what is wrong. Start submits one job per distinct config (POST
/v1/train) and follows each as a `TrainRun`; while it is active, `TrainRun.refresh` reads its
new events (GET /v1/jobs/{id}/events?since=N), starting the curves over when its worker died
and the job started again, and once it has finished, its result. Nothing here draws.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

import nfcore
from app.api_client import ApiProblem, Submission, cached_result, get_client
from app.runs import ACTIVE_STATES
from nfcore.plots.training import runs_from_events
from nfcore.spec.config import TrainConfig, canonical_json, config_hash
from nfcore.spec.fields import describe_validation_error
from nfcore.spec.norms import NORMS
from nfcore.spec.train_presets import TRAIN_PRESETS, TrainPreset, auto_labels, run_config

MAX_PAGES_PER_POLL = 20  # pages of events read for one run in one poll
GONE = (404, 410)  # the API no longer knows the job (it expired)

Notice = tuple[Literal["info", "error"], str]  # shown above the runs until the next Start


# --- planning ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class PlannedRun:
    """One row of the runs table with the shared settings: its config or what is wrong."""

    number: int  # the row's number, as the user counts (from 1)
    label: str
    config: TrainConfig | None
    error: str | None = None


def plan(rows: Sequence[dict[str, Any]], settings: dict[str, Any]) -> list[PlannedRun]:
    """Per row: its label and its validated config, or the sentence saying what is wrong."""
    checked: list[tuple[TrainConfig | None, str | None]] = []
    for row in rows:
        try:
            checked.append((run_config(settings, row), None))
        except ValidationError as error:
            checked.append((None, describe_validation_error(error)))
    labels = iter(auto_labels([config for config, _ in checked if config is not None]))
    planned = []
    for number, (row, (config, error)) in enumerate(zip(rows, checked, strict=True), start=1):
        auto = next(labels) if config is not None else _row_name(row)
        planned.append(PlannedRun(number, row.get("label") or auto, config, error))
    return planned


def _row_name(row: dict[str, Any]) -> str:
    """What an invalid row is called: its model as far as the row says."""
    known = NORMS.get(str(row.get("norm")))
    prefix = known.prefix if known is not None else str(row.get("norm") or "?")
    return f"{prefix}-ResNet-{row.get('depth') or '?'}"


def matching_preset(planned: Sequence[PlannedRun]) -> TrainPreset | None:
    """The preset whose runs these are, while the table and settings still are its own."""
    if any(run.config is None for run in planned):
        return None
    current = [canonical_json(run.config) for run in planned]
    for preset in TRAIN_PRESETS:
        if current == [canonical_json(config) for config in preset.configs()]:
            return preset
    return None


def problems(planned: Sequence[PlannedRun]) -> list[str]:
    """Why Start must submit nothing: a sentence per invalid run, or that there is none."""
    if not planned:
        return ["Add at least one run to the table."]
    return [f"Run {run.number} ({run.label}): {run.error}" for run in planned if run.error]


# --- following --------------------------------------------------------------------------------
@dataclass
class TrainRun:
    """One followed run: its job, state and progress, its events so far, its result."""

    label: str
    job_id: str | None  # None: the API refused the run (`error` says why)
    total: int  # steps to train
    config: dict[str, Any] | None = None  # the TrainConfig's JSON, when known
    state: str = "queued"  # the job's state, or "rejected"
    done: int = 0  # steps trained
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    next_event: int = 0  # index of the first event not read yet
    attempt: int | None = None  # the job's attempt the events belong to
    result: dict[str, Any] | None = None
    result_gone: bool = False  # finished, but its result expired: the events draw it
    heartbeat: dict[str, Any] | None = None  # the job view's, read while it runs but seems stuck

    @classmethod
    def submitted(cls, label: str, config: TrainConfig, submission: Submission) -> TrainRun:
        """The run of what POST /v1/train answered: a cached result, or a job to follow."""
        steps = config.steps
        run = cls(label, submission.job_id, steps, config=config.model_dump(mode="json"))
        if submission.result is not None:
            run.state, run.result, run.done = "finished", submission.result, steps
        elif submission.job is not None:
            run.update_from_job(submission.job)
        return run

    @property
    def active(self) -> bool:
        return self.state in ACTIVE_STATES

    @property
    def data(self) -> dict[str, Any]:
        """The run's records: its result when finished, else what its events said so far
        (with the config, which the figures read for colours and the first evaluation)."""
        if self.result is not None:
            return self.result
        return {"config": self.config, **runs_from_events(self.events)}

    def update_from_job(self, job: dict[str, Any]) -> None:
        """Take the state, progress and error of a job's view (or of an events page)."""
        progress = job.get("progress") or {}
        self.state = job.get("state", self.state)
        self.done = int(progress.get("done", self.done) or 0)
        self.total = int(progress.get("total", self.total) or self.total)
        self.error = job.get("error") or self.error

    def refresh(self) -> None:
        """New events of an active run; the result of a finished one; the error of a failed
        one. Raises ApiProblem when the API fails otherwise than by having forgotten the job."""
        if self.job_id is None:
            return
        if self.active:
            self._read_events(self.job_id)
        if self.state == "finished" and self.result is None and not self.result_gone:
            try:
                self.result = cached_result(self.job_id)
            except ApiProblem:
                self.result_gone = True
                if not self.events:
                    self.events = all_events(self.job_id)

    def _read_events(self, job_id: str) -> None:
        seen = self.next_event
        for _ in range(MAX_PAGES_PER_POLL):
            try:
                answer = get_client().events(job_id, since=self.next_event, attempt=self.attempt)
            except ApiProblem as problem:
                if problem.status not in GONE:
                    raise
                self.state, self.error = "failed", "the API no longer knows this job (it expired)"
                return
            events = answer.get("events") or []
            if answer.get("restarted"):  # its worker died: the curves start over
                self.events = []
            self.attempt = answer.get("attempt")
            self.events.extend(events)
            self.next_event = int(answer.get("next", self.next_event + len(events)))
            self.update_from_job(answer)
            # A final state is read before its page: read on until a page comes back empty.
            if not events or self.active:
                break
        if self.state == "failed" and not self.error:
            self.error = get_client().job(job_id).get("error")
        self.heartbeat = None
        if self.state == "running" and self.next_event == seen:
            # No step since the last poll: is its worker still there? (The events page does
            # not say; the job's view does.)
            self.heartbeat = get_client().job(job_id).get("heartbeat")

    def cancel(self) -> None:
        """Cancel the queued job, or stop the running one after its current step."""
        if self.job_id is not None:
            self.update_from_job(get_client().cancel(self.job_id))


def all_events(job_id: str, max_pages: int = 4 * MAX_PAGES_PER_POLL) -> list[dict[str, Any]]:
    """Every event of a job that has ended, page after page (an answer holds at most
    MAX_EVENTS_PAGE_BYTES of them) until a page comes back empty."""
    events: list[dict[str, Any]] = []
    since = 0
    for _ in range(max_pages):
        page = get_client().events(job_id, since=since).get("events") or []
        if not page:
            break
        events.extend(page)
        since += len(page)
    return events


def queue_note(number: int, runs: Sequence[TrainRun], train_workers: int | None) -> str:
    """Why run `number` (0-based) is still queued, in words: the training workers and which of
    these runs keep them busy (a queue serves its jobs in the order they came)."""
    if train_workers == 0:
        return "queued: no training worker is running, so it waits until one starts"
    workers = ("the training workers" if train_workers is None else
               f"{train_workers} training worker{'s' if train_workers != 1 else ''}")  # fmt: skip
    running = [n for n, run in enumerate(runs, start=1) if run.state == "running"]
    ahead = [run for run in runs[:number] if run.state == "queued"]
    if not running:
        return f"queued: waiting for a free worker ({workers}, busy with other jobs or starting)"
    text = f"queued: {workers} busy with {_numbers('run', running)}"
    if ahead:
        many = len(ahead) != 1
        return f"{text}; {len(ahead)} more run{'s' if many else ''} queued ahead of it"
    return f"{text}; starts after {'it' if len(running) == 1 else 'one of them'}"


def _numbers(word: str, numbers: Sequence[int]) -> str:
    """'run 1', 'runs 1 and 2', 'runs 1, 2 and 3'."""
    if len(numbers) == 1:
        return f"{word} {numbers[0]}"
    listed = ", ".join(str(n) for n in numbers[:-1])
    return f"{word}s {listed} and {numbers[-1]}"


def accuracy_by_batch(runs: Sequence[TrainRun]) -> list[dict[str, Any]] | None:
    """Held-out accuracy by batch size (a row each, largest first) and model (a column each,
    the run's label without its batch and learning rate), or None unless the runs span two
    batch sizes. A cell says 'collapsed at step N', or the run's state until it finishes."""
    known = [(run, run.config) for run in runs if run.config and run.job_id]
    batches = sorted({int(config["batch"]) for _, config in known}, reverse=True)
    if len(batches) < 2:
        return None
    rows: dict[int, dict[str, Any]] = {batch: {"batch": batch} for batch in batches}
    for run, config in known:
        model = ", ".join(part for part in run.label.split(", ")
                          if not part.startswith(("batch ", "lr ")))  # fmt: skip
        rows[int(config["batch"])][model] = _outcome(run)
    return list(rows.values())


def _outcome(run: TrainRun) -> str:
    """A run's result in a few words: its last held-out accuracy, or where it stands."""
    data = run.data
    if collapse := data.get("collapse"):
        return f"collapsed at step {collapse['step']}"
    if run.state != "finished":
        return run.state
    return accuracy_words(data) or "not evaluated"


def accuracy_words(data: dict[str, Any]) -> str | None:
    """'96.9% (EMA 97.1%)': a run's last held-out evaluation, or None before its first."""
    evals = data.get("evals") or []
    if not evals:
        return None
    last = evals[-1]
    text = f"{last['accuracy']:.1%}"
    if last.get("ema_accuracy") is not None:
        text += f" (EMA {last['ema_accuracy']:.1%})"
    return text


def submit(planned: Sequence[PlannedRun]) -> tuple[list[TrainRun], list[Notice]]:
    """One job per distinct config of valid runs (`problems` says none is invalid); the runs
    the API refused are kept, with its sentence. An unreachable API stops the submitting."""
    runs: list[TrainRun] = []
    notices: list[Notice] = []
    seen: set[str] = set()
    client = get_client()
    for run in planned:
        if run.config is None:
            continue
        key = canonical_json(run.config)
        if key in seen:
            notices.append(("info", f"Run {run.number} ({run.label}) repeats an earlier run; "
                            "it is trained once."))  # fmt: skip
            continue
        seen.add(key)
        try:
            submission = client.submit_train(run.config.model_dump(mode="json"))
        except ApiProblem as problem:
            if problem.status is None or problem.status >= 500:
                notices.append(("error", problem.message))  # the API is down: stop here
                break
            runs.append(TrainRun(run.label, None, run.config.steps, state="rejected",
                                 error=problem.message,
                                 config=run.config.model_dump(mode="json")))  # fmt: skip
            continue
        runs.append(TrainRun.submitted(run.label, run.config, submission))
    return runs, notices


def restore(job_ids: Sequence[str]) -> tuple[list[TrainRun], list[Notice]]:
    """The runs of the jobs a link named, and what to say of those not followed: jobs the
    API no longer knows, and jobs that are no training runs (an SPP's id in `?jobs=`).

    Each run knows its config (the job's view names it), so the runs keep the labels they had
    when started (`auto_labels`). Raises ApiProblem when the API cannot answer."""
    runs: list[TrainRun] = []
    gone: list[str] = []
    others: list[str] = []
    for job_id in job_ids:
        try:
            job = get_client().job(job_id)
        except ApiProblem as problem:
            if problem.status not in GONE:
                raise
            gone.append(job_id[:12])
            continue
        if job.get("kind") != "train":
            others.append(job_id[:12])
            continue
        label = job.get("label") if isinstance(job.get("label"), str) else None
        run = TrainRun(label or job_id[:12], job_id, 0, config=job.get("config"))
        run.update_from_job(job)
        runs.append(run)
    configs = run_configs(runs)
    if configs is not None:
        for run, label in zip(runs, auto_labels(configs), strict=True):
            run.label = label
    notices: list[Notice] = []
    if gone:
        notices.append(("error", f"The API no longer knows the run(s) {', '.join(gone)} from "
                        "the link."))  # fmt: skip
    if others:
        notices.append(("error", f"The link's job(s) {', '.join(others)} are not training runs "
                        "(the Jobs page opens each where it belongs)."))  # fmt: skip
    return runs, notices


def revive(
    configs: Sequence[TrainConfig], labels: Sequence[str | None]
) -> tuple[list[TrainRun], list[Notice]]:
    """The runs of the configs a link carries (`?runs=`), with their labels (None: the one
    the page gives them, `auto_labels`): each followed as `restore` does while the API still
    has its job and result (a failed or canceled run stays so), else trained again: the same
    config is the same job, trained with the same seeds. Raises ApiProblem when the API
    cannot answer; a run it refuses is kept, with its sentence."""
    client = get_client()
    runs: list[TrainRun] = []
    again: list[str] = []
    notices: list[Notice] = []
    seen: set[str] = set()
    for config, label, auto in zip(configs, labels, auto_labels(configs), strict=True):
        name = label or auto
        job_id = config_hash(config, nfcore.__version__)
        if job_id in seen:
            notices.append(("info", f"The link's run {name} repeats an earlier run; it is "
                            "shown once."))  # fmt: skip
            continue
        seen.add(job_id)
        body = config.model_dump(mode="json")
        job = _known_job(job_id)
        if job is not None:
            run = TrainRun(name, job_id, config.steps, config=body)
            run.update_from_job(job)
            runs.append(run)
            continue
        try:
            submission = client.submit_train(body)
        except ApiProblem as problem:
            if problem.status is None or problem.status >= 500:
                raise
            runs.append(TrainRun(name, None, config.steps, state="rejected",
                                 error=problem.message, config=body))  # fmt: skip
            continue
        if submission.result is None:
            again.append(name)
        runs.append(TrainRun.submitted(name, config, submission))
    if again:
        notices.append(("info", f"The results of {_names(again)} had expired, so "
                        f"{'they are' if len(again) > 1 else 'it is'} trained again, with the "
                        "same settings and seeds."))  # fmt: skip
    return runs, notices


def _known_job(job_id: str) -> dict[str, Any] | None:
    """The view of a training job the API still has with its result (or still running, or
    failed or canceled: shown as it is); None when there is none to show (train it again)."""
    try:
        job = get_client().job(job_id)
    except ApiProblem as problem:
        if problem.status not in GONE:
            raise
        return None
    if job.get("kind") != "train":
        return None
    if job.get("state") == "finished":
        try:
            cached_result(job_id)
        except ApiProblem as problem:
            if problem.status not in (*GONE, 409):
                raise
            return None
    return job


def _names(names: Sequence[str]) -> str:
    """'A', 'A and B', 'A, B and C'."""
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def link_labels(runs: Sequence[TrainRun]) -> tuple[list[TrainConfig], list[str | None]] | None:
    """The configs of the runs that have a job (those `?jobs=` names), and each one's label
    where it is not the page's own (`auto_labels`): what `?runs=` carries. None unless every
    such run has a valid config."""
    followed = [run for run in runs if run.job_id]
    configs = run_configs(followed)
    if configs is None:
        return None
    auto = auto_labels(configs)
    return configs, [
        None if run.label == name else run.label for run, name in zip(followed, auto, strict=True)
    ]


def run_configs(runs: Sequence[TrainRun]) -> list[TrainConfig] | None:
    """The runs' configs, validated; None unless every run has a valid one."""
    try:
        configs = [TrainConfig.model_validate(run.config) for run in runs if run.config]
    except ValidationError:
        return None
    return configs if runs and len(configs) == len(runs) else None
