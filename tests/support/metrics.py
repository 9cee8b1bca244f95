"""Reading a Prometheus text exposition back as numbers."""

from __future__ import annotations

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
