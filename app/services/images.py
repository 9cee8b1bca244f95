"""What the API does with images: upload, describe, render, delete. No HTTP in here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import logging
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from PIL import Image
from pydantic import BaseModel

from apikeys import DEFAULT_TENANT
from app import metrics
from app.services.conditional import Preconditions, not_modified
from app.services.decoding import DecodeGate
from app.services.dependencies import DependencyMonitor
from app.services.renditions import (
    RenditionBudget,
    RenditionPlan,
    RenditionRequest,
    check_access,
    etag_of,
    plan_rendition,
)
from app.services.singleflight import SingleFlight
from app.services.work import CpuPool
from cache import CacheKey, CacheUnavailable, HRCache, ImageDeleted
from config.settings import Settings
from imaging import (
    MEDIA_TYPES,
    SCALE,
    DecodedImage,
    declared_size,
    decode_memory_bytes,
    decode_upload,
    downscale,
    encode_stored,
    media_type_of,
)
from imaging.costs import rendition_seconds
from ledger import Ledger, LedgerUnavailable
from policy import NO_MODEL, Decision, Floor, Receipt, Reconstruct, StoragePolicy
from policy.choose import choose as choose_representation
from render import costs
from render import metrics as render_metrics
from render.admission import CLIENT
from render.images import (
    IMAGES_PREFIX,
    ImageMeta,
    ImageNotFound,
    InvalidImageId,
    object_key,
)
from render.inference import render_stored_copy, served_as_stored
from storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

PLAIN_READ = RenditionRequest()  # the upload's own size and format
NO_PRECONDITIONS = Preconditions()
KNOWN_IMAGES = 10_000  # metadata remembered per process (about 1 KB each)
_MAX_CURSOR = 200
LIST_SCAN_PAGES = 10  # store pages one tenant's listing page may read

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


class InvalidCursor(ValueError):
    """The cursor is not one a listing page handed out."""


class ImagePage(BaseModel):
    """One page of the image listing; ``next_cursor`` fetches the next (null: this is the last)."""

    images: list[ImageMeta]
    next_cursor: str | None


class Renderer(Protocol):
    """Renders the rendition a cache key names and caches it (in-process or via workers)."""

    async def render(self, key: CacheKey) -> bytes:
        """The encoded image, written to the HR cache on the way when the cache answers."""
        ...

    async def close(self) -> None: ...


class UploadScorer(Protocol):
    """The read path, run at upload time to score what a read of each candidate returns."""

    async def reconstruct(self, model: str, meta: ImageMeta) -> Reconstruct:
        """What a plain read of ``meta``'s image returns, for bytes kept as each representation."""
        ...


class ModelSource(Protocol):
    """Which model version serves right now (see ``app.services.models.ActiveModel``)."""

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Rendition:
    data: bytes | None  # None: a HEAD of a rendition not made yet, answered from the plan
    media_type: str
    etag: str
    cache: CacheStatus
    model: str
    last_modified: datetime
    negotiated: bool = False  # the format came from Accept: the response varies on it
    degraded: bool = False  # bicubic served because no model does: cache briefly
    not_modified: bool = False


@dataclass(frozen=True)
class _Reduced:
    data: bytes  # the encoded 4x-reduced copy
    width: int
    height: int


@dataclass(frozen=True)
class StoredCopy:
    """The stored bytes (empty when only validators were asked for) and their validators."""

    data: bytes
    media_type: str
    etag: str
    last_modified: datetime
    not_modified: bool = False


def _output_pixels(plan: RenditionPlan) -> int:
    (sw, sh), (cw, ch) = plan.geometry.scaled, plan.geometry.canvas
    return max(sw * sh, cw * ch)


def meta_etag(meta: ImageMeta) -> str:
    return etag_of("meta:" + meta.model_dump_json())


