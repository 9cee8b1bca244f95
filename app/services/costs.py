"""The fleet's spending beside its savings, read for ``/metrics`` and ``srstore costs``."""

from __future__ import annotations

import asyncio
import logging

from config.settings import Settings
from ledger import Ledger, LedgerUnavailable, Spending
from render.costs import CostFlusher

log = logging.getLogger(__name__)


class CostReport:
    """Flushes this process's counts first, so a scrape sees what this process just did."""

    def __init__(self, settings: Settings, ledger: Ledger, flusher: CostFlusher) -> None:
        self.settings = settings
        self.ledger = ledger
        self.flusher = flusher

    async def spending(self) -> Spending | None:
        """None when the ledger could not be read in time (the scrape still answers)."""
        try:
            async with asyncio.timeout(self.settings.dependency_timeout_seconds):
                await self.flusher.flush()
                return await self.ledger.spending(self.settings.cost_window_seconds)
        except (LedgerUnavailable, TimeoutError) as exc:
            log.warning("cost ledger unreadable: %s", str(exc) or "timed out")
            return None
