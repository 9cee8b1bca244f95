"""What the service spends, in the ledger's units, and what that costs at the price settings.

The ledger keeps resource amounts, never dollars, so that a change of price re-prices the
whole history: ``compute_seconds:{stage}:{device}`` (CPU seconds on ``cpu``, busy seconds of
the accelerator on ``cuda``) and ``cache_byte_seconds`` (bytes held by the HR cache, times
the seconds they were held). Storage is priced from the ledger's totals (bytes kept now).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

GIB = 2**30  # the cloud's "GB" on a bill is a binary gigabyte
HOURS_PER_MONTH = 730  # the cloud's billing month
SECONDS_PER_MONTH = HOURS_PER_MONTH * 3600

Stage = Literal["ingest", "compaction", "render", "encode"]
STAGES: tuple[Stage, ...] = ("ingest", "compaction", "render", "encode")
CACHE_BYTE_SECONDS = "cache_byte_seconds"
COMPUTE_PREFIX = "compute_seconds:"


def compute_key(stage: str, device: str) -> str:
    return f"{COMPUTE_PREFIX}{stage}:{device}"


def parse_compute_key(name: str) -> tuple[str, str] | None:
    """``(stage, device)`` of a compute amount's name, None for any other amount."""
    if not name.startswith(COMPUTE_PREFIX):
        return None
    stage, _, device = name.removeprefix(COMPUTE_PREFIX).partition(":")
    return stage, device


@dataclass(frozen=True)
class Prices:
    """List prices (see the README for their source): dollars per unit."""

    storage_gb_month: float
    cpu_hour: float
    gpu_hour: float
    cache_gb_hour: float

    def compute(self, device: str, seconds: float) -> float:
        hourly = self.cpu_hour if device == "cpu" else self.gpu_hour
        return seconds / 3600 * hourly

    def cache(self, byte_seconds: float) -> float:
        return byte_seconds / GIB / 3600 * self.cache_gb_hour

    def storage_per_month(self, stored_bytes: float) -> float:
        return stored_bytes / GIB * self.storage_gb_month

    def dollars(self, amounts: Mapping[str, float]) -> dict[str, float]:
        """Dollars by kind (``cpu``, ``gpu``, ``cache``) of the amounts given."""
        spent = {"cpu": 0.0, "gpu": 0.0, "cache": 0.0}
        for name, amount in amounts.items():
            if name == CACHE_BYTE_SECONDS:
                spent["cache"] += self.cache(amount)
            elif (parsed := parse_compute_key(name)) is not None:
                device = parsed[1]
                spent["cpu" if device == "cpu" else "gpu"] += self.compute(device, amount)
        return spent
