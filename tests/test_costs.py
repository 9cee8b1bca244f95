"""What the service spends, beside what it saves: each figure moves by what was done.

Runs in the embedded default and in full mode (real Redis and SeaweedFS, whose ledger the
whole session shares, so every test compares before and after), and in queue mode, where a
real worker process renders and adds its own compute to the fleet's ledger.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image

from config.settings import Settings
from ledger.costs import GIB
from tests.conftest import encode, serving
from tests.support.compaction import compacted, evict, until_pending_dropped
from tests.support.metrics import samples
from tests.support.process import start_api
from tests.support.servers import RedisServer, SeaweedServer
from tests.test_cli import clean_environment, srstore

INGEST = 'srstore_compute_seconds_total{device="cpu",stage="ingest"}'
RENDER = 'srstore_compute_seconds_total{device="cpu",stage="render"}'
ENCODE = 'srstore_compute_seconds_total{device="cpu",stage="encode"}'


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


@pytest.fixture(params=["embedded", "full"])
def local_settings(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue(f"{request.param}_settings")  # type: ignore[no-any-return]


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


async def held_rate(client: httpx.AsyncClient, seconds: float = 1.0) -> float:
    """Byte-seconds the fleet ledger gained per second over a quiet interval."""
    first = await scrape(client)
    started = time.monotonic()
    await asyncio.sleep(seconds)
    second = await scrape(client)
    elapsed = time.monotonic() - started
    return moved(first, second, "srstore_fleet_cache_byte_seconds") / elapsed


# Redis counts a large write's query buffer in its memory until its cron trims it (2 s idle).
REDIS_TRIMS_BUFFERS_SECONDS = 3


async def test_a_cached_entry_adds_its_byte_seconds(
    local_settings: Settings, large_photo: bytes
) -> None:
    async with serving(local_settings) as (app, client):
        image_id = (
            await client.post(
                "/v1/images", content=large_photo, headers={"content-type": "image/png"}
            )
        ).json()["id"]
        await settled(app, client, image_id)
        await client.get(f"/v1/images/{image_id}/meta")  # the metadata entry, cached first
        without = await held_rate(client)
        entry = await client.get(f"/v1/images/{image_id}?format=png")  # hundreds of KB
        if local_settings.redis_url is not None:
            await asyncio.sleep(REDIS_TRIMS_BUFFERS_SECONDS)
        with_entry = await held_rate(client)
        cache_dollars = samples((await client.get("/metrics")).text)[
            'srstore_fleet_spent_dollars{kind="cache"}'
        ]

    size = len(entry.content)
    assert entry.headers["x-cache"] == "MISS" and size > 200_000
    if local_settings.redis_url is None:  # the process's own cache: exactly its bytes
        assert with_entry - without == pytest.approx(size, rel=0.05)
    else:  # Redis's memory: the entry plus the allocator's rounding of it
        assert size * 0.95 < with_entry - without < size * 1.3 + 65_536
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
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
    large_photo: bytes,
) -> None:
    env = {
        "SRSTORE_DATA_DIR": str(tmp_path / "data"),
        "SRSTORE_REDIS_URL": redis_server.url,
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
