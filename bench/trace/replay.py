"""Replaying a trace against a real ``srstore serve`` on an accelerated clock.

One simulated day lasts ``seconds_per_day`` real seconds; every duration the service keys on
(cache TTLs, the idle time before compaction) is scaled by the same factor, so the service
sees the trace as it would over days. Compute is not scaled: a render costs what it costs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import redis

from bench.trace.generate import DAY, Read
from tests.support.metrics import samples
from tests.support.process import ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    SeaweedServer,
    start_redis,
    start_seaweed,
)

HOUR = 3600.0
SAMPLE_EVERY = 6 * HOUR  # simulated: storage is integrated over these steps
READERS = 8  # reads in flight at once, at most


@dataclass(frozen=True)
class Served:
    at: float  # simulated seconds
    seconds: float  # latency
    status: int
    cache: str
    model: str
    late: float  # real seconds behind the schedule when it was sent


@dataclass(frozen=True)
class Sample:
    at: float  # simulated seconds
    stored_bytes: float
    original_bytes: float
    compute_seconds: float  # the cost ledger's, every stage
    cache_byte_seconds: float  # real seconds: scaled by the replay
    process_cpu_seconds: float  # the API (and worker) processes, everything they did


@dataclass
class Outcome:
    reads: list[Served] = field(default_factory=list)
    samples: list[Sample] = field(default_factory=list)
    receipts: dict[str, dict[str, object]] = field(default_factory=dict)
    failed_uploads: int = 0


@dataclass(frozen=True)
class Clock:
    seconds_per_day: float

    @property
    def speedup(self) -> float:
        return DAY / self.seconds_per_day

    def real(self, simulated: float) -> float:
        return simulated / self.speedup

    def scaled_setting(self, simulated: float) -> str:
        """A duration setting for the server, at least one second (its resolution)."""
        return str(max(1, round(simulated / self.speedup)))


class Deployment:
    """``srstore serve`` alone (embedded), or with Redis, SeaweedFS and a worker (full)."""

    def __init__(self, mode: str, scratch: Path) -> None:
        self.mode = mode
        self.scratch = scratch
        self.redis: RedisServer | None = None
        self.seaweed: SeaweedServer | None = None

    def __enter__(self) -> Deployment:
        if self.mode == "full":
            os.environ.setdefault("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
            self.redis = start_redis(self.scratch / "redis")
            self.seaweed = start_seaweed(self.scratch / "seaweed")
        return self

    def __exit__(self, *_: object) -> None:
        for server in (self.redis, self.seaweed):
            if server is not None:
                server.stop()

    @contextlib.contextmanager
    def serve(self, env: Mapping[str, str]) -> Iterator[tuple[ApiProcess, WorkerProcess | None]]:
        run = uuid.uuid4().hex[:8]
        (self.scratch / run).mkdir(parents=True)
        env = {**env, "SRSTORE_DATA_DIR": str(self.scratch / run / "data")}
        worker = None
        if self.redis is not None and self.seaweed is not None:
            redis.Redis.from_url(self.redis.url).flushall()  # a fresh ledger and cache
            env |= {
                "SRSTORE_REDIS_URL": self.redis.url,
                "SRSTORE_S3_BUCKET": f"trace-{run}",
                "SRSTORE_S3_ENDPOINT_URL": self.seaweed.endpoint_url,
                "SRSTORE_INFERENCE": "queue",
                "SRSTORE_QUEUE_STREAM": f"srstore:render:{run}",
            }
        api = start_api(env)
        try:
            if self.redis is not None:
                worker = start_worker(env, f"trace-{run}", self.scratch / run)
            yield api, worker
        finally:
            if worker is not None:
                worker.stop()
            api.stop()


def environment() -> dict[str, str]:
    """This process's environment without SRSTORE_* settings: each configuration sets its own."""
    return {k: v for k, v in os.environ.items() if not k.startswith("SRSTORE_")}


async def replay(
    api: ApiProcess,
    worker: WorkerProcess | None,
    reads: list[Read],
    uploads: Mapping[str, float],
    photos: Mapping[str, bytes],
    clock: Clock,
    end: float,
) -> Outcome:
    outcome = Outcome()
    limits = httpx.Limits(max_connections=READERS + 4)
    async with httpx.AsyncClient(base_url=api.url, timeout=120, limits=limits) as http:
        ids: dict[str, asyncio.Future[str | None]] = {
            name: asyncio.get_running_loop().create_future() for name in uploads
        }
        started = time.monotonic()

        async def at(simulated: float) -> float:
            """Sleep until ``simulated`` on the replay's clock; how late we already are."""
            delay = started + clock.real(simulated) - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            return max(0.0, -delay)

        async def upload(name: str) -> None:
            await at(uploads[name])
            response = await http.post(
                "/v1/images", content=photos[name], headers={"content-type": "image/jpeg"}
            )
            if response.status_code != 201:
                outcome.failed_uploads += 1
                ids[name].set_result(None)
                return
            ids[name].set_result(response.json()["id"])

        readers = asyncio.Semaphore(READERS)

        async def read(item: Read) -> None:
            late = await at(item.at)
            image_id = await ids[item.image]
            if image_id is None:
                return
            query = {} if item.size == "full" else {"w": item.size}
            async with readers:
                sent = time.perf_counter()
                response = await http.get(f"/v1/images/{image_id}", params=query)
                seconds = time.perf_counter() - sent
            outcome.reads.append(
                Served(
                    item.at,
                    seconds,
                    response.status_code,
                    response.headers.get("x-cache", ""),
                    response.headers.get("x-model-version", ""),
                    late,
                )
            )

        async def sample_every_hour() -> None:
            simulated = 0.0
            while simulated <= end:
                await at(simulated)
                outcome.samples.append(await sample(http, worker, simulated))
                simulated += SAMPLE_EVERY

        uploading = [asyncio.create_task(upload(name)) for name in uploads]
        sampling = asyncio.create_task(sample_every_hour())
        await asyncio.gather(*uploading, *(read(item) for item in reads))
        await sampling
        for name, future in ids.items():
            if (image_id := future.result()) is not None:
                meta = (await http.get(f"/v1/images/{image_id}/meta")).json()
                outcome.receipts[name] = meta.get("receipt") or {}
    return outcome


async def sample(http: httpx.AsyncClient, worker: WorkerProcess | None, at: float) -> Sample:
    values = samples((await http.get("/metrics")).text)
    cpu = values.get("process_cpu_seconds_total", 0.0)
    if worker is not None:
        async with _client() as plain:
            scraped = await plain.get(f"http://127.0.0.1:{worker.metrics_port}/metrics")
            cpu += samples(scraped.text).get("process_cpu_seconds_total", 0.0)
    compute = sum(
        value for name, value in values.items() if name.startswith("srstore_fleet_compute_seconds{")
    )
    return Sample(
        at,
        values.get("srstore_fleet_stored_bytes", 0.0),
        values.get("srstore_fleet_original_bytes", 0.0),
        compute,
        values.get("srstore_fleet_cache_byte_seconds", 0.0),
        cpu,
    )


@contextlib.asynccontextmanager
async def _client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=10) as client:
        yield client


def scratch_dir() -> tempfile.TemporaryDirectory[str]:
    return tempfile.TemporaryDirectory(prefix="srstore-trace-")
