"""One contract for every HR cache: the in-process LRU and Redis (a real server)."""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis

from cache import (
    CacheKey,
    CacheUnavailable,
    HRCache,
    ImageDeleted,
    MemoryCache,
    RedisCache,
    Tombstones,
)
from cache.redis import _index_key
from cache.tombstones import SWEEP_INTERVAL_SECONDS
from tests.support.servers import RedisServer, free_port

TTL = 60


@pytest.fixture
def tombstones(tmp_path: Path) -> Tombstones:
    return Tombstones(tmp_path / "tombstones", lifetime_seconds=TTL + 10)


@pytest.fixture(params=["memory", "redis"])
async def cache(request: pytest.FixtureRequest, tombstones: Tombstones) -> AsyncIterator[HRCache]:
    if request.param == "memory":
        yield MemoryCache(TTL, max_bytes=1024, tombstones=tombstones)
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_cache = RedisCache(server.url, TTL)
    yield redis_cache
    await redis_cache.close()


def key(image_id: str = "img", fmt: str = "png") -> CacheKey:
    return CacheKey(image_id, "espcn:1", fmt)


async def test_a_put_entry_is_a_hit(cache: HRCache) -> None:
    await cache.put(key("a1"), b"rendered")

    assert await cache.get(key("a1")) == b"rendered"


async def test_an_absent_entry_is_a_miss(cache: HRCache) -> None:
    assert await cache.get(key("never")) is None


async def test_renditions_differ_by_model_format_and_quality(cache: HRCache) -> None:
    await cache.put(CacheKey("a2", "espcn:1", "jpeg", 80), b"one")

    assert await cache.get(CacheKey("a2", "espcn:2", "jpeg", 80)) is None
    assert await cache.get(CacheKey("a2", "espcn:1", "png")) is None
    assert await cache.get(CacheKey("a2", "espcn:1", "jpeg", 90)) is None


async def test_drop_image_removes_every_rendition_of_that_image_only(cache: HRCache) -> None:
    await cache.put(key("a3", "png"), b"p")
    await cache.put(key("a3", "jpeg"), b"j")
    await cache.put(key("other", "png"), b"o")

    await cache.drop_image("a3")

    assert await cache.get(key("a3", "png")) is None
    assert await cache.get(key("a3", "jpeg")) is None
    assert await cache.get(key("other", "png")) == b"o"


async def test_a_dropped_image_may_be_cached_again(cache: HRCache) -> None:
    await cache.put(key("a4"), b"p")
    await cache.drop_image("a4")

    await cache.put(key("a4"), b"again")

    assert await cache.get(key("a4")) == b"again"


async def test_after_mark_deleted_no_rendition_of_it_is_kept_again(cache: HRCache) -> None:
    """A render that read the image before the delete finishes after it: refused."""
    image_id = f"d{uuid.uuid4().hex[:8]}"
    await cache.put(key(image_id, "jpeg"), b"j")
    await cache.mark_deleted(image_id)
    assert await cache.get(key(image_id, "jpeg")) is None

    with pytest.raises(ImageDeleted):
        await cache.put(key(image_id, "png"), b"late render")

    assert await cache.get(key(image_id, "png")) is None
    await cache.put(key("other", "png"), b"o")
    assert await cache.get(key("other", "png")) == b"o"


async def test_a_delete_in_one_process_empties_the_memory_cache_of_another(
    tombstones: Tombstones,
) -> None:
    """Two in-process caches sharing a data directory, as ``serve --workers 2`` runs them."""
    here = MemoryCache(TTL, max_bytes=1024, tombstones=tombstones)
    there = MemoryCache(TTL, max_bytes=1024, tombstones=tombstones)
    await there.put(key("x1"), b"cached over there")

    await here.mark_deleted("x1")

    assert await there.get(key("x1")) is None
    assert there.size_bytes == 0
    with pytest.raises(ImageDeleted):
        await there.put(key("x1"), b"again")


