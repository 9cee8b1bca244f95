"""Every Prometheus metric the service exports, named in one place."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

ORIGINAL_BYTES = Counter(
    "srstore_original_bytes", "Bytes of uploaded originals accepted by this process."
)
STORED_BYTES = Counter(
    "srstore_stored_bytes", "Bytes of downscaled copies written by this process."
)
IMAGES_UPLOADED = Counter("srstore_images_uploaded", "Uploads acknowledged with 201.")
IMAGES_DELETED = Counter("srstore_images_deleted", "Images deleted.")
CACHE_REQUESTS = Counter(
    "srstore_cache_requests",
    "HR cache lookups by result: hit, miss, or bypass when the cache is unavailable.",
    ["result"],
)
SUPERRES_SECONDS = Histogram(
    "srstore_superres_seconds",
    "Seconds to super-resolve one image (the network or bicubic, without encoding).",
    ["model", "device"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
RENDER_SECONDS = Histogram(
    "srstore_render_seconds",
    "Seconds of a cache miss by stage: fetch, decode, superres, encode.",
    ["stage"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
REQUEST_SECONDS = Histogram(
    "srstore_http_request_seconds",
    "HTTP request duration by route template, method and status.",
    ["route", "method", "status"],
)

INFERENCE_BATCH_TILES = Histogram(
    "srstore_inference_batch_tiles",
    "Tiles in one forward pass of the network (from one or many images).",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
INFERENCE_TILES = Counter(
    "srstore_inference_tiles",
    "Tiles run through the network; its rate is the tiles per second.",
    ["model", "device"],
)
INFERENCE_BATCH_SECONDS = Histogram(
    "srstore_inference_batch_seconds",
    "Seconds of one forward pass over a batch of tiles.",
    ["model", "device"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
WORKER_UP = Gauge("srstore_worker_up", "1 while this worker takes jobs, 0 while it drains.")
WORKER_QUEUE_DEPTH = Gauge(
    "srstore_worker_queue_depth", "Render jobs in the stream not yet finished, as last sampled."
)
WORKER_JOBS = Counter(
    "srstore_worker_jobs",
    "Render jobs finished by this worker: rendered, cached (already done), expired, failed.",
    ["outcome"],
)
