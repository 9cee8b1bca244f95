"""The ledger as one Redis hash, moved with ``HINCRBY`` in a transaction: full mode.

The hash has no TTL, so a Redis that evicts with ``volatile-lru`` (every cache entry has a
TTL) never evicts it; keep AOF persistence on so it survives a Redis restart.
"""

from __future__ import annotations

from redis import asyncio as aioredis
from redis.exceptions import RedisError

from ledger.base import DEBIT_MEMORY_SECONDS, LedgerUnavailable, Totals

LEDGER_KEY = "srstore:ledger"
_FIELDS = ("original_bytes", "stored_bytes", "images")

# KEYS: the ledger, the image's "debited" mark. ARGV: original bytes, stored bytes, lifetime.
_DEBIT_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then return 0 end
redis.call('HINCRBY', KEYS[1], 'original_bytes', -tonumber(ARGV[1]))
redis.call('HINCRBY', KEYS[1], 'stored_bytes', -tonumber(ARGV[2]))
redis.call('HINCRBY', KEYS[1], 'images', -1)
return 1
"""


class RedisLedger:
    def __init__(self, url: str) -> None:
        self.client = aioredis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._debit_once = self.client.register_script(_DEBIT_ONCE)

    async def add(self, original_bytes: int, stored_bytes: int, images: int) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for field, amount in zip(
                    _FIELDS, (original_bytes, stored_bytes, images), strict=True
                ):
                    pipe.hincrby(LEDGER_KEY, field, amount)
                await pipe.execute()
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def debit_once(self, image_id: str, original_bytes: int, stored_bytes: int) -> bool:
        keys = [LEDGER_KEY, f"{LEDGER_KEY}:debited:{image_id}"]
        try:
            debited = await self._debit_once(
                keys=keys, args=[original_bytes, stored_bytes, DEBIT_MEMORY_SECONDS]
            )
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        return bool(debited)

    async def totals(self) -> Totals:
        try:
            values = await self.client.hmget(LEDGER_KEY, _FIELDS)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        return Totals(*(int(v or 0) for v in values))

    async def close(self) -> None:
        await self.client.aclose()
