"""Delivery: an image's metadata, its stored copy, and its renditions, cache first.

Compaction may replace an image's stored object while it is read. A read therefore takes the
metadata that came with the stored bytes, never a copy cached earlier, when it works on those
bytes; and a pending receipt is never trusted from a cache (it is read from the store until
compaction has finished, so every process sees the final one).
"""

from __future__ import annotations

import contextlib
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal, Protocol

from app import metrics
from app.services.conditional import Preconditions, not_modified
from app.services.ingest import ModelSource
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
from imaging import MEDIA_TYPES, SCALE, media_type_of
from imaging.costs import rendition_seconds
from policy import NO_MODEL
from render import metrics as render_metrics
from render.admission import CLIENT, HEAVY
from render.compaction import meta_cache_key
from render.images import ImageMeta, ImageNotFound, object_key
from render.inference import render_seconds, render_stored_copy, served_as_stored
from storage import ObjectNotFound, ObjectStore, StorageUnavailable

PLAIN_READ = RenditionRequest()  # the upload's own size and format
NO_PRECONDITIONS = Preconditions()
KNOWN_IMAGES = 10_000  # metadata remembered per process (about 1 KB each)

CacheStatus = Literal["HIT", "MISS", "BYPASS"]


class Renderer(Protocol):
    """Renders the rendition a cache key names and caches it (in-process or via workers)."""

    async def render(self, key: CacheKey) -> bytes:
        """The encoded image, written to the HR cache on the way when the cache answers."""
        ...

    async def close(self) -> None: ...


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
class StoredCopy:
    """The stored bytes (empty when only validators were asked for) and their validators."""

    data: bytes
    media_type: str
    etag: str
    last_modified: datetime
    not_modified: bool = False


class _Replaced(Exception):
    """The stored copy is no longer the one its metadata (remembered) describes: tiering
    compacted a hot image meanwhile. The read is planned again from the store."""


def pending(meta: ImageMeta) -> bool:
    return meta.receipt is not None and meta.receipt.state == "pending"


def owned(meta: ImageMeta, owner: str | None) -> ImageMeta:
    """``meta``, unless it belongs to another tenant than ``owner`` (None: any owner)."""
    if owner is not None and meta.tenant != owner:
        raise ImageNotFound(meta.id)
    return meta


