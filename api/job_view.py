"""What a user reads about a job: its view (the `JobView` schema), read defensively from RQ's
job record and our meta (a job written into Redis by someone else must not break the API)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import redis
from rq.job import Job

from contract import META_ATTEMPT, META_DEVICE, META_PROGRESS, JobState, key_for


def job_view(job: Job, state: JobState, kind: str, connection: redis.Redis) -> dict[str, Any]:
    """The JSON of a job in `state`, of `kind` ("spp" or "train")."""
    done, total = progress_of(job)
    started, ended = job.started_at, job.ended_at
    return {
        "id": job.id,
        "kind": kind,
        "label": job.description,
        "state": state,
        "progress": {"done": done, "total": total},
        "attempt": _count(meta_of(job).get(META_ATTEMPT)),
        "url": f"/v1/jobs/{job.id}",
        "result_url": f"/v1/jobs/{job.id}/result" if state == JobState.finished else None,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "run_seconds": (ended - started).total_seconds() if started and ended else None,
        "device": _text(meta_of(job).get(META_DEVICE)),
        "error": _error_message(job, connection) if state == JobState.failed else None,
        "config": config_of(job),
    }


def config_of(job: Job) -> dict[str, Any] | None:
    """The config the job was submitted with (its one argument), or None where the record is
    not what the API enqueues."""
    try:
        args = job.args
    except Exception:  # not JSON, or not RQ's (function, instance, args, kwargs)
        return None
    if isinstance(args, list | tuple) and len(args) == 1 and isinstance(args[0], dict):
        return args[0]
    return None


def progress_of(job: Job) -> tuple[int, int]:
    """Done and total of the job's progress; (0, 0) where the meta is not what the worker
    writes (a job written into Redis by someone else must not break the API)."""
    progress = meta_of(job).get(META_PROGRESS)
    if not isinstance(progress, dict):
        return 0, 0
    return _count(progress.get("done")), _count(progress.get("total"))


def meta_of(job: Job) -> dict[str, Any]:
    return job.meta if isinstance(job.meta, dict) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def attempt_of(meta: bytes | None, serializer: Any) -> int:
    """The attempt number in a job's raw meta (0: not started yet)."""
    try:
        value = serializer.loads(meta) if meta else None
    except ValueError:
        return 0
    return _count(value.get(META_ATTEMPT) if isinstance(value, dict) else None)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _error_message(job: Job, connection: redis.Redis) -> str:
    """The exception's last line, or a sentence saying the worker died."""
    latest = job.latest_result()
    text = (latest.exc_string if latest is not None else None) or job.exc_info or ""
    if "AbandonedJobError" in text:
        attempts = int(connection.get(key_for("attempts", job.id)) or 1)
        return (
            "the worker running this job stopped (killed, or out of memory); "
            f"it was tried {attempts} time{'s' if attempts != 1 else ''}"
        )
    return _exception_line(text) or "the job failed without a message"


def _exception_line(traceback_text: str) -> str:
    """'ValueError: ...' from a formatted traceback: the first line after the last frame."""
    lines = traceback_text.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1 :] if frames else lines
    headers = [line for line in after if line and not line.startswith(" ")]
    return headers[0] if headers else (lines[-1] if lines else "")
