"""What the app adds to a cache hit, against a static file of the same bytes, in one process.

    python -m bench.hitpath [--requests 2000] [--profile]

Both requests are sent straight into the ASGI app ``srstore serve`` runs (its middlewares,
routing and route; no socket, no HTTP parser), so the difference between them is the app's
own work on a hit: the request's options, the cache lookup in a real Redis, the headers.
The static file is Starlette's ``StaticFiles`` mounted on the same app. The two take turns
request by request, and the CPU is this process's (``time.process_time``), which other
tenants of a shared machine do not inflate as they do wall time. ``--profile`` adds the
functions a hit spends its CPU in (cProfile).
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.types import Message

from app.main import create_app
from bench.inference import table
from bench.service import photo_1mp, weights_dir
from config.settings import Settings
from tests.support.servers import start_redis

Request = Callable[[], Awaitable[tuple[int, bytes]]]


def asgi_request(
    app: FastAPI, method: str, path: str, body: bytes = b"", content_type: str = ""
) -> Request:
    """A request as uvicorn hands it to the app, replayable; it answers (status, body)."""
    headers = [(b"host", b"127.0.0.1"), (b"accept", b"*/*"), (b"user-agent", b"bench")]
    if body:
        headers += [
            (b"content-type", content_type.encode()),
            (b"content-length", str(len(body)).encode()),
        ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }

    async def run() -> tuple[int, bytes]:
        sent = False
        status = 0
        chunks: list[bytes] = []

        async def receive() -> Message:
            nonlocal sent
            if sent:
                await asyncio.Event().wait()  # no disconnect while the app answers
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await app(dict(scope), receive, send)
        return status, b"".join(chunks)

    return run


async def measure(kinds: dict[str, Request], requests: int) -> dict[str, tuple[float, float]]:
    """CPU and wall microseconds per request of each kind, the kinds taking turns."""
    cpu = dict.fromkeys(kinds, 0.0)
    wall = dict.fromkeys(kinds, 0.0)
    for _ in range(requests):
        for name, request in kinds.items():
            cpu_before, wall_before = time.process_time(), time.perf_counter()
            status, _ = await request()
            cpu[name] += time.process_time() - cpu_before
            wall[name] += time.perf_counter() - wall_before
            assert status == 200, (name, status)
    return {name: (1e6 * cpu[name] / requests, 1e6 * wall[name] / requests) for name in kinds}


async def run(scratch: Path, redis_url: str, requests: int, profile: bool) -> str:
    settings = Settings(
        data_dir=scratch / "data",
        redis_url=redis_url,
        weights_dir=weights_dir(scratch / "weights"),
    )
    app = create_app(settings)
    (scratch / "static").mkdir()
    app.mount("/static", StaticFiles(directory=scratch / "static"), "static")
    async with app.router.lifespan_context(app):
        status, body = await asgi_request(app, "POST", "/v1/images", photo_1mp(), "image/jpeg")()
        assert status == 201, body
        image_id = body.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        hit = asgi_request(app, "GET", f"/v1/images/{image_id}")
        _, rendered = await hit()  # the miss that fills the cache
        (scratch / "static" / "hot.jpg").write_bytes(rendered)
        kinds = {
            "static file, same bytes": asgi_request(app, "GET", "/static/hot.jpg"),
            "cache hit": hit,
        }
        await measure(kinds, 50)
        results = await measure(kinds, requests)
        profiled = ""
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            await measure({"cache hit": hit}, requests)
            profiler.disable()
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
            profiled = out.getvalue()
    (static_cpu, static_wall), (hit_cpu, hit_wall) = results.values()
    rows = [[name, f"{c:.0f}", f"{w:.0f}"] for name, (c, w) in results.items()]
    lines = [
        f"In-process ASGI, {requests} requests of each kind, taking turns (Redis cache):",
        "",
        table(["request", "CPU us/request", "wall us/request"], rows),
        "",
        f"- cache hit vs static file: {hit_cpu / static_cpu:.2f}x the CPU, "
        f"{hit_wall / static_wall:.2f}x the wall time",
    ]
    if profiled:
        lines += ["", "cProfile of the cache hits, by own time:", profiled]
    return "\n".join(lines)


def report(requests: int = 2000, profile: bool = False) -> str:
    with tempfile.TemporaryDirectory(prefix="srstore-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "weights").mkdir()
        redis_server = start_redis(scratch)
        try:
            return asyncio.run(run(scratch, redis_server.url, requests, profile))
        finally:
            redis_server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    print(report(args.requests, args.profile))


if __name__ == "__main__":
    main()
