"""What the service spends, beside what it saves: each figure moves by what was done.

Runs in the embedded default and in full mode (real SeaweedFS, and a real Redis of each test's
own, whose ledger no other process writes to meanwhile), and in queue mode, where a real worker
process renders and adds its own compute to the fleet's ledger (the session's, shared: those
tests compare before and after).
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis.asyncio
from fastapi import FastAPI
from PIL import Image

from cache.memory import ENTRY_OVERHEAD_BYTES
from config.settings import Settings
from ledger.costs import CACHE_BYTE_SECONDS, GIB, Prices, compute_key, parse_compute_key
from tests.conftest import SHARED_BUCKET, encode, serving
from tests.support.compaction import compacted, evict, until_pending_dropped
from tests.support.metrics import samples
from tests.support.process import start_api
from tests.support.servers import RedisServer, SeaweedServer, start_redis
from tests.test_cli import clean_environment, srstore

INGEST = 'srstore_compute_seconds_total{device="cpu",stage="ingest"}'
RENDER = 'srstore_compute_seconds_total{device="cpu",stage="render"}'
ENCODE = 'srstore_compute_seconds_total{device="cpu",stage="encode"}'


# The ledgers keep their times to the microsecond (Redis: "%.6f").
CLOCK_SLACK = 1e-3


def fleet(stage: str) -> str:
    return f'srstore_fleet_compute_seconds{{device="cpu",stage="{stage}"}}'


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


def moved(before: dict[str, float], after: dict[str, float], name: str) -> float:
    return after.get(name, 0.0) - before.get(name, 0.0)


@pytest.fixture
def large_photo(photo: Image.Image) -> bytes:
    """Large enough that its decode and render take measurable CPU."""
    return encode(photo.resize((1204, 804)), "PNG")


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A Redis of the test's own: in the session's, a worker process of another test may add
    its compute to the fleet ledger mid-test, and other tests' keys expire from its memory."""
    server = start_redis(tmp_path / "redis")
    yield server
    server.stop()


@pytest.fixture(params=["embedded", "full"])
def local_settings(request: pytest.FixtureRequest, tmp_path: Path) -> Settings:
    """The embedded default, or full mode (SeaweedFS and a Redis of the test's own). Only the
    scrapes flush the ledger: a background flush would sample the cache mid-measurement. Large
    entries are admitted at once: on probation one could expire before a slow test ends."""
    quiet = {"cost_flush_seconds": 3600.0}
    if request.param == "embedded":
        embedded: Settings = request.getfixturevalue("embedded_settings")
        return embedded.model_copy(update=quiet)
    seaweed_server: SeaweedServer = request.getfixturevalue("seaweed_server")
    return Settings(
        data_dir=tmp_path / "data",
        s3_bucket=SHARED_BUCKET,
        s3_prefix=f"{uuid.uuid4().hex[:12]}/",
        s3_endpoint_url=seaweed_server.endpoint_url,
        redis_url=request.getfixturevalue("own_redis").url,
        cache_admit_after=1,
        **quiet,
    )


def test_prices_turn_each_kind_of_amount_into_its_dollars() -> None:
    """The ledger keeps amounts; these prices turn them into the console's dollars."""
    prices = Prices(storage_gb_month=0.023, cpu_hour=0.0446, gpu_hour=3.0, cache_gb_hour=0.01)
    amounts = {
        compute_key("render", "cpu"): 7200.0,  # two CPU-hours
        compute_key("render", "cuda"): 1800.0,  # half an hour of the accelerator
        CACHE_BYTE_SECONDS: 3 * GIB * 3600.0,  # 3 GiB held for an hour
        "recent:dollars": 5.0,  # not an amount: no price
    }

    assert prices.dollars(amounts) == pytest.approx({"cpu": 0.0892, "gpu": 1.5, "cache": 0.03})
    assert prices.dollars({}) == {"cpu": 0.0, "gpu": 0.0, "cache": 0.0}
    assert prices.storage_per_month(2 * GIB) == pytest.approx(0.046)
    assert parse_compute_key(compute_key("encode", "cuda:1")) == ("encode", "cuda:1")
    assert parse_compute_key(CACHE_BYTE_SECONDS) is None


