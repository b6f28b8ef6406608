"""The Train page's words about its runs, without Streamlit or an API: why a run is still
queued, and the held-out accuracy by batch size (the Table 2 preset's summary)."""

from __future__ import annotations

from typing import Any

from app.train_runs import TrainRun, accuracy_by_batch, queue_note
from nfcore.spec.train_presets import TABLE2, auto_labels


def runs(*states: str) -> list[TrainRun]:
    return [TrainRun(f"run {n}", f"job{n}", 200, state=s) for n, s in enumerate(states, 1)]


def test_a_queued_run_says_what_it_waits_for() -> None:
    followed = runs("running", "queued", "queued")
    assert (
        queue_note(1, followed, 1) == "queued: 1 training worker busy with run 1; starts after it"
    )
    assert queue_note(2, followed, 1) == (
        "queued: 1 training worker busy with run 1; 1 more run queued ahead of it"
    )
    two = runs("running", "running", "queued")
    assert queue_note(2, two, 2) == (
        "queued: 2 training workers busy with runs 1 and 2; starts after one of them"
    )
    assert queue_note(0, runs("queued"), 1) == (
        "queued: waiting for a free worker (1 training worker, busy with other jobs or starting)"
    )
    assert queue_note(1, followed, 0) == (
        "queued: no training worker is running, so it waits until one starts"
    )
    assert queue_note(1, followed, None).startswith("queued: the training workers busy with run 1")


def finished(run: TrainRun, accuracy: float, **extra: Any) -> TrainRun:
    run.state = "finished"
    run.result = {"steps": [], "evals": [{"step": 200, "accuracy": accuracy}], **extra}
    return run


def test_table2_accuracy_by_batch_pairs_bn_and_nf() -> None:
    configs = TABLE2.configs()
    followed = [
        TrainRun(label, f"job{n}", 200, config=config.model_dump(mode="json"))
        for n, (label, config) in enumerate(zip(auto_labels(configs), configs, strict=True))
    ]
    finished(followed[0], 0.97)
    finished(followed[1], 0.99)
    finished(followed[4], 0.70, collapse={"step": 31, "reason": "x", "loss": None})
    finished(followed[5], 0.9)
    followed[2].state, followed[3].state = "running", "queued"
    assert accuracy_by_batch(followed) == [
        {"batch": 64, "BN-ResNet-26": "97.0%", "NF-ResNet-26": "99.0%"},
        {"batch": 8, "BN-ResNet-26": "running", "NF-ResNet-26": "queued"},
        {"batch": 4, "BN-ResNet-26": "collapsed at step 31", "NF-ResNet-26": "90.0%"},
    ]
    # One batch size: nothing to compare.
    assert accuracy_by_batch(followed[:2]) is None


class StuckApi:
    """An API whose training job runs but takes no step: its view says the worker is late."""

    def __init__(self) -> None:
        self.late = {"age": 21.4, "late": True, "abandoned_in": 8.2}

    def events(self, job_id: str, since: int = 0, attempt: int | None = None) -> dict[str, Any]:
        return {"events": [], "next": since, "state": "running", "attempt": 1,
                "progress": {"done": 10, "total": 200}, "restarted": False}  # fmt: skip

    def job(self, job_id: str, wait: float = 0.0) -> dict[str, Any]:
        return {"id": job_id, "state": "running", "heartbeat": self.late}


def test_a_run_that_takes_no_step_reads_its_workers_heartbeat(monkeypatch) -> None:
    """The events say nothing of the worker; a run with no new step asks the job's view, whose
    late heartbeat the Train page's progress line then puts in words."""
    import app.train_runs as train_runs
    from app.runs import silence_words

    api = StuckApi()
    monkeypatch.setattr(train_runs, "get_client", lambda: api)
    run = TrainRun("NF-ResNet-26", "job1", 200, state="running", next_event=10)
    run.refresh()
    assert run.heartbeat == api.late
    assert silence_words(run.heartbeat).startswith("the worker has not reported for 21 s")


class PagedApi:
    """A finished run whose result expired, its events in pages of three (the API bounds a
    page by bytes: MAX_EVENTS_PAGE_BYTES)."""

    def __init__(self, count: int) -> None:
        self.all = [{"kind": "step", "step": n, "loss": 1.0} for n in range(count)]

    def events(self, job_id: str, since: int = 0, attempt: int | None = None) -> dict[str, Any]:
        page = self.all[since : since + 3]
        return {"events": page, "next": since + len(page), "state": "finished", "attempt": 1,
                "progress": {"done": 7, "total": 7}, "restarted": False}  # fmt: skip


def test_a_run_whose_result_expired_is_drawn_from_all_its_event_pages(monkeypatch) -> None:
    """Once its result has left the cache, a finished run is drawn from its events: every page
    of them, not the first (which held all of them before pages were bounded by bytes)."""
    import app.train_runs as train_runs
    from app.api_client import ApiProblem

    def expired(job_id: str) -> dict[str, Any]:
        raise ApiProblem("the result has expired from the cache", status=410)

    api = PagedApi(7)
    monkeypatch.setattr(train_runs, "get_client", lambda: api)
    monkeypatch.setattr(train_runs, "cached_result", expired)
    run = TrainRun("NF-ResNet-26", "job1", 7, state="finished")
    run.refresh()
    assert run.result_gone
    assert [event["step"] for event in run.events] == list(range(7))
