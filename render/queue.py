"""The render-job queue in Redis: the contract between API processes and workers.

Transport. A job is an entry in one of ``SRSTORE_QUEUE_SHARDS`` Redis streams, chosen by its
image id (``{srstore:render:0}``, ``{srstore:render:1}``, ...: each its own hash tag, so on a
Redis Cluster the shards spread over the masters and no one master is the queue's limit).
Every worker reads every shard through one consumer group per shard: each job goes to one
worker, stays in its shard's pending list until that worker acknowledges it, and is claimed
(``XAUTOCLAIM``) by another worker if it sits there unacknowledged for
``SRSTORE_CLAIM_IDLE_SECONDS`` (its worker died). A worker renews the claim on the jobs it is
rendering, so a slow render is never stolen. Delivery is at least once; rendering twice is
harmless because the result is idempotent.

Reading several shards. A stream read that blocks can name several streams only when they
share a slot, which shards never do; so a worker first sweeps the shards without blocking
(from a shard that rotates, so none starves), and when none holds a job it blocks on one
shard at a time for ``block_ms / shards``: an idle worker costs one command per shard per
``block_ms``, and a new job waits at most ``block_ms`` for an idle worker.

Wake-up. A worker writes the rendition into the HR cache, then publishes a small message on
the key's channel ``{stream}:done:{cache key}``. Each API process holds one pattern
subscription to ``{stream}:done:*``, opened at start-up: it is subscribed before it ever
enqueues, a miss costs no subscribe round trip, one connection serves all its waiters, and a
finished job wakes waiters in every API process at once. (A blocking list per waiter would
need a connection per waiting request and one push per waiter.) Pub/sub is fire and forget
(and a cluster forwards each message to every node), so a waiter whose deadline passes reads
the cache once more before answering 503.

Dedupe and back-pressure. One script enqueues atomically: when the key already has a job in
flight (``{shard}:inflight:{key}``, in the shard's slot, expiring with the deadline) the miss
joins it; when the shard already holds its part of ``max_length`` unfinished jobs the miss is
refused; otherwise it adds the job and marks the key in flight. A worker deletes each finished
entry, so a shard's length is its number of unfinished jobs; and it acknowledges without
rendering a job whose rendition is already cached.

Compactions. The same class carries compaction jobs (see :mod:`render.compaction`) on a
stream of their own, ``{stream}:compact`` (one shard), with the same dedupe, claims and
acknowledgement: a job's key names the image and the model to score with. Workers read it
only when no render is waiting for them, so renders keep priority. The durable work item is
the ``pending/{id}`` object, not the entry: a job lost with the stream is queued again by the
API's sweep.
"""

from __future__ import annotations

import json
import math
import time
import zlib
from collections import defaultdict
from dataclasses import dataclass
from typing import Literal, cast

from redis.exceptions import ResponseError

from cache import CacheKey, CacheUnavailable
from imaging import InvalidImage, UnencodableFormat
from keyspace import Client, queue_shard
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

