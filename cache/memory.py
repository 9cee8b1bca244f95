"""A bounded in-process cache with the same sliding TTL as Redis: the embedded default.

Its bound counts what an entry really holds in the process (the bytes plus
``ENTRY_OVERHEAD_BYTES`` for the key, the bookkeeping and the bytes object), and it admits
by frequency (TinyLFU): when a new entry needs room, the least recently used entries that
would make it are compared with it in :class:`~cache.frequency.FrequencySketch`, and if any
of them was asked for more often lately, the new entry is not kept and nothing is evicted.
So one client asking for many renditions once each cannot flush what others read often,
while an entry asked for as often as what it replaces takes its place (LRU among equals).

Deletes are marked in :class:`~cache.tombstones.Tombstones` shared by the processes of the
machine, and checked on every hit and write: a delete served by another process wins too.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable

from cache.base import CacheKey, ImageDeleted, TtlBySize
from cache.frequency import FrequencySketch
from cache.tombstones import Tombstones

# Measured with tracemalloc on 10,000 entries of 400 bytes (tests/contract/test_hr_caches.py
# checks it): about 250 bytes of dict node, tuple and float, 210 of key, 40 of bytes header.
ENTRY_OVERHEAD_BYTES = 512
SKETCH_BYTES_PER_COUNTER = 16 * 1024  # a counter for each 16 KiB of budget (4 rows of them)


class MemoryCache:
    shared = False

    def __init__(
        self,
        ttl_seconds: int,
        max_bytes: int,
        tombstones: Tombstones,
        clock: Callable[[], float] = time.monotonic,
        ttl_by_size: TtlBySize | None = None,
        entry_overhead_bytes: int = ENTRY_OVERHEAD_BYTES,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_bytes = max_bytes
        self.tombstones = tombstones
        self.clock = clock
        self.ttl_by_size = ttl_by_size or TtlBySize()
        self.entry_overhead_bytes = entry_overhead_bytes
        self.size_bytes = 0
        self.frequency = FrequencySketch(max(1024, max_bytes // SKETCH_BYTES_PER_COUNTER))
        self._entries: OrderedDict[CacheKey, tuple[bytes, float]] = OrderedDict()

    async def get(self, key: CacheKey) -> bytes | None:
        self.frequency.add(str(key))
        entry = self._entries.get(key)
        if entry is None:
            return None
        data, expires_at = entry
        now = self.clock()
        if expires_at <= now or self.tombstones.marked(key.image_id):
            self._remove(key)
            return None
        self._entries[key] = (data, now + self._ttl(data))
        self._entries.move_to_end(key)
        return data

    async def put(self, key: CacheKey, data: bytes) -> None:
        if self.tombstones.marked(key.image_id):
            raise ImageDeleted(key.image_id)
        cost = self._cost(data)
        if cost > self.max_bytes:
            return
        self._remove(key)
        victims = self._victims(key, self.size_bytes + cost - self.max_bytes)
        if victims is None:
            return
        for victim in victims:
            self._remove(victim)
        self._entries[key] = (data, self.clock() + self._ttl(data))
        self.size_bytes += cost

    def _victims(self, key: CacheKey, needed: int) -> list[CacheKey] | None:
        """The least recently used entries that free ``needed`` bytes (expired ones first go
        free), or None when one of them was asked for more often than ``key``."""
        if needed <= 0:
            return []
        now, wanted = self.clock(), self.frequency.estimate(str(key))
        victims, freed = [], 0
        for other, (data, expires_at) in self._entries.items():
            if expires_at > now and self.frequency.estimate(str(other)) > wanted:
                return None
            victims.append(other)
            freed += self._cost(data)
            if freed >= needed:
                return victims
        return victims

    async def mark_deleted(self, image_id: str) -> None:
        self.tombstones.mark(image_id)
        await self.drop_image(image_id)

    async def drop_image(self, image_id: str) -> None:
        for key in [k for k in self._entries if k.image_id == image_id]:
            self._remove(key)

    async def ping(self) -> None:
        return None

    async def held_bytes(self) -> int:
        """What the entries hold, once the expired ones are dropped: an entry unread for its
        TTL is gone from memory by the next sample, not only when it is next asked for."""
        now = self.clock()
        for key in [k for k, (_, expires_at) in self._entries.items() if expires_at <= now]:
            self._remove(key)
        return self.size_bytes

    def expires_in(self, key: CacheKey) -> float | None:
        """Seconds left before the entry expires, for tests and the admin view."""
        entry = self._entries.get(key)
        return None if entry is None else entry[1] - self.clock()

    def _ttl(self, data: bytes) -> float:
        return self.ttl_by_size.ttl(self.ttl_seconds, len(data))

    def _cost(self, data: bytes) -> int:
        return len(data) + self.entry_overhead_bytes

    def _remove(self, key: CacheKey) -> None:
        entry = self._entries.pop(key, None)
        if entry is not None:
            self.size_bytes -= self._cost(entry[0])
