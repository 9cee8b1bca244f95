"""One contract for every HR cache: the in-process LRU and Redis (a real server)."""

from __future__ import annotations

import logging
import os
import signal
import time
import tracemalloc
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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
    TtlBySize,
)
from cache.memory import ENTRY_OVERHEAD_BYTES
from cache.redis import _index_key
from cache.tombstones import SWEEP_INTERVAL_SECONDS
from tests.support.servers import (
    RedisClusterServer,
    RedisServer,
    free_port,
    start_redis,
    start_redis_cluster,
)
from tests.support.waiting import until

TTL = 60


@pytest.fixture
def tombstones(tmp_path: Path) -> Tombstones:
    return Tombstones(tmp_path / "tombstones", lifetime_seconds=TTL + 10)


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def cache(request: pytest.FixtureRequest, tombstones: Tombstones) -> AsyncIterator[HRCache]:
    if request.param == "memory":
        yield MemoryCache(TTL, max_bytes=64 * 1024, tombstones=tombstones)
        return
    cluster = request.param == "redis-cluster"
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_cluster" if cluster else "redis_server"
    )
    redis_cache = RedisCache(server.url, TTL, cluster=cluster)
    yield redis_cache
    await redis_cache.close()


@pytest.mark.parametrize("cluster", [False, True], ids=["redis", "redis-cluster"])
async def test_redis_holds_the_bytes_of_what_it_caches_on_every_master(
    cluster: bool, tmp_path: Path
) -> None:
    """What the cost ledger integrates: the dataset memory of a Redis of its own (on a
    cluster, summed over its masters) grows by at least what a put stores."""
    server = start_redis_cluster(tmp_path / "c") if cluster else start_redis(tmp_path / "r")
    cache = RedisCache(server.url, TTL, cluster=cluster)
    try:
        await cache.ping()
        before = await cache.held_bytes()
        for n in range(8):  # on a cluster, images on every master
            await cache.put(key(f"held-{n}"), os.urandom(64 * 1024))
        grown = await cache.held_bytes() - before
    finally:
        await cache.close()
        server.stop()

    assert grown >= 8 * 64 * 1024


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


async def test_dropping_an_image_with_nothing_cached_succeeds_again_and_again(
    cache: HRCache,
) -> None:
    """A swap or a DELETE drops renditions that may never have been read: no error, twice."""
    await cache.put(key("a5"), b"p")
    await cache.drop_image("a5")
    await cache.drop_image("a5")
    await cache.drop_image(f"n{uuid.uuid4().hex[:8]}")

    assert await cache.get(key("a5")) is None


