"""srstore costs: what the fleet spends (compute, cache) beside what its storage saves.

It reads the fleet-wide figures a running API publishes on ``/metrics`` (each replica reports
the same, from the shared cost ledger), so it needs no access to Redis or the store.
"""

from __future__ import annotations

import argparse
from typing import Any

from srstore.client import ApiClient, CommandFailed, add_client_arguments, emit, table

GIB = 2**30


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    costs = commands.add_parser(
        "costs",
        help="what the fleet spends against what it saves, from a running API",
        description="Compute seconds by stage and device, cache GB-hours, storage by"
        " representation, and the net saving per month at the server's price settings.",
    )
    add_client_arguments(costs)


def run(args: argparse.Namespace, api: ApiClient) -> int:
    report = read_costs(api.request("GET", "/metrics").text)
    emit(args, report, render)
    return 0


def read_costs(exposition: str) -> dict[str, Any]:
    """The cost figures of a ``/metrics`` text, as the JSON that ``--json`` prints."""
    from prometheus_client.parser import text_string_to_metric_families  # only this command's

    values: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            values.setdefault(sample.name, []).append((sample.labels, sample.value))
    if "srstore_net_savings_dollars_per_month" not in values:
        raise CommandFailed("the API published no cost figures (its ledger was unreadable?)")

    def one(name: str) -> float:
        return values[name][0][1] if values.get(name) else 0.0

    def labelled(name: str, label: str) -> dict[str, float]:
        return {labels[label]: value for labels, value in values.get(name, [])}

    return {
        "compute_seconds": [
            {"stage": labels["stage"], "device": labels["device"], "seconds": value}
            for labels, value in values.get("srstore_fleet_compute_seconds", [])
        ],
        "cache_byte_seconds": one("srstore_fleet_cache_byte_seconds"),
        "spent_dollars": labelled("srstore_fleet_spent_dollars", "kind"),
        "stored_bytes": labelled("srstore_fleet_representation_stored_bytes", "representation"),
        "storage_dollars_per_month": labelled(
            "srstore_storage_dollars_per_month", "representation"
        ),
        "original_bytes": one("srstore_fleet_original_bytes"),
        "saved_dollars_per_month": one("srstore_saved_dollars_per_month"),
        "spent_dollars_per_month": one("srstore_spent_dollars_per_month"),
        "net_savings_dollars_per_month": one("srstore_net_savings_dollars_per_month"),
    }


def render(report: dict[str, Any]) -> str:
    spent = report["spent_dollars"]
    rows: list[list[str]] = [
        [f"compute: {row['stage']} ({row['device']})", f"{row['seconds']:.3f} s", ""]
        for row in report["compute_seconds"]
    ]
    rows.append(["compute dollars so far", "", f"${spent.get('cpu', 0) + spent.get('gpu', 0):.6g}"])
    gb_hours = report["cache_byte_seconds"] / GIB / 3600
    rows.append(["cache held", f"{gb_hours:.6g} GB-h", f"${spent.get('cache', 0):.6g}"])
    for representation, stored in sorted(report["stored_bytes"].items()):
        monthly = report["storage_dollars_per_month"].get(representation, 0.0)
        rows.append([f"stored as {representation}", f"{stored:,.0f} B", f"${monthly:.6g}/month"])
    rows += [
        ["storage saved", "", f"${report['saved_dollars_per_month']:.6g}/month"],
        ["compute + cache (recent)", "", f"${report['spent_dollars_per_month']:.6g}/month"],
        ["net saving", "", f"${report['net_savings_dollars_per_month']:.6g}/month"],
    ]
    return table(rows, ["what", "amount", "dollars"])
