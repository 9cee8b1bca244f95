"""The ledger as a one-row SQLite file beside the local objects: the embedded default.

SQLite makes each update atomic and durable, and serialises the uvicorn worker processes
that share the file.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import closing
from pathlib import Path

from ledger.base import LedgerUnavailable, Totals

_SCHEMA = """
CREATE TABLE IF NOT EXISTS ledger (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    original_bytes INTEGER NOT NULL,
    stored_bytes INTEGER NOT NULL,
    images INTEGER NOT NULL
);
INSERT OR IGNORE INTO ledger VALUES (1, 0, 0, 0);
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

    async def totals(self) -> Totals:
        return Totals(*await asyncio.to_thread(self._run, _READ, ()))

    def _run(self, statement: str, parameters: tuple[int, ...]) -> tuple[int, ...]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with closing(sqlite3.connect(self.path, timeout=10)) as db, db:
                db.executescript(_SCHEMA)
                return tuple(db.execute(statement, parameters).fetchone() or ())
        except (OSError, sqlite3.Error) as exc:
            raise LedgerUnavailable(f"ledger {self.path}: {exc}") from exc
