"""The HR-cache interface: encoded full-resolution images under a sliding TTL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class CacheUnavailable(RuntimeError):
    """The cache could not be reached; the caller serves the image uncached (BYPASS)."""


@dataclass(frozen=True)
class CacheKey:
    """One rendition of one image: everything that shapes its bytes is part of its name.

    ``variant`` is the size (an ``imaging.Geometry`` token, empty at the upload's own size);
    ``encoding`` the encoder settings besides quality.
    """

    image_id: str
    model: str
    fmt: str
    quality: int | None = None
    variant: str = ""
    encoding: str = ""

    def __str__(self) -> str:
        return (
            f"hr:{self.image_id}:{self.model}:{self.fmt}:{self.quality or 0}"
            f":{self.variant}:{self.encoding}"
        )


class HRCache(Protocol):
    async def get(self, key: CacheKey) -> bytes | None:
        """The entry, with its TTL renewed by the same call; ``None`` on a miss."""
        ...

    async def put(self, key: CacheKey, data: bytes) -> None: ...

    async def drop_image(self, image_id: str) -> None:
        """Remove every rendition of an image."""
        ...

    async def ping(self) -> None:
        """Raise :class:`CacheUnavailable` unless the cache answers."""
        ...
