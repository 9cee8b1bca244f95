"""The worker process's own metrics, served on ``SRSTORE_WORKER_METRICS_PORT``."""

from __future__ import annotations

from prometheus_client import Counter, Gauge

WORKER_UP = Gauge("srstore_worker_up", "1 while this worker takes jobs, 0 while it drains.")
WORKER_QUEUE_DEPTH = Gauge(
    "srstore_queue_depth", "Render jobs in the stream not yet finished, as last sampled."
)
WORKER_JOBS = Counter(
    "srstore_worker_jobs",
    "Jobs finished by this worker: renders rendered, cached (already done), expired, failed;"
    " compactions compaction_done, _failed, _deleted, _gone (finished before), _put_back.",
    ["outcome"],
)
