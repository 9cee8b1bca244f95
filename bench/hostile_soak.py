"""Normal traffic with and without the attacks of issue 23 beside it, against a real server.

    python -m bench.hostile_soak                   # 60 s without attacks, then 60 s with
    python -m bench.hostile_soak --duration 10

Loopback only, one ``srstore serve`` (embedded store and cache), bounded by ``--duration``
per phase. Normal clients (127.0.0.1) upload small photos, read misses (new sizes and
formats of recent uploads) and probe ``/readyz`` every 250 ms. In the second phase attackers
on other loopback addresses (127.0.0.2, 127.0.0.3) run beside them: a 16 KB
``If-None-Match`` of spaces, AVIF enlargements at random sizes and qualities, HEADs of them,
a churn of distinct thumbnails, listings of 100, invented methods, ranges with 5,000 digits,
``guarded psnr:99`` uploads of checkerboards, and metric scrapes.

It prints one row per phase and the ratios, and exits 1 unless: ``/readyz`` answered 200 to
every probe within its 2 s timeout, the normal upload and miss p95 of the attack phase are
within ``--max-ratio`` (3x) of the quiet phase, the server's RSS stayed under ``--rss-mib``,
and no answer was a 500.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import multiprocessing
import os
import random
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from PIL import Image
from tabulate import tabulate

from tests.support.process import ApiProcess, start_api

PHOTO = Path(__file__).parents[1] / "tests" / "data" / "flower.jpg"
RSS_BOUND_MIB = 3072  # the documented bound (RELIABILITY.md); --rss-mib overrides
NORMAL, ATTACKERS = "127.0.0.1", ("127.0.0.2", "127.0.0.3")

Send = Callable[[httpx.AsyncClient], Awaitable[httpx.Response]]


@dataclass
class Phase:
    uploads: list[float] = field(default_factory=list)  # seconds, normal uploads answered 201
    misses: list[float] = field(default_factory=list)  # seconds, normal reads answered MISS
    normal_failures: Counter[str] = field(default_factory=Counter)
    probes: int = 0
    not_ready: int = 0
    slowest_probe: float = 0.0
    attacks: Counter[str] = field(default_factory=Counter)  # "what status" -> count
    rss_mib: int = 0
    cpu_seconds: float = 0.0

    def server_errors(self) -> int:
        return sum(n for what, n in self.attacks.items() if what.endswith(" 500")) + sum(
            n for what, n in self.normal_failures.items() if what.startswith("500")
        )


def p95(values: list[float]) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]


def photos(count: int, rng: random.Random) -> list[bytes]:
    photo = Image.open(PHOTO).convert("RGB")
    out = []
    for _ in range(count):
        width, height = rng.choice([(320, 240), (400, 300), (480, 320)])
        left, top = rng.randint(0, photo.width - width), rng.randint(0, photo.height - height)
        buffer = io.BytesIO()
        photo.crop((left, top, left + width, top + height)).save(buffer, "JPEG", quality=90)
        out.append(buffer.getvalue())
    return out


def checkerboard(side: int) -> bytes:
    image = Image.new("L", (side, side))
    image.putdata([255 * ((x // 2 + y // 2) % 2) for y in range(side) for x in range(side)])
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def _client(url: str, address: str, timeout: float = 60) -> httpx.AsyncClient:
    transport = httpx.AsyncHTTPTransport(local_address=address)
    return httpx.AsyncClient(base_url=url, transport=transport, timeout=timeout)


def _process_figures(pid: int) -> tuple[int, float]:
    """RSS (MiB) and CPU seconds (user + system) of the server process."""
    rss = 0
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1]) // 1024
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return rss, (int(fields[11]) + int(fields[12])) / ticks


async def run_phase(api: ApiProcess, duration: float, attacks: bool, seed: int) -> Phase:
    rng = random.Random(seed)
    phase = Phase()
    pool = photos(12, rng)
    url = api.url
    _, cpu_before = _process_figures(api.process.pid)
    async with _client(url, NORMAL) as normal:
        recent = [await _upload(normal, data) for data in pool[:3]]
        stop = time.monotonic() + duration  # the phase is its traffic, not these first uploads

        async def uploader() -> None:
            while time.monotonic() < stop:
                started = time.monotonic()
                try:
                    answer = await normal.post(
                        "/v1/images",
                        content=rng.choice(pool),
                        headers={"content-type": "image/jpeg"},
                    )
                except httpx.HTTPError as exc:
                    phase.normal_failures[f"upload {type(exc).__name__}"] += 1
                    continue
                if answer.status_code == 201:
                    phase.uploads.append(time.monotonic() - started)
                    recent.append(str(answer.json()["id"]))
                else:
                    phase.normal_failures[f"{answer.status_code} upload"] += 1
                await asyncio.sleep(0.5)

        async def misser() -> None:
            made: set[str] = set()
            while time.monotonic() < stop:
                image_id = rng.choice(recent[-6:])
                query = rng.choice(["", "?format=png", "?format=webp", "?w=120", "?w=160"])
                if image_id + query in made:
                    await asyncio.sleep(0.05)
                    continue
                made.add(image_id + query)
                started = time.monotonic()
                try:
                    answer = await normal.get(f"/v1/images/{image_id}{query}")
                except httpx.HTTPError as exc:
                    phase.normal_failures[f"read {type(exc).__name__}"] += 1
                    continue
                if answer.status_code != 200:
                    phase.normal_failures[f"{answer.status_code} read"] += 1
                elif answer.headers["x-cache"] == "MISS":
                    phase.misses.append(time.monotonic() - started)

        def prober() -> None:
            """On a thread of its own, as a kubelet probes: this loop's work never delays it."""
            with httpx.Client(base_url=url, timeout=2) as probe:
                while time.monotonic() < stop:
                    started = time.monotonic()
                    try:
                        ready = probe.get("/readyz").status_code == 200
                    except httpx.HTTPError:
                        ready = False
                    phase.probes += 1
                    phase.not_ready += not ready
                    phase.slowest_probe = max(phase.slowest_probe, time.monotonic() - started)
                    time.sleep(0.25)

        async def watch_rss() -> None:
            while time.monotonic() < stop:
                rss, _ = _process_figures(api.process.pid)
                phase.rss_mib = max(phase.rss_mib, rss)
                await asyncio.sleep(0.5)

        tasks = [uploader(), misser(), misser(), asyncio.to_thread(prober), watch_rss()]
        if attacks:
            # The attackers run in a process of their own, so their loop never delays the
            # normal clients' measurements.
            spawn = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(1, mp_context=spawn) as attackers:
                attacking = asyncio.get_running_loop().run_in_executor(
                    attackers, attack, url, recent[:3], stop, seed
                )
                await asyncio.gather(*tasks)
                phase.attacks.update(await attacking)
        else:
            await asyncio.gather(*tasks)
    _, cpu_after = _process_figures(api.process.pid)
    phase.cpu_seconds = cpu_after - cpu_before
    return phase


