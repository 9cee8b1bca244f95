"""``srstore worker``: wire one worker from Settings, serve its metrics, stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket

from prometheus_client import start_http_server
from redis import asyncio as aioredis

from cache import make_cache
from config.settings import Settings
from models.registry import ModelRegistry
from render.inference import InferenceEngine
from render.queue import JobQueue
from storage import make_store
from worker.consumer import Worker

log = logging.getLogger("srstore.worker")


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


async def serve(settings: Settings, name: str) -> None:
    """Take jobs until SIGTERM or SIGINT, then drain; model versions load as jobs name them."""
    if not settings.redis_url:
        raise SystemExit("srstore worker needs SRSTORE_REDIS_URL (the queue and the HR cache)")
    store = make_store(settings)
    engine = InferenceEngine.from_settings(ModelRegistry(store), settings)
    client = aioredis.from_url(settings.redis_url, decode_responses=True)
    cache = make_cache(settings)
    queue = JobQueue(client, settings.queue_stream, settings.queue_max_length)
    worker = Worker(
        name,
        queue,
        engine,
        store,
        cache,
        settings.render_threads,
        settings.claim_idle_seconds,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    metrics_server = None
    if settings.worker_metrics_port:
        metrics_server, _ = start_http_server(settings.worker_metrics_port, settings.host)
    try:
        await worker.run(stop)
    finally:
        if metrics_server is not None:
            metrics_server.shutdown()
        await asyncio.to_thread(engine.close)
        await client.aclose()
        close = getattr(cache, "close", None)
        if close is not None:
            await close()
    log.info("worker %s stopped", name)
