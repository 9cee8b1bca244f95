"""The API's own Prometheus metrics, and the ``/metrics`` exposition of everything it records.

The rendering metrics it shares with the worker are in ``render.metrics``; the worker's own
are in ``worker.metrics``.

Counters and histograms live in the process (or, with ``PROMETHEUS_MULTIPROC_DIR`` set, in
files that ``/metrics`` merges across uvicorn workers). What every process would report alike
(the shared ledger, the model, the build, whether dependencies answer) is read at scrape time
by :func:`exposition` instead, so nothing is counted twice within a replica.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import metadata

from prometheus_client import (
    REGISTRY,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from ledger import Spending, Totals
from ledger.costs import CACHE_BYTE_SECONDS, SECONDS_PER_MONTH, Prices, parse_compute_key

ORIGINAL_BYTES = Counter(
    "srstore_original_bytes", "Bytes of uploaded originals accepted by this process."
)
STORED_BYTES = Counter(
    "srstore_stored_bytes",
    "Bytes of stored copies (x4 or full-size, see srstore_images_stored) written by this process.",
)
IMAGES_UPLOADED = Counter("srstore_images_uploaded", "Uploads acknowledged with 201.")
IMAGES_DELETED = Counter("srstore_images_deleted", "Images deleted.")
CACHE_REQUESTS = Counter(
    "srstore_cache_requests",
    "HR cache lookups by result: hit, miss, or bypass when the cache is unavailable.",
    ["result"],
)
QUEUE_ENQUEUES = Counter(
    "srstore_queue_enqueues",
    "Misses sent to the render queue (queue mode), by outcome: queued a new job, joined the "
    "job already in flight for the same rendition, or refused because the queue was full.",
    ["outcome"],
)
REQUEST_SECONDS = Histogram(
    "srstore_http_request_seconds",
    "HTTP request duration by route template, method and status.",
    ["route", "method", "status"],
)

FETCH_SECONDS = Histogram(
    "srstore_fetch_seconds",
    "Duration of full-size image requests by cache result (hit, miss, bypass).",
    ["cache"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
LEDGER_ERRORS = Counter(
    "srstore_ledger_errors",
    "Ledger updates that failed after the object store had confirmed (the ledger drifts).",
)

# Labelled by the public id of keys that exist (a refused key has no series): as many series
# as keys were created, however many ids clients make up.
KEY_UPLOADS = Counter("srstore_key_uploads", "Uploads acknowledged, by API key id.", ["key"])
KEY_UPLOAD_BYTES = Counter(
    "srstore_key_upload_bytes", "Bytes of uploads acknowledged, by API key id.", ["key"]
)
KEY_CPU_SECONDS = Counter(
    "srstore_key_compaction_cpu_seconds",
    "CPU seconds of scoring (compaction) spent on uploads, by API key id.",
    ["key"],
)
KEY_THROTTLED = Counter(
    "srstore_key_throttled",
    "Requests refused with 429, by API key id and quota (uploads, bytes, cpu).",
    ["key", "quota"],
)


# Read at scrape time from the shared ledger: every replica reports the same fleet-wide value,
# so aggregate these with max(), never sum().
FLEET_HELP = " Fleet-wide, from the shared ledger: aggregate with max(), not sum()."


@dataclass(frozen=True)
class Snapshot:
    """What ``/metrics`` reads when it is scraped rather than counts as it goes."""

    totals: Totals | None  # None when the ledger could not be read
    dependencies: Mapping[str, bool]  # dependency name -> answered its ping
    model: str  # "espcn:1", or "bicubic" when no network serves
    spending: Spending | None = None  # None when the cost ledger could not be read
    prices: Prices | None = None
    window_seconds: float = 30 * 86_400  # of Spending.recent_dollars


class _ScrapeCollector:
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        totals = self.snapshot.totals
        if totals is not None:
            for name, help_text, value in (
                (
                    "srstore_fleet_original_bytes",
                    "Bytes of the originals of stored images.",
                    totals.original_bytes,
                ),
                (
                    "srstore_fleet_stored_bytes",
                    "Bytes of the stored downscaled copies.",
                    totals.stored_bytes,
                ),
                ("srstore_fleet_images", "Images stored.", totals.images),
                ("srstore_fleet_savings_ratio", "1 - stored/original bytes.", totals.savings_ratio),
            ):
                yield GaugeMetricFamily(name, help_text + FLEET_HELP, value=value)
            for name, help_text, field in (
                ("srstore_fleet_representation_images", "Images stored", "images"),
                ("srstore_fleet_representation_stored_bytes", "Bytes stored", "stored_bytes"),
                (
                    "srstore_fleet_representation_original_bytes",
                    "Bytes of the originals of images stored",
                    "original_bytes",
                ),
            ):
                family = GaugeMetricFamily(
                    name, f"{help_text}, by representation.{FLEET_HELP}", labels=["representation"]
                )
                for representation, share in sorted(totals.by_representation.items()):
                    family.add_metric([representation], getattr(share, field))
                yield family
        yield from self._costs()
        up = GaugeMetricFamily(
            "srstore_dependency_up",
            "1 when the dependency answered its last ping (SRSTORE_DEPENDENCY_CHECK_SECONDS).",
            labels=["dependency"],
        )
        for dependency, answered in sorted(self.snapshot.dependencies.items()):
            up.add_metric([dependency], 1.0 if answered else 0.0)
        yield up
        name, _, version = self.snapshot.model.partition(":")
        info = GaugeMetricFamily(
            "srstore_model_info",
            "The model this process serves (always 1).",
            labels=["name", "version"],
        )
        info.add_metric([name, version or "none"], 1.0)
        yield info
        build = GaugeMetricFamily(
            "srstore_build_info",
            "The srstore release this process runs (always 1).",
            labels=["version"],
        )
        build.add_metric([_version()], 1.0)
        yield build

    def _costs(self) -> Iterator[Metric]:
        """Spending from the cost ledger, priced, beside what storage saves: "does it pay"."""
        snapshot = self.snapshot
        totals, spending, prices = snapshot.totals, snapshot.spending, snapshot.prices
        if spending is None or prices is None:
            return
        compute = GaugeMetricFamily(
            "srstore_fleet_compute_seconds",
            "Compute spent by the fleet, by stage and device (CPU seconds on cpu, busy seconds"
            f" on an accelerator).{FLEET_HELP}",
            labels=["stage", "device"],
        )
        for name, amount in sorted(spending.amounts.items()):
            if (parsed := parse_compute_key(name)) is not None:
                compute.add_metric(list(parsed), amount)
        yield compute
        yield GaugeMetricFamily(
            "srstore_fleet_cache_byte_seconds",
            f"Bytes held by the HR cache times the seconds held.{FLEET_HELP}",
            value=spending.amounts.get(CACHE_BYTE_SECONDS, 0.0),
        )
        spent = GaugeMetricFamily(
            "srstore_fleet_spent_dollars",
            "Dollars spent so far at today's price settings, by kind (cpu, gpu, cache)."
            + FLEET_HELP,
            labels=["kind"],
        )
        for kind, dollars in sorted(prices.dollars(spending.amounts).items()):
            spent.add_metric([kind], dollars)
        yield spent
        per_month = spending.recent_dollars * SECONDS_PER_MONTH / self.snapshot.window_seconds
        yield GaugeMetricFamily(
            "srstore_spent_dollars_per_month",
            "Compute and cache spending per month, from the recent spending (exponentially"
            f" weighted over SRSTORE_COST_WINDOW_SECONDS).{FLEET_HELP}",
            value=per_month,
        )
        if totals is None:
            return
        storage = GaugeMetricFamily(
            "srstore_storage_dollars_per_month",
            f"What the stored copies cost per month, by representation.{FLEET_HELP}",
            labels=["representation"],
        )
        for representation, share in sorted(totals.by_representation.items()):
            storage.add_metric([representation], prices.storage_per_month(share.stored_bytes))
        yield storage
        saved = prices.storage_per_month(totals.original_bytes - totals.stored_bytes)
        yield GaugeMetricFamily(
            "srstore_saved_dollars_per_month",
            "What storing the originals would cost per month beyond the stored copies."
            + FLEET_HELP,
            value=saved,
        )
        yield GaugeMetricFamily(
            "srstore_net_savings_dollars_per_month",
            "Saved minus spent per month: srstore_saved_dollars_per_month -"
            f" srstore_spent_dollars_per_month.{FLEET_HELP}",
            value=saved - per_month,
        )


def exposition(snapshot: Snapshot) -> bytes:
    """The text exposition: this process (or all its siblings) plus the scrape-time gauges."""
    scraped = CollectorRegistry(auto_describe=False)
    scraped.register(_ScrapeCollector(snapshot))
    return generate_latest(_counted()) + generate_latest(scraped)


def _counted() -> CollectorRegistry:
    # prometheus-client's own variable: when set, each worker process writes its samples there.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)
        return merged
    return REGISTRY


def _version() -> str:
    try:
        return metadata.version("srstore")
    except metadata.PackageNotFoundError:
        return "unknown"
