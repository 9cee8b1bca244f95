"""What srstore's Redis keys cost: bytes per key kind and commands per second, for
docs/capacity.md.

Starts a real ``redis-server`` (loopback, free port), writes keys through srstore's own
classes (RedisCache, RedisLedger, JobQueue), and prints a table: ``MEMORY USAGE`` of each key
kind, and how many cache hits and misses one Redis answered per second from one process with
16 requests in flight (an API process's load), with the CPU time Redis itself spent per
lookup (from /proc, 10 ms ticks: run it for seconds, not less).

    PYTHONPATH=. .venv/bin/python -m bench.redis_keys [--seconds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from redis import asyncio as aioredis

from cache import CacheKey, RedisCache
from keyspace import ledger_debited
from ledger import RedisLedger
from render.queue import JobQueue, RenderJob
from tests.support.servers import start_redis

ENTRY_BYTES = 60_000  # a 1 MP JPEG q90 rendition (bench/RESULTS.md: 57,886 B)
IMAGE_ID = "kq3XbZ0aR1W2kq3XbZ0aR1"


def redis_cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def sizes(url: str) -> list[tuple[str, int]]:
    cache = RedisCache(url, 86_400)
    ledger = RedisLedger(url)
    raw = aioredis.Redis.from_url(url)
    key = CacheKey(IMAGE_ID, "espcn:2", "jpeg", 90)
    await cache.put(key, b"x" * ENTRY_BYTES)
    await cache.put(CacheKey(IMAGE_ID, "meta", "json"), b"{" + b"m" * 400 + b"}")
    entry = await raw.memory_usage(str(key))
    index = await raw.memory_usage(f"hr:{{{IMAGE_ID}}}:keys")
    await cache.mark_deleted(IMAGE_ID)
    mark = await raw.memory_usage(f"hr:{{{IMAGE_ID}}}:deleted")
    await ledger.debit_once(IMAGE_ID, 1000, 100)
    debited = await raw.memory_usage(ledger_debited(IMAGE_ID))
    queue = JobQueue(raw, "bench:render", 256)
    await queue.enqueue(RenderJob(key, time.time() + 20))
    stream = await raw.memory_usage(queue.shards[0])
    last_read = "bench:last-read"  # like srstore:{last-read}: one member per image read
    for start in range(0, 10_000, 1000):
        members = {f"{n:022d}": time.time() for n in range(start, start + 1000)}
        await raw.zadd(last_read, members)  # type: ignore[arg-type]
    zset = await raw.memory_usage(last_read, samples=0)
    for closing in (cache, ledger):
        await closing.close()
    await raw.aclose()
    return [
        (f"rendition entry ({ENTRY_BYTES} B of image)", int(entry or 0)),
        ("rendition index (set of 2 names)", int(index or 0)),
        ("delete mark hr:{id}:deleted", int(mark or 0)),
        ("ledger debit mark", int(debited or 0)),
        ("queue shard with 1 job (stream + group)", int(stream or 0)),
        ("last-read sorted set, per image (of 10,000)", int(zset or 0) // 10_000),
    ]


async def rate(url: str, seconds: float, pid: int, hit: bool) -> tuple[float, float]:
    """Cache lookups per second (16 in flight), and Redis's CPU seconds per 1000 of them."""
    cache = RedisCache(url, 86_400)
    keys = [CacheKey(f"img{n:019d}", "espcn:2", "jpeg", 90) for n in range(256)]
    if hit:
        for key in keys:
            await cache.put(key, b"x" * ENTRY_BYTES)
    done = 0
    stop = time.monotonic() + seconds

    async def client(offset: int) -> None:
        nonlocal done
        n = offset
        while time.monotonic() < stop:
            await cache.get(keys[n % len(keys)] if hit else CacheKey(f"miss{n}", "m", "png"))
            done += 1
            n += 16

    cpu = redis_cpu_seconds(pid)
    started = time.monotonic()
    await asyncio.gather(*(client(i) for i in range(16)))
    elapsed = time.monotonic() - started
    cpu = redis_cpu_seconds(pid) - cpu
    await cache.close()
    return done / elapsed, cpu / done * 1e6


async def main(seconds: float) -> None:
    with tempfile.TemporaryDirectory() as workdir:
        server = start_redis(Path(workdir))
        try:
            measured = await sizes(server.url)
            hits = await rate(server.url, seconds, server.process.pid, hit=True)
            misses = await rate(server.url, seconds, server.process.pid, hit=False)
        finally:
            server.stop()
    print(f"load average: {os.getloadavg()}")
    print("\n| key | bytes (MEMORY USAGE) |\n|---|---:|")
    for name, size in measured:
        print(f"| {name} | {size} |")
    print("\n| lookup (one client process, 16 in flight) | per second | Redis CPU µs per lookup |")
    print("|---|---:|---:|")
    print(f"| hit, {ENTRY_BYTES} B entry | {hits[0]:.0f} | {hits[1]:.1f} |")
    print(f"| miss | {misses[0]:.0f} | {misses[1]:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    asyncio.run(main(parser.parse_args().seconds))
