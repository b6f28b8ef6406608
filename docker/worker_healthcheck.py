"""The worker container's health check: is an RQ worker of this container registered in Redis?

Exits 0 when Redis lists a live worker whose hostname is this container's (its worker record
exists: the worker started, loaded torch, reached Redis and has not died or expired), else 1
with the reason on stdout, which `docker inspect` shows. Run inside the worker image as
`python /srv/worker_healthcheck.py`; it reads REDIS_URL like the worker itself.
"""

from __future__ import annotations

import socket
import sys

import redis

from contract import connect
from contract.rq_queue import RQJobQueue
from worker.settings import get_settings


def main() -> int:
    settings = get_settings()
    hostname = socket.gethostname()
    try:
        connection = connect(settings)
        workers = RQJobQueue(connection).workers()
    except redis.RedisError as error:
        print(f"unhealthy: Redis unreachable ({error})")
        return 1
    mine = sorted(worker.name for worker in workers if worker.hostname == hostname)
    if not mine:
        print(f"unhealthy: no RQ worker of host {hostname} is registered in Redis")
        return 1
    print(f"healthy: {', '.join(mine)} on queues {','.join(settings.worker_queues)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