def attack(url: str, targets: list[str], stop: float, seed: int) -> Counter[str]:
    """Every attack until ``stop`` (``time.monotonic``, one clock for every process here), in
    the attackers' process: the answers by kind."""
    answers: Counter[str] = Counter()

    async def run() -> None:
        await asyncio.gather(*_attacks(url, targets, answers, stop, random.Random(seed)))

    asyncio.run(run())
    return answers


def _attacks(
    url: str, recent: list[str], answers: Counter[str], stop: float, rng: random.Random
) -> list[Coroutine[Any, Any, None]]:
    board = checkerboard(192)

    async def loop(name: str, address: str, send: Send) -> None:
        async with _client(url, address, timeout=120) as client:
            while time.monotonic() < stop:
                try:
                    answer = await send(client)
                except httpx.HTTPError as exc:
                    answers[f"{name} {type(exc).__name__}"] += 1
                    await asyncio.sleep(0.1)
                    continue
                answers[f"{name} {answer.status_code}"] += 1
                if answer.status_code in (429, 503):
                    await asyncio.sleep(0.05)  # an attacker that ignores Retry-After

    def target() -> str:
        return f"/v1/images/{rng.choice(recent[:3])}"

    a, b = ATTACKERS
    spaces = "a" + " " * 16_000 + "a"
    attacks: list[tuple[str, str, Send]] = [
        ("if-none-match", a, lambda c: c.get(target(), headers={"If-None-Match": spaces})),
        ("range digits", a, lambda c: c.get(target() + "/stored",
                                             headers={"Range": "bytes=0-" + "9" * 5000})),
        ("invented method", a, lambda c: c.request(f"M{rng.randint(0, 10**6)}", "/healthz")),
        ("metrics", a, lambda c: c.get("/metrics")),
        ("listing", b, lambda c: c.get("/v1/images?limit=100")),
        ("listing", b, lambda c: c.get("/v1/images?limit=100")),
        ("head enlargement", b, lambda c: c.head(
            f"{target()}?w={rng.randint(2000, 4000)}&enlarge=true&format=avif")),
        ("guarded psnr:99", b, lambda c: c.post(
            "/v1/images?policy=guarded&floor=psnr:99", content=board,
            headers={"content-type": "image/png"})),
    ]  # fmt: skip
    for _ in range(4):
        attacks.append(
            (
                "avif enlargement",
                a,
                lambda c: c.get(
                    f"{target()}?w={rng.randint(2000, 7071)}&enlarge=true&format=avif"
                    f"&quality={rng.randint(1, 100)}"
                ),
            )
        )
        attacks.append(
            (
                "rendition churn",
                b,
                lambda c: c.get(
                    f"{target()}?w={rng.randint(8, 80)}&format=webp&quality={rng.randint(1, 100)}"
                ),
            )
        )
    return [loop(name, address, send) for name, address, send in attacks]


