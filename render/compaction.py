"""Compaction: the background step that decides what an upload keeps and records its receipt.

Ingest writes two objects and answers ``201``: ``images/{id}``, the x4 copy (readable at once,
its receipt ``pending``), and ``pending/{id}``, the uploaded bytes. The pending object is the
work item: it is durable, so a restart finds it (a sweep lists ``pending/``), and compaction
ends by deleting it. One compaction:

1. reads the pending upload and the stored image; either gone means there is nothing to do
   (an earlier run finished, or the image was deleted: its pending object is dropped);
2. scores the candidates as a read serves them and chooses by the receipt's policy and floor
   (on its own thread, at a lower CPU priority than renders), holding the scoring's estimated
   peak memory from ``SRSTORE_COMPACTION_MEMORY_BYTES`` (an upload too large to score within
   it keeps its x4 copy with a ``failed`` receipt that says so);
3. caches the x4 copy's rebuilt read when the x4 copy stays (the first read is a hit; not
   for an image tiering compacts: it went cold because nobody reads it), or moves the
   ledger's share to the full-size copy that replaces it;
4. replaces ``images/{id}`` with the kept bytes and the ``done`` (or ``failed``) receipt in
   one put: a reader gets the object and its metadata together, from either side;
5. caches the new metadata, then deletes the pending object. The cache's delete mark
   refuses the writes of steps 3 and 5 when a DELETE came meanwhile: compaction then deletes
   what it wrote, so the delete wins.

Every step can run twice (a worker killed mid-way, an API restarted): there is one object
key, so never two objects; a run that finds the receipt already done only does step 5. Yet
every API process sweeps ``pending/`` (and a queue job may outlive its claim), so a
compaction first takes the image's lease (:mod:`cache.leases`): while one process holds it,
another is refused at once (``busy``) and leaves the image to it; a holder that dies frees
it (a file lock at once, a Redis lease when it lapses), and the next sweep takes it again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Literal

from cache import CacheKey, CacheUnavailable, HRCache, ImageDeleted, Leases
from config.settings import Settings
from imaging import PILLOW_MAX_PIXELS, decode_upload, encodable
from keyspace import image_tag
from ledger import Ledger, LedgerUnavailable
from policy import Decision, Floor, Receipt
from policy.choose import choose as choose_representation
from render import costs, metrics
from render.images import ImageMeta, object_key, stored_digest
from render.inference import UpscalerPool, read_back, sample_read
from render.priority import COMPACTION_NICENESS, niced_pool
from storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

PENDING_PREFIX = "pending/"  # the uploaded bytes of every image whose compaction is unfinished
# Peak memory added by scoring, per pixel of the upload: 90-108 B/px measured (ESPCN, 1-9 MP,
# downscale and guarded; bench/RESULTS.md, "Scoring memory"), with a margin.
SCORING_BYTES_PER_PIXEL = 120

Outcome = Literal["done", "failed", "deleted", "gone", "busy"]


class CompactionRetry(RuntimeError):
    """The store or cache did not answer: nothing was lost, the pending object stays."""


def pending_key(image_id: str) -> str:
    object_key(image_id)  # the same id rules
    return f"{PENDING_PREFIX}{image_id}"


def compaction_lease(image_id: str) -> str:
    """The lease one process holds while it compacts the image (tagged with the image)."""
    return f"compaction:{image_tag(image_id)}"


def meta_cache_key(image_id: str) -> CacheKey:
    """Where an image's metadata is cached beside its renditions (a DELETE drops it too)."""
    return CacheKey(image_id, "meta", "json")


def plain_read_key(meta: ImageMeta, model: str, settings: Settings) -> CacheKey | None:
    """The cache key of ``GET /v1/images/{id}`` without options, as the API plans it (see
    ``app.services.renditions.plan_rendition``); None when its format cannot hold the size."""
    fmt = meta.served_format
    if not encodable(fmt, meta.width, meta.height):
        return None
    encoding = settings.output_encoding
    return CacheKey(
        meta.id,
        model,
        fmt,
        encoding.quality_of(fmt, None),
        "",
        encoding.settings_tag(fmt),
        meta.source,
    )


def scoring_memory_bytes(width: int, height: int) -> int:
    """What scoring an upload of this size holds in memory at its peak, about."""
    return width * height * SCORING_BYTES_PER_PIXEL


