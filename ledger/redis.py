"""The ledger as one Redis hash, moved with ``HINCRBY`` in one script: full mode.

The totals are the fields ``original_bytes``, ``stored_bytes`` and ``images``; each
representation's share is the same three fields prefixed ``{representation}:``.

The hash has no TTL, so a Redis that evicts with ``volatile-lru`` (every cache entry has a
TTL) never evicts it; keep AOF persistence on so it survives a Redis restart. The hash and
the debited marks share the ``{ledger}`` hash tag, so on a Redis Cluster they live on one
master and the debit script can touch both (see :mod:`keyspace`).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

from redis.exceptions import RedisError

from keyspace import COSTS, LAST_READ, LEDGER, connect, ledger_debited
from ledger.base import DEBIT_MEMORY_SECONDS, LedgerUnavailable, Share, Spending, Totals

LEDGER_KEY = LEDGER
COSTS_KEY = COSTS  # amounts spent, the recent dollars, the integrated gauges
LAST_READ_KEY = LAST_READ  # a sorted set: image id by when it was last read
_FIELDS = ("original_bytes", "stored_bytes", "images")

# KEYS: the ledger. ARGV: original bytes, stored bytes, images, the representation.
_ADD = """
local amounts = {
  original_bytes = tonumber(ARGV[1]), stored_bytes = tonumber(ARGV[2]), images = tonumber(ARGV[3])
}
for field, amount in pairs(amounts) do
  redis.call('HINCRBY', KEYS[1], field, amount)
  redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':' .. field, amount)
end
return 1
"""

# KEYS: the ledger, the image's "debited" mark. ARGV: original bytes, stored bytes, the mark's
# lifetime, the representation.
_DEBIT_ONCE = """
if not redis.call('SET', KEYS[2], '1', 'NX', 'EX', ARGV[3]) then return 0 end
local amounts = {
  original_bytes = -tonumber(ARGV[1]), stored_bytes = -tonumber(ARGV[2]), images = -1
}
for field, amount in pairs(amounts) do
  redis.call('HINCRBY', KEYS[1], field, amount)
  redis.call('HINCRBY', KEYS[1], ARGV[4] .. ':' .. field, amount)
end
return 1
"""


# The server's clock, so that every process decays and integrates on the same one.
_NOW = """
local time = redis.call('TIME')
local now = tonumber(time[1]) + tonumber(time[2]) / 1e6
"""

# KEYS: costs. ARGV: window seconds (0: only read), dollars to add. Returns the recent dollars.
_RECENT = (
    _NOW
    + """
local dollars = tonumber(redis.call('HGET', KEYS[1], 'recent:dollars') or '0')
local at = tonumber(redis.call('HGET', KEYS[1], 'recent:at') or tostring(now))
dollars = dollars * math.exp(-math.max(0, now - at) / tonumber(ARGV[1]))
if tonumber(ARGV[2]) ~= 0 then
  dollars = dollars + tonumber(ARGV[2])
  redis.call(
    'HSET', KEYS[1], 'recent:dollars', string.format('%.12g', dollars),
    'recent:at', string.format('%.6f', now))
end
return string.format('%.12g', dollars)
"""
)

# KEYS: costs. ARGV: the amount's name, the gauge's value now.
_INTEGRATE = (
    _NOW
    + """
local value = redis.call('HGET', KEYS[1], 'gauge:' .. ARGV[1])
local at = redis.call('HGET', KEYS[1], 'gauge_at:' .. ARGV[1])
local added = 0
if value and at then
  added = tonumber(value) * math.max(0, now - tonumber(at))
  redis.call('HINCRBYFLOAT', KEYS[1], 'amount:' .. ARGV[1], string.format('%.6f', added))
end
redis.call(
  'HSET', KEYS[1], 'gauge:' .. ARGV[1], ARGV[2],
  'gauge_at:' .. ARGV[1], string.format('%.6f', now))
return string.format('%.6f', added)
"""
)


class RedisLedger:
    def __init__(self, url: str, cluster: bool = False) -> None:
        self.client = connect(url, cluster, socket_timeout=2, socket_connect_timeout=2)
        self._add = self.client.register_script(_ADD)
        self._debit_once = self.client.register_script(_DEBIT_ONCE)
        self._recent = self.client.register_script(_RECENT)
        self._integrate = self.client.register_script(_INTEGRATE)

    async def add(
        self, original_bytes: int, stored_bytes: int, images: int, representation: str = "x4"
    ) -> None:
        args: list[int | str] = [original_bytes, stored_bytes, images, representation]
        try:
            await self._add(keys=[LEDGER_KEY], args=args)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def debit_once(
        self, image_id: str, original_bytes: int, stored_bytes: int, representation: str = "x4"
    ) -> bool:
        keys = [LEDGER_KEY, ledger_debited(image_id)]
        args: list[int | str] = [original_bytes, stored_bytes, DEBIT_MEMORY_SECONDS, representation]
        try:
            debited = await self._debit_once(keys=keys, args=args)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        return bool(debited)

    async def totals(self) -> Totals:
        try:
            values = await self.client.hgetall(LEDGER_KEY)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        fields = {_text(key): int(value) for key, value in values.items()}
        shares: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for key, value in fields.items():
            representation, _, field = key.rpartition(":")
            if representation and field in _FIELDS:
                shares[representation][field] = value
        return Totals(
            fields.get("original_bytes", 0),
            fields.get("stored_bytes", 0),
            fields.get("images", 0),
            {name: Share(**share) for name, share in shares.items() if any(share.values())},
        )

    async def spend(
        self, amounts: Mapping[str, float], dollars: float, window_seconds: float
    ) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                for name, amount in amounts.items():
                    if amount:
                        pipe.hincrbyfloat(COSTS_KEY, f"amount:{name}", amount)
                await pipe.execute()
            if dollars:
                await self._recent(keys=[COSTS_KEY], args=[window_seconds, dollars])
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def integrate(self, name: str, value: float) -> float:
        try:
            return float(await self._integrate(keys=[COSTS_KEY], args=[name, value]))
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def spending(self, window_seconds: float) -> Spending:
        try:
            values = await self.client.hgetall(COSTS_KEY)
            recent = await self._recent(keys=[COSTS_KEY], args=[window_seconds, 0])
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        amounts = {
            _text(key).removeprefix("amount:"): float(value)
            for key, value in values.items()
            if _text(key).startswith("amount:")
        }
        return Spending(amounts, float(recent))

    async def touch(self, last_read: Mapping[str, float]) -> None:
        if not last_read:
            return
        try:
            await self.client.zadd(LAST_READ_KEY, dict(last_read), gt=True)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def idle(self, before: float, limit: int) -> list[str]:
        try:
            ids = await self.client.zrangebyscore(
                LAST_READ_KEY, "-inf", f"({before}", start=0, num=limit
            )
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc
        return [_text(image_id) for image_id in ids if isinstance(image_id, bytes | str)]

    async def forget(self, image_id: str) -> None:
        try:
            await self.client.zrem(LAST_READ_KEY, image_id)
        except RedisError as exc:
            raise LedgerUnavailable(f"Redis ledger: {exc}") from exc

    async def close(self) -> None:
        await self.client.aclose()


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
