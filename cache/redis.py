"""Rendered images in Redis: ``GETEX ... EX`` renews the TTL on every hit in one round trip.

A large rendition (above ``TtlBySize.large_bytes``) is admitted only once it was asked for
``admit_after`` times within its TTL, and then kept for at most its shorter TTL. Before that
it is kept on probation, for ``probation_seconds``: long enough for the API process waiting
on a worker to read it (queue mode), and for a second request soon after to find it. So one
client asking for many renditions once each cannot fill the cache with them for long. Under
``maxmemory``, ``volatile-lfu`` (see the README) evicts the least frequently read first.

Each image also has a set naming its renditions (``hr:{<id>}:keys``), renewed with them, so a
DELETE finds every rendition without scanning the keyspace.

A DELETE first marks the image deleted (``hr:{<id>}:deleted``) and drops its renditions in one
script; a put is one script that refuses to write once the mark exists. Redis runs scripts one
at a time, so a render that read the image before the delete and finishes after it cannot
cache it again (it gets :class:`ImageDeleted`), in any API process or worker. Every key of
one image carries the image's hash tag, so the scripts run on a Redis Cluster too.
"""

from __future__ import annotations

import contextlib
import logging
import time

from redis.exceptions import RedisError

from cache.base import (
    TOMBSTONE_MARGIN_SECONDS,
    CacheKey,
    CacheUnavailable,
    ImageDeleted,
    TtlBySize,
)
from keyspace import connect, eval_and_wait, on_every_master, rendition_prefix

log = logging.getLogger(__name__)

WAIT_MS = 250  # how long a DELETE waits for its mark to reach the replicas (under the 0.5 s
# socket timeout of the cache connection)


# KEYS: entry, index, delete mark, request count. ARGV: data, TTL, large bytes, large TTL,
# requests a large entry needs before it is kept, the probation TTL of one not admitted yet.
# Returns 0 deleted, 1 kept, 2 kept on probation.
_PUT_UNLESS_DELETED = """
if redis.call('EXISTS', KEYS[3]) == 1 then return 0 end
local ttl = tonumber(ARGV[2])
local large = tonumber(ARGV[3]) > 0 and #ARGV[1] > tonumber(ARGV[3])
if large and tonumber(ARGV[4]) > 0 then ttl = math.min(ttl, tonumber(ARGV[4])) end
if large and tonumber(ARGV[5]) > 1 then
  local asked = redis.call('INCR', KEYS[4])
  redis.call('EXPIRE', KEYS[4], ttl)
  if asked < tonumber(ARGV[5]) then
    redis.call('SET', KEYS[1], ARGV[1], 'EX', math.min(ttl, tonumber(ARGV[6])))
    redis.call('SADD', KEYS[2], KEYS[1])
    redis.call('EXPIRE', KEYS[2], ARGV[2])
    return 2
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ttl)
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('EXPIRE', KEYS[2], ARGV[2])
return 1
"""

# KEYS: entry, index. ARGV: TTL, large bytes, large TTL. A hit renews the entry's own TTL.
_GET_AND_RENEW = """
local data = redis.call('GET', KEYS[1])
if not data then return false end
local ttl = tonumber(ARGV[1])
if tonumber(ARGV[2]) > 0 and #data > tonumber(ARGV[2]) and tonumber(ARGV[3]) > 0 then
  ttl = math.min(ttl, tonumber(ARGV[3]))
end
redis.call('EXPIRE', KEYS[1], ttl)
redis.call('EXPIRE', KEYS[2], ARGV[1])
return data
"""

# KEYS: index, delete mark. ARGV: the mark's lifetime.
_MARK_DELETED_AND_DROP = """
redis.call('SET', KEYS[2], '1', 'EX', ARGV[1])
local members = redis.call('SMEMBERS', KEYS[1])
for _, member in ipairs(members) do redis.call('DEL', member) end
redis.call('DEL', KEYS[1])
return #members
"""


def _index_key(image_id: str) -> str:
    return f"{rendition_prefix(image_id)}keys"


def deleted_key(image_id: str) -> str:
    return f"{rendition_prefix(image_id)}deleted"


