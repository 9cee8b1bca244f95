"""The HR-cache interface: encoded full-resolution images under a sliding TTL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class CacheUnavailable(RuntimeError):
    """The cache could not be reached; the caller serves the image uncached (BYPASS)."""


@dataclass(frozen=True)
class CacheKey:
    """One rendition of one image: the model version and output encoding are part of its name."""

    image_id: str
    model: str
    fmt: str
    quality: int | None = None

    def __str__(self) -> str:
        return f"hr:{self.image_id}:{self.model}:{self.fmt}:{self.quality or 0}"


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
