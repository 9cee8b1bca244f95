"""The ledger as a one-row SQLite file beside the local objects: the embedded default.

SQLite makes each update atomic and durable, and serialises the uvicorn worker processes
that share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

from ledger.base import DEBIT_MEMORY_SECONDS, LedgerUnavailable, Totals

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    original_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    images INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0);
CREATE TABLE IF NOT EXISTS debited (image_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE INDEX IF NOT EXISTS debited_at ON debited (at);
"""
_ADD = (
    "UPDATE ledger SET original_bytes = original_bytes + ?, stored_bytes = stored_bytes + ?,"
    " images = images + ? WHERE id = 1"
)
_READ = "SELECT original_bytes, stored_bytes, images FROM ledger WHERE id = 1"


class LocalLedger:
    def __init__(self, path: Path) -> None:
        self.path = path

    async def add(self, original_bytes: int, stored_bytes: int, images: int) -> None:
        await asyncio.to_thread(self._run, _ADD, (original_bytes, stored_bytes, images))

    async def debit_once(self, image_id: str, original_bytes: int, stored_bytes: int) -> bool:
        return await asyncio.to_thread(self._debit_once, image_id, original_bytes, stored_bytes)

    async def totals(self) -> Totals:
        return Totals(*await asyncio.to_thread(self._run, _READ, ()))

    def _run(self, statement: str, parameters: tuple[int, ...]) -> tuple[int, ...]:
        with self._transaction() as db:
            return tuple(db.execute(statement, parameters).fetchone() or ())

    def _debit_once(self, image_id: str, original_bytes: int, stored_bytes: int) -> bool:
        """One transaction: SQLite serialises it against every other process's."""
        now = time.time()
        with self._transaction() as db:
            db.execute("DELETE FROM debited WHERE at < ?", (now - DEBIT_MEMORY_SECONDS,))
            marked = db.execute("INSERT OR IGNORE INTO debited VALUES (?, ?)", (image_id, now))
            if marked.rowcount != 1:
                return False
            db.execute(_ADD, (-original_bytes, -stored_bytes, -1))
            return True

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                db.executescript(_SCHEMA)
                yield db
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"ledger {self.path}: {exc}") from exc
