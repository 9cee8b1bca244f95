"""What the API does with images: upload, describe, render, delete. No HTTP in here."""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import hashlib
import logging
import secrets
from collections.abc import Awaitable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal, Protocol

from pydantic import BaseModel

from app import metrics
from app.services.singleflight import SingleFlight
from cache import CacheKey, CacheUnavailable, HRCache
from config.settings import Settings
from imaging import (
    OutputFormat,
    decode_upload,
    downscale,
    encode_stored,
    media_type_of,
)
from ledger import Ledger, LedgerUnavailable
from render.images import (
    AUTO_FORMAT,
    IMAGES_PREFIX,
    ImageMeta,
    ImageNotFound,
    InvalidImageId,
    object_key,
)
from storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

_MAX_CURSOR = 200
_LOSSY = {"jpeg", "webp"}  # quality names a distinct rendition only for these

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


class ModelSource(Protocol):
    """Which model version serves right now (see ``app.services.models.ActiveModel``)."""

    @property
    def label(self) -> str: ...


@dataclass(frozen=True)
class Rendition:
    data: bytes
    media_type: str
    etag: str
    cache: CacheStatus
    model: str
    not_modified: bool = False


def new_image_id() -> str:
    """128 random bits, URL-safe: unguessable and never derived from anything a client sent."""
    return secrets.token_urlsafe(16)


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


class ImageService:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        renderer: Renderer,
        models: ModelSource,
        ledger: Ledger,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.renderer = renderer
        self.models = models
        self.ledger = ledger
        self._flights: SingleFlight[bytes] = SingleFlight()

    async def upload(self, data: bytes) -> ImageMeta:
        """Acknowledged (and counted in the ledger) only after the store confirmed the write."""
        meta, stored = await asyncio.to_thread(self._prepare, data)
        await self.store.put(object_key(meta.id), stored, meta.to_metadata())
        metrics.IMAGES_UPLOADED.inc()
        metrics.ORIGINAL_BYTES.inc(meta.original_bytes)
        metrics.STORED_BYTES.inc(meta.stored_bytes)
        await self._record(meta, +1)
        return meta

    def _prepare(self, data: bytes) -> tuple[ImageMeta, bytes]:
        decoded = decode_upload(data, self.settings.max_pixels)
        low_res = downscale(decoded.image)
        stored = encode_stored(low_res, self.settings.codec)
        meta = ImageMeta(
            id=new_image_id(),
            width=decoded.image.width,
            height=decoded.image.height,
            stored_width=low_res.width,
            stored_height=low_res.height,
            content_type=decoded.content_type,
            original_bytes=len(data),
            stored_bytes=len(stored),
            served_format=decoded.served_format,
            created_at=datetime.now(UTC),
        )
        return meta, stored

    async def meta(self, image_id: str) -> ImageMeta:
        try:
            return ImageMeta.from_metadata(dict(await self.store.head(object_key(image_id))))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None

    async def list_images(self, limit: int, cursor: str | None = None) -> ImagePage:
        """A page in id order from the store's own listing: one request, then one HEAD per image.

        An image deleted between the two is left out, so a page may hold fewer than ``limit``.
        """
        after = _decode_cursor(cursor) if cursor is not None else None
        page = await self.store.list_page(IMAGES_PREFIX, limit, after)
        ids = [key.removeprefix(IMAGES_PREFIX) for key in page.keys]
        found = await asyncio.gather(*(self._meta_if_present(i) for i in ids))
        next_cursor = _encode_cursor(page.next_after) if page.next_after else None
        return ImagePage(images=[m for m in found if m is not None], next_cursor=next_cursor)

    async def _meta_if_present(self, image_id: str) -> ImageMeta | None:
        """None for an image deleted meanwhile, or a key under images/ that is no image."""
        try:
            return await self.meta(image_id)
        except (ImageNotFound, InvalidImageId):
            return None

    async def stored(self, image_id: str) -> tuple[bytes, str]:
        try:
            stored = await self.store.get(object_key(image_id))
        except ObjectNotFound:
            raise ImageNotFound(image_id) from None
        return stored.data, media_type_of(stored.data)

    async def fetch(
        self,
        image_id: str,
        fmt: OutputFormat | None,
        quality: int | None,
        if_none_match: str | None = None,
    ) -> Rendition:
        """Serve from the cache, or render once however many callers miss together."""
        object_key(image_id)
        quality = quality if fmt in _LOSSY else None
        key = CacheKey(image_id, self.models.label, fmt or AUTO_FORMAT, quality)
        etag = '"' + hashlib.sha256(str(key).encode()).hexdigest()[:32] + '"'
        status: CacheStatus = "MISS"
        try:
            data = await self.cache.get(key)
        except CacheUnavailable:
            data, status = None, "BYPASS"
        if data is not None:
            metrics.CACHE_REQUESTS.labels("hit").inc()
            return Rendition(
                data,
                media_type_of(data),
                etag,
                "HIT",
                key.model,
                not_modified=_matches(if_none_match, etag),
            )
        metrics.CACHE_REQUESTS.labels(status.lower()).inc()
        if _matches(if_none_match, etag):
            await self.meta(image_id)
            return Rendition(b"", "", etag, status, key.model, not_modified=True)
        data = await self._flights.run(str(key), lambda: self.renderer.render(key))
        return Rendition(data, media_type_of(data), etag, status, key.model)

    async def delete(self, image_id: str) -> None:
        """Drop cached renditions before and after the object, so none outlives it."""
        key = object_key(image_id)
        meta = await self.meta(image_id)
        await self.cache.drop_image(image_id)
        await self.store.delete(key)
        await self.cache.drop_image(image_id)
        metrics.IMAGES_DELETED.inc()
        await self._record(meta, -1)

    async def _record(self, meta: ImageMeta, sign: int) -> None:
        """The object store already holds (or dropped) the image: a ledger failure only logs."""
        try:
            await self.ledger.add(sign * meta.original_bytes, sign * meta.stored_bytes, sign)
        except LedgerUnavailable as exc:
            metrics.LEDGER_ERRORS.inc()
            log.warning("ledger not updated for %s: %s", meta.id, exc)

    async def check_ready(self) -> dict[str, str]:
        """Raise if a dependency is down; otherwise describe what serves."""
        await self.store.ping()
        await self.cache.ping()
        return {
            "storage": type(self.store).__name__,
            "cache": type(self.cache).__name__,
            "model": self.models.label,
        }

    async def snapshot(self) -> metrics.Snapshot:
        """The fleet ledger and whether each dependency answers now, for a metrics scrape."""
        store_up, cache_up = await asyncio.gather(
            _answers(self.store.ping()), _answers(self.cache.ping())
        )
        try:
            totals = await self.ledger.totals()
        except LedgerUnavailable as exc:
            log.warning("ledger unreadable: %s", exc)
            totals = None
        return metrics.Snapshot(
            totals, {"object_store": store_up, "cache": cache_up}, self.models.label
        )


async def _answers(ping: Awaitable[None]) -> bool:
    try:
        await ping
    except (StorageUnavailable, ObjectNotFound, CacheUnavailable):
        return False
    return True


def _matches(if_none_match: str | None, etag: str) -> bool:
    if not if_none_match:
        return False
    return if_none_match.strip() == "*" or etag in [t.strip() for t in if_none_match.split(",")]
