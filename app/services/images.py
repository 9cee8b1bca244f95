"""The image service: the three flows of an image, and the listing and delete around them.

An upload flows through :mod:`app.services.ingest` (stored and answered at once), then
:mod:`app.services.compaction` (scored, its representation chosen, in the background), and
is read through :mod:`app.services.delivery` (cache first). No HTTP in here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging

from pydantic import BaseModel

from apikeys import DEFAULT_TENANT
from app import metrics
from app.services.compaction import BackgroundCompactions, QueueCompactions
from app.services.conditional import Preconditions
from app.services.decoding import DecodeGate
from app.services.deletions import RecentDeletions
from app.services.delivery import (
    NO_PRECONDITIONS,
    Delivery,
    Renderer,
    Rendition,
    StoredCopy,
    owned,
    pending,
)
from app.services.dependencies import DependencyMonitor
from app.services.ingest import Ingest, ModelSource, new_image_id
from app.services.renditions import RenditionBudget, RenditionRequest, etag_of
from app.services.singleflight import SingleFlight
from app.services.tiering import HOT_POLICY, Tiering
from app.services.work import CpuPool
from cache import HRCache, make_leases
from config.settings import Settings
from ledger import Ledger, LedgerUnavailable
from policy import Floor, StoragePolicy
from render.compaction import pending_key
from render.images import (
    IMAGES_PREFIX,
    ImageMeta,
    ImageNotFound,
    InvalidImageId,
    object_key,
)
from storage import ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

_MAX_CURSOR = 200
LIST_SCAN_PAGES = 10  # store pages one tenant's listing page may read
PLAIN_READ = RenditionRequest()

__all__ = ["ImagePage", "ImageService", "Rendition", "StoredCopy", "meta_etag", "new_image_id"]


class InvalidCursor(ValueError):
    """The cursor is not one a listing page handed out."""


class ImagePage(BaseModel):
    """One page of the image listing; ``next_cursor`` fetches the next (null: this is the last)."""

    images: list[ImageMeta]
    next_cursor: str | None


def meta_etag(meta: ImageMeta) -> str:
    return etag_of("meta:" + meta.model_dump_json())


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    """The store key a cursor resumes after: opaque to clients, so the key layout can change."""
    key = ""
    if len(cursor) <= _MAX_CURSOR:
        with contextlib.suppress(binascii.Error, UnicodeDecodeError):
            key = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    if not key.startswith(IMAGES_PREFIX):
        raise InvalidCursor("the cursor is not the next_cursor of a listing page")
    return key


Compactions = BackgroundCompactions | QueueCompactions


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        renderer: Renderer,
        models: ModelSource,
        ledger: Ledger,
        compactions: Compactions,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.renderer = renderer
        self.models = models
        self.ledger = ledger
        self.compactions = compactions
        self.dependencies = DependencyMonitor(
            {"object_store": store.ping, "cache": cache.ping},
            settings.dependency_check_seconds,
            settings.dependency_timeout_seconds,
        )
        self.cpu = CpuPool(
            settings.cpu_threads,
            settings.cpu_backlog_seconds,
            settings.cpu_client_share,
            settings.request_deadline_seconds,
        )
        self.renditions = RenditionBudget(settings.max_renditions_per_image)
        # Every listing's HEADs together take at most a quarter of the I/O threads, so the
        # readiness ping and single reads always find one (16 clients paging 100 at a time
        # once queued 1,600 HEADs ahead of the ping).
        self._listing_heads = asyncio.Semaphore(max(1, settings.io_threads // 4))
        self._deletes: SingleFlight[None] = SingleFlight()
        self._deleted = RecentDeletions()
        self.decoding = DecodeGate(
            settings.decode_threads,
            settings.decode_memory_budget_bytes,
            settings.decode_wait_seconds,
        )
        self.ingest = Ingest(settings, store, ledger, models, self.decoding, compactions)
        self.tiering = (
            Tiering(settings, store, cache, ledger, compactions, models, make_leases(settings))
            if settings.tiering
            else None
        )
        self.delivery = Delivery(
            settings,
            store,
            cache,
            renderer,
            models,
            self.cpu,
            self.renditions,
            reads=self.tiering.read if self.tiering is not None else None,
        )

    async def upload(
        self,
        data: bytes,
        policy: StoragePolicy | None = None,
        floor: Floor | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> ImageMeta:
        """See :meth:`Ingest.upload`: stored, then answered; compacted in the background.

        Under tiering an upload without an explicit policy is kept as it came while it is read
        (see :mod:`app.services.tiering`)."""
        tiered = self.tiering is not None and policy is None
        meta = await self.ingest.upload(data, HOT_POLICY if tiered else policy, floor, tenant)
        if tiered and self.tiering is not None:
            await self.tiering.uploaded(meta.id)
        return meta

    async def meta(self, image_id: str) -> ImageMeta:
        return await self.delivery.meta(image_id)

    async def cached_meta(self, image_id: str, owner: str | None = None) -> ImageMeta:
        return await self.delivery.cached_meta(image_id, owner)

    async def stored(
        self,
        image_id: str,
        preconditions: Preconditions = NO_PRECONDITIONS,
        owner: str | None = None,
    ) -> StoredCopy:
        return await self.delivery.stored(image_id, preconditions, owner)

    async def fetch(
        self,
        image_id: str,
        request: RenditionRequest = PLAIN_READ,
        preconditions: Preconditions = NO_PRECONDITIONS,
        client: str = "",
        render: bool = True,
        owner: str | None = None,
    ) -> Rendition:
        return await self.delivery.fetch(image_id, request, preconditions, client, render, owner)

    async def list_images(
        self, limit: int, cursor: str | None = None, tenant: str | None = None
    ) -> ImagePage:
        """A page in id order from the store's own listing: one request, then one HEAD per image.

        An image deleted between the two is left out, so a page may hold fewer than ``limit``.
        With ``tenant``, only that tenant's images are shown: further store pages are read
        until ``limit`` are found or ``LIST_SCAN_PAGES`` pages were read (then the page is
        short and ``next_cursor`` resumes the scan).
        """
        after = _decode_cursor(cursor) if cursor is not None else None
        images: list[ImageMeta] = []
        for _ in range(LIST_SCAN_PAGES if tenant is not None else 1):
            page = await self.store.list_page(IMAGES_PREFIX, limit - len(images), after)
            ids = [key.removeprefix(IMAGES_PREFIX) for key in page.keys]
            found = await asyncio.gather(*(self._meta_if_present(i) for i in ids))
            images += [m for m in found if m is not None and tenant in (None, m.tenant)]
            after = page.next_after
            if after is None or len(images) >= limit:
                break
        next_cursor = _encode_cursor(after) if after else None
        return ImagePage(images=images, next_cursor=next_cursor)

    async def _meta_if_present(self, image_id: str) -> ImageMeta | None:
        """None for an image deleted meanwhile, or a key under images/ that is no image."""
        try:
            async with self._listing_heads:
                return await self.meta(image_id)
        except (ImageNotFound, InvalidImageId):
            return None

    async def delete(self, image_id: str, owner: str | None = None) -> None:
        """Concurrent DELETEs of one image in this process share one deletion: all 204.

        One that finds the image gone because a deletion here finished while it was under way
        is 204 too (see :class:`RecentDeletions`). Across processes, a DELETE that finds the
        object already gone is a 404 (it came after the deletion); the ledger debits once
        either way. With ``owner``, another tenant's image does not exist (404, never 403):
        checked before joining a deletion in flight.
        """
        object_key(image_id)
        arrived = self._deleted.now()
        try:
            if owner is not None:
                owned(await self.meta(image_id), owner)
            await self._deletes.run(image_id, lambda: self._delete(image_id))
        except ImageNotFound:
            if not self._deleted.overlapped(image_id, arrived, owner):
                raise

    async def _delete(self, image_id: str) -> None:
        """Mark the image deleted in the cache before the object goes, then debit it once.

        The mark comes first so that a render which read the object before the delete cannot
        cache it after (see ``HRCache.mark_deleted``), and a DELETE that failed half-way can be
        retried. A pending compaction finds the mark and deletes what it wrote: the delete wins.
        """
        key = object_key(image_id)
        meta = await self.meta(image_id)
        self.delivery.forget(image_id)
        await self.cache.mark_deleted(image_id)
        with self._deleted.removing(image_id, meta.tenant):
            await self.store.delete(key)
        if pending(meta):  # the upload kept for compaction (a done one has dropped it)
            await self.store.delete(pending_key(image_id))
        try:
            debited = await self.ledger.debit_once(
                meta.id, meta.original_bytes, meta.stored_bytes, meta.representation
            )
        except LedgerUnavailable as exc:
            debited = True  # the image is gone either way; count the delete
            self._ledger_failed(meta, exc)
        if debited:
            metrics.IMAGES_DELETED.inc()

    def _ledger_failed(self, meta: ImageMeta, exc: LedgerUnavailable) -> None:
        metrics.LEDGER_ERRORS.inc()
        log.warning("ledger not updated for %s: %s", meta.id, exc)

    async def check_ready(self) -> dict[str, str]:
        """Ready when this process can serve reads: the object store answers.

        A cache that is down does not make it unready (reads are served uncached, BYPASS);
        the last answers come from :class:`DependencyMonitor`, so this never waits.
        """
        up = self.dependencies.up()
        if not up["object_store"]:
            raise StorageUnavailable("the object store did not answer its last ping")
        return {
            "storage": type(self.store).__name__,
            "cache": type(self.cache).__name__,
            "cache_state": "up" if up["cache"] else "down: reads are served uncached",
            "model": self.models.label,
        }

    async def snapshot(self) -> metrics.Snapshot:
        """The fleet ledger and whether each dependency answered its last ping, at once."""
        try:
            totals = await asyncio.wait_for(
                self.ledger.totals(), self.settings.dependency_timeout_seconds
            )
        except (LedgerUnavailable, TimeoutError) as exc:
            log.warning("ledger unreadable: %s", str(exc) or "timed out")
            totals = None
        return metrics.Snapshot(totals, self.dependencies.up(), self.models.label)
