"""Job records read from Redis defensively: a record the API did not write (an older version,
a hand edit, anyone who can write to Redis) is left out of a listing or named as unreadable,
never a 500 for everyone (a job hash with `timeout: "xyz"` or `status: "bogus"` made RQ's own
`fetch_many` raise, and with it `GET /v1/jobs`)."""

from __future__ import annotations

import redis
from rq.exceptions import NoSuchJobError
from rq.job import Job

from contract import SERIALIZER, TaskJob


class UnreadableJob(ValueError):
    """A job record in Redis that RQ cannot read: not one the API wrote."""


def load_jobs(connection: redis.Redis, ids: list[str], skip_unreadable: bool = True) -> list[Job]:
    """The jobs of `ids`, read in one round trip, leaving out those that do not exist and, with
    `skip_unreadable`, those whose records RQ cannot read; without it, either kind raises
    NoSuchJobError or UnreadableJob."""
    with connection.pipeline(transaction=False) as pipe:
        for job_id in ids:
            pipe.hgetall(TaskJob.key_for(job_id))
        records = pipe.execute()
    jobs = []
    for job_id, record in zip(ids, records, strict=True):
        try:
            jobs.append(_restored(job_id, record, connection))
        except (NoSuchJobError, UnreadableJob):
            if not skip_unreadable:
                raise
    return jobs


def _restored(job_id: str, record: dict[bytes, bytes], connection: redis.Redis) -> Job:
    """The job of `record` (its Redis hash); NoSuchJobError when there is none or the id is not
    one RQ allows, UnreadableJob when RQ cannot read the record's fields."""
    if not record:
        raise NoSuchJobError(f"no job {job_id!r}")
    try:
        job = TaskJob(job_id, connection=connection, serializer=SERIALIZER)
    except ValueError:  # not a valid RQ job id, so no job of ours
        raise NoSuchJobError(f"no job {job_id!r}") from None
    try:
        job.restore(record)
    except Exception as error:  # RQ parses each field its own way: ValueError, AssertionError...
        raise UnreadableJob(str(error)[:200] or type(error).__name__) from None
    return job
