"""``srstore worker``: wire one worker from Settings, serve its metrics, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import signal
import socket
from wsgiref.simple_server import WSGIServer

from prometheus_client import start_http_server

from cache import make_cache, make_leases
from config.settings import Settings
from keyspace import connect
from ledger import make_ledger
from models.registry import ModelRegistry
from render.compaction import Compactor
from render.costs import CostFlusher
from render.inference import InferenceEngine, keep_render_heap
from render.queue import JobQueue, compaction_stream
from storage import make_store
from worker.consumer import Worker

log = logging.getLogger("srstore.worker")

METRICS_PORTS_TRIED = 16  # workers on one host take SRSTORE_WORKER_METRICS_PORT, +1, +2, ...


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings, name: str) -> None:
    """Take jobs until SIGTERM or SIGINT, then drain; model versions load as jobs name them."""
    if not settings.redis_url:
        raise SystemExit("srstore worker needs SRSTORE_REDIS_URL (the queue and the HR cache)")
    keep_render_heap(settings)
    store = make_store(settings)
    engine = InferenceEngine.from_settings(ModelRegistry(store), settings)
    client = connect(settings.redis_url, settings.redis_cluster, decode_responses=True)
    cache = make_cache(settings)
    queue = JobQueue(
        client, settings.queue_stream, settings.queue_max_length, settings.queue_shards
    )
    compactions = JobQueue(
        client, compaction_stream(settings.queue_stream), settings.compaction_queue_max
    )
    ledger = make_ledger(settings)
    leases = make_leases(settings)
    compactor = Compactor(
        settings, store, cache, ledger, engine.models, leases, settings.compaction_threads
    )
    worker = Worker(
        name,
        queue,
        engine,
        store,
        cache,
        settings.render_threads,
        settings.claim_idle_seconds,
        compactions,
        compactor,
        settings.compaction_threads,
    )
    # The API processes sample the shared cache; a worker only adds the renders it ran.
    flusher = CostFlusher(
        ledger, None, settings.prices, settings.cost_window_seconds, settings.cost_flush_seconds
    )
    await flusher.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics_server = None
    if settings.worker_metrics_port:
        metrics_server, port = serve_metrics(settings.host, settings.worker_metrics_port)
        log.info("worker %s metrics on http://%s:%d/metrics", name, settings.host, port)
    try:
        await worker.run(stop)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        await asyncio.to_thread(compactor.close)
        await asyncio.to_thread(engine.close)
        await flusher.stop()
        await client.aclose()
        for closeable in (cache, ledger, leases):
            close = getattr(closeable, "close", None)
            if close is not None:
                await close()
    log.info("worker %s stopped", name)


def serve_metrics(host: str, first_port: int) -> tuple[WSGIServer, int]:
    """Serve /metrics on the first free port from ``first_port``: several workers share a host."""
    last_port = min(first_port + METRICS_PORTS_TRIED, 65536)
    for port in range(first_port, last_port):
        try:
            server, _ = start_http_server(port, host)
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return server, port
    raise SystemExit(
        f"srstore worker: ports {first_port}-{last_port - 1} on {host} are all taken: "
        "set SRSTORE_WORKER_METRICS_PORT to a free range"
    )