class ScoringMemory:
    """The bytes this process's compactions may hold while they score; a compaction waits for
    its share (it is background work: waiting costs nobody a request)."""

    def __init__(self, budget_bytes: int) -> None:
        self.budget_bytes = budget_bytes
        self.reserved_bytes = 0
        self.waiting = 0
        self._changed: asyncio.Condition | None = None

    def fits(self, cost_bytes: int) -> bool:
        return cost_bytes <= self.budget_bytes

    @contextlib.asynccontextmanager
    async def reserve(self, cost_bytes: int) -> AsyncIterator[None]:
        changed = self._changed = self._changed or asyncio.Condition()
        async with changed:
            self.waiting += 1
            try:
                await changed.wait_for(
                    lambda: self.reserved_bytes + cost_bytes <= self.budget_bytes
                )
            finally:
                self.waiting -= 1
            self.reserved_bytes += cost_bytes
        try:
            yield
        finally:
            async with changed:
                self.reserved_bytes -= cost_bytes
                changed.notify_all()


@dataclass(frozen=True)
class _Scored:
    decision: Decision
    rebuilt: bytes | None  # the x4 copy's plain read, encoded


class Compactor:
    """Runs compactions; shared by the API's background pool and ``srstore worker``."""

    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        ledger: Ledger,
        models: UpscalerPool,
        leases: Leases,
        threads: int = 1,
    ) -> None:
        self.settings = settings
        self.leases = leases
        self.store = store
        self.cache = cache
        self.ledger = ledger
        self.models = models
        self._pool = niced_pool(threads, "compact", COMPACTION_NICENESS)
        self.memory = ScoringMemory(settings.compaction_memory_bytes)

    async def compact(self, image_id: str, model: str) -> Outcome:
        """Compact one image, scoring with ``model``; safe to call again for the same id.

        ``busy`` when another process (or task) is compacting it now: nothing was done."""
        started = time.perf_counter()
        try:
            async with self.leases.hold(compaction_lease(image_id)) as held:
                if not held:
                    return "busy"
                outcome = await self._compact(image_id, model)
        except (StorageUnavailable, CacheUnavailable, LedgerUnavailable) as exc:
            metrics.COMPACTION_RETRIES.inc()
            raise CompactionRetry(str(exc)) from exc
        if outcome != "gone":  # nothing was left to do
            metrics.COMPACTIONS.labels(outcome).inc()
            metrics.COMPACTION_SECONDS.observe(time.perf_counter() - started)
        return outcome

    async def _compact(self, image_id: str, model: str) -> Outcome:
        try:
            upload = await self.store.get(pending_key(image_id))
        except ObjectNotFound:
            return "gone"
        try:
            stored = await self.store.get(object_key(image_id))
        except ObjectNotFound:  # deleted, or never acknowledged (a crash between the writes)
            await self.store.delete(pending_key(image_id))
            return "deleted"
        meta = ImageMeta.from_metadata(dict(stored.metadata))
        if meta.receipt is not None and meta.receipt.state != "pending":
            return await self._settle(meta)  # an earlier run got as far as the swap
        cost = scoring_memory_bytes(meta.width, meta.height)
        if not self.memory.fits(cost):
            scored = _unscored(
                meta,
                stored.data,
                model,
                f"too large to score: about {cost // 2**20} MiB, and "
                f"SRSTORE_COMPACTION_MEMORY_BYTES is {self.memory.budget_bytes // 2**20} MiB",
            )
        else:
            async with self.memory.reserve(cost):
                scored = await self._score(meta, stored.data, upload.data, model)
        decision = scored.decision
        full_size = decision.representation != "x4"
        ingested = ImageMeta.from_metadata(dict(upload.metadata))
        # a lower-quality x4 copy (``smallest``) moves the ledger's share as a full-size one does
        moved = (
            decision.representation != ingested.representation
            or len(decision.data) != ingested.stored_bytes
        )
        kept = meta.model_copy(
            update={
                "stored_width": meta.width if full_size else meta.stored_width,
                "stored_height": meta.height if full_size else meta.stored_height,
                "stored_bytes": len(decision.data),
                "stored_digest": stored_digest(decision.data),
                "representation": decision.representation,
                "receipt": decision.receipt,
            }
        )
        key = plain_read_key(kept, model, self.settings)
        cold = ingested.representation != "x4"  # tiering's: its read would only rent RAM
        try:
            if kept.source != meta.source:  # what was made from the copy replaced: unread now
                await self.cache.drop_image(image_id)
            if scored.rebuilt is not None and key is not None and not full_size and not cold:
                await self.cache.put(key, scored.rebuilt)  # cached before the receipt is done
                metrics.CACHE_ENTRY_BYTES.observe(len(scored.rebuilt))
        except ImageDeleted:
            return await self._deleted(image_id)
        if moved:
            await self._move_share(ingested, kept)
        metrics.observe_receipt(decision.receipt)
        await self.store.put(object_key(image_id), decision.data, kept.to_metadata())
        if full_size:
            await self.cache.drop_image(image_id)  # renditions rebuilt from the x4 copy
        return await self._settle(kept)

    async def _score(self, meta: ImageMeta, x4: bytes, original: bytes, model: str) -> _Scored:
        receipt = meta.receipt
        assert receipt is not None  # ingest writes a pending one
        upscaler = await self.models.get(model)
        encoding = self.settings.output_encoding
        policy, floor = receipt.policy, Floor.parse(receipt.floor)

        def run() -> _Scored:
            """CPU counts as the cost ledger's ``compaction`` stage, network passes included."""
            rebuilt: dict[bytes, bytes] = {}  # each x4 copy read at full size: its read
            try:
                with costs.measured("compaction"), metrics.RECEIPT_SECONDS.labels(policy).time():
                    image = decode_upload(original, PILLOW_MAX_PIXELS).image
                    decision = choose_representation(
                        image=image,
                        original=original,
                        x4=x4,
                        policy=policy,
                        floor=floor,
                        codec=self.settings.full_codec,
                        reconstruct=read_back(meta, upscaler, encoding, rebuilt.__setitem__),
                        model=model,
                        sample_read=sample_read(meta, upscaler, encoding),
                    )
            except Exception as exc:  # scoring reports on the upload; it never loses it
                log.exception("scoring %s failed; keeping the x4 copy unscored", meta.id)
                return _unscored(meta, x4, model, f"scoring failed: {type(exc).__name__}")
            return _Scored(decision, rebuilt.get(decision.data))

        return await asyncio.get_running_loop().run_in_executor(self._pool, run)

    async def _settle(self, kept: ImageMeta) -> Outcome:
        """Cache the final metadata and drop the pending upload; a DELETE that came meanwhile
        wins (its mark refuses the cache write): what compaction wrote is deleted again."""
        try:
            await self.cache.put(meta_cache_key(kept.id), kept.model_dump_json().encode())
        except ImageDeleted:
            return await self._deleted(kept.id)
        await self.store.delete(pending_key(kept.id))
        failed = kept.receipt is not None and kept.receipt.state == "failed"
        return "failed" if failed else "done"

    async def _deleted(self, image_id: str) -> Outcome:
        await self.store.delete(object_key(image_id))
        await self.store.delete(pending_key(image_id))
        log.info("image %s was deleted during its compaction; nothing kept", image_id)
        return "deleted"

    async def _move_share(self, ingested: ImageMeta, kept: ImageMeta) -> None:
        """The ledger credited the x4 copy at ingest (or, for an image tiering compacts,
        the hot copy it kept): debit it once, credit what is kept.

        Before the swap, so that a run after a crash (which finds the receipt done) has
        nothing left to count; a crash between the two calls loses one credit."""
        stage = "ingest" if ingested.representation == "x4" else "cold"
        if await self.ledger.debit_once(
            f"{kept.id}:{stage}",
            ingested.original_bytes,
            ingested.stored_bytes,
            ingested.representation,
        ):
            await self.ledger.add(kept.original_bytes, kept.stored_bytes, 1, kept.representation)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def _unscored(meta: ImageMeta, x4: bytes, model: str, error: str) -> _Scored:
    """The x4 copy kept, its receipt ``failed`` with ``error``: the upload is never lost."""
    receipt = meta.receipt
    assert receipt is not None  # ingest writes a pending one
    metrics.RECEIPT_FAILURES.inc()
    failed = Receipt(
        state="failed",
        policy=receipt.policy,
        floor=receipt.floor,
        representation="x4",
        stored_bytes=len(x4),
        model=model,
        error=error,
    )
    return _Scored(Decision("x4", x4, failed), None)
