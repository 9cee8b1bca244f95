"""The ledger as a small SQLite file beside the local objects: the embedded default.

SQLite makes each update atomic and durable, and serialises the uvicorn worker processes
that share the file. One row holds the totals; one row per representation its share.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import Callable, Mapping
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from ledger.base import DEBIT_MEMORY_SECONDS, LedgerUnavailable, Share, Spending, Totals

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    original_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    images INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0);
CREATE TABLE IF NOT EXISTS representations (
    name TEXT PRIMARY KEY,
    original_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    images INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS debited (image_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS debited_at ON debited (at);
CREATE TABLE IF NOT EXISTS spent (name TEXT PRIMARY KEY, amount REAL NOT NULL);
CREATE TABLE IF NOT EXISTS recent (
    id INTEGER PRIMARY KEY CHECK (id = 1), dollars REAL NOT NULL, at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS gauges (name TEXT PRIMARY KEY, value REAL NOT NULL, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS last_read (image_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS last_read_at ON last_read (at);
"""
_TOUCH = (
    "INSERT INTO last_read VALUES (?, ?) ON CONFLICT (image_id) DO UPDATE SET"
    " at = max(at, excluded.at)"
)
_ADD_SPENT = (
    "INSERT INTO spent VALUES (?, ?) ON CONFLICT (name) DO UPDATE SET"
    " amount = amount + excluded.amount"
)
_ADD = (
    "UPDATE ledger SET original_bytes = original_bytes + ?, stored_bytes = stored_bytes + ?,"
    " images = images + ? WHERE id = 1"
)
_ADD_SHARE = (
    "INSERT INTO representations VALUES (?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
    " original_bytes = original_bytes + excluded.original_bytes,"
    " stored_bytes = stored_bytes + excluded.stored_bytes, images = images + excluded.images"
)
_READ = "SELECT original_bytes, stored_bytes, images FROM ledger WHERE id = 1"
_READ_SHARES = "SELECT name, original_bytes, stored_bytes, images FROM representations"


class LocalLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def add(
        self, original_bytes: int, stored_bytes: int, images: int, representation: str = "x4"
    ) -> None:
        amounts = (original_bytes, stored_bytes, images)

        def add(db: sqlite3.Connection) -> None:
            db.execute(_ADD, amounts)
            db.execute(_ADD_SHARE, (representation, *amounts))

        await asyncio.to_thread(self._run, add)

    async def debit_once(
        self, image_id: str, original_bytes: int, stored_bytes: int, representation: str = "x4"
    ) -> bool:
        amounts = (-original_bytes, -stored_bytes, -1)

        def debit(db: sqlite3.Connection) -> bool:
            """One transaction: SQLite serialises it against every other process's."""
            now = time.time()
            db.execute("DELETE FROM debited WHERE at < ?", (now - DEBIT_MEMORY_SECONDS,))
            marked = db.execute("INSERT OR IGNORE INTO debited VALUES (?, ?)", (image_id, now))
            if marked.rowcount != 1:
                return False
            db.execute(_ADD, amounts)
            db.execute(_ADD_SHARE, (representation, *amounts))
            return True

        return await asyncio.to_thread(self._run, debit)

    async def totals(self) -> Totals:
        return await asyncio.to_thread(self._run, _read)

    async def spend(
        self, amounts: Mapping[str, float], dollars: float, window_seconds: float
    ) -> None:
        def spend(db: sqlite3.Connection) -> None:
            db.executemany(_ADD_SPENT, [(n, a) for n, a in amounts.items() if a])
            now = time.time()
            recent = _recent(db, now, window_seconds)
            db.execute("INSERT OR REPLACE INTO recent VALUES (1, ?, ?)", (recent + dollars, now))

        await asyncio.to_thread(self._run, spend)

    async def integrate(self, name: str, value: float) -> float:
        def integrate(db: sqlite3.Connection) -> float:
            now = time.time()
            row = db.execute("SELECT value, at FROM gauges WHERE name = ?", (name,)).fetchone()
            added = 0.0 if row is None else float(row[0]) * max(0.0, now - row[1])
            db.execute(_ADD_SPENT, (name, added))
            db.execute("INSERT OR REPLACE INTO gauges VALUES (?, ?, ?)", (name, value, now))
            return added

        return await asyncio.to_thread(self._run, integrate)

    async def spending(self, window_seconds: float) -> Spending:
        def read(db: sqlite3.Connection) -> Spending:
            amounts = dict(db.execute("SELECT name, amount FROM spent"))
            return Spending(amounts, _recent(db, time.time(), window_seconds))

        return await asyncio.to_thread(self._run, read)

    async def touch(self, last_read: Mapping[str, float]) -> None:
        rows = list(last_read.items())
        await asyncio.to_thread(self._run, lambda db: db.executemany(_TOUCH, rows))

    async def idle(self, before: float, limit: int) -> list[str]:
        query = "SELECT image_id FROM last_read WHERE at < ? ORDER BY at LIMIT ?"

        def read(db: sqlite3.Connection) -> list[str]:
            return [image_id for (image_id,) in db.execute(query, (before, limit))]

        return await asyncio.to_thread(self._run, read)

    async def forget(self, image_id: str) -> None:
        query = "DELETE FROM last_read WHERE image_id = ?"
        await asyncio.to_thread(self._run, lambda db: db.execute(query, (image_id,)))

    def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """``action`` in one transaction: all of it is kept, or none."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                db.executescript(_SCHEMA)
                return action(db)
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"ledger {self.path}: {exc}") from exc


def _read(db: sqlite3.Connection) -> Totals:
    shares = {name: Share(*amounts) for name, *amounts in db.execute(_READ_SHARES) if any(amounts)}
    original_bytes, stored_bytes, images = db.execute(_READ).fetchone()
    return Totals(original_bytes, stored_bytes, images, shares)


def _recent(db: sqlite3.Connection, now: float, window_seconds: float) -> float:
    """The recent dollars decayed from when they were last written to ``now``."""
    row = db.execute("SELECT dollars, at FROM recent WHERE id = 1").fetchone()
    if row is None:
        return 0.0
    return float(row[0]) * math.exp(-max(0.0, now - row[1]) / window_seconds)
