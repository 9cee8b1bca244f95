"""Keys in full mode: one Redis hash, key id to record, shared by the whole fleet.

The hash and the count of active keys share the ``{keys}`` hash tag: a revoke moves both.

The hash has no TTL, so ``volatile-lru`` eviction never takes it; keep AOF persistence on.
"""

from __future__ import annotations

from redis.exceptions import RedisError

import keyspace
from apikeys.base import KeyRecord, KeyStoreUnavailable, revoked

KEYS_HASH = keyspace.API_KEYS
ACTIVE_COUNT = keyspace.API_KEYS_ACTIVE

# KEYS: the hash, the active count. ARGV: id, the revoked record. 0: no such key.
_REVOKE = """
local current = redis.call('HGET', KEYS[1], ARGV[1])
if not current then return 0 end
if string.find(current, '"revoked_at": null', 1, true) then
  redis.call('DECR', KEYS[2])
end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
return 1
"""


class RedisKeyStore:
    def __init__(self, url: str, cluster: bool = False) -> None:
        self.client = keyspace.connect(url, cluster, socket_timeout=2, socket_connect_timeout=2)
        self._revoke = self.client.register_script(_REVOKE)

    async def add(self, record: KeyRecord) -> None:
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(KEYS_HASH, record.id, record.to_json())
                pipe.incr(ACTIVE_COUNT)
                await pipe.execute()
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis key store: {exc}") from exc

    async def get(self, key_id: str) -> KeyRecord | None:
        try:
            text = await self.client.hget(KEYS_HASH, key_id)
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis key store: {exc}") from exc
        return KeyRecord.from_json(text) if text is not None else None

    async def all(self) -> list[KeyRecord]:
        try:
            texts = await self.client.hvals(KEYS_HASH)
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis key store: {exc}") from exc
        records = [KeyRecord.from_json(text) for text in texts]
        return sorted(records, key=lambda r: (r.created_at, r.id))

    async def revoke(self, key_id: str) -> KeyRecord | None:
        current = await self.get(key_id)
        if current is None:
            return None
        record = revoked(current)
        try:
            await self._revoke(keys=[KEYS_HASH, ACTIVE_COUNT], args=[key_id, record.to_json()])
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis key store: {exc}") from exc
        return record

    async def any_active(self) -> bool:
        try:
            count = await self.client.get(ACTIVE_COUNT)
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis key store: {exc}") from exc
        return int(count or 0) > 0

    async def close(self) -> None:
        await self.client.aclose()
