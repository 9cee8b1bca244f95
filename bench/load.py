"""A bounded load run against the full local stack: real Redis, SeaweedFS and ``srstore serve``.

    python -m bench.load                      # about 2.5 minutes, defaults below
    python -m bench.load --duration 20        # a short run

Loopback only. Stops by itself after ``--duration`` seconds or ``--requests`` requests,
whichever comes first. Uploads and fetches run from ``--concurrency`` async clients; fetches
pick images with a Zipf skew (a few hot, a long cold tail) and sometimes ask for another
format, so hits and misses mix as they would in front of real users. Prints throughput,
p50/p99 per kind of request, the error count (every request here is valid: any status other
than 201 for an upload and 200 for a fetch is an error) and the peak RSS of each process.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import random
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import httpx
from PIL import Image

from tests.support.process import ApiProcess, start_api
from tests.support.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    SeaweedServer,
    start_redis,
    start_seaweed,
)

PHOTOS = [Path(__file__).parents[1] / "tests" / "data" / n for n in ("flower.jpg", "storm.jpg")]


def upload_pool(count: int, rng: random.Random) -> list[bytes]:
    """JPEG crops of the test photographs, 96 to 602 pixels wide."""
    photos = [Image.open(path).convert("RGB") for path in PHOTOS]
    pool = []
    for _ in range(count):
        photo = rng.choice(photos)
        width, height = rng.randint(96, photo.width), rng.randint(64, photo.height)
        left, top = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
        buffer = io.BytesIO()
        photo.crop((left, top, left + width, top + height)).save(buffer, "JPEG", quality=90)
        pool.append(buffer.getvalue())
    return pool


def peak_rss_mib(pid: int) -> float:
    """VmHWM: the most resident memory the process ever had."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


class Run:
    def __init__(self, args: argparse.Namespace, url: str) -> None:
        self.args = args
        self.url = url
        self.rng = random.Random(args.seed)
        self.pool = upload_pool(64, self.rng)
        self.ids: list[str] = []
        self.latency: dict[str, list[float]] = defaultdict(list)
        self.outcomes: Counter[str] = Counter()
        self.errors: Counter[str] = Counter()
        self.sent = 0

    def pick_id(self) -> str:
        """Zipf over the images in upload order (low ranks are hot), or any image at all."""
        if self.rng.random() < self.args.cold:
            return self.rng.choice(self.ids)
        rank = min(int(self.rng.paretovariate(self.args.zipf)) - 1, len(self.ids) - 1)
        return self.ids[rank]

    async def upload(self, http: httpx.AsyncClient) -> None:
        data = self.rng.choice(self.pool)
        started = time.perf_counter()
        response = await http.post(
            "/v1/images", content=data, headers={"content-type": "image/jpeg"}
        )
        self.record("upload", started, response, 201)
        if response.status_code == 201:
            self.ids.append(response.json()["id"])

    async def fetch(self, http: httpx.AsyncClient) -> None:
        roll = self.rng.random()
        params = {"format": "webp"} if roll < 0.10 else {"format": "png"} if roll < 0.15 else {}
        started = time.perf_counter()
        response = await http.get(f"/v1/images/{self.pick_id()}", params=params)
        kind = f"fetch {response.headers.get('x-cache', '?')}"
        self.record(kind, started, response, 200)

    def record(self, kind: str, started: float, response: httpx.Response, ok: int) -> None:
        self.latency[kind].append(time.perf_counter() - started)
        self.outcomes[f"{kind} {response.status_code}"] += 1
        if response.status_code != ok:
            self.errors[f"{kind} {response.status_code}"] += 1

    async def client(self, deadline: float) -> None:
        limits = httpx.Limits(max_connections=1)
        async with httpx.AsyncClient(base_url=self.url, timeout=60, limits=limits) as http:
            while time.monotonic() < deadline and self.sent < self.args.requests:
                self.sent += 1
                try:
                    if self.rng.random() < self.args.upload_ratio:
                        await self.upload(http)
                    else:
                        await self.fetch(http)
                except httpx.HTTPError as exc:
                    self.errors[type(exc).__name__] += 1

    async def main(self) -> float:
        async with httpx.AsyncClient(base_url=self.url, timeout=60) as http:
            for _ in range(self.args.preload):
                await self.upload(http)
        self.latency.clear()
        self.outcomes.clear()
        started = time.monotonic()
        deadline = started + self.args.duration
        await asyncio.gather(*(self.client(deadline) for _ in range(self.args.concurrency)))
        return time.monotonic() - started