@pytest.mark.parametrize(
    "operation", ["get", "put", "drop_image", "mark_deleted", "ping", "held_bytes"]
)
async def test_an_unreachable_redis_is_logged_and_raised_with_its_own_error(
    operation: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The operator's log line and the 503's logged cause name what failed (here the port
    that refused), not only that Redis did."""
    port = free_port()
    unreachable = RedisCache(f"redis://127.0.0.1:{port}", TTL, retry_seconds=0)
    calls = {
        "get": lambda: unreachable.get(key("u1")),
        "put": lambda: unreachable.put(key("u1"), b"x"),
        "drop_image": lambda: unreachable.drop_image("u1"),
        "mark_deleted": lambda: unreachable.mark_deleted("u1"),
        "ping": unreachable.ping,
        "held_bytes": unreachable.held_bytes,
    }
    try:
        with (
            caplog.at_level(logging.WARNING, "cache.redis"),
            pytest.raises(CacheUnavailable) as raised,
        ):
            await calls[operation]()
    finally:
        await unreachable.close()

    assert str(raised.value).startswith("Redis: ") and str(port) in str(raised.value)
    logged = [r.getMessage() for r in caplog.records if r.name == "cache.redis"]
    assert logged[-1].startswith("Redis unavailable, serving uncached for 0.0 s: ")
    assert str(port) in logged[-1]


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

    with pytest.raises(ImageDeleted) as refused:
        await cache.put(key(image_id, "png"), b"late render")

    assert str(refused.value) == image_id
    assert await cache.get(key(image_id, "png")) is None
    await cache.put(key("other", "png"), b"o")
    assert await cache.get(key("other", "png")) == b"o"


async def test_a_delete_in_one_process_empties_the_memory_cache_of_another(
    tombstones: Tombstones,
) -> None:
    """Two in-process caches sharing a data directory, as ``serve --workers 2`` runs them."""
    here = MemoryCache(TTL, max_bytes=64 * 1024, tombstones=tombstones)
    there = MemoryCache(TTL, max_bytes=64 * 1024, tombstones=tombstones)
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
    a mark made a sweep interval ago, well within its lifetime, survives the next sweep.
    The data directory need not exist yet: the first mark makes it."""
    offset = [0.0]
    marks = Tombstones(
        tmp_path / "data" / "tombstones",
        lifetime_seconds=300,
        clock=lambda: time.time() + offset[0],
    )
    marks.mark("earlier")
    offset[0] = SWEEP_INTERVAL_SECONDS + 1

    marks.mark("later")  # sweeps: "earlier" is a minute old, with four more to live

    assert marks.marked("earlier") and marks.marked("later")
    assert sorted(os.listdir(tmp_path / "data" / "tombstones")) == ["earlier", "later"]
    offset[0] = 300 + 2 * SWEEP_INTERVAL_SECONDS + 2
    marks.mark("last")  # both are past their lifetime now, and are swept
    assert sorted(os.listdir(tmp_path / "data" / "tombstones")) == ["last"]


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
    client = redis.Redis.from_url(redis_server.url)

    await until(lambda: not client.exists(str(key("t2"))), "Redis expiring the unread entry")

    assert await cache.get(key("t2")) is None
    client.close()
    await cache.close()


async def test_memory_hit_renews_the_ttl_and_unread_entries_expire(
    tombstones: Tombstones,
) -> None:
    now = [0.0]
    cache = MemoryCache(
        ttl_seconds=10, max_bytes=10_000, tombstones=tombstones, clock=lambda: now[0]
    )
    await cache.put(key("m1"), b"a")
    await cache.put(key("m2"), b"b")

    now[0] = 8.0
    assert await cache.get(key("m1")) == b"a"
    now[0] = 15.0

    assert await cache.get(key("m1")) == b"a"
    assert await cache.get(key("m2")) is None


def bounded(tombstones: Tombstones, entries: int, size: int = 1000) -> MemoryCache:
    """A cache with room for exactly ``entries`` entries of ``size`` bytes."""
    return MemoryCache(
        TTL, max_bytes=entries * (size + ENTRY_OVERHEAD_BYTES), tombstones=tombstones
    )


async def read(cache: HRCache, name: str, size: int = 1000) -> bytes | None:
    """A read as the service does it: look up, and on a miss render and keep."""
    if (data := await cache.get(key(name))) is None:
        await cache.put(key(name), name.encode().ljust(size, b"."))
    return data


async def test_an_entry_asked_for_as_often_replaces_the_least_recently_used(
    tombstones: Tombstones,
) -> None:
    cache = bounded(tombstones, entries=2)
    await read(cache, "e1")
    await read(cache, "e2")
    await read(cache, "e3")  # each asked for once: the least recent, e1, makes room

    assert await cache.get(key("e1")) is None
    assert await cache.get(key("e2")) is not None
    assert await cache.get(key("e3")) is not None
    assert cache.size_bytes == 2 * (1000 + ENTRY_OVERHEAD_BYTES)


async def test_renditions_asked_for_once_do_not_flush_the_hot_set(
    tombstones: Tombstones,
) -> None:
    """Issue 23's "45 requests flush the whole cache": they now leave what is read often."""
    cache = bounded(tombstones, entries=8)
    hot = [f"hot{n}" for n in range(5)]
    for _ in range(3):
        for name in hot:
            await read(cache, name)

    for n in range(45):
        await read(cache, f"once{n}")

    assert all([await cache.get(key(name)) is not None for name in hot])
    assert cache.size_bytes <= cache.max_bytes


async def test_a_rendition_that_becomes_popular_is_admitted(tombstones: Tombstones) -> None:
    cache = bounded(tombstones, entries=2)
    for name in ("a", "b", "a", "b"):
        await read(cache, name)
    for _ in range(3):
        await read(cache, "new")  # refused while asked for less than a and b, then kept

    assert await cache.get(key("new")) is not None


async def test_the_memory_bound_counts_what_an_entry_really_holds(
    tombstones: Tombstones,
) -> None:
    """Small entries cost far more than their bytes: the bound counts it (tracemalloc)."""
    cache = MemoryCache(TTL, max_bytes=2**30, tombstones=tombstones)
    count = 2000
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for n in range(count):
            rendition = CacheKey(uuid.uuid4().hex[:22], "espcn:2", "jpeg", 90, f"w{n}h200", "m2")
            await cache.put(rendition, os.urandom(400))
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()

    assert 0.75 < cache.size_bytes / held < 1.33


async def test_memory_held_by_expired_entries_is_reclaimed_unasked(
    tombstones: Tombstones,
) -> None:
    now = [0.0]
    cache = MemoryCache(
        ttl_seconds=10, max_bytes=10**6, tombstones=tombstones, clock=lambda: now[0]
    )
    await cache.put(key("short"), b"s" * 1000)
    now[0] = 5.0
    await cache.put(key("later"), b"l" * 1000)

    now[0] = 11.0  # "short" unread for its TTL, "later" still live; neither asked for
    held = await cache.held_bytes()

    assert held == 1000 + ENTRY_OVERHEAD_BYTES
    assert await cache.get(key("later")) is not None


async def test_a_large_entry_is_kept_unread_for_less_time(tombstones: Tombstones) -> None:
    cache = MemoryCache(
        TTL, max_bytes=2**20, tombstones=tombstones, ttl_by_size=TtlBySize(1000, 10)
    )
    await cache.put(key("small"), b"s" * 1000)
    await cache.put(key("large"), b"l" * 1001)

    assert cache.expires_in(key("small")) == pytest.approx(TTL, abs=1)
    assert cache.expires_in(key("large")) == pytest.approx(10, abs=1)


async def test_redis_keeps_a_large_rendition_asked_for_once_only_on_probation(
    redis_server: RedisServer, redis_client: redis.Redis
) -> None:
    cache = RedisCache(
        redis_server.url, TTL, ttl_by_size=TtlBySize(1000, 30), admit_after=2, probation_seconds=5
    )
    image_id = uuid.uuid4().hex
    small, large = key(image_id, "png"), key(image_id, "jpeg")
    await cache.put(small, b"s" * 1000)
    await cache.put(large, b"l" * 1001)
    on_probation = redis_client.ttl(str(large))
    await cache.put(large, b"l" * 1001)  # asked for again: admitted, for the large TTL
    admitted = redis_client.ttl(str(large))
    redis_client.expire(str(large), 3)
    renewed = await cache.get(large)
    await cache.close()

    assert redis_client.ttl(str(small)) > 30
    assert 0 < on_probation <= 5
    assert 5 < admitted <= 30
    assert renewed is not None and 5 < redis_client.ttl(str(large)) <= 30


async def test_an_unreachable_redis_is_unavailable_and_fails_fast() -> None:
    cache = RedisCache(f"redis://127.0.0.1:{free_port()}/0", TTL, retry_seconds=30)

    with pytest.raises(CacheUnavailable):
        await cache.get(key())
    with pytest.raises(CacheUnavailable) as refused:
        await cache.get(key())
    assert str(refused.value) == "Redis was unreachable moments ago"
    await cache.close()


@pytest.mark.parametrize("where", ["redis", "redis-cluster"])
async def test_a_delete_mark_reaches_the_replicas_there_are(
    request: pytest.FixtureRequest, where: str
) -> None:
    """SRSTORE_REDIS_WAIT_REPLICAS=1: on the cluster (a replica per master) a replica
    acknowledges the mark; the session's single Redis has none to wait for, and the mark
    holds all the same."""
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_cluster" if where == "redis-cluster" else "redis_server"
    )
    cache = RedisCache(server.url, TTL, cluster=where == "redis-cluster", wait_replicas=1)
    image_id = f"wait-{uuid.uuid4().hex[:8]}"
    await cache.put(key(image_id), b"rendered")
    try:
        await cache.mark_deleted(image_id)
        with pytest.raises(ImageDeleted):
            await cache.put(key(image_id), b"again")
        left = await cache.get(key(image_id))
    finally:
        await cache.close()

    assert left is None


