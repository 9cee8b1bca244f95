"""Storage-savings ledgers, chosen by configuration in :func:`make_ledger`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ledger.base import Ledger, LedgerUnavailable, Share, Spending, Totals
from ledger.local import LocalLedger
from ledger.redis import RedisLedger

if TYPE_CHECKING:
    from config.settings import Settings


def make_ledger(settings: Settings) -> Ledger:
    """Redis when a URL is configured (shared by every replica), else a file in the data dir."""
    if settings.redis_url:
        return RedisLedger(settings.redis_url, settings.redis_cluster)
    return LocalLedger(settings.data_dir / "ledger.sqlite3")


__all__ = [
    "Ledger",
    "LedgerUnavailable",
    "LocalLedger",
    "RedisLedger",
    "Share",
    "Spending",
    "Totals",
    "make_ledger",
]
