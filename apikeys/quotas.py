"""Per-key quota counters in fixed windows, shared by every process of a fleet.

A counter is named by key id, quota and window (``uploads`` in the minute that starts at
12:00, say) and lives until its window ends. :meth:`take` spends an amount only if it fits
under the limit, atomically (a Lua script in Redis, a transaction in SQLite), so concurrent
uploads of one key cannot overshoot it together; :meth:`add` records what was spent after the
fact (CPU seconds are known only once the work is done).
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
from collections.abc import Callable
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, TypeVar

from redis.exceptions import RedisError

import keyspace
from apikeys.base import KeyStoreUnavailable

T = TypeVar("T")


@dataclass(frozen=True)
class Window:
    """The fixed window ``seconds`` long that holds ``now``."""

    seconds: int
    now: float

    @property
    def index(self) -> int:
        return int(self.now // self.seconds)

    @property
    def retry_after(self) -> int:
        """Whole seconds until the window ends: the next one starts empty."""
        return max(1, math.ceil((self.index + 1) * self.seconds - self.now))


class Quotas(Protocol):
    async def take(
        self, key_id: str, quota: str, amount: float, limit: float, window: Window
    ) -> bool:
        """Spend ``amount`` if the window's total stays within ``limit``; False if not."""
        ...

    async def add(self, key_id: str, quota: str, amount: float, window: Window) -> None:
        """Record ``amount`` spent, whatever the limit (it is checked by the next take)."""
        ...

    async def used(self, key_id: str, quota: str, window: Window) -> float: ...


def counter_name(key_id: str, quota: str, window: Window) -> str:
    return keyspace.quota_counter(key_id, f"{quota}:{window.seconds}:{window.index}")


# KEYS: the counter. ARGV: amount, limit, lifetime in seconds. 1: taken.
_TAKE = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
if used + tonumber(ARGV[1]) > tonumber(ARGV[2]) then return 0 end
redis.call('INCRBYFLOAT', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""


class RedisQuotas:
    def __init__(self, url: str, cluster: bool = False) -> None:
        self.client = keyspace.connect(url, cluster, socket_timeout=2, socket_connect_timeout=2)
        self._take = self.client.register_script(_TAKE)

    async def take(
        self, key_id: str, quota: str, amount: float, limit: float, window: Window
    ) -> bool:
        name = counter_name(key_id, quota, window)
        try:
            return bool(await self._take(keys=[name], args=[amount, limit, window.seconds + 60]))
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis quotas: {exc}") from exc

    async def add(self, key_id: str, quota: str, amount: float, window: Window) -> None:
        name = counter_name(key_id, quota, window)
        try:
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.incrbyfloat(name, amount)
                pipe.expire(name, window.seconds + 60)
                await pipe.execute()
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis quotas: {exc}") from exc

    async def used(self, key_id: str, quota: str, window: Window) -> float:
        try:
            value = await self.client.get(counter_name(key_id, quota, window))
        except RedisError as exc:
            raise KeyStoreUnavailable(f"Redis quotas: {exc}") from exc
        return float(value or 0)

    async def close(self) -> None:
        await self.client.aclose()


_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS quotas"
    " (name TEXT PRIMARY KEY, used REAL NOT NULL, ends REAL NOT NULL)"
)


class LocalQuotas:
    """Counters in the ledger's SQLite file: every uvicorn worker of the machine shares them."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def take(
        self, key_id: str, quota: str, amount: float, limit: float, window: Window
    ) -> bool:
        name, ends = counter_name(key_id, quota, window), window.now + window.retry_after

        def take(db: sqlite3.Connection) -> bool:
            db.execute("DELETE FROM quotas WHERE ends < ?", (window.now,))
            row = db.execute("SELECT used FROM quotas WHERE name = ?", (name,)).fetchone()
            used = row[0] if row else 0.0
            if used + amount > limit:
                return False
            db.execute(
                "INSERT INTO quotas VALUES (?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " used = used + excluded.used",
                (name, amount, ends),
            )
            return True

        return await asyncio.to_thread(self._transaction, take)

    async def add(self, key_id: str, quota: str, amount: float, window: Window) -> None:
        await self.take(key_id, quota, amount, math.inf, window)

    async def used(self, key_id: str, quota: str, window: Window) -> float:
        name = counter_name(key_id, quota, window)

        def used(db: sqlite3.Connection) -> float:
            row = db.execute("SELECT used FROM quotas WHERE name = ?", (name,)).fetchone()
            return float(row[0]) if row else 0.0

        return await asyncio.to_thread(self._transaction, used)

    def _transaction(self, action: Callable[[sqlite3.Connection], T]) -> T:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                db.execute("BEGIN IMMEDIATE")  # read and write under one lock
                db.execute(_SCHEMA)
                return action(db)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreUnavailable(f"quotas {self.path}: {exc}") from exc
