"""End to end over HTTP on 127.0.0.1: real Redis, real SeaweedFS, real API and worker processes.

    python -m bench.service

Measures a 1024x1024 JPEG (1 megapixel): cache hits against the same bytes served as a
static file by the same server (taking turns in rounds of 40, with the API process's CPU),
and misses rendered through a worker (queue mode) against misses rendered in the API process
(local mode): compacted uploads read at a rendition that no earlier render left cached, each
answer checked to be a model's render and a cache miss. The load generator is this process
(httpx).
"""

from __future__ import annotations

import asyncio
import io
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import torch
from PIL import Image

from bench.inference import PHOTO, table
from config.settings import Settings
from models.archs import build_model
from models.weights import SHIPPED_WEIGHTS_DIR, find_weights, weights_path
from tests.support.compaction import compacted
from tests.support.process import ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY, start_redis, start_seaweed

SIDE = 1024
HITS = 400
ROUND = 40  # requests of one kind before the other kind's turn
MISSES = 16
# The quality step (SRSTORE_QUALITY_STEPS) below the servers' default: a rendition that
# compaction has not cached, and one that an unsigned URL is not snapped away from.
MISS_QUALITY = max(
    step
    for step in Settings.model_fields["quality_steps"].default
    if step < Settings.model_fields["output_jpeg_quality"].default
)


def weights_dir(scratch: Path) -> Path:
    """The shipped ESPCN weights, or untrained ones when none are shipped yet."""
    if find_weights(SHIPPED_WEIGHTS_DIR, "espcn") is not None:
        return SHIPPED_WEIGHTS_DIR
    torch.save(build_model("espcn").state_dict(), weights_path(scratch, "espcn", 1))
    return scratch


