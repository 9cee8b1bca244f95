"""A bounded in-process LRU with the same sliding TTL as Redis: the embedded default.

Deletes are marked in :class:`~cache.tombstones.Tombstones` shared by the processes of the
machine, and checked on every hit and write: a delete served by another process wins too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from cache.base import CacheKey, ImageDeleted
from cache.tombstones import Tombstones


class MemoryCache:
    shared = False

    def __init__(
        self,
        ttl_seconds: int,
        max_bytes: int,
        tombstones: Tombstones,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.tombstones = tombstones
        self.clock = clock
        self.size_bytes = 0
        self._entries: OrderedDict[CacheKey, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: CacheKey) -> bytes | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        data, expires_at = entry
        now = self.clock()
        if expires_at <= now or self.tombstones.marked(key.image_id):
            self._remove(key)
            return None
        self._entries[key] = (data, now + self.ttl_seconds)
        self._entries.move_to_end(key)
        return data

    async def put(self, key: CacheKey, data: bytes) -> None:
        if self.tombstones.marked(key.image_id):
            raise ImageDeleted(key.image_id)
        if len(data) > self.max_bytes:
            return
        self._remove(key)
        self._entries[key] = (data, self.clock() + self.ttl_seconds)
        self.size_bytes += len(data)
        while self.size_bytes > self.max_bytes:
            self._remove(next(iter(self._entries)))

    async def mark_deleted(self, image_id: str) -> None:
        self.tombstones.mark(image_id)
        await self.drop_image(image_id)

    async def drop_image(self, image_id: str) -> None:
        for key in [k for k in self._entries if k.image_id == image_id]:
            self._remove(key)

    async def ping(self) -> None:
        return None

    async def held_bytes(self) -> int:
        return self.size_bytes

    def expires_in(self, key: CacheKey) -> float | None:
        """Seconds left before the entry expires, for tests and the admin view."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1] - self.clock()

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size_bytes -= len(entry[0])
