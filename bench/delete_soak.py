"""Deletes racing reads: does any request that started after a DELETE's 204 get the image?

    python -m bench.delete_soak                  # serve --workers 2, embedded and full mode
    python -m bench.delete_soak --duration 10

Loopback only, bounded by ``--duration`` per mode. Readers fetch the live images in random
formats and qualities (most reads are misses, so renders are in flight all the time) while a
deleter removes the image the readers are busiest with and uploads a fresh one. A read is
stale when it started after the DELETE of its image had answered 204 and still got a 200; the
run reports how many there were (the finality claim of RELIABILITY.md is that it is zero).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import random
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import httpx
from PIL import Image

from tests.support.process import start_api
from tests.support.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    SeaweedServer,
    start_redis,
    start_seaweed,
)

PHOTO = Path(__file__).parents[1] / "tests" / "data" / "flower.jpg"
# A few renditions per image, so a rendition cached by a late render is read again.
RENDITIONS = [{}, {"format": "png"}, {"format": "jpeg", "quality": "70"}]


@dataclass
class SoakResult:
    reads: int = 0
    ok: int = 0
    not_found: int = 0
    other: list[str] = field(default_factory=list)
    deletes: int = 0
    stale: list[str] = field(default_factory=list)


def small_pngs(count: int, rng: random.Random) -> list[bytes]:
    photo = Image.open(PHOTO).convert("RGB")
    images = []
    for _ in range(count):
        left, top = rng.randint(0, 400), rng.randint(0, 250)
        buffer = io.BytesIO()
        photo.crop((left, top, left + 160, top + 120)).save(buffer, "PNG")
        images.append(buffer.getvalue())
    return images


# However few deletes a loaded machine fits in, a soak stops this long after its duration.
OVERTIME_SECONDS = 120.0


async def soak(
    client: httpx.AsyncClient,
    duration: float,
    readers: int = 4,
    seed: int = 12,
    min_deletes: int = 0,
) -> SoakResult:
    """Run the race for ``duration`` seconds against ``client``; count stale reads.

    It goes on past ``duration`` until ``min_deletes`` images were deleted (a busy machine
    races fewer in the same time), at most ``OVERTIME_SECONDS`` longer.
    """
    rng = random.Random(seed)
    pool = small_pngs(8, rng)
    result = SoakResult()
    live: list[str] = [await _upload(client, data) for data in pool[:3]]
    recently_deleted: list[str] = []
    deleted_at: dict[str, float] = {}
    end = time.monotonic() + duration

    def running() -> bool:
        now = time.monotonic()
        return now < end or (result.deletes < min_deletes and now < end + OVERTIME_SECONDS)

    def pick() -> str:
        """Mostly the newest image (its renditions are rendering), sometimes a deleted one."""
        roll = rng.random()
        if roll < 0.5 or not recently_deleted:
            return live[-1] if roll < 0.5 else rng.choice(live)
        return rng.choice(recently_deleted)

    async def read() -> None:
        while running():
            image_id = pick()
            query = rng.choice(RENDITIONS)
            started = time.monotonic()
            response = await client.get(f"/v1/images/{image_id}", params=query)
            result.reads += 1
            if response.status_code == 200:
                result.ok += 1
                if image_id in deleted_at and started > deleted_at[image_id]:
                    result.stale.append(f"{image_id} X-Cache {response.headers['x-cache']}")
            elif response.status_code == 404:
                result.not_found += 1
            else:
                result.other.append(f"{response.status_code} {response.text[:120]}")

    async def delete() -> None:
        while running():
            live.append(await _upload(client, rng.choice(pool)))
            await asyncio.sleep(rng.uniform(0.0, 0.1))  # readers are rendering it now
            victim = live.pop()
            response = await client.delete(f"/v1/images/{victim}")
            if response.status_code == 204:
                deleted_at[victim] = time.monotonic()
                result.deletes += 1
            recently_deleted[:] = [*recently_deleted[-3:], victim]

    await asyncio.gather(delete(), *(read() for _ in range(readers)))
    return result


async def _upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    response.raise_for_status()
    return str(response.json()["id"])


@contextmanager
def deployment(mode: str, workdir: Path) -> Iterator[str]:
    """``srstore serve --workers 2``, embedded or against real Redis and SeaweedFS."""
    env = {"SRSTORE_DATA_DIR": str(workdir / "data"), "SRSTORE_TORCH_THREADS": "1"}
    servers: list[RedisServer | SeaweedServer] = []
    if mode == "full":
        (workdir / "redis").mkdir()
        redis_server = start_redis(workdir / "redis")
        seaweed = start_seaweed(workdir / "seaweed")
        servers = [redis_server, seaweed]
        os.environ.setdefault("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
        env |= {
            "SRSTORE_REDIS_URL": redis_server.url,
            "SRSTORE_S3_BUCKET": "srstore-soak",
            "SRSTORE_S3_ENDPOINT_URL": seaweed.endpoint_url,
        }
    api = start_api(env, workers=2)
    try:
        yield api.url
    finally:
        api.stop()
        for server in servers:
            server.stop()


async def run_mode(url: str, duration: float, readers: int) -> SoakResult:
    limits = httpx.Limits(max_keepalive_connections=0)  # each request may meet either process
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        return await soak(client, duration, readers)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=30.0, help="seconds per mode")
    parser.add_argument("--readers", type=int, default=6)
    parser.add_argument("--modes", nargs="+", default=["embedded", "full"])
    args = parser.parse_args(argv)
    print("| mode (serve --workers 2) | reads | 200 | 404 | other | deletes | stale 200s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    stale = 0
    for mode in args.modes:
        with (
            tempfile.TemporaryDirectory(prefix="srstore-soak-") as workdir,
            deployment(mode, Path(workdir)) as url,
        ):
            r = asyncio.run(run_mode(url, args.duration, args.readers))
        stale += len(r.stale)
        print(
            f"| {mode} | {r.reads} | {r.ok} | {r.not_found} | {len(r.other)} | {r.deletes} "
            f"| {len(r.stale)} |"
        )
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