@asynccontextmanager
async def behind_a_silent_replica(tmp_path: Path) -> AsyncIterator[tuple[RedisServer, RedisCache]]:
    """A master whose one replica follows but does not answer in time (paused), and a cache
    on it that waits for one replica."""
    master = start_redis(tmp_path / "master")
    replica = start_redis(tmp_path / "replica")
    follower = redis.Redis(port=replica.port)
    cache = RedisCache(master.url, TTL, wait_replicas=1)
    try:
        follower.replicaof("127.0.0.1", master.port)
        await until(lambda: follower.info("replication")["master_link_status"] == "up", "link")
        leader = redis.Redis(port=master.port)
        # The master lists the replica (ROLE) only once the sync is over, a moment after the
        # replica sees its link up; before that it has no replica to wait for.
        await until(lambda: len(leader.execute_command("ROLE")[2]) == 1, "replica listed")
        leader.close()
        replica.process.send_signal(signal.SIGSTOP)  # connected, and silent
        yield master, cache
    finally:
        replica.process.send_signal(signal.SIGCONT)
        follower.close()
        replica.stop()
        master.stop()
        await cache.close()


async def test_a_delete_mark_no_connected_replica_acknowledges_is_taken_back(
    tmp_path: Path,
) -> None:
    """The DELETE must fail, and the image stays cacheable rather than half deleted."""
    image_id = f"lag-{uuid.uuid4().hex[:8]}"
    async with behind_a_silent_replica(tmp_path) as (_, cache):
        with pytest.raises(CacheUnavailable) as refused:
            await cache.mark_deleted(image_id)
        cache._down_until = 0.0  # the failure's fail-fast pause is not under test here
        await cache.put(key(image_id), b"still cacheable")
        kept = await cache.get(key(image_id))

    assert "reached 0 of 1 replicas" in str(refused.value)
    assert kept == b"still cacheable"


async def test_a_master_lost_while_its_mark_is_taken_back_still_refuses_the_delete_cleanly(
    tmp_path: Path,
) -> None:
    """The master dies between the short WAIT and the take-back: the DELETE is refused as
    the cache being unavailable (a 503 to the client), not a Redis error (a 500)."""
    async with behind_a_silent_replica(tmp_path) as (master, cache):
        removing = cache.client.delete

        async def master_lost_first(*names: str) -> object:
            master.process.kill()
            master.process.wait()
            return await removing(*names)

        cache.client.delete = master_lost_first  # type: ignore[method-assign]
        with pytest.raises(CacheUnavailable) as refused:
            await cache.mark_deleted(f"lost-{uuid.uuid4().hex[:8]}")

    assert "reached 0 of 1 replicas" in str(refused.value)