# KEYS: the shard, the key's in-flight mark. ARGV: group, entry id, channel, message.
_FINISH = """
redis.call('DEL', KEYS[2])
redis.call('PUBLISH', ARGV[3], ARGV[4])
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
redis.call('XDEL', KEYS[1], ARGV[2])
return 1
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
            "source": self.key.source,
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
            fields.get("source", ""),
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


@dataclass(frozen=True)
class JobId:
    """Where a job sits: its shard and its entry id there."""

    stream: str
    entry_id: str

    def __str__(self) -> str:
        return f"{self.stream}/{self.entry_id}"


Entry = tuple[JobId, RenderJob]


class JobQueue:
    """Every Redis command of the queue, for both sides; the client must decode responses."""

    def __init__(self, client: Client, stream: str, max_length: int, shards: int = 1) -> None:
        self.client = client
        self.stream = stream
        self.max_length = max_length
        self.shards = [queue_shard(stream, n) for n in range(shards)]
        self.shard_max_length = math.ceil(max_length / shards)
        self._enqueue = client.register_script(_ENQUEUE)
        self._finish = client.register_script(_FINISH)
        self._turn = 0
        self._idle = False

    def shard_of(self, key: CacheKey) -> str:
        """The stream of every job of one image (CRC-32 of the id: the same in every process)."""
        return self.shards[zlib.crc32(key.image_id.encode()) % len(self.shards)]

    @property
    def done_pattern(self) -> str:
        return f"{self.stream}:done:*"

    def done_channel(self, key: str) -> str:
        return f"{self.stream}:done:{key}"

    def key_of_channel(self, channel: str) -> str:
        return channel.removeprefix(f"{self.stream}:done:")

    @staticmethod
    def _inflight(shard: str, key: CacheKey) -> str:
        return f"{shard}:inflight:{key}"

    async def enqueue(self, job: RenderJob) -> Enqueued:
        ttl_ms = max(1, int((job.deadline - time.time()) * 1000))
        args: list[str | int] = [self.shard_max_length, ttl_ms]
        args += [x for kv in job.fields().items() for x in kv]
        shard = self.shard_of(job.key)
        result = await self._enqueue(keys=[shard, self._inflight(shard, job.key)], args=args)
        return cast(Enqueued, result)

    async def ensure_group(self) -> None:
        for shard in self.shards:
            await self._ensure_group(shard)

    async def _ensure_group(self, shard: str) -> None:
        try:
            await self.client.xgroup_create(shard, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _rotation(self) -> list[str]:
        """Every shard, from the next one in turn."""
        self._turn = (self._turn + 1) % len(self.shards)
        return self.shards[self._turn :] + self.shards[: self._turn]

    async def read(self, consumer: str, count: int, block_ms: int | None) -> list[Entry]:
        """New jobs for this consumer, at most ``count``, waiting up to ``block_ms`` in all
        (None: not at all, one sweep of the shards).

        A busy fleet sweeps every shard without waiting; an idle one waits on one shard at a
        time (see the module's docstring).
        """
        shards = self._rotation()
        if len(shards) == 1:
            return await self._read(shards[0], consumer, count, block_ms)
        entries: list[Entry] = []
        if not self._idle or block_ms is None:
            for shard in shards:
                if len(entries) >= count:
                    break
                entries += await self._read(shard, consumer, count - len(entries), None)
            self._idle = not entries
            if entries:
                return entries
            if block_ms is None:
                return entries
        entries = await self._read(shards[0], consumer, count, max(1, block_ms // len(shards)))
        self._idle = not entries
        return entries

    async def _read(
        self, shard: str, consumer: str, count: int, block_ms: int | None
    ) -> list[Entry]:
        """A Redis that lost the stream (a restart without persistence, a failover, a flush)
        loses the consumer group with it: the group is made again and reading goes on."""
        try:
            reply = await self.client.xreadgroup(
                GROUP, consumer, {shard: ">"}, count=count, block=block_ms
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self._ensure_group(shard)
            return []
        streams = cast(list[tuple[str, list[tuple[str, dict[str, str]]]]], reply or [])
        return [_entry(shard, e) for _, entries in streams for e in entries]

    async def claim_stale(self, consumer: str, min_idle_ms: int, count: int) -> list[Entry]:
        """Up to ``count`` jobs whose worker has not renewed its claim for ``min_idle_ms`` (it
        died), from every shard; a lost group is made again, as in :meth:`read`."""
        claimed: list[Entry] = []
        for shard in self._rotation():
            if len(claimed) >= count:
                break
            try:
                reply = await self.client.xautoclaim(
                    shard, GROUP, consumer, min_idle_ms, start_id="0-0", count=count - len(claimed)
                )
            except ResponseError as exc:
                if "NOGROUP" not in str(exc):
                    raise
                await self._ensure_group(shard)
                continue
            claimed += [_entry(shard, e) for e in reply[1] if e[1]]  # a deleted one is empty
        return claimed

    async def renew(self, consumer: str, job_ids: list[JobId]) -> None:
        """Reset the idle time of jobs this consumer is still working on."""
        by_shard: defaultdict[str, list[int | bytes | str | memoryview]] = defaultdict(list)
        for job_id in job_ids:
            by_shard[job_id.stream].append(job_id.entry_id)
        for shard, ids in by_shard.items():
            await self.client.xclaim(shard, GROUP, consumer, 0, ids, justid=True)

    async def finish(self, job_id: JobId, job: RenderJob, outcome: Outcome) -> None:
        """Wake the waiters, then drop the job from its shard and release its key (one
        script: a worker that dies between the steps cannot leave the key marked)."""
        keys = [job_id.stream, self._inflight(job_id.stream, job.key)]
        args = [GROUP, job_id.entry_id, self.done_channel(str(job.key)), outcome.to_json()]
        await self._finish(keys=keys, args=args)

    async def depth(self) -> int:
        """Unfinished jobs in every shard."""
        return sum([int(await self.client.xlen(shard)) for shard in self.shards])

    async def oldest_age(self) -> float:
        """Seconds since the oldest unfinished job of any shard was queued (0 when none)."""
        oldest: float | None = None
        for shard in self.shards:
            entries = await self.client.xrange(shard, count=1)
            if entries:
                queued = int(str(entries[0][0]).partition("-")[0]) / 1000
                oldest = queued if oldest is None else min(oldest, queued)
        return 0.0 if oldest is None else max(0.0, time.time() - oldest)


def _entry(shard: str, raw: tuple[str, dict[str, str]]) -> Entry:
    entry_id, fields = raw
    return JobId(shard, entry_id), RenderJob.from_fields(fields)
