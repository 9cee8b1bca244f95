"""Caches for rendered full-resolution images, chosen by configuration in :func:`make_cache`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from cache.base import (
    TOMBSTONE_MARGIN_SECONDS,
    CacheKey,
    CacheUnavailable,
    HRCache,
    ImageDeleted,
    TtlBySize,
)
from cache.leases import FileLeases, Leases, RedisLeases
from cache.memory import MemoryCache
from cache.redis import RedisCache
from cache.tombstones import Tombstones

if TYPE_CHECKING:
    from config.settings import Settings


def make_cache(settings: Settings) -> HRCache:
    """Redis when a URL is configured, else the bounded in-process cache.

    The in-process cache's delete marks live in the data directory, where every process of
    ``srstore serve --workers N`` sees them.
    """
    if settings.redis_url:
        return RedisCache(
            settings.redis_url,
            settings.cache_ttl_seconds,
            settings.cache_retry_seconds,
            settings.ttl_by_size,
            settings.cache_admit_after,
            settings.cache_probation_seconds,
            cluster=settings.redis_cluster,
            wait_replicas=settings.redis_wait_replicas,
            timeout_seconds=settings.cache_timeout_seconds,
        )
    return MemoryCache(
        settings.cache_ttl_seconds,
        settings.memory_cache_max_bytes,
        Tombstones(
            settings.data_dir / "tombstones",
            settings.cache_ttl_seconds + TOMBSTONE_MARGIN_SECONDS,
        ),
        ttl_by_size=settings.ttl_by_size,
    )


def make_leases(settings: Settings) -> Leases:
    """Shared like the delete marks: through Redis when configured (the fleet), else through
    files in the data directory (the processes of this machine)."""
    if settings.redis_url:
        return RedisLeases(
            settings.redis_url, settings.compaction_lease_seconds, settings.redis_cluster
        )
    return FileLeases(settings.data_dir / "leases")


__all__ = [
    "CacheKey",
    "CacheUnavailable",
    "FileLeases",
    "HRCache",
    "ImageDeleted",
    "Leases",
    "MemoryCache",
    "RedisCache",
    "RedisLeases",
    "Tombstones",
    "TtlBySize",
    "make_cache",
    "make_leases",
]
