"""A DELETE is final: once it answered 204 no request gets the image, in any mode or process.

The race of issue 12: a miss that read the stored copy before the DELETE finishes rendering
after it and writes the rendition into the HR cache; on main every later GET was a HIT.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from bench.delete_soak import soak
from cache import CacheKey
from config.settings import Settings
from render.inference import LocalRenderer
from tests.conftest import encode, serving
from tests.support.compaction import compacted, compacted_sync, evict
from tests.support.metrics import ledger
from tests.support.process import start_api
from tests.test_metrics import scrape


async def upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return str(response.json()["id"])


def hold_renders_after_the_read(app: FastAPI) -> tuple[asyncio.Event, asyncio.Event]:
    """Pause every in-process render between reading the stored copy and caching the result.

    Returns (read, release): ``read`` is set once a render has its pixels, and the render
    goes on to write the cache when ``release`` is set.
    """
    renderer = app.state.image_service.renderer
    assert isinstance(renderer, LocalRenderer)
    engine = renderer.engine
    rendered: Callable[..., Awaitable[bytes]] = engine.render_object
    read, release = asyncio.Event(), asyncio.Event()

    async def render_then_wait(store: object, key: CacheKey) -> bytes:
        data = await rendered(store, key)
        read.set()
        await release.wait()
        return data

    engine.render_object = render_then_wait  # type: ignore[method-assign]
    return read, release


@pytest.mark.parametrize("mode", ["embedded", "full"])
async def test_a_delete_during_a_render_wins_over_it(
    mode: str,
    request: pytest.FixtureRequest,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    settings: Settings = request.getfixturevalue(f"{mode}_settings")
    async with serving(settings) as (app, client):
        image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
        await evict(app, image_id)
        read, release = hold_renders_after_the_read(app)
        in_flight = asyncio.create_task(client.get(f"/v1/images/{image_id}"))
        await asyncio.wait_for(read.wait(), 30)

        deleted = await client.delete(f"/v1/images/{image_id}")
        joined = asyncio.create_task(client.get(f"/v1/images/{image_id}"))
        await asyncio.sleep(0.05)  # the second GET joins the render in flight
        release.set()
        overtaken, joiner = await in_flight, await joined

        later = [await client.get(f"/v1/images/{image_id}") for _ in range(3)]

        assert deleted.status_code == 204
        assert [(r.status_code, r.headers.get("x-cache")) for r in later] == [(404, None)] * 3
        assert (overtaken.status_code, joiner.status_code) == (404, 404)
        assert (await client.delete(f"/v1/images/{image_id}")).status_code == 404


async def test_a_delete_wins_over_a_queue_worker_rendering_the_image(
    queue_settings: Settings,
    redis_client: redis.Redis,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """A real ``srstore worker`` renders a 16-megapixel image (seconds); the DELETE lands
    after the worker took the job, while it renders, and the worker must not cache it."""
    async with serving(queue_settings) as (_, client):
        image_id = await upload(client, encode(photo.resize((4000, 4000)), "PNG"))
        in_flight = asyncio.create_task(client.get(f"/v1/images/{image_id}?format=png"))
        stream = queue_settings.queue_stream
        deadline = time.monotonic() + 30
        while not redis_client.xpending(stream, "workers")["pending"]:
            assert time.monotonic() < deadline, "no worker took the job"
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.2)  # the worker has read the stored copy and is rendering

        deleted = await client.delete(f"/v1/images/{image_id}")
        overtaken = await in_flight

        assert deleted.status_code == 204
        assert overtaken.status_code in (200, 404)
        for _ in range(3):
            assert (await client.get(f"/v1/images/{image_id}?format=png")).status_code == 404
        assert redis_client.keys(f"hr:{image_id}:espcn*") == []
        assert redis_client.exists(f"hr:{image_id}:deleted")


async def test_overlapping_deletes_of_one_image_all_answer_204_and_debit_the_ledger_once(
    client: httpx.AsyncClient,
    app: FastAPI,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """Eight DELETEs held at the store until all eight have found the image: each answers
    204 (none sees it half gone), and the ledger counts one image fewer."""
    image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
    before = ledger(await scrape(client))
    store = app.state.image_service.store
    removing, all_found = store.delete, asyncio.Barrier(8)

    async def together(key: str) -> None:
        await all_found.wait()
        await removing(key)

    store.delete = together
    try:
        async with asyncio.timeout(60):
            answers = await asyncio.gather(
                *(client.delete(f"/v1/images/{image_id}") for _ in range(8))
            )
    finally:
        del store.delete
    after = ledger(await scrape(client))

    assert [a.status_code for a in answers] == [204] * 8
    assert before[2] - after[2] == 1
    assert before[0] - after[0] > 0
    assert (await client.get(f"/v1/images/{image_id}")).status_code == 404


async def test_a_delete_of_an_image_already_gone_is_404_and_debits_nothing(
    client: httpx.AsyncClient,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
    before = ledger(await scrape(client))

    first = await client.delete(f"/v1/images/{image_id}")
    again = await client.delete(f"/v1/images/{image_id}")
    after = ledger(await scrape(client))

    assert (first.status_code, again.status_code) == (204, 404)
    assert again.json()["error"]["code"] == "not_found"
    assert before[2] - after[2] == 1


def test_a_delete_served_by_one_process_is_seen_by_the_other(
    tmp_path: Path,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """``srstore serve --workers 2`` in the embedded default: each process has its own
    in-process cache; after the DELETE neither serves the image."""
    api = start_api({"SRSTORE_DATA_DIR": str(tmp_path / "data")}, workers=2)
    try:
        created = httpx.post(
            f"{api.url}/v1/images",
            content=encode(photo.resize((64, 48)), "PNG"),
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert created.status_code == 201
        with httpx.Client(base_url=api.url, timeout=30) as http:
            compacted_sync(http, created.json()["id"])
        image = f"{api.url}/v1/images/{created.json()['id']}"
        # Fresh connections spread over both processes, so each caches the image: the one
        # that compacted it already has.
        caches = [httpx.get(image, timeout=30).headers["x-cache"] for _ in range(24)]
        assert caches.count("MISS") == 1, caches

        assert httpx.delete(image, timeout=30).status_code == 204
        after = [httpx.get(image, timeout=30).status_code for _ in range(12)]

        assert after == [404] * 12
    finally:
        api.stop()


async def test_a_soak_of_deletes_racing_reads_serves_no_deleted_image(
    client: httpx.AsyncClient,
) -> None:
    """The bounded in-process form of ``python -m bench.delete_soak`` (four seconds)."""
    result = await soak(client, duration=4.0, readers=4)

    assert result.stale == []
    assert result.deletes >= 5
    assert result.ok > 0 and result.not_found > 0
    assert result.other == []
