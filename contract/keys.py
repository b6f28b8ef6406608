"""Redis key names and job meta keys that the API and the workers share."""

from __future__ import annotations

from typing import Final

# Keys of job meta written by the API or the worker and read by the API.
META_KIND: Final = "kind"  # the queue name: "spp" or "train"
META_PROGRESS: Final = "progress"  # {"done": int, "total": int}: blocks, or training steps
META_DEVICE: Final = "device"
# 1 for the first run of a job, 2 when a worker runs it again (its worker died, or was shut
# down): progress and events always describe this attempt.
META_ATTEMPT: Final = "attempt"

# Key kind of a training run's events (`key_for(EVENTS_KEY, job_id)`): a Redis list of JSON
# objects (`nfcore.spec.train_result`), emptied when the job is queued or starts, appended by the
# worker while it runs, read by the API from any index on; it expires with the result.
EVENTS_KEY: Final = "events"
# Pub/sub channel kind (`key_for(ENDED_CHANNEL, job_id)`): a worker publishes on it once a job
# has ended and its final state (and result) are in Redis, so the API's `wait` answers at once.
ENDED_CHANNEL: Final = "ended"
# Key kind of the claims on a job (`key_for(ASKERS_KEY, job_id)`): a Redis set of the claim
# tokens of the submissions still waiting for it (a POST that returned the job, a sweep's
# point). A client that moves on (`replaces=<claim>`) takes its own claim out, once; a job
# left with no claim is canceled. It is emptied when the job is queued anew, and expires
# with the result.
ASKERS_KEY: Final = "askers"
# Key kind of one claim (`key_for(CLAIM_KEY, token)`): the id of the job it holds. The token
# is random and given only to the client that submitted, so nobody else can give it back.
CLAIM_KEY: Final = "claim"


# Key kind of a running job's memory (`key_for(MEMORY_KEY, job_id)`): the JSON object
# {"rss_bytes": int, "limit_bytes": int} of its worker, written with each heartbeat and when
# the worker's memory goes over its limit. The reaper fails a job whose worker died near its
# limit instead of running it again on the next worker, which would die the same way.
MEMORY_KEY: Final = "memory"


KEY_PREFIX: Final = "nfsp"


def key_for(kind: str, ident: str) -> str:
    """The one place Redis key names are made: `nfsp:<kind>:<id>`."""
    return f"{KEY_PREFIX}:{kind}:{ident}"
