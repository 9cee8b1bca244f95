"""The render-job queue in Redis: the contract between API processes and workers.

Transport. A job is an entry in one Redis stream (``SRSTORE_QUEUE_STREAM``), read through
one consumer group by every worker: each job goes to one worker, stays in the group's
pending list until that worker acknowledges it, and is claimed (``XAUTOCLAIM``) by another
worker if it sits there unacknowledged for ``SRSTORE_CLAIM_IDLE_SECONDS`` (its worker died).
A worker renews the claim on the jobs it is rendering, so a slow render is never stolen.
Delivery is at least once; rendering twice is harmless because the result is idempotent.

Wake-up. A worker writes the rendition into the HR cache, then publishes a small message on
the key's channel ``{stream}:done:{cache key}``. Each API process holds one pattern
subscription to ``{stream}:done:*``, opened at start-up: it is subscribed before it ever
enqueues, a miss costs no subscribe round trip, one connection serves all its waiters, and a
finished job wakes waiters in every API process at once. (A blocking list per waiter would
need a connection per waiting request and one push per waiter.) Pub/sub is fire and forget,
so a waiter whose deadline passes reads the cache once more before answering 503.

Dedupe and back-pressure. One script enqueues atomically: when the key already has a job in
flight (``{stream}:inflight:{key}``, expiring with the deadline) the miss joins it; when the
stream already holds ``max_length`` unfinished jobs the miss is refused; otherwise it adds the
job and marks the key in flight. A worker deletes each finished entry, so the stream's length
is the number of unfinished jobs; and it acknowledges without rendering a job whose rendition
is already cached.

Compactions. The same class carries compaction jobs (see :mod:`render.compaction`) on a
stream of their own, ``{stream}:compact``, with the same dedupe, claims and acknowledgement: a
job's key names the image and the model to score with. Workers read it only when no render is
waiting for them, so renders keep priority. The durable work item is the ``pending/{id}``
object, not the entry: a job lost with the stream is queued again by the API's sweep.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Literal, cast

from redis import asyncio as aioredis
from redis.exceptions import ResponseError

from cache import CacheKey, CacheUnavailable
from imaging import InvalidImage, UnencodableFormat
from render.images import ImageNotFound
from storage import StorageUnavailable

GROUP = "workers"
EXPIRED = "expired"
COMPACTION_FORMAT = "compact"  # the key's format of a compaction job
COMPACTION_JOB_SECONDS = 3600.0  # a compaction is never refused as expired; this bounds dedupe

Enqueued = Literal["queued", "joined", "full"]

_ENQUEUE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 'joined' end
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then return 'full' end
redis.call('XADD', KEYS[1], '*', unpack(ARGV, 3))
redis.call('SET', KEYS[2], '1', 'PX', ARGV[2])
return 'queued'
"""

# Failures a worker reports by code, raised again as the same type in the waiting API process.
ERRORS: dict[str, type[Exception]] = {
    "not_found": ImageNotFound,
    "invalid_image": InvalidImage,
    "unencodable_format": UnencodableFormat,
    "storage_unavailable": StorageUnavailable,
    "cache_unavailable": CacheUnavailable,
}


@dataclass(frozen=True)
class RenderJob:
    key: CacheKey
    deadline: float  # Unix time after which nobody waits for the result
    request_id: str = ""  # of the request that queued it: the worker logs under it

    def expired(self) -> bool:
        return time.time() > self.deadline

    def fields(self) -> dict[str, str]:
        return {
            "image_id": self.key.image_id,
            "model": self.key.model,
            "fmt": self.key.fmt,
            "quality": str(self.key.quality or 0),
            "variant": self.key.variant,
            "encoding": self.key.encoding,
            "deadline": repr(self.deadline),
            "request_id": self.request_id,
        }

    @classmethod
    def from_fields(cls, fields: dict[str, str]) -> RenderJob:
        quality = int(fields["quality"]) or None
        key = CacheKey(
            fields["image_id"],
            fields["model"],
            fields["fmt"],
            quality,
            fields.get("variant", ""),
            fields.get("encoding", ""),
        )
        return cls(key, float(fields["deadline"]), fields.get("request_id", ""))


def compaction_stream(render_stream: str) -> str:
    """The compactions' own stream: a worker reads it only when no render waits."""
    return f"{render_stream}:compact"


