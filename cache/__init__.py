"""Caches for rendered full-resolution images, chosen by configuration in :func:`make_cache`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cache.base import CacheKey, CacheUnavailable, HRCache
from cache.memory import MemoryCache
from cache.redis import RedisCache

if TYPE_CHECKING:
    from config.settings import Settings


def make_cache(settings: Settings) -> HRCache:
    """Redis when a URL is configured, else the bounded in-process cache."""
    if settings.redis_url:
        return RedisCache(
            settings.redis_url, settings.cache_ttl_seconds, settings.cache_retry_seconds
        )
    return MemoryCache(settings.cache_ttl_seconds, settings.memory_cache_max_bytes)


__all__ = ["CacheKey", "CacheUnavailable", "HRCache", "MemoryCache", "RedisCache", "make_cache"]