def new_image_id() -> str:
    """128 random bits, URL-safe: unguessable and never derived from anything a client sent.

    Never with a leading ``-``: one id in 64 had one, and a shell command took it for an
    option (``srstore images meta $ID`` printed a usage error instead of the image).
    """
    while (image_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return image_id


def _owned(meta: ImageMeta, owner: str | None) -> ImageMeta:
    """``meta``, unless it belongs to another tenant than ``owner`` (None: any owner)."""
    if owner is not None and meta.tenant != owner:
        raise ImageNotFound(meta.id)
    return meta


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


def _measured_choice(**arguments: Any) -> Decision:
    """Scoring and choosing, counted as the ``compaction`` stage of the cost ledger."""
    with costs.measured("compaction"):
        return choose_representation(**arguments)


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        renderer: Renderer,
        models: ModelSource,
        ledger: Ledger,
        scorer: UploadScorer,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.renderer = renderer
        self.models = models
        self.ledger = ledger
        self.scorer = scorer
        self._flights: SingleFlight[bytes] = SingleFlight()
        self._deletes: SingleFlight[None] = SingleFlight()
        self._known: OrderedDict[str, ImageMeta] = OrderedDict()
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
        self.decoding = DecodeGate(
            settings.decode_threads,
            settings.decode_memory_budget_bytes,
            settings.decode_wait_seconds,
        )

    async def upload(
        self,
        data: bytes,
        policy: StoragePolicy | None = None,
        floor: Floor | None = None,
        client: str = "",
        tenant: str = DEFAULT_TENANT,
    ) -> ImageMeta:
        """Acknowledged (and counted in the ledger) only after the store confirmed the write.

        The representation kept is chosen by ``policy`` and ``floor`` (the settings' unless
        given) from candidates scored as a read would serve them. Decoding and scoring hold
        the upload's estimated peak memory from the decode budget (see ``DecodeGate``); the
        scoring takes ``client``'s turn on the CPU pool."""
        width, height = declared_size(data) or (0, 0)
        cost = max(decode_memory_bytes(width, height), 2 * len(data))
        async with self.decoding.reserve(cost):  # the decoded pixels live until scored
            decoded, reduced = await self.decoding.run(lambda: self._reduce(data))
            as_x4 = ImageMeta(
                id=new_image_id(),
                width=decoded.image.width,
                height=decoded.image.height,
                stored_width=reduced.width,
                stored_height=reduced.height,
                content_type=decoded.content_type,
                original_bytes=len(data),
                stored_bytes=len(reduced.data),
                served_format=decoded.served_format,
                created_at=datetime.now(UTC),
                greyscale=decoded.greyscale,
                tenant=tenant,
            )
            decision = await self._decide(
                as_x4,
                decoded.image,
                data,
                reduced.data,
                policy or self.settings.storage_policy,
                floor or self.settings.floor,
                client,
            )
        full_size = decision.representation != "x4"
        meta = as_x4.model_copy(
            update={
                "stored_width": as_x4.width if full_size else as_x4.stored_width,
                "stored_height": as_x4.height if full_size else as_x4.stored_height,
                "stored_bytes": len(decision.data),
                "representation": decision.representation,
                "receipt": decision.receipt,
            }
        )
        await self.store.put(object_key(meta.id), decision.data, meta.to_metadata())
        metrics.IMAGES_UPLOADED.inc()
        metrics.ORIGINAL_BYTES.inc(meta.original_bytes)
        metrics.STORED_BYTES.inc(meta.stored_bytes)
        metrics.observe_receipt(decision.receipt)
        await self._credit(meta)
        return meta

    def _reduce(self, data: bytes) -> tuple[DecodedImage, _Reduced]:
        with costs.measured("ingest"):
            decoded = decode_upload(data, self.settings.max_pixels)
            low_res = downscale(decoded.image)
            stored = encode_stored(low_res, self.settings.codec)
        return decoded, _Reduced(stored, low_res.width, low_res.height)

    async def _decide(
        self,
        meta: ImageMeta,
        image: Image.Image,
        original: bytes,
        reduced: bytes,
        policy: StoragePolicy,
        floor: Floor,
        client: str,
    ) -> Decision:
        """Score and choose; a scoring failure keeps the x4 copy and says so, never fails."""
        model = self.models.label
        try:
            reconstruct = await self.scorer.reconstruct(model, meta)
            with metrics.RECEIPT_SECONDS.labels(policy).time():
                return await self.cpu.call(
                    client,
                    lambda: _measured_choice(
                        image=image,
                        original=original,
                        x4=reduced,
                        policy=policy,
                        floor=floor,
                        codec=self.settings.full_codec,
                        reconstruct=reconstruct,
                        model=model,
                    ),
                )
        except Exception as exc:  # scoring is a report on the upload, never a reason to refuse it
            log.exception("scoring an upload failed; keeping the x4 copy unscored")
            metrics.RECEIPT_FAILURES.inc()
            receipt = Receipt(
                policy=policy,
                floor=str(floor),
                representation="x4",
                stored_bytes=len(reduced),
                model=model,
                error=f"scoring failed: {type(exc).__name__}",
            )
            return Decision("x4", reduced, receipt)

    async def meta(self, image_id: str) -> ImageMeta:
        try:
            return ImageMeta.from_metadata(dict(await self.store.head(object_key(image_id))))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None

    async def cached_meta(self, image_id: str, owner: str | None = None) -> ImageMeta:
        """The upload's metadata, kept in the HR cache beside its renditions.

        Every read needs it (format, size, upload time), and a hit must not cost a round trip
        to the object store; DELETE drops it with the renditions. With ``owner``, another
        tenant's image does not exist.
        """
        key = CacheKey(image_id, "meta", "json")
        meta: ImageMeta | None = None
        with contextlib.suppress(CacheUnavailable):
            if (cached := await self.cache.get(key)) is not None:
                meta = ImageMeta.model_validate_json(cached)
        if meta is None:
            meta = await self.meta(image_id)
            await self._keep(key, meta.model_dump_json().encode())
        return _owned(self._remember(meta), owner)

    async def _keep(self, key: CacheKey, data: bytes) -> bool:
        """Cache best effort (False when the cache is down); a DELETE that overtook the read
        makes it a 404, as for any request after the DELETE."""
        try:
            await self.cache.put(key, data)
        except CacheUnavailable:
            return False
        except ImageDeleted:
            raise ImageNotFound(key.image_id) from None
        return True

    def _remember(self, meta: ImageMeta) -> ImageMeta:
        self._known[meta.id] = meta
        self._known.move_to_end(meta.id)
        while len(self._known) > KNOWN_IMAGES:
            self._known.popitem(last=False)
        return meta

    async def _meta_for_read(
        self, image_id: str, preconditions: Preconditions, owner: str | None
    ) -> ImageMeta:
        """Metadata remembered in this process when it is safe to, else from the shared cache.

        Metadata never changes, but an image may be deleted by another process. A hit is still
        right: DELETE drops the renditions, so a hit proves the image exists, and a miss reads
        the object, which answers 404. A 304 proves nothing, so conditional requests always
        read the shared copy.
        """
        conditional = preconditions != NO_PRECONDITIONS
        known = None if conditional else self._known.get(image_id)
        return _owned(known, owner) if known else await self.cached_meta(image_id, owner)

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

    async def stored(
        self,
        image_id: str,
        preconditions: Preconditions = NO_PRECONDITIONS,
        owner: str | None = None,
    ) -> StoredCopy:
        """The stored copy's bytes; validators only when the client's copy is current."""
        meta = await self.cached_meta(image_id, owner)
        etag = etag_of(f"stored:{image_id}:{meta.created_at.isoformat()}")
        if not_modified(preconditions, etag, meta.created_at):
            return StoredCopy(b"", "", etag, meta.created_at, not_modified=True)
        try:
            stored = await self.store.get(object_key(image_id))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None
        return StoredCopy(stored.data, media_type_of(stored.data), etag, meta.created_at)

    async def fetch(
        self,
        image_id: str,
        request: RenditionRequest = PLAIN_READ,
        preconditions: Preconditions = NO_PRECONDITIONS,
        client: str = "",
        render: bool = True,
        owner: str | None = None,
    ) -> Rendition:
        """Serve from the cache, or render once however many callers miss together.

        A size at or below the stored copy's is made from the stored copy alone, in this
        process: no model runs and no worker is asked. A miss is admitted first: a new
        rendition against the image's quota (unsigned URLs), its CPU cost against the
        process's and ``client``'s share. With ``render`` false (a HEAD) a miss is answered
        from the plan, without rendering.
        """
        object_key(image_id)
        check_access(image_id, request, self.settings)
        meta = await self._meta_for_read(image_id, preconditions, owner)
        rebuilt = meta.representation == "x4"  # a full-size copy is served without the network
        plan = plan_rendition(
            image_id,
            meta.width,
            meta.height,
            meta.served_format,
            request,
            self.models.label if rebuilt else NO_MODEL,
            self.settings,
        )
        key = plan.key

        def rendition(
            data: bytes | None, status: CacheStatus, unchanged: bool = False
        ) -> Rendition:
            return Rendition(
                data,
                MEDIA_TYPES[plan.fmt],
                plan.etag,
                status,
                key.model,
                meta.created_at,
                plan.negotiated,
                plan.degraded,
                unchanged,
            )

        if not_modified(preconditions, plan.etag, meta.created_at):
            return rendition(b"", "HIT", unchanged=True)
        encoding = self.settings.output_encoding
        if served_as_stored(meta, plan.fmt, key.quality, encoding, plan.geometry):
            # The store serves these bytes as they are: RAM would only hold a second copy.
            render_metrics.RENDITIONS.labels("as_stored").inc()
            return rendition(await self._stored_bytes(meta.id), "MISS")
        status: CacheStatus = "MISS"
        try:
            data = await self.cache.get(key)
        except CacheUnavailable:
            data, status = None, "BYPASS"
        if data is not None:
            metrics.CACHE_REQUESTS.labels("hit").inc()
            return rendition(data, "HIT")
        metrics.CACHE_REQUESTS.labels(status.lower()).inc()
        if not render:
            return rendition(None, status)
        if request.has_options and not request.signed(self.settings):
            self.renditions.admit(image_id, str(key))
        if plan.from_stored_copy or not rebuilt:
            data = await self._flights.run(
                str(key), lambda: self._from_stored_copy(meta, plan, client)
            )
        elif self.settings.inference == "local":
            data = await self._flights.run(str(key), lambda: self._render_here(meta, plan, client))
        else:
            data = await self._flights.run(str(key), lambda: self.renderer.render(key))
        return rendition(data, status)

    async def _stored_bytes(self, image_id: str) -> bytes:
        try:
            return (await self.store.get(object_key(image_id))).data
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None

    async def _render_here(self, meta: ImageMeta, plan: RenditionPlan, client: str) -> bytes:
        """A model render in this process, admitted by its cost like any CPU work."""
        stored_pixels = meta.stored_width * meta.stored_height
        cost = rendition_seconds(stored_pixels, _output_pixels(plan), plan.fmt, model=True)
        with self.cpu.admission.admit(client, cost):
            CLIENT.set(client)  # this flight's own task: the render slot goes to it fairly
            return await self.renderer.render(plan.key)

    async def _from_stored_copy(self, meta: ImageMeta, plan: RenditionPlan, client: str) -> bytes:
        """A thumbnail of the x4 copy, or any rendition of a full-size copy: made from the
        stored bytes alone, on the CPU pool once admitted, and cached like any rendition."""
        x4 = meta.representation == "x4"
        source = meta.width * meta.height // (SCALE * SCALE if x4 else 1)
        cost = rendition_seconds(source, _output_pixels(plan), plan.fmt)
        with self.cpu.admission.admit(client, cost):
            stored = await self._stored_bytes(meta.id)
            data = await self.cpu.call(client, lambda: self._downscale_stored(stored, meta, plan))
        render_metrics.RENDITIONS.labels("stored_copy").inc()
        if await self._keep(plan.key, data):
            render_metrics.CACHE_ENTRY_BYTES.observe(len(data))
        return data

    def _downscale_stored(self, stored: bytes, meta: ImageMeta, plan: RenditionPlan) -> bytes:
        started = time.perf_counter()
        data = render_stored_copy(
            stored, meta, plan.fmt, plan.key.quality, self.settings.output_encoding, plan.geometry
        )
        render_metrics.RENDER_SECONDS.labels("stored_copy").observe(time.perf_counter() - started)
        return data

    async def delete(self, image_id: str, owner: str | None = None) -> None:
        """Concurrent DELETEs of one image in this process share one deletion: all 204.

        Across processes, a DELETE that finds the object already gone is a 404 (it came after
        the deletion); the ledger debits once either way. With ``owner``, another tenant's
        image does not exist (404, never 403): checked before joining a deletion in flight.
        """
        object_key(image_id)
        if owner is not None:
            _owned(await self.meta(image_id), owner)
        await self._deletes.run(image_id, lambda: self._delete(image_id))

    async def _delete(self, image_id: str) -> None:
        """Mark the image deleted in the cache before the object goes, then debit it once.

        The mark comes first so that a render which read the object before the delete cannot
        cache it after (see ``HRCache.mark_deleted``), and a DELETE that failed half-way can be
        retried.
        """
        key = object_key(image_id)
        meta = await self.meta(image_id)
        self._known.pop(image_id, None)
        await self.cache.mark_deleted(image_id)
        await self.store.delete(key)
        try:
            debited = await self.ledger.debit_once(
                meta.id, meta.original_bytes, meta.stored_bytes, meta.representation
            )
        except LedgerUnavailable as exc:
            debited = True  # the image is gone either way; count the delete
            self._ledger_failed(meta, exc)
        if debited:
            metrics.IMAGES_DELETED.inc()

    async def _credit(self, meta: ImageMeta) -> None:
        """The object store already holds the image: a ledger failure only logs."""
        try:
            await self.ledger.add(meta.original_bytes, meta.stored_bytes, 1, meta.representation)
        except LedgerUnavailable as exc:
            self._ledger_failed(meta, exc)

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