class Delivery:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        renderer: Renderer,
        models: ModelSource,
        cpu: CpuPool,
        renditions: RenditionBudget,
        reads: Callable[[str], None] | None = None,
    ) -> None:
        """``reads`` is told of every read of a full-size copy (tiering's access tracker)."""
        self.settings = settings
        self.reads = reads
        self.store = store
        self.cache = cache
        self.renderer = renderer
        self.models = models
        self.cpu = cpu
        self.renditions = renditions
        self._flights: SingleFlight[bytes] = SingleFlight()
        self._known: OrderedDict[str, ImageMeta] = OrderedDict()

    async def meta(self, image_id: str) -> ImageMeta:
        try:
            return ImageMeta.from_metadata(dict(await self.store.head(object_key(image_id))))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None

    async def cached_meta(self, image_id: str, owner: str | None = None) -> ImageMeta:
        """The upload's metadata, kept in the HR cache beside its renditions.

        Every read needs it (format, size, upload time), and a hit must not cost a round trip
        to the object store; DELETE drops it with the renditions. A pending receipt is read
        from the store each time, until compaction has recorded the final one; while the
        store is down, the pending one still describes the readable upload, so renditions
        cached of it are served. With ``owner``, another tenant's image does not exist.
        """
        key = meta_cache_key(image_id)
        meta: ImageMeta | None = None
        with contextlib.suppress(CacheUnavailable):
            if (cached := await self.cache.get(key)) is not None:
                meta = ImageMeta.model_validate_json(cached)
        if meta is None or pending(meta):
            try:
                stored = await self.meta(image_id)
            except StorageUnavailable:
                if meta is None:
                    raise
                return owned(meta, owner)
            meta = stored
            await self._keep(key, meta.model_dump_json().encode())
        return owned(self._remember(meta), owner)

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

    def forget(self, image_id: str) -> None:
        self._known.pop(image_id, None)

    async def _meta_for_read(
        self, image_id: str, preconditions: Preconditions, owner: str | None
    ) -> ImageMeta:
        """Metadata remembered in this process when it is safe to, else from the shared cache.

        Once compaction is done metadata never changes, but an image may be deleted by
        another process. A hit is still right: DELETE drops the renditions, so a hit proves
        the image exists, and a miss reads the object, which answers 404. A 304 proves
        nothing, so conditional requests always read the shared copy.
        """
        conditional = preconditions != NO_PRECONDITIONS
        known = None if conditional else self._known.get(image_id)
        if known is not None and not pending(known):
            return owned(known, owner)
        return await self.cached_meta(image_id, owner)

    async def stored(
        self,
        image_id: str,
        preconditions: Preconditions = NO_PRECONDITIONS,
        owner: str | None = None,
    ) -> StoredCopy:
        """The stored copy's bytes; validators only when the client's copy is current.

        The ETag names the representation: compaction may replace the stored copy."""
        meta = await self.cached_meta(image_id, owner)
        self._read(meta)
        etag = _stored_etag(meta)
        if not_modified(preconditions, etag, meta.created_at):
            return StoredCopy(b"", "", etag, meta.created_at, not_modified=True)
        try:
            stored = await self.store.get(object_key(image_id))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None
        meta = ImageMeta.from_metadata(dict(stored.metadata))
        data = stored.data
        return StoredCopy(data, media_type_of(data), _stored_etag(meta), meta.created_at)

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
        from the plan, without rendering. A read that finds the stored copy replaced since
        its metadata was remembered (tiering compacted it) is planned again from the store.
        """
        object_key(image_id)
        check_access(image_id, request, self.settings)
        try:
            meta = await self._meta_for_read(image_id, preconditions, owner)
            return await self._fetch(meta, request, preconditions, client, render)
        except _Replaced:
            self.forget(image_id)
            meta = owned(self._remember(await self.meta(image_id)), owner)
            return await self._fetch(meta, request, preconditions, client, render)

    def _read(self, meta: ImageMeta) -> None:
        if self.reads is not None and meta.representation != "x4":
            self.reads(meta.id)

    async def _fetch(
        self,
        meta: ImageMeta,
        request: RenditionRequest,
        preconditions: Preconditions,
        client: str,
        render: bool,
    ) -> Rendition:
        image_id = meta.id
        self._read(meta)
        rebuilt = meta.representation == "x4"  # a full-size copy is served without the network
        plan = plan_rendition(
            image_id,
            meta.width,
            meta.height,
            meta.served_format,
            request,
            self.models.label if rebuilt else NO_MODEL,
            self.settings,
            meta.source,
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
            # Only a compacted full-size copy is served so; if tiering has compacted it
            # since (the bytes are the x4 copy now), the read is planned again.
            as_stored = await self._stored_bytes(meta)
            render_metrics.RENDITIONS.labels("as_stored").inc()
            return rendition(as_stored, "MISS")
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

    async def _stored_bytes(self, known: ImageMeta) -> bytes:
        try:
            stored = await self.store.get(object_key(known.id))
        except ObjectNotFound:
            raise ImageNotFound(known.id) from None
        if ImageMeta.from_metadata(dict(stored.metadata)).representation != known.representation:
            raise _Replaced(known.id)
        return stored.data

    async def _render_here(self, meta: ImageMeta, plan: RenditionPlan, client: str) -> bytes:
        """A model render in this process, admitted by its cost like any CPU work."""
        cost = render_seconds(meta, plan.geometry, plan.fmt)
        with self.cpu.admission.admit(client, cost):
            CLIENT.set(client)  # this flight's own task: the render slot goes to it fairly
            HEAVY.set(cost > self.settings.heavy_work_seconds)
            return await self.renderer.render(plan.key)

    async def _from_stored_copy(self, known: ImageMeta, plan: RenditionPlan, client: str) -> bytes:
        """A thumbnail of the x4 copy, or any rendition of a full-size copy: made from the
        stored bytes alone, on the CPU pool once admitted, and cached like any rendition. The
        metadata that came with the bytes describes them, even if compaction just replaced
        them (``known`` only estimates the cost)."""
        x4 = known.representation == "x4"
        source = known.width * known.height // (SCALE * SCALE if x4 else 1)
        cost = rendition_seconds(source, plan.geometry.pixels, plan.fmt)
        with self.cpu.admission.admit(client, cost):
            try:
                stored = await self.store.get(object_key(known.id))
            except ObjectNotFound:
                raise ImageNotFound(known.id) from None
            meta = ImageMeta.from_metadata(dict(stored.metadata))
            if known.representation != "x4" and meta.representation == "x4":
                raise _Replaced(known.id)  # tiering compacted it: the plan needs the model
            data = await self.cpu.call(
                client,
                lambda: self._downscale_stored(stored.data, meta, plan),
                heavy=cost > self.settings.heavy_work_seconds,
            )
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


def _stored_etag(meta: ImageMeta) -> str:
    """Compaction may replace the stored copy: the ETag names the copy."""
    return etag_of(f"stored:{meta.id}:{meta.created_at.isoformat()}:{meta.source}")
