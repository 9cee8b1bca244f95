"""The metrics of rendering, recorded alike by the API (local mode) and the worker.

Each process that imports this module registers them in its own registry: the API's
``/metrics`` (see ``app.metrics``) and the worker's metrics port both export them.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

from policy import Receipt

RENDITIONS = Counter(
    "srstore_renditions",
    "Renditions rendered on a cache miss, by source: model (super-resolution, then resize), "
    "stored_copy (a size at or below the stored copy's, downscaled from it: no model runs), or "
    "as_stored (a full-size stored copy served as its own bytes: no decode, not cached).",
    ["source"],
)
SUPERRES_SECONDS = Histogram(
    "srstore_superres_seconds",
    "Seconds to super-resolve one image (the network or bicubic, without encoding).",
    ["model", "device"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RENDER_SECONDS = Histogram(
    "srstore_render_seconds",
    "Seconds of a cache miss by stage: decode, superres, resize, encode; stored_copy for the "
    "whole of a rendition made from the stored copy.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
INFERENCE_BATCH_TILES = Histogram(
    "srstore_batch_size",
    "Tiles in one forward pass of the network (from one or many images).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INFERENCE_TILES = Counter(
    "srstore_tiles",
    "Tiles run through the network; its rate is the tiles per second.",
    ["model", "device"],
)
INFERENCE_BATCH_SECONDS = Histogram(
    "srstore_inference_batch_seconds",
    "Seconds of one forward pass over a batch of tiles.",
    ["model", "device"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
CACHE_ENTRY_BYTES = Histogram(
    "srstore_cache_entry_bytes",
    "Size of each rendered image written to the HR cache.",
    buckets=tuple(2**n for n in range(14, 27)),  # 16 KiB .. 64 MiB
)
COMPUTE_SECONDS = Counter(
    "srstore_compute_seconds",
    "Compute spent by this process, by stage (ingest, compaction, render, encode) and device:"
    " CPU seconds on cpu, busy seconds of the accelerator on cuda.",
    ["stage", "device"],
)
CACHE_BYTE_SECONDS = Counter(
    "srstore_cache_byte_seconds",
    "Bytes held by the HR cache times the seconds held, sampled by this process (a shared"
    " cache is integrated once for the fleet, by whichever process samples it).",
)

IMAGES_STORED = Counter(
    "srstore_images_stored",
    "Compacted uploads by storage policy and the representation kept (x4, avif, webp, original).",
    ["policy", "representation"],
)
STORED_BYTES_BY_REPRESENTATION = Counter(
    "srstore_representation_stored_bytes",
    "Bytes of the representations kept by this process's compactions.",
    ["representation"],
)
RECEIPT_PSNR = Histogram(
    "srstore_receipt_psnr_db",
    "Y-PSNR (dB) of each upload's default read against its original, by representation kept.",
    ["representation"],
    buckets=(20, 24, 26, 28, 30, 32, 34, 36, 38, 40, 45, 50, 60),
)
RECEIPT_SSIM = Histogram(
    "srstore_receipt_ssim",
    "SSIM of each upload's default read against its original, by representation kept.",
    ["representation"],
    buckets=(0.5, 0.7, 0.8, 0.85, 0.9, 0.92, 0.94, 0.96, 0.98, 0.99, 0.995, 1.0),
)
RECEIPT_SECONDS = Histogram(
    "srstore_receipt_seconds",
    "Seconds to score an upload and choose its representation (in compaction), by policy.",
    ["policy"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
)
RECEIPT_FAILURES = Counter(
    "srstore_receipt_failures",
    "Compactions whose scoring failed: the x4 copy was kept and the receipt says so.",
)
COMPACTIONS = Counter(
    "srstore_compactions",
    "Compactions finished, by outcome: done (receipt recorded), failed (scoring failed, the x4 "
    "copy kept), deleted (the image was deleted before it finished: nothing written back).",
    ["outcome"],
)
COMPACTION_SECONDS = Histogram(
    "srstore_compaction_seconds",
    "Wall seconds of one compaction (read, score, choose, swap).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300),
)
COMPACTION_RETRIES = Counter(
    "srstore_compaction_retries",
    "Compactions put back for later because the store or cache did not answer.",
)
COMPACTIONS_PENDING = Gauge(
    "srstore_compactions_pending",
    "Uploads acknowledged whose compaction has not finished (embedded: this process's; queue: "
    "the fleet's stream).",
    multiprocess_mode="max",
)
COMPACTION_OLDEST_SECONDS = Gauge(
    "srstore_compaction_oldest_pending_seconds",
    "Age of the oldest pending compaction (0 when none): the alert on falling behind.",
    multiprocess_mode="max",
)


def observe_receipt(receipt: Receipt) -> None:
    """Count a finished receipt (an unscored one only by its representation), where it was made:
    the API in embedded mode, the worker in queue mode."""
    IMAGES_STORED.labels(receipt.policy, receipt.representation).inc()
    STORED_BYTES_BY_REPRESENTATION.labels(receipt.representation).inc(receipt.stored_bytes)
    if receipt.psnr is not None and receipt.ssim is not None:
        # An identical read (infinite PSNR) counts as 100 dB, so the histogram's sum stays finite.
        RECEIPT_PSNR.labels(receipt.representation).observe(min(receipt.psnr, 100.0))
        RECEIPT_SSIM.labels(receipt.representation).observe(receipt.ssim)
