"""The metrics of rendering, recorded alike by the API (local mode) and the worker.

Each process that imports this module registers them in its own registry: the API's
``/metrics`` (see ``app.metrics``) and the worker's metrics port both export them.
"""

from __future__ import annotations

from prometheus_client import Counter, Histogram

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
