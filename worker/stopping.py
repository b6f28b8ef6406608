"""Cooperative stopping of the running job.

The worker runs jobs in its own process (no fork, so one CUDA context serves every job), so
RQ's stop-job command cannot kill a work horse. Instead the worker sets this flag when the
command arrives, and the job checks it after every block (or training step).
"""

from __future__ import annotations

import threading

stop_requested = threading.Event()


class JobStopped(Exception):
    """Raised inside a job when a user canceled it."""


def raise_if_stopped() -> None:
    if stop_requested.is_set():
        raise JobStopped("canceled by request")