def test_a_tombstone_expires_after_its_lifetime_and_is_swept(tmp_path: Path) -> None:
    now = [1_000_000.0]
    marks = Tombstones(tmp_path / "t", lifetime_seconds=100, clock=lambda: now[0])
    marks.mark("old")
    os.utime(tmp_path / "t" / "old", (now[0], now[0]))
    now[0] += 99
    assert marks.marked("old")

    now[0] += 2
    assert not marks.marked("old")
    marks.mark("new")  # more than a sweep interval later: the old mark's file goes

    assert sorted(os.listdir(tmp_path / "t")) == ["new"]
    with pytest.raises(ValueError):
        marks.mark("../escape")


def test_a_sweep_keeps_every_mark_younger_than_its_lifetime(tmp_path: Path) -> None:
    """The clock runs with the files' own times (a sweep compares it with their mtimes):
    a mark made a sweep interval ago, well within its lifetime, survives the next sweep."""
    offset = [0.0]
    marks = Tombstones(tmp_path / "t", lifetime_seconds=300, clock=lambda: time.time() + offset[0])
    marks.mark("earlier")
    offset[0] = SWEEP_INTERVAL_SECONDS + 1

    marks.mark("later")  # sweeps: "earlier" is a minute old, with four more to live

    assert marks.marked("earlier") and marks.marked("later")
    assert sorted(os.listdir(tmp_path / "t")) == ["earlier", "later"]
    offset[0] = 300 + 2 * SWEEP_INTERVAL_SECONDS + 2
    marks.mark("last")  # both are past their lifetime now, and are swept
    assert sorted(os.listdir(tmp_path / "t")) == ["last"]


async def test_a_redis_hit_renews_the_ttl(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    """The entry and the image's index of entries both: an index that expired under a live
    entry would hide it from DELETE, which would then leave it served."""
    cache = RedisCache(redis_server.url, ttl_seconds=100)
    await cache.put(key("t1"), b"x")
    for name in (str(key("t1")), _index_key("t1")):  # as if 95 s had passed since the put
        redis_client.expire(name, 5)
        assert redis_client.ttl(name) <= 5

    assert await cache.get(key("t1")) == b"x"

    assert 95 <= redis_client.ttl(str(key("t1"))) <= 100
    assert 95 <= redis_client.ttl(_index_key("t1")) <= 100
    await cache.close()


async def test_redis_entries_expire_when_nobody_reads_them(redis_server: RedisServer) -> None:
    cache = RedisCache(redis_server.url, ttl_seconds=1)
    await cache.put(key("t2"), b"x")

    await asyncio.sleep(1.2)

    assert await cache.get(key("t2")) is None
    await cache.close()


async def test_memory_hit_renews_the_ttl_and_unread_entries_expire(
    tombstones: Tombstones,
) -> None:
    now = [0.0]
    cache = MemoryCache(ttl_seconds=10, max_bytes=100, tombstones=tombstones, clock=lambda: now[0])
    await cache.put(key("m1"), b"a")
    await cache.put(key("m2"), b"b")

    now[0] = 8.0
    assert await cache.get(key("m1")) == b"a"
    now[0] = 15.0

    assert await cache.get(key("m1")) == b"a"
    assert await cache.get(key("m2")) is None


async def test_memory_cache_evicts_least_recently_used_beyond_its_bound(
    tombstones: Tombstones,
) -> None:
    cache = MemoryCache(ttl_seconds=10, max_bytes=10, tombstones=tombstones)
    await cache.put(key("e1"), b"12345")
    await cache.put(key("e2"), b"12345")
    await cache.get(key("e1"))

    await cache.put(key("e3"), b"12345")

    assert await cache.get(key("e2")) is None
    assert await cache.get(key("e1")) == b"12345"
    assert cache.size_bytes == 10


async def test_an_unreachable_redis_is_unavailable_and_fails_fast() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", TTL, retry_seconds=30)

    with pytest.raises(CacheUnavailable):
        await cache.get(key())
    with pytest.raises(CacheUnavailable, match="moments ago"):
        await cache.get(key())
    await cache.close()
