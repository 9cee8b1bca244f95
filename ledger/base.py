"""The storage-savings ledger: fleet-wide totals of what was uploaded and what is kept."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol


class LedgerUnavailable(RuntimeError):
    """The ledger could not be read or written."""


@dataclass(frozen=True)
class Share:
    """The part of the totals kept as one representation (x4, avif, webp, original)."""

    original_bytes: int = 0
    stored_bytes: int = 0
    images: int = 0


@dataclass(frozen=True)
class Totals:
    """Bytes of the uploaded originals, bytes of the stored copies, and how many images; and
    the same by representation, so the savings of each are known apart."""

    original_bytes: int = 0
    stored_bytes: int = 0
    images: int = 0
    by_representation: Mapping[str, Share] = field(default_factory=dict)

    @property
    def savings_ratio(self) -> float:
        """The fraction of the originals' bytes that is not stored (0 when nothing is)."""
        if self.original_bytes <= 0:
            return 0.0
        return 1 - self.stored_bytes / self.original_bytes


@dataclass(frozen=True)
class Spending:
    """What the fleet spent: resource amounts since the ledger began (``compute_seconds:
    {stage}:{device}``, ``cache_byte_seconds``), and the dollars spent recently, weighted by
    ``exp(-age / window)`` (so a window of 30 days reads as "about the last month")."""

    amounts: Mapping[str, float] = field(default_factory=dict)
    recent_dollars: float = 0.0


# How long a ledger remembers that it debited an image: far longer than concurrent DELETEs of
# one id can be apart (each passed its existence check before any removed the object).
DEBIT_MEMORY_SECONDS = 86_400


class Ledger(Protocol):
    """Shared by every process and replica, and kept across restarts."""

    async def add(
        self, original_bytes: int, stored_bytes: int, images: int, representation: str = "x4"
    ) -> None:
        """Move every total, and the representation's share, at once (an upload credits them)."""
        ...

    async def debit_once(
        self, image_id: str, original_bytes: int, stored_bytes: int, representation: str = "x4"
    ) -> bool:
        """Debit a deleted image (totals and its representation's share), unless this image
        was debited already. True when this call debited: of concurrent DELETEs of one
        image, exactly one does."""
        ...

    async def totals(self) -> Totals: ...

    async def spend(
        self, amounts: Mapping[str, float], dollars: float, window_seconds: float
    ) -> None:
        """Add resource amounts to the fleet's spending, and their price to the recent dollars
        (the previous recent dollars decayed over ``window_seconds`` first)."""
        ...

    async def integrate(self, name: str, value: float) -> float:
        """Add to amount ``name`` the value last given for it times the seconds since then,
        then remember ``value``: a gauge shared by the fleet (what a shared cache holds),
        integrated over time once however many processes sample it, on the ledger's clock.
        Returns what was added."""
        ...

    async def spending(self, window_seconds: float) -> Spending:
        """The amounts so far, and the recent dollars decayed to now."""
        ...

    async def touch(self, last_read: Mapping[str, float]) -> None:
        """Remember when each image (kept full-size while hot) was last read, in epoch
        seconds; an earlier time never replaces a later one."""
        ...

    async def idle(self, before: float, limit: int) -> list[str]:
        """Up to ``limit`` images last read (or uploaded) before ``before``, oldest first."""
        ...

    async def forget(self, image_id: str) -> None:
        """Stop tracking an image (compacted, or deleted)."""
        ...