def asked_key(key: CacheKey) -> str:
    """How often a large rendition not yet kept was asked for (the admission check)."""
    return f"{rendition_prefix(key.image_id)}asked:{key}"


class RedisCache:
    shared = True

    def __init__(
        self,
        url: str,
        ttl_seconds: int,
        retry_seconds: float = 2.0,
        ttl_by_size: TtlBySize | None = None,
        admit_after: int = 1,
        probation_seconds: int = 10,
        cluster: bool = False,
        wait_replicas: int = 0,
        timeout_seconds: float = 0.5,
    ) -> None:
        self.wait_replicas = wait_replicas
        self.ttl_seconds = ttl_seconds
        self.ttl_by_size = ttl_by_size or TtlBySize()
        self.admit_after = admit_after
        self.probation_seconds = probation_seconds
        self.retry_seconds = retry_seconds
        self.tombstone_seconds = ttl_seconds + TOMBSTONE_MARGIN_SECONDS
        self.client = connect(
            url,
            cluster,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            health_check_interval=30,
        )
        self._put = self.client.register_script(_PUT_UNLESS_DELETED)
        self._drop = self.client.register_script(_MARK_DELETED_AND_DROP)
        self._get = self.client.register_script(_GET_AND_RENEW)
        self._down_until = 0.0

    async def get(self, key: CacheKey) -> bytes | None:
        self._fail_fast()
        sizes = self.ttl_by_size
        try:
            data = await self._get(
                keys=[str(key), _index_key(key.image_id)],
                args=[self.ttl_seconds, sizes.large_bytes, sizes.large_ttl_seconds],
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return data  # type: ignore[no-any-return]

    async def put(self, key: CacheKey, data: bytes) -> None:
        self._fail_fast()
        keys = [str(key), _index_key(key.image_id), deleted_key(key.image_id), asked_key(key)]
        sizes = self.ttl_by_size
        args: list[bytes | int] = [data, self.ttl_seconds, sizes.large_bytes]
        args += [sizes.large_ttl_seconds, self.admit_after, self.probation_seconds]
        try:
            kept = await self._put(keys=keys, args=args)
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if not kept:
            raise ImageDeleted(key.image_id)

    async def drop_image(self, image_id: str) -> None:
        index = _index_key(image_id)
        try:
            members = await self.client.smembers(index)
            await self.client.delete(index, *members)
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def mark_deleted(self, image_id: str) -> None:
        """With ``wait_replicas``, the mark and the drops must also reach that many of the
        master's connected replicas (``WAIT``, up to ``WAIT_MS``): a failover then cannot bring
        back renditions of an image whose DELETE was answered 204. A master with fewer replicas
        (after a failover, before the old master returns) has no failover to lose them to, so
        all it has must have them. Short of that the mark is taken back and
        :class:`CacheUnavailable` raised: the DELETE answers 503 and deletes nothing, and the
        image renders as before.
        """
        keys = [_index_key(image_id), deleted_key(image_id)]
        try:
            if not self.wait_replicas:
                await self._drop(keys=keys, args=[self.tombstone_seconds])
                return
            _, reached, connected = await eval_and_wait(
                self.client,
                _MARK_DELETED_AND_DROP,
                keys,
                [self.tombstone_seconds],
                self.wait_replicas,
                WAIT_MS,
            )
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        if reached < min(self.wait_replicas, connected):
            with contextlib.suppress(RedisError):
                await self.client.delete(deleted_key(image_id))
            raise CacheUnavailable(f"the delete mark reached {reached} of {connected} replicas")

    async def ping(self) -> None:
        """Every master answers (on a cluster, one that is down leaves some images uncached)."""
        try:
            await on_every_master(self.client, "PING")
        except RedisError as exc:
            raise self._unavailable(exc) from exc

    async def held_bytes(self) -> int:
        """Redis's ``used_memory_dataset``: the RAM the fleet's keys occupy (entries with
        their allocator overhead, and the small queue and ledger keys beside them), without
        the server's own buffers, which a cache of any content needs. On a cluster, the sum
        over its masters (replicas hold copies)."""
        try:
            infos = await on_every_master(self.client, "INFO", "memory")
        except RedisError as exc:
            raise self._unavailable(exc) from exc
        return sum(int(info["used_memory_dataset"]) for info in infos)

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
