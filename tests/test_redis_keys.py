"""Redis key names: what one operation touches shares a cluster slot, and an upgrade keeps the
ledger and the model pointer written under the names before the hash tags."""

from __future__ import annotations

from pathlib import Path

from redis import asyncio as aioredis
from redis.crc import key_slot

from cache import CacheKey
from cache.redis import _index_key, deleted_key
from keyspace import (
    LEDGER,
    MODEL_ACTIVE,
    MODEL_AUDIT,
    MODEL_SWAPS,
    adopt_legacy_names,
    ledger_debited,
    queue_shard,
)
from ledger import RedisLedger
from render.queue import JobQueue
from tests.support.servers import start_redis


def slots(*keys: str) -> set[int]:
    return {key_slot(key.encode()) for key in keys}


def test_an_images_renditions_index_and_delete_mark_share_one_slot() -> None:
    rendition = CacheKey("kq3XbZ0aR1W2", "espcn:2", "webp", 85, "w320:h0:inside", "m2")
    other_image = CacheKey("Zz9Yy8Xx7Ww6", "espcn:2", "webp", 85)

    assert len(slots(str(rendition), _index_key("kq3XbZ0aR1W2"), deleted_key("kq3XbZ0aR1W2"))) == 1
    assert slots(str(rendition)) != slots(str(other_image))


def test_the_ledger_and_the_model_pointer_each_live_in_one_slot() -> None:
    assert len(slots(LEDGER, ledger_debited("a"), ledger_debited("b"))) == 1
    assert len(slots(MODEL_ACTIVE, MODEL_AUDIT, MODEL_SWAPS)) == 1


def test_queue_shards_have_slots_of_their_own_and_keep_their_jobs_in_flight_marks() -> None:
    queue = JobQueue(aioredis.Redis(), "srstore:render", 256, shards=8)  # never connects
    key = CacheKey("kq3XbZ0aR1W2", "espcn:2", "png")
    shard = queue.shard_of(key)

    assert len(slots(*queue.shards)) == 8
    assert slots(shard, queue._inflight(shard, key)) == slots(shard)
    assert queue.shards[0] == queue_shard("srstore:render", 0) == "{srstore:render:0}"


async def test_an_upgraded_redis_keeps_its_ledger_and_model_pointer(tmp_path: Path) -> None:
    server = start_redis(tmp_path)
    client = aioredis.Redis.from_url(server.url)
    try:
        await client.hset("srstore:ledger", mapping={"original_bytes": 9000, "images": 3})
        await client.set("srstore:model:active", "espcn:2")
        await client.set(MODEL_ACTIVE, "srcnn:1")  # written by a new process already: kept

        adopted = await adopt_legacy_names(client)
        again = await adopt_legacy_names(client)
        ledger = RedisLedger(server.url)
        totals = await ledger.totals()
        await ledger.close()
        active = await client.get(MODEL_ACTIVE)
    finally:
        await client.aclose()
        server.stop()

    assert adopted == ["srstore:ledger"]
    assert again == []
    assert (totals.original_bytes, totals.images) == (9000, 3)
    assert active == b"srcnn:1"


def test_api_keys_and_their_active_count_share_one_slot() -> None:
    """A revoke moves both in one script."""
    from keyspace import API_KEYS, API_KEYS_ACTIVE

    assert len(slots(API_KEYS, API_KEYS_ACTIVE)) == 1