async def test_an_upload_adds_its_ingest_cpu_and_its_storage_to_the_ledger(
    local_settings: Settings, large_photo: bytes
) -> None:
    async with serving(local_settings) as (_, client):
        before = await scrape(client)
        response = await client.post(
            "/v1/images", content=large_photo, headers={"content-type": "image/png"}
        )
        assert response.status_code == 201
        after = await scrape(client)

    meta = response.json()
    counted = moved(before, after, INGEST)
    assert counted > 0.001  # decoding and reducing 1 MP takes milliseconds of CPU
    # What this process counted is what reached the fleet's ledger.
    assert moved(before, after, fleet("ingest")) == pytest.approx(counted, rel=1e-6)
    price = local_settings.price_storage_gb_month
    assert moved(
        before, after, 'srstore_storage_dollars_per_month{representation="x4"}'
    ) == pytest.approx(meta["stored_bytes"] / GIB * price, rel=1e-6)
    saved = (meta["original_bytes"] - meta["stored_bytes"]) / GIB * price
    assert moved(before, after, "srstore_saved_dollars_per_month") == pytest.approx(saved, rel=1e-6)


async def settled(app: FastAPI, client: httpx.AsyncClient, image_id: str) -> None:
    """The upload's background compaction finished (its CPU counted) and what it cached
    dropped: the reads that follow cost what a cold read costs, and nothing else runs."""
    await compacted(client, image_id)
    await until_pending_dropped(app.state.image_service.store, image_id)
    await evict(app, image_id)


async def test_a_miss_adds_render_and_encode_cpu_and_a_hit_adds_none(
    local_settings: Settings, large_photo: bytes
) -> None:
    async with serving(local_settings) as (app, client):
        image_id = (
            await client.post(
                "/v1/images", content=large_photo, headers={"content-type": "image/png"}
            )
        ).json()["id"]
        await settled(app, client, image_id)
        before = await scrape(client)
        miss = await client.get(f"/v1/images/{image_id}")
        after_miss = await scrape(client)
        hit = await client.get(f"/v1/images/{image_id}")
        after_hit = await scrape(client)

    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    for stage, counter in (("render", RENDER), ("encode", ENCODE)):
        counted = moved(before, after_miss, counter)
        assert counted > 0.0005, stage
        assert moved(before, after_miss, fleet(stage)) == pytest.approx(counted, rel=1e-6)
        assert moved(after_miss, after_hit, counter) == 0, stage
    # The spending is priced into the net figure: it fell by what the miss cost.
    cpu = moved(before, after_miss, 'srstore_fleet_spent_dollars{kind="cpu"}')
    assert cpu == pytest.approx(
        sum(moved(before, after_miss, fleet(s)) for s in ("render", "encode"))
        / 3600
        * local_settings.price_cpu_hour,
        rel=1e-6,
    )


@dataclass
class Window:
    """A quiet interval between two scrapes, each of which samples the cache's bytes once."""

    gained: float  # byte-seconds the fleet ledger gained
    held: int  # the bytes the cache reported at the first scrape
    held_then: int  # and at the second
    shortest: float  # bounds on the time between the two samples
    longest: float


async def held_window(client: httpx.AsyncClient, sampled: list[int]) -> Window:
    first_from = time.monotonic()
    first = await scrape(client)
    first_to = time.monotonic()
    held = sampled[-1]
    await asyncio.sleep(1.0)
    second_from = time.monotonic()
    second = await scrape(client)
    second_to = time.monotonic()
    gained = moved(first, second, "srstore_fleet_cache_byte_seconds")
    return Window(gained, held, sampled[-1], second_from - first_to, second_to - first_from)


LARGE_BUFFER = 65_536


async def query_buffers_trimmed(client: redis.asyncio.Redis) -> None:
    """Redis counts a large write's query buffer in its memory until its cron trims it (after
    2 s idle): wait until no connection holds one."""
    async with asyncio.timeout(30):
        while any(
            int(c["qbuf"]) + int(c["qbuf-free"]) > LARGE_BUFFER for c in await client.client_list()
        ):
            await asyncio.sleep(0.2)


