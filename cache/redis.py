"""Rendered images in Redis: ``GETEX ... EX`` renews the TTL on every hit in one round trip.

Each image also has a set naming its renditions (``hr:{id}:keys``), renewed with them, so a
DELETE finds every rendition without scanning the keyspace.

A DELETE first marks the image deleted (``hr:{id}:deleted``) and drops its renditions in one
script; a put is one script that refuses to write once the mark exists. Redis runs scripts one
at a time, so a render that read the image before the delete and finishes after it cannot
cache it again (it gets :class:`ImageDeleted`), in any API process or worker.
"""

from __future__ import annotations

import logging
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from cache.base import TOMBSTONE_MARGIN_SECONDS, CacheKey, CacheUnavailable, ImageDeleted

log = logging.getLogger(__name__)


# KEYS: entry, index, delete mark. ARGV: data, TTL.
_PUT_UNLESS_DELETED = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: index, delete mark. ARGV: the mark's lifetime.
_MARK_DELETED_AND_DROP = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local members = redis.call('SMEMBERS', KEYS[1])
for _, member in ipairs(members) do redis.call('DEL', member) end
redis.call('DEL', KEYS[1])
return #members
"""


def _index_key(image_id: str) -> str:
    return f"hr:{image_id}:keys"


def deleted_key(image_id: str) -> str:
    return f"hr:{image_id}:deleted"


class RedisCache:
    shared = True

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        retry_seconds: float = 2.0,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self.tombstone_seconds = ttl_seconds + TOMBSTONE_MARGIN_SECONDS
        self.client = aioredis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
        self._put = self.client.register_script(_PUT_UNLESS_DELETED)
        self._drop = self.client.register_script(_MARK_DELETED_AND_DROP)
        self._down_until = 0.0

    async def get(self, key: CacheKey) -> bytes | None:
        self._fail_fast()
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.getex(str(key), ex=self.ttl_seconds)
                pipe.expire(_index_key(key.image_id), self.ttl_seconds)
                data, _ = await pipe.execute()
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return data  # type: ignore[no-any-return]

    async def put(self, key: CacheKey, data: bytes) -> None:
        self._fail_fast()
        keys = [str(key), _index_key(key.image_id), deleted_key(key.image_id)]
        try:
            kept = await self._put(keys=keys, args=[data, self.ttl_seconds])
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not kept:
            raise ImageDeleted(key.image_id)

    async def drop_image(self, image_id: str) -> None:
        index = _index_key(image_id)
        try:
            members = await self.client.smembers(index)
            await self.client.delete(index, *members)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def mark_deleted(self, image_id: str) -> None:
        keys = [_index_key(image_id), deleted_key(image_id)]
        try:
            await self._drop(keys=keys, args=[self.tombstone_seconds])
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def held_bytes(self) -> int:
        """Redis's ``used_memory_dataset``: the RAM the fleet's keys occupy (entries with
        their allocator overhead, and the small queue and ledger keys beside them), without
        the server's own buffers, which a cache of any content needs."""
        try:
            info = await self.client.info("memory")
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return int(info["used_memory_dataset"])

    async def close(self) -> None:
        await self.client.aclose()

    def _fail_fast(self) -> None:
        """After a failure, skip Redis for a moment instead of waiting on every request."""
        if time.monotonic() < self._down_until:
            raise CacheUnavailable("Redis was unreachable moments ago")

    def _unavailable(self, exc: RedisError) -> CacheUnavailable:
        """Redis errors name host and port, never the URL's password; clients see neither."""
        log.warning("Redis unavailable, serving uncached for %.1f s: %s", self.retry_seconds, exc)
        self._down_until = time.monotonic() + self.retry_seconds
        return CacheUnavailable(f"Redis: {exc}")
