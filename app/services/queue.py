"""Queue mode: the API hands a cache miss to ``srstore worker`` and waits for it.

See :mod:`render.queue` for the transport, the wake-up and the dedupe. This process keeps one
pattern subscription for completions and a future per waiting key; a miss enqueues a job (or
joins the one in flight), waits until the deadline, then reads the rendition from the cache.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from redis.asyncio.client import PubSub
from redis.exceptions import RedisError

from app import metrics
from cache import CacheKey, CacheUnavailable, HRCache
from config.logs import REQUEST_ID
from config.settings import Settings
from keyspace import connect, subscriber
from render.admission import Backlog, QueueFull, RenderTimeout
from render.queue import ERRORS, EXPIRED, JobQueue, Outcome, RenderJob

log = logging.getLogger(__name__)

CACHE_RETRY_POLL_SECONDS = 0.1  # how often a finished job's rendition is read again


class RenderFailed(RuntimeError):
    """The queue could not be reached, or a worker could not render the image."""


class QueueRenderer:
    def __init__(self, settings: Settings, cache: HRCache) -> None:
        assert settings.redis_url, "queue mode needs SRSTORE_REDIS_URL"
        self.client = connect(settings.redis_url, settings.redis_cluster, decode_responses=True)
        self.queue = JobQueue(
            self.client,
            settings.queue_stream,
            settings.queue_max_length,
            settings.queue_shards,
        )
        self.cache = cache
        self.deadline_seconds = settings.request_deadline_seconds
        # Every API process hears every completion: the fleet's rate, for Retry-After.
        self.backlog = Backlog(fallback_seconds=settings.request_deadline_seconds)
        self._pubsub: PubSub | None = None
        self._waiters: dict[str, set[asyncio.Future[Outcome]]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._closing = asyncio.Event()

    async def start(self) -> None:
        await self._resubscribe()
        self._listener = asyncio.create_task(self._listen())

    async def render(self, key: CacheKey) -> bytes:
        deadline = time.time() + self.deadline_seconds
        job = RenderJob(key, deadline, REQUEST_ID.get() or "")
        while True:
            done = self._wait_for(str(key))
            try:
                outcome = await self._enqueue_and_wait(job, done)
            finally:
                self._waiters[str(key)].discard(done)
                if not self._waiters[str(key)]:
                    del self._waiters[str(key)]
            if outcome is None:
                if (data := await self._cached(key)) is not None:
                    return data
                raise RenderTimeout(
                    f"no inference worker finished within {self.deadline_seconds:g} s",
                    self.backlog.retry_after(await self._depth()),
                )
            if outcome.code == EXPIRED:
                continue  # the job we joined outlived its first waiter; queue our own
            if outcome.code is not None:
                raise ERRORS.get(outcome.code, RenderFailed)(outcome.message)
            if (data := await self._rendered(key, deadline)) is not None:
                return data
            # Evicted, or dropped by a DELETE, before it could be read: render again; a
            # deleted image then answers not_found, and the deadline still bounds the wait.

    async def _enqueue_and_wait(
        self, job: RenderJob, done: asyncio.Future[Outcome]
    ) -> Outcome | None:
        """The job's outcome, or ``None`` when the deadline passes first."""
        try:
            enqueued = await self.queue.enqueue(job)
        except RedisError as exc:
            raise RenderFailed(f"the render queue is unreachable: {exc}") from exc
        metrics.QUEUE_ENQUEUES.labels(enqueued).inc()
        if enqueued == "full":
            raise QueueFull(
                f"{self.queue.max_length} renders are already waiting for a worker",
                self.backlog.retry_after(self.queue.max_length),
            )
        try:
            return await asyncio.wait_for(done, max(0.0, job.deadline - time.time()))
        except TimeoutError:
            return None

    async def _depth(self) -> int:
        """Unfinished jobs in the stream; the queue's bound when Redis does not answer."""
        try:
            return await self.queue.depth()
        except RedisError:
            return self.queue.max_length

    def _wait_for(self, key: str) -> asyncio.Future[Outcome]:
        future: asyncio.Future[Outcome] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, set()).add(future)
        return future

    async def _rendered(self, key: CacheKey, deadline: float) -> bytes | None:
        """A finished job's rendition: ``None`` only when the cache answered that it is gone.

        While this process cannot read the cache (a slow reply put it off Redis for
        ``SRSTORE_CACHE_RETRY_SECONDS``), the rendition is there all the same: another job
        would only be acknowledged as already cached, so the read is retried until the
        deadline instead (a tight loop of re-enqueued jobs was seen: 1076 for one miss).
        """
        while True:
            try:
                return await self.cache.get(key)
            except CacheUnavailable:
                left = deadline - time.time()
                if left <= 0:
                    raise
                await asyncio.sleep(min(CACHE_RETRY_POLL_SECONDS, left))

    async def _cached(self, key: CacheKey) -> bytes | None:
        with contextlib.suppress(CacheUnavailable):
            return await self.cache.get(key)
        return None

    async def _listen(self) -> None:
        """Resolve the futures of every finished key.

        A lost connection gets a new subscription: on a Redis Cluster the node it was on may
        be gone for good (a failover), and a fresh one picks a node that answers. Reads wake
        every second to look at the closing flag: see ``ModelControl.announcements``.
        """
        subscribed = True
        while not self._closing.is_set():
            try:
                if not subscribed:
                    await self._resubscribe()
                    subscribed = True
                assert self._pubsub is not None
                message = await self._pubsub.get_message(timeout=1.0)
            except RedisError as exc:
                log.warning("lost the completion subscription: %s; reconnecting", exc)
                subscribed = False
                await asyncio.sleep(0.5)
                continue
            if message is None or message["type"] != "pmessage":
                continue
            try:
                outcome = Outcome.from_json(message["data"])
            except (ValueError, TypeError) as exc:
                # A worker of another version, say: one bad message must not end the loop,
                # or every miss after it waits out its deadline.
                log.warning(
                    "skipped a completion on %s that is not an outcome (%r): %s",
                    message["channel"],
                    message["data"][:200],
                    exc,
                )
                continue
            self.backlog.finished()
            key = self.queue.key_of_channel(message["channel"])
            for future in self._waiters.get(key, ()):
                if not future.done():
                    future.set_result(outcome)

    async def _resubscribe(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(RedisError):
                await self._pubsub.aclose()
        self._pubsub = await subscriber(self.client, ignore_subscribe_messages=True)
        await self._pubsub.psubscribe(self.queue.done_pattern)

    async def close(self) -> None:
        self._closing.set()
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._pubsub is not None:
            await self._pubsub.aclose()
        await self.client.aclose()
