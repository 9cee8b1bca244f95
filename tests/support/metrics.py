"""Reading a Prometheus text exposition back as numbers."""

from __future__ import annotations

import asyncio
import time

import httpx
from prometheus_client.parser import text_string_to_metric_families


def samples(text: str) -> dict[str, float]:
    """Every sample by its name and sorted labels, e.g. ``srstore_x_total{result="hit"}``."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
            values[f"{sample.name}{{{labels}}}" if labels else sample.name] = sample.value
    return values


def ledger(values: dict[str, float]) -> tuple[float, float, float]:
    """The fleet ledger's original bytes, stored bytes and image count."""
    return (
        values["srstore_fleet_original_bytes"],
        values["srstore_fleet_stored_bytes"],
        values["srstore_fleet_images"],
    )


async def fleet_ledger(
    client: httpx.AsyncClient, timeout: float = 30
) -> tuple[float, float, float]:
    """:func:`ledger` from the app's ``/metrics``. A scrape never waits: one whose ledger read
    did not answer within ``SRSTORE_DEPENDENCY_TIMEOUT_SECONDS`` leaves the fleet gauges out
    (seen on a Redis Cluster under load), so this scrapes again until they are there."""
    deadline = time.monotonic() + timeout
    while True:
        response = await client.get("/metrics")
        assert response.status_code == 200
        values = samples(response.text)
        if "srstore_fleet_images" in values:
            return ledger(values)
        if time.monotonic() > deadline:
            raise AssertionError(f"no fleet ledger in /metrics within {timeout} s")
        await asyncio.sleep(0.05)
