"""Keys in the embedded default: a table in the local ledger's SQLite file."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import TypeVar

from apikeys.base import KeyRecord, KeyStoreUnavailable, revoked

T = TypeVar("T")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_keys (
    id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    active INTEGER NOT NULL,
    created_at REAL NOT NULL
);
"""


class LocalKeyStore:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def add(self, record: KeyRecord) -> None:
        row = (record.id, record.to_json(), int(record.active), record.created_at)
        await self._run(lambda db: db.execute("INSERT INTO api_keys VALUES (?, ?, ?, ?)", row))

    async def get(self, key_id: str) -> KeyRecord | None:
        def get(db: sqlite3.Connection) -> KeyRecord | None:
            row = db.execute("SELECT record FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            return KeyRecord.from_json(row[0]) if row else None

        return await self._run(get)

    async def all(self) -> list[KeyRecord]:
        def read(db: sqlite3.Connection) -> list[KeyRecord]:
            rows = db.execute("SELECT record FROM api_keys ORDER BY created_at, id")
            return [KeyRecord.from_json(text) for (text,) in rows]

        return await self._run(read)

    async def revoke(self, key_id: str) -> KeyRecord | None:
        def revoke(db: sqlite3.Connection) -> KeyRecord | None:
            row = db.execute("SELECT record FROM api_keys WHERE id = ?", (key_id,)).fetchone()
            if row is None:
                return None
            record = revoked(KeyRecord.from_json(row[0]))
            db.execute(
                "UPDATE api_keys SET record = ?, active = 0 WHERE id = ?",
                (record.to_json(), key_id),
            )
            return record

        return await self._run(revoke)

    async def any_active(self) -> bool:
        def count(db: sqlite3.Connection) -> bool:
            return (
                db.execute("SELECT 1 FROM api_keys WHERE active = 1 LIMIT 1").fetchone() is not None
            )

        return await self._run(count)

    async def _run(self, action: Callable[[sqlite3.Connection], T]) -> T:
        return await asyncio.to_thread(self._transaction, action)

    def _transaction(self, action: Callable[[sqlite3.Connection], T]) -> T:
        """``action`` in one transaction, serialised against every other process's."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                db.executescript(_SCHEMA)
                return action(db)
        except (OSError, sqlite3.Error) as exc:
            raise KeyStoreUnavailable(f"key store {self.path}: {exc}") from exc
