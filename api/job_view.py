"""What a user reads about a job: its view (the `JobView` schema), read defensively from the
queue's record of it and our meta (a job written into Redis by someone else must not break the
API)."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from contract import (
    META_ATTEMPT,
    META_DEVICE,
    META_PROGRESS,
    JobQueue,
    JobRecord,
    JobState,
    key_for,
)

# A running job's worker renews it every third of HEARTBEAT_TTL (worker/main.py `_beat`),
# setting its expiry in the started-job registry to that moment plus the TTL. Two thirds of the
# TTL without a renewal is a renewal missed by a whole interval: more than a slow Redis call or
# a busy CPU delays one, and still a third of the TTL before the job is given up.
LATE_FRACTION_OF_TTL = 2 / 3


def job_view(job: JobRecord, kind: str, queue: JobQueue) -> dict[str, Any]:
    """The JSON of a job of `kind` (as a user sees it: "spp", "train")."""
    state = job.state
    done, total = progress_of(job)
    started, ended = job.started_at, job.ended_at
    return {
        "id": job.id,
        "kind": kind,
        "label": job.label,
        "state": state,
        "progress": {"done": done, "total": total},
        "attempt": _count(job.meta.get(META_ATTEMPT)),
        "url": f"/v1/jobs/{job.id}",
        "result_url": f"/v1/jobs/{job.id}/result" if state == JobState.finished else None,
        "enqueued_at": _iso(job.enqueued_at),
        "started_at": _iso(started),
        "ended_at": _iso(ended),
        "run_seconds": (ended - started).total_seconds() if started and ended else None,
        "device": _text(job.meta.get(META_DEVICE)),
        "error": _error_message(job, queue) if state == JobState.failed else None,
        "config": job.config,
        "heartbeat": heartbeat_of(job, queue) if state == JobState.running else None,
    }


def heartbeat_of(job: JobRecord, queue: JobQueue) -> dict[str, Any] | None:
    """How recently a running job's worker renewed it (the `Heartbeat` schema), from what the
    queue records: the job's `last_heartbeat` and when it counts as abandoned (the TTL is their
    difference, the one the worker used). None where the record has no heartbeat."""
    last = job.last_heartbeat
    if not isinstance(last, datetime):
        return None
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)  # the queue writes UTC
    moment = datetime.now(UTC)
    age = max(0.0, (moment - last).total_seconds())
    expiry = queue.heartbeat_expiry(job)
    if expiry is None or not math.isfinite(expiry):  # none, or a job given no TTL (+inf)
        return {"age": round(age, 1), "late": False, "abandoned_in": None}
    # Expiries are whole seconds: the renewal's second (truncated) plus the TTL (whole seconds).
    ttl = math.ceil(expiry - last.timestamp() - 1e-6)
    return {
        "age": round(age, 1),
        "late": age > LATE_FRACTION_OF_TTL * ttl,
        "abandoned_in": round(max(0.0, expiry - moment.timestamp()), 1),
    }


def progress_of(job: JobRecord) -> tuple[int, int]:
    """Done and total of the job's progress; (0, 0) where the meta is not what the worker
    writes (a job written into Redis by someone else must not break the API)."""
    progress = job.meta.get(META_PROGRESS)
    if not isinstance(progress, dict):
        return 0, 0
    return _count(progress.get("done")), _count(progress.get("total"))


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def attempt_of(meta: bytes | None, queue: JobQueue) -> int:
    """The attempt number in a job's raw meta (0: not started yet)."""
    try:
        value = queue.decode_meta(meta) if meta else None
    except ValueError:
        return 0
    return _count(value.get(META_ATTEMPT) if isinstance(value, dict) else None)


def _iso(moment: datetime | None) -> str | None:
    return moment.isoformat() if moment else None


def _error_message(job: JobRecord, queue: JobQueue) -> str:
    """The exception's last line, or a sentence saying the worker died."""
    text = queue.error_text(job)
    if "AbandonedJobError" in text:
        attempts = _count(_number(queue.connection.get(key_for("attempts", job.id)))) or 1
        return (
            "the worker running this job stopped (killed, or out of memory); "
            f"it was tried {attempts} time{'s' if attempts != 1 else ''}"
        )
    return _exception_line(text) or "the job failed without a message"


def _number(raw: bytes | None) -> int | None:
    """A counter Redis holds, or None when it is missing or not a number."""
    try:
        return int(raw) if raw is not None else None
    except ValueError:
        return None


def _exception_line(traceback_text: str) -> str:
    """'ValueError: ...' from a formatted traceback: the first line after the last frame."""
    lines = traceback_text.strip().splitlines()
    frames = [i for i, line in enumerate(lines) if line.startswith("  File ")]
    after = lines[frames[-1] + 1 :] if frames else lines
    headers = [line for line in after if line and not line.startswith(" ")]
    return headers[0] if headers else (lines[-1] if lines else "")
