"""One worker's loop: take jobs, render them with the shared engine, cache, acknowledge.

A worker holds at most ``concurrency`` jobs at a time; their tiles meet in the engine's
batcher, together with nothing else, so a batch mixes tiles of several images. Before each
read it claims the jobs of workers that died; meanwhile it renews the claim on the jobs it
holds. When
``stop`` is set it reads nothing more, finishes what it holds, and returns.

Compactions come from a stream of their own, read only when the render stream had nothing
for this worker, and at most ``compaction_slots`` at once: renders keep priority. A
compaction's job is claimed again like a render's when its worker dies; one the store or
cache could not finish is acknowledged and left to the API's sweep of pending uploads.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Iterable

from redis.exceptions import RedisError

from cache import HRCache, ImageDeleted
from config.logs import REQUEST_ID
from keyspace import relearn_slots
from render import metrics as render_metrics
from render.compaction import CompactionRetry, Compactor
from render.images import ImageNotFound
from render.inference import InferenceEngine
from render.queue import EXPIRED, Entry, JobId, JobQueue, Outcome, RenderJob
from storage import ObjectStore
from worker import metrics

log = logging.getLogger(__name__)

READ_BLOCK_MS = 500  # how often an idle worker notices that it should stop


class Worker:
    def __init__(
        self,
        name: str,
        queue: JobQueue,
        engine: InferenceEngine,
        store: ObjectStore,
        cache: HRCache,
        concurrency: int,
        claim_idle_seconds: float,
        compactions: JobQueue | None = None,
        compactor: Compactor | None = None,
        compaction_slots: int = 1,
    ) -> None:
        self.name = name
        self.queue = queue
        self.engine = engine
        self.store = store
        self.cache = cache
        self.concurrency = concurrency
        self.claim_idle_ms = int(claim_idle_seconds * 1000)
        self._jobs: dict[JobId, asyncio.Task[None]] = {}
        self._claimed_at = -math.inf
        self.compactions = compactions
        self.compactor = compactor
        self.compaction_slots = compaction_slots
        self._compacting: dict[JobId, asyncio.Task[None]] = {}
        self._compactions_claimed_at = -math.inf

    async def run(self, stop: asyncio.Event) -> None:
        await self.queue.ensure_group()
        if self.compactions is not None:
            await self.compactions.ensure_group()
        drained = asyncio.Event()
        keeper = asyncio.create_task(self._keep_claims(drained))
        metrics.WORKER_UP.set(1)
        log.info(
            "worker %s takes jobs from %s (%d shards)",
            self.name,
            self.queue.stream,
            len(self.queue.shards),
        )
        try:
            while not stop.is_set():
                if self._free() <= 0:
                    await _one_done_or(stop, self._jobs.values())
                    continue
                try:
                    await self._take_jobs()
                except RedisError as exc:
                    log.warning("cannot read jobs: %s; retrying", exc)
                    await asyncio.sleep(1)
                    with contextlib.suppress(RedisError):
                        await relearn_slots(self.queue.client)
        finally:
            metrics.WORKER_UP.set(0)
            held = [*self._jobs.values(), *self._compacting.values()]
            log.info("worker %s drains %d job(s)", self.name, len(held))
            await asyncio.gather(*held, return_exceptions=True)
            drained.set()
            keeper.cancel()

    def _free(self) -> int:
        return self.concurrency - len(self._jobs)

    async def _take_jobs(self) -> None:
        """Adopt dead workers' jobs first, then read new ones into the slots still free.

        One task does both in turn, so they never count the same free slot twice (issue 12:
        a worker held more jobs than its limit, then asked Redis for a negative count). The
        claim sweep (a command per shard) runs at most twice per claim period: a job can only
        go stale after a whole one.
        """
        now = time.monotonic()
        if (now - self._claimed_at) * 1000 >= self.claim_idle_ms / 2:
            self._claimed_at = now
            for job_id, job in await self.queue.claim_stale(
                self.name, self.claim_idle_ms, self._free()
            ):
                log.info("claimed job %s of a worker that stopped answering", job_id)
                self._start(job_id, job)
        read: list[Entry] = []
        if self._free() > 0:
            read = await self.queue.read(self.name, self._free(), READ_BLOCK_MS)
            for entry_id, job in read:
                self._start(entry_id, job)
        if not read and not self._rendering():
            await self._take_compactions()

    def _rendering(self) -> bool:
        return any(not task.done() for task in self._jobs.values())

    async def _take_compactions(self) -> None:
        """Only when no render is waiting or running here: renders keep priority."""
        if self.compactions is None or self.compactor is None:
            return
        free = self.compaction_slots - len(self._compacting)
        if free <= 0:
            return
        entries: list[Entry] = []
        now = time.monotonic()
        if (now - self._compactions_claimed_at) * 1000 >= self.claim_idle_ms / 2:
            self._compactions_claimed_at = now
            entries = await self.compactions.claim_stale(self.name, self.claim_idle_ms, free)
        if len(entries) < free:
            entries += await self.compactions.read(self.name, free - len(entries), None)
        for entry_id, job in entries:
            if entry_id not in self._compacting:
                self._start_compaction(entry_id, job)

    def _start_compaction(self, entry_id: JobId, job: RenderJob) -> None:
        task = asyncio.create_task(self._compact(entry_id, job))
        self._compacting[entry_id] = task
        task.add_done_callback(lambda _: self._compacting.pop(entry_id, None))

    def _start(self, entry_id: JobId, job: RenderJob) -> None:
        if entry_id in self._jobs:
            return
        task = asyncio.create_task(self._handle(entry_id, job))
        self._jobs[entry_id] = task
        task.add_done_callback(lambda _: self._jobs.pop(entry_id, None))

    async def _handle(self, entry_id: JobId, job: RenderJob) -> None:
        REQUEST_ID.set(job.request_id or None)  # this task's own context: its log lines
        started = time.perf_counter()
        outcome, result = Outcome(), "rendered"
        try:
            if job.expired():
                outcome, result = Outcome(EXPIRED, "the job's deadline passed"), "expired"
            elif await self.cache.get(job.key) is not None:
                result = "cached"
            else:
                await self._render(job)
        except Exception as exc:
            log.warning("job %s for %s failed: %s", entry_id, job.key, exc)
            outcome, result = Outcome.failure(exc), "failed"
        try:
            await self.queue.finish(entry_id, job, outcome)
        except Exception:
            log.exception("could not acknowledge job %s; another worker will claim it", entry_id)
            return
        metrics.WORKER_JOBS.labels(result).inc()
        elapsed_ms = (time.perf_counter() - started) * 1000
        log.info("job %s for %s: %s in %.0f ms", entry_id, job.key, result, elapsed_ms)

    async def _compact(self, entry_id: JobId, job: RenderJob) -> None:
        """Compact, then acknowledge; a worker killed before the acknowledgement leaves the
        job to be claimed again, and compaction run twice ends the same. A compaction that
        another process holds (``busy``) is not acknowledged: the job is claimed again after
        ``SRSTORE_CLAIM_IDLE_SECONDS``, until the holder has finished it or its lease lapsed."""
        assert self.compactions is not None and self.compactor is not None
        REQUEST_ID.set(job.request_id or None)
        outcome = Outcome()
        result: str
        try:
            result = await self.compactor.compact(job.key.image_id, job.key.model)
            if result == "busy":  # claimed again (by any worker) once its claim goes idle
                log.info("compaction of %s is another's for now", job.key.image_id)
                return
        except CompactionRetry as exc:
            result = "put back"
            log.warning("compaction of %s put back until the next sweep: %s", job.key.image_id, exc)
        except Exception as exc:
            result = "failed"
            outcome = Outcome.failure(exc)
            log.exception("compaction of %s failed", job.key.image_id)
        try:
            await self.compactions.finish(entry_id, job, outcome)
        except Exception:
            log.exception("could not acknowledge compaction %s; it will be claimed", entry_id)
            return
        metrics.WORKER_JOBS.labels(f"compaction_{result.replace(' ', '_')}").inc()
        log.info("compaction %s of %s: %s", entry_id, job.key.image_id, result)

    async def _render(self, job: RenderJob) -> None:
        """Render and cache; a delete that overtook the render makes it a ``not_found``."""
        data = await self.engine.render_object(self.store, job.key)
        try:
            await self.cache.put(job.key, data)
        except ImageDeleted:
            raise ImageNotFound(job.key.image_id) from None
        render_metrics.CACHE_ENTRY_BYTES.observe(len(data))

    async def _keep_claims(self, drained: asyncio.Event) -> None:
        """Renew this worker's claims and sample the queue depth.

        It runs until the jobs in hand are drained; the event, not only the cancellation,
        ends it (see ``ModelControl.announcements``).
        """
        interval = self.claim_idle_ms / 3000
        while not drained.is_set():
            try:
                await self.queue.renew(self.name, list(self._jobs))
                if self.compactions is not None:
                    await self.compactions.renew(self.name, list(self._compacting))
                metrics.WORKER_QUEUE_DEPTH.set(await self.queue.depth())
            except Exception:
                log.exception("queue housekeeping failed; retrying")
            await asyncio.sleep(interval)


async def _one_done_or(stop: asyncio.Event, tasks: Iterable[asyncio.Task[None]]) -> None:
    """Wait for one of ``tasks`` to finish, or for the stop: a worker whose every slot is
    busy says it drains (``srstore_worker_up`` 0) when told to stop, not when a job ends."""
    stopping = asyncio.create_task(stop.wait())
    try:
        await asyncio.wait([*tasks, stopping], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopping.cancel()
