"""What /metrics reports as images come and go: the fleet ledger, cache results, health.

Each test runs in the embedded default and in full mode (real Redis and SeaweedFS). The
ledger in full mode is shared by the whole test session, so tests compare before and after.
"""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from app.main import create_app
from config.settings import Settings
from ledger.redis import LEDGER_KEY
from tests.conftest import CLUSTER_MODES, encode, serving
from tests.support.compaction import compacted, evict
from tests.support.metrics import fleet_ledger, ledger, samples
from tests.support.servers import free_port, start_redis
from tests.support.waiting import until


@pytest.fixture(params=CLUSTER_MODES)
def settings(request: pytest.FixtureRequest) -> Settings:
    """These tests hold on a Redis Cluster too (full and queue mode): see tests/conftest.py."""
    return request.getfixturevalue(f"{request.param}_settings")  # type: ignore[no-any-return]


async def scrape(client: httpx.AsyncClient) -> dict[str, float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    return samples(response.text)


async def upload(client: httpx.AsyncClient, data: bytes) -> dict:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return response.json()


@pytest.fixture
def three_images(photo) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [encode(photo.resize((40 * n, 32 * n)), "PNG") for n in (1, 2, 3)]


async def test_uploads_raise_the_ledger_by_exactly_their_bytes(
    client: httpx.AsyncClient, three_images: list[bytes]
) -> None:
    before = await fleet_ledger(client)

    metas = [await upload(client, data) for data in three_images]
    after = await fleet_ledger(client)

    assert after[0] - before[0] == sum(len(data) for data in three_images)
    assert after[0] - before[0] == sum(m["original_bytes"] for m in metas)
    assert after[1] - before[1] == sum(m["stored_bytes"] for m in metas)
    assert after[2] - before[2] == 3


async def test_a_delete_debits_the_ledger_by_that_image(
    client: httpx.AsyncClient, three_images: list[bytes]
) -> None:
    kept = await upload(client, three_images[0])
    deleted = await upload(client, three_images[2])
    before = await fleet_ledger(client)

    assert (await client.delete(f"/v1/images/{deleted['id']}")).status_code == 204
    after = await fleet_ledger(client)

    assert before[0] - after[0] == deleted["original_bytes"]
    assert before[1] - after[1] == deleted["stored_bytes"]
    assert before[2] - after[2] == 1
    assert (await client.get(f"/v1/images/{kept['id']}/meta")).status_code == 200


async def test_the_savings_ratio_follows_the_ledger(
    client: httpx.AsyncClient, three_images: list[bytes]
) -> None:
    await upload(client, three_images[1])

    values = await scrape(client)

    original, stored, _ = ledger(values)
    assert values["srstore_fleet_savings_ratio"] == pytest.approx(1 - stored / original)
    assert 0 < values["srstore_fleet_savings_ratio"] < 1


async def test_a_miss_then_a_hit_move_their_counters_and_the_entry_size_histogram(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, three_images: list[bytes]
) -> None:
    image_id = (await upload(client, three_images[0]))["id"]
    await evict(app, image_id)
    before = await scrape(client)

    miss = await client.get(f"/v1/images/{image_id}")
    hit = await client.get(f"/v1/images/{image_id}")
    after = await scrape(client)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert moved('srstore_cache_requests_total{result="miss"}') == 1
    assert moved('srstore_cache_requests_total{result="hit"}') == 1
    assert moved('srstore_cache_requests_total{result="bypass"}') == 0
    # Whoever renders writes the cache entry: this process, or a worker in queue mode.
    written = 0 if settings.inference == "queue" else 1
    assert moved("srstore_cache_entry_bytes_count") == written
    assert moved("srstore_cache_entry_bytes_sum") == written * len(miss.content)
    assert moved('srstore_fetch_seconds_count{cache="miss"}') == 1
    assert moved('srstore_fetch_seconds_count{cache="hit"}') == 1


async def test_model_build_and_dependencies_are_reported(
    client: httpx.AsyncClient, three_images: list[bytes]
) -> None:
    image_id = (await upload(client, three_images[0]))["id"]
    served = (await client.get(f"/v1/images/{image_id}")).headers["x-model-version"]
    name, _, version = served.partition(":")  # "espcn:1", or "bicubic" without weights

    up = [
        'srstore_dependency_up{dependency="cache"}',
        'srstore_dependency_up{dependency="object_store"}',
    ]

    async def both_up() -> bool:  # a first ping a busy machine did not finish in time reads 0
        scraped = await scrape(client)
        return all(scraped.get(name) == 1 for name in up)

    await until(both_up, "both dependencies reported up")
    values = await scrape(client)

    assert values[f'srstore_model_info{{name="{name}",version="{version or "none"}"}}'] == 1
    assert [k for k in values if k.startswith("srstore_build_info{version=")]
    assert [values[name] for name in up] == [1, 1]


async def test_a_failed_store_write_leaves_the_ledger_alone(
    embedded_settings: Settings, photo_bytes: bytes
) -> None:
    app = create_app(embedded_settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as client:
            before = await fleet_ledger(client)
            objects = embedded_settings.data_dir / "objects"
            objects.mkdir(parents=True, exist_ok=True)
            (objects / "images").write_bytes(b"a file where the directory should be")

            response = await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
            after = await fleet_ledger(client)

    assert response.status_code == 503
    assert after == before


async def test_an_unreachable_redis_reports_the_cache_down_and_hides_the_ledger(
    tmp_path: Path,
) -> None:
    settings = Settings(data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0")
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as client:
            values = await scrape(client)

    assert values['srstore_dependency_up{dependency="cache"}'] == 0
    assert values['srstore_dependency_up{dependency="object_store"}'] == 1
    assert "srstore_fleet_original_bytes" not in values


async def test_a_ledger_that_cannot_be_updated_counts_each_miss_and_the_request_succeeds(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    (tmp_path / "redis").mkdir()
    server = start_redis(tmp_path / "redis")
    try:
        settings = Settings(data_dir=tmp_path / "data", redis_url=server.url)
        async with serving(settings) as (_, client):
            before = await scrape(client)
            broken = redis.Redis.from_url(server.url)
            broken.set(LEDGER_KEY, "a string where the ledger's hash should be")
            broken.close()
            uploaded = await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
            after_upload = await scrape(client)
            deleted = await client.delete(f"/v1/images/{uploaded.json()['id']}")
            after_delete = await scrape(client)
    finally:
        server.stop()

    errors = "srstore_ledger_errors_total"
    assert (uploaded.status_code, deleted.status_code) == (201, 204)
    assert after_upload[errors] - before[errors] == 1
    assert after_delete[errors] - before[errors] == 2
