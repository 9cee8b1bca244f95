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

from redis.exceptions import RedisError

from keyspace import LEDGER, connect, ledger_debited
from ledger.base import DEBIT_MEMORY_SECONDS, LedgerUnavailable, Share, Totals

LEDGER_KEY = LEDGER
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


class RedisLedger:
    def __init__(self, url: str, cluster: bool = False) -> None:
        self.client = connect(url, cluster, socket_timeout=2, socket_connect_timeout=2)
        self._add = self.client.register_script(_ADD)
        self._debit_once = self.client.register_script(_DEBIT_ONCE)

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

    async def close(self) -> None:
        await self.client.aclose()


def _text(key: bytes | str) -> str:
    return key.decode() if isinstance(key, bytes) else key
