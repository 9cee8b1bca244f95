"""What each configuration cost over the trace, in a table and a plot.

Storage is integrated over simulated time from hourly samples of the fleet's stored bytes;
compute is the CPU seconds of the API and worker processes over the replay (everything they
did, hits included, which the cost ledger's stages leave out; its figure is shown beside);
the cache's byte-seconds are the ledger's, scaled from real to simulated time. Dollars use
the price settings' defaults and are quoted per million images of the same mix and trace.

The trace's bill stops at its end, but a compaction's saving does not: "storage $/month
after" is what the stored bytes at the end cost each further month (the trace's reads have
died out by then: interest halves every 1.5 days), so the months a configuration needs to
catch up with another are the difference of their totals over the difference of these.
"""

from __future__ import annotations

import statistics
import textwrap
from dataclasses import dataclass
from pathlib import Path

from bench.trace.replay import HOUR, SAMPLE_EVERY, Clock, Outcome
from ledger.costs import GIB, SECONDS_PER_MONTH, Prices

FLOOR_SSIM = 0.9


@dataclass(frozen=True)
class Figures:
    name: str
    stored_gb: float  # at the end
    storage_dollars: float
    originals_dollars: float  # what keeping every upload as it came would have cost
    storage_per_month_after: float  # the stored bytes at the end, priced for a month
    cpu_seconds: float
    ledger_cpu_seconds: float
    cache_gb_hours: float
    cpu_dollars: float
    cache_dollars: float
    hit_rate: float
    model_runs: int
    p50_ms: float
    p95_ms: float
    min_ssim: float
    below_floor: int
    unscored: int  # receipts whose scoring failed (the x4 copy kept, quality unknown)
    errors: int
    late_seconds: float
    months: float
    scale: float  # to a million images

    @property
    def total_dollars(self) -> float:
        return self.storage_dollars + self.cpu_dollars + self.cache_dollars

    @property
    def net_per_month(self) -> float:
        """Saved against keeping the uploads, minus everything spent, per month."""
        return (self.originals_dollars - self.total_dollars) / self.months


def figures(name: str, outcome: Outcome, clock: Clock, prices: Prices, images: int) -> Figures:
    first, last = outcome.samples[0], outcome.samples[-1]
    per_byte_step = prices.storage_gb_month / GIB * SAMPLE_EVERY / SECONDS_PER_MONTH
    storage = sum(s.stored_bytes for s in outcome.samples) * per_byte_step
    originals = sum(s.original_bytes for s in outcome.samples) * per_byte_step
    cpu = last.process_cpu_seconds - first.process_cpu_seconds
    cache_byte_seconds = (last.cache_byte_seconds - first.cache_byte_seconds) * clock.speedup
    ok = [read for read in outcome.reads if read.status == 200]
    latencies = sorted(read.seconds * 1000 for read in ok) or [0.0]
    known = [_ssim(receipt) for receipt in outcome.receipts.values()]
    ssims = [ssim for ssim in known if ssim is not None]
    return Figures(
        name=name,
        stored_gb=last.stored_bytes / GIB,
        storage_dollars=storage,
        originals_dollars=originals,
        storage_per_month_after=last.stored_bytes / GIB * prices.storage_gb_month,
        cpu_seconds=cpu,
        ledger_cpu_seconds=last.compute_seconds - first.compute_seconds,
        cache_gb_hours=cache_byte_seconds / GIB / HOUR,
        cpu_dollars=prices.compute("cpu", cpu),
        cache_dollars=prices.cache(cache_byte_seconds),
        hit_rate=sum(read.cache == "HIT" for read in ok) / max(1, len(ok)),
        model_runs=sum(read.cache != "HIT" and read.model not in ("none", "") for read in ok),
        p50_ms=statistics.median(latencies),
        p95_ms=latencies[min(len(latencies) - 1, int(0.95 * len(latencies)))],
        min_ssim=min(ssims, default=1.0),
        below_floor=sum(ssim < FLOOR_SSIM for ssim in ssims),
        unscored=len(known) - len(ssims),
        errors=len(outcome.reads) - len(ok) + outcome.failed_uploads,
        late_seconds=max((read.late for read in outcome.reads), default=0.0),
        months=last.at / SECONDS_PER_MONTH,
        scale=1e6 / images,
    )


def _ssim(receipt: dict[str, object]) -> float | None:
    """The SSIM of a plain read (the upload kept as it came is served as its own bytes);
    None when unknown: scoring failed, or had not finished by the end."""
    if receipt.get("representation") == "original" and not receipt.get("error"):
        return 1.0
    ssim = receipt.get("ssim")
    return float(ssim) if isinstance(ssim, int | float) else None


def table(rows: list[Figures]) -> str:
    head = (
        "| configuration | stored at end (GB) | storage $ | CPU s (ledger) | CPU $ | cache GB-h"
        " | cache $ | total $ | net $/month | storage $/month after | hit rate | model runs"
        " | p50 / p95 ms | min SSIM (below 0.9, unscored) | errors | max late s |\n"
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )
    lines = [head]
    for f in rows:
        s = f.scale
        lines.append(
            f"| {f.name} | {f.stored_gb * s:.1f} | {f.storage_dollars * s:.2f}"
            f" | {f.cpu_seconds:.1f} ({f.ledger_cpu_seconds:.1f}) | {f.cpu_dollars * s:.2f}"
            f" | {f.cache_gb_hours * s:.1f} | {f.cache_dollars * s:.2f}"
            f" | {f.total_dollars * s:.2f} | {f.net_per_month * s:+.2f}"
            f" | {f.storage_per_month_after * s:.3f} | {f.hit_rate:.0%} | {f.model_runs}"
            f" | {f.p50_ms:.0f} / {f.p95_ms:.0f}"
            f" | {f.min_ssim:.3f} ({f.below_floor}, {f.unscored}) | {f.errors}"
            f" | {f.late_seconds:.1f} |"
        )
    return "\n".join(lines)


def plot(results: list[tuple[Figures, Outcome]], clock: Clock, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(12, 8))
    stored, cpu, cache, net = axes.flat
    for f, outcome in results:
        days = [s.at / 86_400 for s in outcome.samples]
        first = outcome.samples[0]
        stored.plot(days, [s.stored_bytes / 2**20 for s in outcome.samples], label=f.name)
        cpu.plot(days, [s.process_cpu_seconds - first.process_cpu_seconds for s in outcome.samples])
        cache.plot(
            days,
            [
                (s.cache_byte_seconds - first.cache_byte_seconds) * clock.speedup / GIB / HOUR
                for s in outcome.samples
            ],
        )
    names = [textwrap.fill(f.name, 16) for f, _ in results]  # side by side, unwrapped they overlap
    net.bar(names, [f.net_per_month * f.scale for f, _ in results])
    net.axhline(0, color="black", linewidth=0.8)
    for ax, title in (
        (stored, "Stored MiB (this trace)"),
        (cpu, "CPU seconds, API + worker"),
        (cache, "Cache GB-hours (simulated time)"),
        (net, "Net $ per month per million images"),
    ):
        ax.set_title(title, loc="left")
    for ax in (stored, cpu, cache):
        ax.set_xlabel("simulated days")
    stored.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
