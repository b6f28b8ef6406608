"""A training job's events, read a page at a time: a page is bounded in events and in bytes.

The worker appends the events to a Redis list (`worker.tasks.EventStream`). An SPP frame of a
deep network is tens of kB, so a page bounded by its count alone could be hundreds of MB: one
read of 170 MB of events took the API from 56 MB to 1.26 GB of memory. A page ends before
MAX_EVENTS_PAGE_BYTES (with at least one event, so a reader always moves on); a client reads
on from its `next`. The page is read by a script inside Redis, so Redis sends only the page,
and reads the job's attempt in the same atomic step, as the worker changes both together.
"""

from __future__ import annotations

from api.job_view import attempt_of
from contract import EVENTS_KEY, JobQueue, key_for

MAX_EVENTS_PAGE = 10_000  # events returned by one read, at most
# Bytes of events (their JSON as stored) one read returns, at most: the API parses a page
# into Python objects (about 10 times its JSON) and writes it again, so 1 MiB costs it ~10 MiB.
MAX_EVENTS_PAGE_BYTES = 2**20
SCRIPT_CHUNK = 64  # events the script reads from the list at a time

# KEYS: the hash of the job's record, its events. ARGV: the hash's field of the job's meta,
# the first index, the most events, the most bytes, the chunk. Returns the job's meta (nil when
# gone) and the page.
PAGE_SCRIPT = """
local start, count = tonumber(ARGV[2]), tonumber(ARGV[3])
local budget, chunk = tonumber(ARGV[4]), tonumber(ARGV[5])
local meta = redis.call('HGET', KEYS[1], ARGV[1])
local page, bytes = {}, 0
while #page < count do
  local first = start + #page
  local want = math.min(chunk, count - #page)
  local items = redis.call('LRANGE', KEYS[2], first, first + want - 1)
  for _, item in ipairs(items) do
    if #page > 0 and bytes + #item > budget then
      return {meta, page}
    end
    page[#page + 1] = item
    bytes = bytes + #item
  end
  if #items < want then
    break
  end
end
return {meta, page}
"""


def read_events(
    queue: JobQueue,
    job_id: str,
    start: int,
    limit: int,
    max_bytes: int = MAX_EVENTS_PAGE_BYTES,
) -> tuple[int, list[bytes]]:
    """The job's current attempt, and its events from index `start` on: at most `limit` of
    them and `max_bytes` of their JSON (one, however large, when the first alone is more)."""
    script = queue.connection.register_script(PAGE_SCRIPT)
    record, field = queue.meta_field(job_id)
    keys = [record, key_for(EVENTS_KEY, job_id)]
    meta, page = script(keys=keys, args=[field, start, limit, max_bytes, SCRIPT_CHUNK])
    return attempt_of(meta, queue), list(page)