def untrained_espcn_weights(directory: Path) -> Path:
    """Randomly initialised ESPCN: the same compute per pixel as trained weights."""
    import torch

    from models.archs import build_model

    torch.manual_seed(0)
    torch.save(build_model("espcn").state_dict(), directory / "espcn-x4-v1.pt")
    return directory


def start_stack(
    workdir: Path, args: argparse.Namespace
) -> tuple[RedisServer, SeaweedServer, ApiProcess]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    (workdir / "redis").mkdir()
    redis = start_redis(workdir / "redis")
    seaweed = start_seaweed(workdir / "seaweed")
    env = {
        "SRSTORE_S3_BUCKET": "srstore-bench",
        "SRSTORE_S3_ENDPOINT_URL": seaweed.endpoint_url,
        "SRSTORE_REDIS_URL": redis.url,
        "SRSTORE_DATA_DIR": str(workdir / "data"),
        "SRSTORE_DEVICE": "cpu",
    }
    if args.model == "espcn-untrained":
        weights = workdir / "weights"
        weights.mkdir()
        env["SRSTORE_WEIGHTS_DIR"] = str(untrained_espcn_weights(weights))
    if args.torch_threads:
        env["SRSTORE_TORCH_THREADS"] = str(args.torch_threads)
    api = start_api(env, log_path=workdir / "api.log")
    return redis, seaweed, api


def report(run: Run, elapsed: float, processes: dict[str, int], model: str) -> dict:
    total = sum(len(v) for v in run.latency.values())
    result = {
        "duration_s": round(elapsed, 1),
        "requests": total,
        "throughput_rps": round(total / elapsed, 1),
        "errors": sum(run.errors.values()),
        "error_kinds": dict(run.errors),
        "model": model,
        "by_kind": {
            kind: {
                "count": len(values),
                "p50_ms": round(1000 * percentile(values, 0.50), 1),
                "p99_ms": round(1000 * percentile(values, 0.99), 1),
            }
            for kind, values in sorted(run.latency.items())
        },
        "peak_rss_mib": {name: round(peak_rss_mib(pid), 1) for name, pid in processes.items()},
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.load",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=150, help="seconds (default 150)")
    parser.add_argument("--requests", type=int, default=50_000, help="request cap")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--upload-ratio", type=float, default=0.1)
    parser.add_argument("--preload", type=int, default=40, help="images uploaded first")
    parser.add_argument("--zipf", type=float, default=1.2, help="Pareto shape of popularity")
    parser.add_argument("--cold", type=float, default=0.3, help="share of uniform picks")
    parser.add_argument(
        "--model",
        choices=["espcn-untrained", "shipped"],
        default="espcn-untrained",
        help="untrained ESPCN weights (real compute), or what the repo ships",
    )
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="srstore-load-") as tmp:
        redis, seaweed, api = start_stack(Path(tmp), args)
        try:
            model = httpx.get(f"{api.url}/readyz").json()["model"]
            run = Run(args, api.url)
            elapsed = asyncio.run(run.main())
            processes = {
                "srstore serve": api.process.pid,
                "redis-server": redis.process.pid,
                "weed mini": seaweed.process.pid,
                "load client": os.getpid(),
            }
            result = report(run, elapsed, processes, model)
        finally:
            api.stop()
            seaweed.stop()
            redis.stop()
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