def photo_1mp() -> bytes:
    image = Image.open(PHOTO).convert("RGB").resize((SIDE, SIDE), Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


Check = Callable[[httpx.Response], None]
"""Asserts what an answer must be (:func:`cache_hit`, :func:`rendered_miss`)."""


async def measure(
    http: httpx.AsyncClient, paths: list[str], concurrency: int, check: Check | None = None
) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 milliseconds over ``paths``, ``concurrency`` at a time
    (each answer passing ``check``)."""
    elapsed, latencies = await measured(http, paths, concurrency, check)
    return summarise(latencies, elapsed)


async def measured(
    http: httpx.AsyncClient, paths: list[str], concurrency: int, check: Check | None = None
) -> tuple[float, list[float]]:
    """Seconds for all of ``paths``, ``concurrency`` at a time, and each request's latency
    (each answer passing ``check``)."""
    latencies: list[float] = []
    queue: asyncio.Queue[str] = asyncio.Queue()
    for path in paths:
        queue.put_nowait(path)

    async def client() -> None:
        while not queue.empty():
            path = queue.get_nowait()
            started = time.perf_counter()
            response = await http.get(path)
            latencies.append(time.perf_counter() - started)
            assert response.status_code == 200, response.text
            if check is not None:
                check(response)

    started = time.perf_counter()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its reaped children, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = sum(int(fields[i]) for i in (11, 12, 13, 14))
    return ticks / os.sysconf("SC_CLK_TCK")


async def taking_turns(
    http: httpx.AsyncClient, kinds: dict[str, str], count: int, concurrency: int, pid: int
) -> dict[str, tuple[tuple[float, float, float], float]]:
    """Each kind's (req/s, p50, p99) and the server's CPU ms per request, the kinds taking
    turns in rounds of ``ROUND`` requests so that every kind sees the same background load."""
    latencies: dict[str, list[float]] = {name: [] for name in kinds}
    elapsed = dict.fromkeys(kinds, 0.0)
    cpu = dict.fromkeys(kinds, 0.0)
    for _ in range(count // ROUND):
        for name, path in kinds.items():
            before, started = cpu_seconds(pid), time.perf_counter()
            check = cache_hit if path.startswith("/v1/") else None
            _, round_latencies = await measured(http, [path] * ROUND, concurrency, check)
            elapsed[name] += time.perf_counter() - started
            cpu[name] += cpu_seconds(pid) - before
            latencies[name] += round_latencies
    return {
        name: (summarise(latencies[name], elapsed[name]), 1000 * cpu[name] / len(latencies[name]))
        for name in kinds
    }


async def upload(http: httpx.AsyncClient, data: bytes, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await http.post(
            "/v1/images", content=data, headers={"content-type": "image/jpeg"}
        )
        response.raise_for_status()
        ids.append(f"/v1/images/{response.json()['id']}")
    return ids


async def run(queue_api: ApiProcess, local_api: ApiProcess, static_dir: Path) -> list[list[str]]:
    rows: list[list[str]] = []
    data = photo_1mp()

    def row(
        name: str,
        concurrency: int,
        count: int,
        result: tuple[float, float, float],
        cpu_ms: float | None = None,
    ) -> None:
        rps, p50, p99 = result
        cpu = "-" if cpu_ms is None else f"{cpu_ms:.2f}"
        rows.append(
            [name, str(concurrency), str(count), f"{rps:.1f}", f"{p50:.1f}", f"{p99:.1f}", cpu]
        )

    limits = httpx.Limits(max_connections=16)
    async with (
        httpx.AsyncClient(base_url=queue_api.url, timeout=60, limits=limits) as queued,
        httpx.AsyncClient(base_url=local_api.url, timeout=60, limits=limits) as local,
    ):
        (hot,) = await upload(queued, data, 1)
        # compacted first: the swap replaces what a read before it cached (issue 20)
        await compacted(queued, hot.rsplit("/", 1)[1])
        body = (await queued.get(hot)).content
        (static_dir / "hot.jpg").write_bytes(body)
        await measure(queued, [hot] * 20 + ["/static/hot.jpg"] * 20, 4)  # warm both paths
        kinds = {"static file, same bytes": "/static/hot.jpg", "cache hit": hot}
        for concurrency in (1, 8):
            pid = queue_api.process.pid
            results = await taking_turns(queued, kinds, HITS, concurrency, pid)
            for name, (result, cpu_ms) in results.items():
                row(name, concurrency, HITS, result, cpu_ms)
        modes = (("miss, in-process (local)", local), ("miss, via worker (queue)", queued))
        for _, http in modes:
            await measure(http, await unread_renditions(http, data, 2), 1)  # warm the path
        # Concurrency 1 alternates the two modes request by request, so both see the same
        # background load; their difference is the cost of the queue.
        paths = {name: await unread_renditions(http, data, MISSES) for name, http in modes}
        singles: dict[str, list[float]] = {name: [] for name, _ in modes}
        for index in range(MISSES):
            for name, http in modes:
                started = time.perf_counter()
                rendered_miss(await http.get(paths[name][index]))
                singles[name].append(time.perf_counter() - started)
        for name, _ in modes:
            row(name, 1, MISSES, summarise(singles[name], sum(singles[name])))
        for name, http in modes:
            paths[name] = await unread_renditions(http, data, MISSES)
            row(name, 4, MISSES, await measure(http, paths[name], 4, rendered_miss))
    return rows


async def unread_renditions(http: httpx.AsyncClient, data: bytes, count: int) -> list[str]:
    """Paths that each cost a render: ``count`` uploads, each compacted (to its x4 copy,
    :func:`rendered_miss` checks) before it is read, and read at a JPEG quality other than the
    default, a rendition that compaction's own render did not leave in the cache."""
    paths = await upload(http, data, count)
    for path in paths:
        await compacted(http, path.rsplit("/", 1)[1])
    return [f"{path}?quality={MISS_QUALITY}" for path in paths]


def cache_hit(response: httpx.Response) -> None:
    assert response.headers["x-cache"] == "HIT", f"{response.url}: not a hit"


def rendered_miss(response: httpx.Response) -> None:
    """A read that the network rendered: from no cache, and by a model."""
    assert response.status_code == 200, response.text
    assert response.headers["x-cache"] == "MISS", f"{response.url}: not a miss"
    model = response.headers.get("x-model-version", "")
    assert model not in ("", "bicubic"), f"{response.url}: rendered by {model or 'no model'}"


def summarise(latencies: list[float], elapsed: float) -> tuple[float, float, float]:
    """Requests per second, p50 and p99 milliseconds."""
    cuts = statistics.quantiles(latencies, n=100, method="inclusive")
    return len(latencies) / elapsed, 1000 * cuts[49], 1000 * cuts[98]


def report() -> str:
    with tempfile.TemporaryDirectory(prefix="srstore-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "static").mkdir()
        (scratch / "weights").mkdir()
        redis_server = start_redis(scratch)
        seaweed = start_seaweed(scratch / "seaweed")
        processes: list[ApiProcess | WorkerProcess] = []
        try:
            env = {
                "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
                "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
                "SRSTORE_REDIS_URL": redis_server.url,
                "SRSTORE_S3_BUCKET": "bench",
                "SRSTORE_S3_ENDPOINT_URL": seaweed.endpoint_url,
                "SRSTORE_WEIGHTS_DIR": str(weights_dir(scratch / "weights")),
                "SRSTORE_BENCH_STATIC_DIR": str(scratch / "static"),
            }
            processes.append(start_worker(env, "bench", scratch))
            queue_api = start_api({**env, "SRSTORE_INFERENCE": "queue"}, asgi_app="bench.app:app")
            processes.append(queue_api)
            local_api = start_api({**env, "SRSTORE_INFERENCE": "local"}, asgi_app="bench.app:app")
            processes.append(local_api)
            rows = asyncio.run(run(queue_api, local_api, scratch / "static"))
        finally:
            for process in processes:
                process.stop()
            seaweed.stop()
            redis_server.stop()
    by_name = {(r[0], r[1]): r for r in rows}
    hit, static = by_name[("cache hit", "1")], by_name[("static file, same bytes", "1")]
    hit8, static8 = by_name[("cache hit", "8")], by_name[("static file, same bytes", "8")]
    queued, local = (
        by_name[("miss, via worker (queue)", "1")],
        by_name[("miss, in-process (local)", "1")],
    )
    return "\n".join(
        [
            f"HTTP, {SIDE}x{SIDE} JPEG output (1 MP), one API process per mode, one worker:",
            "",
            table(
                ["path", "concurrency", "requests", "req/s", "p50 ms", "p99 ms", "API CPU ms/req"],
                rows,
            ),
            "",
            f"- cost of a cache hit relative to the static file: "
            f"{float(hit[4]) / float(static[4]):.2f}x the p50 latency and "
            f"{float(hit[6]) / float(static[6]):.2f}x the API's CPU at concurrency 1, "
            f"{float(static8[3]) / float(hit8[3]):.2f}x the time per request and "
            f"{float(hit8[6]) / float(static8[6]):.2f}x the CPU at concurrency 8",
            f"- queue path over in-process at concurrency 1: "
            f"{float(queued[4]) - float(local[4]):+.1f} ms at p50, "
            f"{float(queued[5]) - float(local[5]):+.1f} ms at p99",
        ]
    )


def main() -> None:
    print(report())


if __name__ == "__main__":
    main()