async def test_a_cached_entry_adds_its_byte_seconds(
    local_settings: Settings, large_photo: bytes
) -> None:
    """The fleet ledger integrates the bytes the cache holds, sampled at each flush: an entry's
    bytes for as long as it is held. In Redis, its memory figure (the entry and its overhead)."""
    redis_url = local_settings.redis_url
    # One connection for the whole test: one opened or closed mid-interval moves Redis's memory.
    watcher = redis.asyncio.Redis.from_url(redis_url) if redis_url else None
    windows = []
    async with serving(local_settings) as (app, client):
        flusher = app.state.costs.flusher
        sampled: list[int] = []
        held_bytes = flusher.cache.held_bytes

        async def sampling() -> int:
            sampled.append(await held_bytes())
            return sampled[-1]

        flusher.cache.held_bytes = sampling
        image_id = (
            await client.post(
                "/v1/images", content=large_photo, headers={"content-type": "image/png"}
            )
        ).json()["id"]
        await settled(app, client, image_id)
        await client.get(f"/v1/images/{image_id}/meta")  # the metadata entry, cached first
        await scrape(client)  # every client of the ledger connected before the first interval
        for read in ("", "?format=png"):
            if read:
                entry = await client.get(f"/v1/images/{image_id}{read}")  # hundreds of KB
            if watcher is not None:
                await query_buffers_trimmed(watcher)
            windows.append(await held_window(client, sampled))
        cache_dollars = samples((await client.get("/metrics")).text)[
            'srstore_fleet_spent_dollars{kind="cache"}'
        ]
    if watcher is not None:
        await watcher.aclose()

    size = len(entry.content)
    assert entry.headers["x-cache"] == "MISS" and size > 200_000
    for window in windows:  # each sample held until the next, on the ledger's clock
        slack = window.held * CLOCK_SLACK
        assert window.held * window.shortest - slack <= window.gained
        assert window.gained <= window.held * window.longest + slack
    without, with_entry = windows
    if redis_url is None:  # the process's own cache: exactly its bytes and its bookkeeping
        assert with_entry.held - without.held == size + ENTRY_OVERHEAD_BYTES
    else:
        # Redis's figure also moves with its clients' buffers at the moment of a sample (up to
        # one large buffer), as much as it moved here within each quiet interval.
        jitter = sum(abs(w.held_then - w.held) for w in windows) + LARGE_BUFFER
        added = with_entry.held - without.held
        assert size - jitter <= added <= size * 1.3 + jitter, (added, size, jitter)
    assert cache_dollars > 0


async def test_a_render_on_a_worker_reaches_the_fleet_ledger(
    queue_settings: Settings, large_photo: bytes
) -> None:
    """The worker adds its compute every SRSTORE_COST_FLUSH_SECONDS (10 s by default)."""
    async with serving(queue_settings) as (_, client):
        image_id = (
            await client.post(
                "/v1/images", content=large_photo, headers={"content-type": "image/png"}
            )
        ).json()["id"]
        before = await scrape(client)
        miss = await client.get(f"/v1/images/{image_id}?format=webp")
        assert miss.headers["x-cache"] == "MISS"
        deadline = time.monotonic() + 30
        after = before
        while time.monotonic() < deadline and moved(before, after, fleet("encode")) <= 0:
            await asyncio.sleep(0.5)
            after = await scrape(client)

    assert moved(before, after, fleet("render")) > 0
    assert moved(before, after, fleet("encode")) > 0
    assert moved(before, after, RENDER) == 0  # nothing was rendered in the API process


def test_srstore_costs_prints_the_fleet_figures_from_a_running_api(
    tmp_path: Path,
    own_redis: RedisServer,
    seaweed_server: SeaweedServer,
    large_photo: bytes,
) -> None:
    env = {
        "SRSTORE_DATA_DIR": str(tmp_path / "data"),
        "SRSTORE_REDIS_URL": own_redis.url,
        "SRSTORE_S3_BUCKET": "srstore-tests",
        "SRSTORE_S3_PREFIX": f"costs-{time.time_ns()}/",
        "SRSTORE_S3_ENDPOINT_URL": seaweed_server.endpoint_url,
    }
    api = start_api({**clean_environment(), **env})
    try:
        image_id = httpx.post(
            f"{api.url}/v1/images",
            content=large_photo,
            headers={"content-type": "image/png"},
            timeout=60,
        ).json()["id"]
        httpx.get(f"{api.url}/v1/images/{image_id}", timeout=60)
        as_json = srstore("costs", "--url", api.url, "--json")
        as_table = srstore("costs", "--url", api.url)
        scraped = samples(httpx.get(f"{api.url}/metrics").text)
    finally:
        api.stop()

    assert as_json.returncode == 0, as_json.stderr
    report = json.loads(as_json.stdout)
    stages = {row["stage"] for row in report["compute_seconds"] if row["seconds"] > 0}
    assert {"ingest", "render", "encode"} <= stages
    assert report["net_savings_dollars_per_month"] == pytest.approx(
        report["saved_dollars_per_month"] - report["spent_dollars_per_month"]
    )
    assert (
        report["stored_bytes"]["x4"]
        == scraped['srstore_fleet_representation_stored_bytes{representation="x4"}']
    )
    assert as_table.returncode == 0, as_table.stderr
    for line in ("compute: ingest (cpu)", "cache held", "stored as x4", "net saving"):
        assert line in as_table.stdout


def test_srstore_costs_says_in_one_line_when_no_api_answers() -> None:
    result = srstore("costs", "--url", "http://127.0.0.1:9")

    assert result.returncode == 1
    assert result.stderr.startswith("srstore: error: cannot reach the srstore API")
