"""Delivery: what a thumbnail, a full-size miss, a hit and each output encoder cost.

    python -m bench.delivery [--misses 12] [--hits 300] [--photo PATH]

Table 1 (in this process): AVIF and WebP encode time, size and Y-PSNR of a 1-megapixel photo
at each encoder speed, the basis of ``SRSTORE_OUTPUT_AVIF_SPEED`` and the WebP method.
Table 2 (over HTTP on 127.0.0.1, real Redis and SeaweedFS, one API process in local mode):
latency and the API process's CPU time per request for a static file, a cache hit, a
thumbnail miss made from the stored copy, and a full-size miss through the network. Misses
of the two kinds alternate request by request, so both see the same background load.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image, ImageOps

from bench.inference import table
from bench.service import cpu_seconds, photo_1mp, summarise, weights_dir
from models.validation import luma_psnr
from tests.support.process import ApiProcess, start_api
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY, start_redis, start_seaweed

ENCODERS: list[tuple[str, str, dict[str, int]]] = [
    ("WebP q85 method 0", "WEBP", {"quality": 85, "method": 0}),
    ("WebP q85 method 2 (served)", "WEBP", {"quality": 85, "method": 2}),
    ("WebP q85 method 4 (Pillow default)", "WEBP", {"quality": 85, "method": 4}),
    ("AVIF q60 speed 4", "AVIF", {"quality": 60, "speed": 4}),
    ("AVIF q60 speed 6 (Pillow default)", "AVIF", {"quality": 60, "speed": 6}),
    ("AVIF q60 speed 8 (served)", "AVIF", {"quality": 60, "speed": 8}),
    ("AVIF q60 speed 9", "AVIF", {"quality": 60, "speed": 9}),
    ("AVIF q60 speed 10", "AVIF", {"quality": 60, "speed": 10}),
]


def median_ms(work: Callable[[], object], repeat: int = 5) -> float:
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def encoder_rows(photo: Path | None) -> list[list[str]]:
    if photo is None:
        image = Image.open(io.BytesIO(photo_1mp())).convert("RGB")
    else:
        image = ImageOps.fit(Image.open(photo).convert("RGB"), (1024, 1024))
    rows = []
    for label, fmt, options in ENCODERS:

        def encode(fmt: str = fmt, options: dict[str, int] = options) -> bytes:
            buffer = io.BytesIO()
            image.save(buffer, fmt, **options)
            return buffer.getvalue()

        data = encode()
        decoded = Image.open(io.BytesIO(data)).convert("RGB")
        rows.append(
            [
                label,
                f"{median_ms(encode):.1f}",
                str(len(data)),
                f"{luma_psnr(decoded, image):.2f}",
            ]
        )
    return rows


async def upload(http: httpx.AsyncClient, data: bytes, count: int) -> list[str]:
    ids = []
    for _ in range(count):
        response = await http.post(
            "/v1/images", content=data, headers={"content-type": "image/jpeg"}
        )
        response.raise_for_status()
        ids.append(f"/v1/images/{response.json()['id']}")
    return ids


async def timed(http: httpx.AsyncClient, path: str, params: dict[str, str]) -> float:
    started = time.perf_counter()
    response = await http.get(path, params=params)
    assert response.status_code == 200, response.text
    return time.perf_counter() - started


async def interleaved(
    http: httpx.AsyncClient, requests: dict[str, list[tuple[str, dict[str, str]]]], pid: int
) -> dict[str, tuple[list[float], float]]:
    """Latencies and total API CPU seconds per kind, the kinds taking turns request by request."""
    latencies: dict[str, list[float]] = {name: [] for name in requests}
    cpu = dict.fromkeys(requests, 0.0)
    for index in range(len(next(iter(requests.values())))):
        for name, queue in requests.items():
            path, params = queue[index]
            before = cpu_seconds(pid)
            latencies[name].append(await timed(http, path, params))
            cpu[name] += cpu_seconds(pid) - before
    return {name: (latencies[name], cpu[name]) for name in requests}


async def http_rows(api: ApiProcess, static: Path, misses: int, hits: int) -> list[list[str]]:
    rows: list[list[str]] = []
    pid = api.process.pid

    def row(name: str, latencies: list[float], cpu: float) -> None:
        _, p50, p99 = summarise(latencies, sum(latencies))
        per = 1000 * cpu / len(latencies)
        rows.append([name, str(len(latencies)), f"{p50:.1f}", f"{p99:.1f}", f"{per:.2f}"])

    data = photo_1mp()
    kinds = {
        "thumbnail miss, w=256 (stored copy, no model)": {"w": "256", "format": "jpeg"},
        "full-size miss, 1024x1024 (ESPCN)": {"format": "jpeg"},
    }
    async with httpx.AsyncClient(base_url=api.url, timeout=60) as http:
        (hot,) = await upload(http, data, 1)
        (static / "hot.jpg").write_bytes((await http.get(hot)).content)
        for params in kinds.values():  # warm both render paths
            await timed(http, (await upload(http, data, 1))[0], params)
        # The static file and the hit take turns request by request, as do the two misses,
        # so each pair sees the same background load.
        same = {"static file, same bytes": "/static/hot.jpg", "cache hit": hot}
        no_params: dict[str, str] = {}
        await interleaved(http, {n: [(p, no_params)] * 20 for n, p in same.items()}, pid)
        hit_requests = {name: [(path, no_params)] * hits for name, path in same.items()}
        for name, (latencies, cpu) in (await interleaved(http, hit_requests, pid)).items():
            row(name, latencies, cpu)
        miss_requests = {
            name: [(path, params) for path in await upload(http, data, misses)]
            for name, params in kinds.items()
        }
        for name, (latencies, cpu) in (await interleaved(http, miss_requests, pid)).items():
            row(name, latencies, cpu)
    return rows


def measure_http(misses: int, hits: int) -> list[list[str]]:
    with tempfile.TemporaryDirectory(prefix="srstore-bench-") as scratch_dir:
        scratch = Path(scratch_dir)
        (scratch / "static").mkdir()
        (scratch / "weights").mkdir()
        redis_server = start_redis(scratch)
        seaweed = start_seaweed(scratch / "seaweed")
        api = None
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
            api = start_api(env, asgi_app="bench.app:app")
            return asyncio.run(http_rows(api, scratch / "static", misses, hits))
        finally:
            if api is not None:
                api.stop()
            seaweed.stop()
            redis_server.stop()


def report(misses: int, hits: int, photo: Path | None) -> str:
    encoders = encoder_rows(photo)
    served = measure_http(misses, hits)
    by_name = {r[0]: r for r in served}
    thumb, full = (by_name[n] for n in list(by_name)[2:])
    hit, static = by_name["cache hit"], by_name["static file, same bytes"]
    return "\n".join(
        [
            f"Output encoders, {photo or 'the test photo resized'} at 1024x1024 (1 MP), "
            "median of 5:",
            "",
            table(["encoder", "ms", "bytes", "Y-PSNR dB"], encoders),
            "",
            "HTTP, one API process (local mode, Redis, SeaweedFS), concurrency 1, "
            "CPU = the API process's user+system time per request:",
            "",
            table(["request", "requests", "p50 ms", "p99 ms", "CPU ms/request"], served),
            "",
            f"- thumbnail vs full-size miss: {float(full[2]) / float(thumb[2]):.1f}x faster "
            f"at p50, {float(full[4]) / float(thumb[4]):.1f}x less CPU",
            f"- cache hit vs static file: {float(hit[2]) / float(static[2]):.2f}x the p50 "
            f"latency, {float(hit[4]) / float(static[4]):.2f}x the CPU",
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--misses", type=int, default=12)
    parser.add_argument("--hits", type=int, default=300)
    parser.add_argument("--photo", type=Path, help="photo for the encoder table (centre crop)")
    args = parser.parse_args()
    print(report(args.misses, args.hits, args.photo))


if __name__ == "__main__":
    main()
