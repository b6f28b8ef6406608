"""The job functions RQ runs, by dotted path (`api.contract.TASKS`): payload in, small dict out.

A thin adapter: it re-validates the config, runs nfcore, streams progress into the job's
meta, and stores the result JSON in the cache under `key_for("result", job_id)`.
"""

from __future__ import annotations

import json
import time
from typing import Any

from pydantic import ValidationError
from rq import get_current_job

from api.contract import META_DEVICE, META_PROGRESS, key_for
from nfcore.config import SPPConfig, describe_validation_error
from worker.settings import get_settings
from worker.stopping import raise_if_stopped

# Progress goes to Redis at most this often (seconds), plus always at the last block.
PROGRESS_INTERVAL = 0.2


def run_spp_job(payload: dict[str, Any]) -> dict[str, Any]:
    """Compute one SPP and cache it; returns where the result is and how long it took."""
    from nfcore.spp import resolve_device, run_spp  # torch loads here, in the worker only

    job = get_current_job()
    if job is None:
        raise RuntimeError("run_spp_job must run inside an RQ job")
    settings = get_settings()
    try:
        config = SPPConfig.model_validate(payload)
    except ValidationError as error:  # e.g. an API and a worker of different versions
        raise ValueError(f"invalid config: {describe_validation_error(error)}") from None
    device = settings.worker_device if config.device == "auto" else config.device
    job.meta[META_DEVICE] = str(resolve_device(device))
    last_saved = 0.0

    def progress(done: int, total: int) -> None:
        nonlocal last_saved
        raise_if_stopped()
        now = time.monotonic()
        if done == total or now - last_saved >= PROGRESS_INTERVAL:
            job.meta[META_PROGRESS] = {"done": done, "total": total}
            job.save_meta()
            last_saved = now

    result = run_spp(config, progress=progress, device=device)
    connection = job.connection
    with connection.pipeline() as pipe:
        pipe.set(
            key_for("result", job.id), json.dumps(result.to_json_dict()), ex=settings.result_ttl
        )
        # Counts real computations, so tests and operators can see the cache working.
        pipe.incr(key_for("computations", job.id))
        pipe.expire(key_for("computations", job.id), settings.result_ttl)
        pipe.execute()
    return {
        "result_key": key_for("result", job.id),
        "blocks": len(result.blocks),
        "seconds": result.meta.seconds,
        "device": result.meta.device,
    }
