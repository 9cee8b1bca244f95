"""Rendered images in Redis: ``GETEX ... EX`` renews the TTL on every hit in one round trip.

Each image also has a set naming its renditions (``hr:{id}:keys``), renewed with them, so a
DELETE finds every rendition without scanning the keyspace.
"""

from __future__ import annotations

import logging
import time

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from cache.base import CacheKey, CacheUnavailable

log = logging.getLogger(__name__)


def _index_key(image_id: str) -> str:
    return f"hr:{image_id}:keys"


class RedisCache:
    def __init__(self, url: str, ttl_seconds: int, retry_seconds: float = 2.0) -> None:
        self.ttl_seconds = ttl_seconds
        self.retry_seconds = retry_seconds
        self.client = aioredis.from_url(
            url, socket_timeout=0.5, socket_connect_timeout=0.5, health_check_interval=30
        )
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
        index = _index_key(key.image_id)
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.set(str(key), data, ex=self.ttl_seconds)
                pipe.sadd(index, str(key))
                pipe.expire(index, self.ttl_seconds)
                await pipe.execute()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def drop_image(self, image_id: str) -> None:
        index = _index_key(image_id)
        try:
            members = await self.client.smembers(index)
            await self.client.delete(index, *members)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def ping(self) -> None:
        try:
            await self.client.ping()
        except RedisError as exc:
            raise self._unavailable(exc) from exc

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