def compaction_job(image_id: str, model: str, request_id: str = "") -> RenderJob:
    """A compaction travels as a job whose key names the image and the model to score with,
    so it shares the render queue's enqueue dedupe, claims and acknowledgement."""
    key = CacheKey(image_id, model, COMPACTION_FORMAT)
    return RenderJob(key, time.time() + COMPACTION_JOB_SECONDS, request_id)


@dataclass(frozen=True)
class Outcome:
    """What a finished job tells its waiters: nothing on success, else an error code."""

    code: str | None = None
    message: str = ""

    def to_json(self) -> str:
        return json.dumps({"code": self.code, "message": self.message})

    @classmethod
    def from_json(cls, text: str | bytes) -> Outcome:
        return cls(**json.loads(text))

    @classmethod
    def failure(cls, exc: Exception) -> Outcome:
        code = next((c for c, t in ERRORS.items() if isinstance(exc, t)), "render_failed")
        return cls(code, str(exc) or type(exc).__name__)


Entry = tuple[str, RenderJob]


class JobQueue:
    """Every Redis command of the queue, for both sides; the client must decode responses."""

    def __init__(self, client: aioredis.Redis, stream: str, max_length: int) -> None:
        self.client = client
        self.stream = stream
        self.max_length = max_length
        self._enqueue = client.register_script(_ENQUEUE)

    @property
    def done_pattern(self) -> str:
        return f"{self.stream}:done:*"

    def done_channel(self, key: str) -> str:
        return f"{self.stream}:done:{key}"

    def key_of_channel(self, channel: str) -> str:
        return channel.removeprefix(f"{self.stream}:done:")

    def _inflight(self, key: CacheKey) -> str:
        return f"{self.stream}:inflight:{key}"

    async def enqueue(self, job: RenderJob) -> Enqueued:
        ttl_ms = max(1, int((job.deadline - time.time()) * 1000))
        args: list[str | int] = [self.max_length, ttl_ms]
        args += [x for kv in job.fields().items() for x in kv]
        result = await self._enqueue(keys=[self.stream, self._inflight(job.key)], args=args)
        return cast(Enqueued, result)

    async def ensure_group(self) -> None:
        try:
            await self.client.xgroup_create(self.stream, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New jobs for this consumer, waiting up to ``block_ms`` for the first (None: not at all).

        A Redis that lost the stream (a restart without persistence, a failover, a flush)
        loses the consumer group with it: the group is made again and reading goes on.
        """
        try:
            reply = await self.client.xreadgroup(
                GROUP, consumer, {self.stream: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        streams = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], reply or [])
        return [_entry(e) for _, entries in streams for e in entries]

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Jobs whose worker has not renewed its claim for ``min_idle_ms`` (it died); a lost
        group is made again, as in :meth:`read`."""
        try:
            reply = await self.client.xautoclaim(
                self.stream, GROUP, consumer, min_idle_ms, start_id="0-0", count=count
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()
            return []
        return [_entry(e) for e in reply[1] if e[1]]  # a deleted entry comes back empty

    async def renew(self, consumer: str, entry_ids: list[str]) -> None:
        """Reset the idle time of jobs this consumer is still working on."""
        if entry_ids:
            ids: list[int | bytes | str | memoryview] = [*entry_ids]
            await self.client.xclaim(self.stream, GROUP, consumer, 0, ids, justid=True)

    async def finish(self, entry_id: str, job: RenderJob, outcome: Outcome) -> None:
        """Wake the waiters, then drop the job from the stream and release its key."""
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(self._inflight(job.key))
            pipe.publish(self.done_channel(str(job.key)), outcome.to_json())
            pipe.xack(self.stream, GROUP, entry_id)
            pipe.xdel(self.stream, entry_id)
            await pipe.execute()

    async def depth(self) -> int:
        return int(await self.client.xlen(self.stream))

    async def oldest_age(self) -> float:
        """Seconds since the oldest unfinished job was queued (0 when none)."""
        entries = await self.client.xrange(self.stream, count=1)
        if not entries:
            return 0.0
        queued_ms = int(str(entries[0][0]).partition("-")[0])
        return max(0.0, time.time() - queued_ms / 1000)


def _entry(raw: tuple[str, dict[str, str]]) -> Entry:
    entry_id, fields = raw
    return entry_id, RenderJob.from_fields(fields)
