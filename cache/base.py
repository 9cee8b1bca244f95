"""The HR-cache interface: encoded full-resolution images under a sliding TTL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from keyspace import rendition_prefix

# A delete mark outlives any entry of the image (unread for a TTL, it expires) and, by a wide
# margin, any render that read the image before the delete.
TOMBSTONE_MARGIN_SECONDS = 3600


@dataclass(frozen=True)
class TtlBySize:
    """A large entry is kept unread for less time than a small one.

    Above ``large_bytes`` an entry's TTL is at most ``large_ttl_seconds`` (see the README,
    "A cache that knows its cost", for the figures that chose the defaults); 0 turns it off.
    """

    large_bytes: int = 0
    large_ttl_seconds: int = 0

    def ttl(self, ttl_seconds: int, size: int) -> int:
        if self.large_bytes and size > self.large_bytes and self.large_ttl_seconds:
            return min(ttl_seconds, self.large_ttl_seconds)
        return ttl_seconds


class CacheUnavailable(RuntimeError):
    """The cache could not be reached; the caller serves the image uncached (BYPASS)."""


class ImageDeleted(LookupError):
    """The image was deleted: its rendition is not cached (a render raced the delete)."""


@dataclass(frozen=True)
class CacheKey:
    """One rendition of one image: everything that shapes its bytes is part of its name.

    ``variant`` is the size (an ``imaging.Geometry`` token, empty at the upload's own size);
    ``encoding`` the encoder settings besides quality; ``source`` the stored copy it is made
    from (``render.images.ImageMeta.source``): compaction may replace an image's stored copy,
    and a rendition of the copy replaced is then named by nothing a read asks for.
    """

    image_id: str
    model: str
    fmt: str
    quality: int | None = None
    variant: str = ""
    encoding: str = ""
    source: str = ""

    def __str__(self) -> str:
        """``hr:{id}:...``: tagged with the image, so it shares a cluster slot with the
        image's delete mark (see :mod:`keyspace`)."""
        name = (
            f"{rendition_prefix(self.image_id)}{self.model}:{self.fmt}:{self.quality or 0}"
            f":{self.variant}:{self.encoding}"
        )
        return f"{name}:{self.source}" if self.source else name


class HRCache(Protocol):
    shared: bool  # one cache for the whole fleet (Redis), or one per process

    async def get(self, key: CacheKey) -> bytes | None:
        """The entry, with its TTL renewed by the same call; ``None`` on a miss."""
        ...

    async def put(self, key: CacheKey, data: bytes) -> None:
        """Keep the entry; raise :class:`ImageDeleted` if the image was deleted meanwhile."""
        ...

    async def drop_image(self, image_id: str) -> None:
        """Remove every rendition of an image (it may be cached again)."""
        ...

    async def mark_deleted(self, image_id: str) -> None:
        """Mark the image deleted, then remove every rendition of it.

        The mark wins over renders in flight: a put after it raises :class:`ImageDeleted`,
        and no entry written before it is served after it, in any process.
        """
        ...

    async def ping(self) -> None:
        """Raise :class:`CacheUnavailable` unless the cache answers."""
        ...

    async def held_bytes(self) -> int:
        """The memory the cache holds now, as paid for: the cost ledger integrates it."""
        ...
