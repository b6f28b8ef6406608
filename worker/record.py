"""A worker's record in Redis (RQ's hash `rq:worker:<name>` and its places in the lists of
workers), kept whole whatever happens to Redis or to the worker.

- A worker restarted under the `WORKER_NAME` of one that died takes over its record at once
  (same host, process gone) or once the record stops heartbeating (another host); a live
  namesake makes it exit (`WorkerNameTaken`).
- Each heartbeat checks that the record is whole (its hash has `birth` and `queues`, and it
  is in RQ's list of workers and in each of its queues' lists) and registers again when it is
  not: after a Redis restart or flush, or a stall of the worker (SIGSTOP, memory pressure)
  longer than the hash's expiry, after which RQ's heartbeat wrote back a hash of
  `last_heartbeat` alone and `/readyz` and the plugin list never counted the worker again.
- The descriptions of the worker's plugins are renewed with its heartbeats.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

from rq.utils import as_text, now, utcparse
from rq.worker import BaseWorker
from rq.worker_registration import REDIS_WORKER_KEYS, WORKERS_BY_QUEUE_KEY

from contract import advertise
from contract.reaper import reap_abandoned
from contract.rq_queue import RQJobQueue, TaskJob, queue_for
from worker.settings import get_settings

log = logging.getLogger("worker")

# Seconds between looks at a same-named worker's record while waiting to see if it lives.
TAKEOVER_POLL = 0.5


class WorkerNameTaken(RuntimeError):
    """Another live worker already runs under this WORKER_NAME."""


class WorkerRecord(BaseWorker):
    """What `JobWorker` adds to RQ's registration of a worker (a mixin: it comes before RQ's
    worker class among JobWorker's bases)."""

    heartbeat_ttl: int
    plugin_descriptions: list[dict[str, Any]]

    def heartbeat(self, timeout: int | None = None, pipeline: Any = None) -> None:
        if pipeline is None:
            self._register_if_lost()
        super().heartbeat(timeout, pipeline)
        if pipeline is None:
            self._advertise()

    def _register_if_lost(self) -> None:
        """Register again when Redis has lost any part of this worker's record, so /readyz and
        the plugin list count it: after a restart or a flush, or after a stall longer than the
        hash's expiry (RQ's heartbeat then writes back a hash of `last_heartbeat` alone, and a
        reader of the list of workers drops a key it finds missing). The record is this
        process's own, whatever is left of it."""
        if self._registered():
            return
        log.warning(
            "worker %s: Redis lost part of this worker's record (a restart, a flush or a stall); "
            "registering again",
            self.name,
        )
        self.connection.delete(self.key)
        self.register_birth()
        self.set_state(self.get_state())

    def _registered(self) -> bool:
        """This worker's whole record is in Redis: its hash with what readers of RQ's list of
        workers need (`birth`, `queues`), and its place in that list and in each queue's."""
        with self.connection.pipeline(transaction=False) as pipe:
            pipe.hmget(self.key, "birth", "queues")
            pipe.sismember(REDIS_WORKER_KEYS, self.key)
            for name in self.queue_names():
                pipe.sismember(WORKERS_BY_QUEUE_KEY % name, self.key)
            (birth, queues), *listed = pipe.execute()
        return birth is not None and queues is not None and all(listed)

    # --- birth: take over the record of a dead worker of the same name -------------------------
    def register_birth(self) -> None:
        self._take_over_dead_namesake()
        super().register_birth()
        self._advertise()

    def _advertise(self) -> None:
        """Renew the descriptions of this worker's plugins (`contract.plugins`)."""
        if self.plugin_descriptions:
            advertise(self.connection, self.plugin_descriptions, get_settings().result_ttl)

    def _take_over_dead_namesake(self) -> None:
        record = self._record()
        if record is None:
            return
        first_beat = record.get("last_heartbeat")
        while not self._is_dead(record):
            time.sleep(TAKEOVER_POLL)
            record = self._record()
            if record is None:
                return
            if record.get("last_heartbeat") != first_beat:
                raise WorkerNameTaken(
                    f"a live worker named {self.name!r} already runs (host "
                    f"{record.get('hostname')}, pid {record.get('pid')}); give this one another "
                    "WORKER_NAME"
                )
        log.warning(
            "worker %s: taking over the record of a dead worker of the same name (host %s, "
            "pid %s, last heartbeat %s)",
            self.name,
            record.get("hostname"),
            record.get("pid"),
            record.get("last_heartbeat"),
        )
        self._bury(record)

    def _record(self) -> dict[str, str] | None:
        """The same-named worker's record, or None when there is none or it registered death."""
        raw = self.connection.hgetall(self.key)
        record = {as_text(key): as_text(value) for key, value in raw.items()}
        return record if record and "death" not in record else None

    def _is_dead(self, record: dict[str, str]) -> bool:
        """On this host with its process gone (or it was this very process, restarted as PID
        1 of a container), or no heartbeat for HEARTBEAT_TTL seconds."""
        if record.get("hostname") == socket.gethostname():
            pid = int(record["pid"]) if record.get("pid", "").isdigit() else None
            if pid == os.getpid() or (pid is not None and not _process_exists(pid)):
                return True
        try:
            last = utcparse(record["last_heartbeat"])
        except (KeyError, ValueError):
            return True
        return (now() - last).total_seconds() > self.heartbeat_ttl

    def _bury(self, record: dict[str, str]) -> None:
        """Remove the dead worker's record, and let its running job be reaped at once."""
        members = [as_text(m) for m in self.connection.smembers(self.executions_key)]
        with self.connection.pipeline() as pipe:
            for member in members:
                job_id = member.rsplit(":", 1)[0]
                origin = self.connection.hget(TaskJob.key_for(job_id), "origin")
                if origin:
                    registry = queue_for(as_text(origin), self.connection).started_job_registry
                    pipe.zadd(registry.key, {member: 0}, xx=True)  # expired: abandoned now
            for name in (record.get("queues") or "").split(","):
                if name:
                    pipe.srem(WORKERS_BY_QUEUE_KEY % name, self.key)
            pipe.srem(self.redis_workers_keys, self.key)
            pipe.delete(self.key, self.executions_key)
            pipe.execute()
        if members:
            reap_abandoned(RQJobQueue(self.connection), get_settings())


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True