async def _upload(client: httpx.AsyncClient, data: bytes) -> str:
    answer = await client.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
    answer.raise_for_status()
    return str(answer.json()["id"])


def soak(workdir: Path, duration: float) -> tuple[Phase, Phase]:
    """The quiet phase, then the attacked one, against one fresh ``srstore serve``."""
    api = start_api({"SRSTORE_DATA_DIR": str(workdir / "data"), "SRSTORE_TORCH_THREADS": "1"})
    try:
        quiet = asyncio.run(run_phase(api, duration, attacks=False, seed=1))
        attacked = asyncio.run(run_phase(api, duration, attacks=True, seed=2))
    finally:
        api.stop()
    return quiet, attacked


def verdict(quiet: Phase, attacked: Phase, max_ratio: float, rss_mib: int) -> list[str]:
    """What failed, in words (empty: the soak held)."""
    problems = []
    for name, phase in (("quiet", quiet), ("attacked", attacked)):
        if phase.not_ready:
            problems.append(f"{name}: /readyz not ready on {phase.not_ready} of {phase.probes}")
        if phase.server_errors():
            problems.append(f"{name}: {phase.server_errors()} answers were 500")
        if phase.rss_mib > rss_mib:
            problems.append(f"{name}: RSS {phase.rss_mib} MiB over {rss_mib} MiB")
    for what, before, after in (
        ("upload", p95(quiet.uploads), p95(attacked.uploads)),
        ("miss", p95(quiet.misses), p95(attacked.misses)),
    ):
        if not after <= max_ratio * before:
            problems.append(f"{what} p95 {after * 1000:.0f} ms vs {before * 1000:.0f} ms quiet")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=60.0, help="seconds per phase")
    parser.add_argument("--max-ratio", type=float, default=3.0)
    parser.add_argument("--rss-mib", type=int, default=RSS_BOUND_MIB)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="srstore-hostile-") as workdir:
        quiet, attacked = soak(Path(workdir), args.duration)
    rows = [
        [
            name,
            len(p.uploads),
            f"{p95(p.uploads) * 1000:.0f}",
            len(p.misses),
            f"{p95(p.misses) * 1000:.0f}",
            f"{p.probes - p.not_ready}/{p.probes}",
            f"{p.slowest_probe * 1000:.0f}",
            p.rss_mib,
            f"{p.cpu_seconds:.1f}",
            sum(p.normal_failures.values()),
        ]
        for name, p in (("quiet", quiet), ("attacked", attacked))
    ]
    print(f"{args.duration:g} s per phase; load average {os.getloadavg()[0]:.2f} at the end")
    headers = ["phase", "uploads", "upload p95 ms", "misses", "miss p95 ms", "readyz 200",
               "slowest probe ms", "RSS max MiB", "server CPU s", "normal non-2xx"]  # fmt: skip
    print(tabulate(rows, headers=headers, tablefmt="github"))
    print()
    print(tabulate(sorted(attacked.attacks.items()), headers=["attack answer", "count"],
                   tablefmt="github"))  # fmt: skip
    if attacked.normal_failures or quiet.normal_failures:
        print("normal failures:", dict(quiet.normal_failures), dict(attacked.normal_failures))
    problems = verdict(quiet, attacked, args.max_ratio, args.rss_mib)
    for problem in problems:
        print("FAILED:", problem)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
