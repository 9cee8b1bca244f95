"""A DELETE is final: once it answered 204 no request gets the image, in any mode or process.

The race of issue 12: a miss that read the stored copy before the DELETE finishes rendering
after it and writes the rendition into the HR cache; on main every later GET was a HIT.
"""

from __future__ import annotations

import asyncio
import re
import signal
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI

from bench.delete_soak import soak
from cache import CacheKey
from config.settings import Settings
from keyspace import queue_shard, rendition_prefix
from render.inference import LocalRenderer
from tests.conftest import encode, serving
from tests.support.compaction import compacted, compacted_sync, evict
from tests.support.metrics import fleet_ledger
from tests.support.process import WorkerProcess, start_api
from tests.support.waiting import until


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


def count_joins(app: FastAPI) -> list[str]:
    """The keys of the misses that reached the render (the first starts it, the rest join)."""
    flights = app.state.image_service.delivery._flights
    run = flights.run
    keys: list[str] = []

    async def counted(key: str, compute: Callable[[], Awaitable[bytes]]) -> bytes:
        keys.append(key)
        return await run(key, compute)  # type: ignore[no-any-return]

    flights.run = counted
    return keys


@pytest.mark.parametrize("mode", ["embedded", "full", "cluster"])
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
        joins = count_joins(app)
        in_flight = asyncio.create_task(client.get(f"/v1/images/{image_id}"))
        await asyncio.wait_for(read.wait(), 30)
        joined = asyncio.create_task(client.get(f"/v1/images/{image_id}"))
        await until(lambda: len(joins) == 2, "the second GET joining the render in flight")

        deleted = await client.delete(f"/v1/images/{image_id}")
        release.set()
        overtaken, joiner = await in_flight, await joined

        later = [await client.get(f"/v1/images/{image_id}") for _ in range(3)]

        assert deleted.status_code == 204
        assert [(r.status_code, r.headers.get("x-cache")) for r in later] == [(404, None)] * 3
        assert (overtaken.status_code, joiner.status_code) == (404, 404)
        assert (await client.delete(f"/v1/images/{image_id}")).status_code == 404


@pytest.mark.slow
async def test_a_delete_wins_over_a_queue_worker_rendering_the_image(
    queue_settings: Settings,
    queue_deployment: tuple[dict[str, str], WorkerProcess],
    redis_client: redis.Redis,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """A real ``srstore worker`` takes the job of a 4-megapixel render and is held there
    (SIGSTOP) while the DELETE lands; let go, it must not cache the image, and the GET that
    waited on it answers 404 like every later one."""
    _, worker = queue_deployment
    async with serving(queue_settings) as (app, client):
        image_id = await upload(client, encode(photo.resize((2000, 2000)), "PNG"))
        await evict(app, image_id)  # the read its compaction cached: this GET must render
        in_flight = asyncio.create_task(client.get(f"/v1/images/{image_id}?format=png"))
        stream = queue_shard(queue_settings.queue_stream, 0)  # the deployment's one shard
        await until(
            lambda: redis_client.xpending(stream, "workers")["pending"] > 0,
            "the worker taking the job",
        )
        worker.process.send_signal(signal.SIGSTOP)
        try:
            cached_before = redis_client.keys(f"{rendition_prefix(image_id)}espcn*")
            deleted = await client.delete(f"/v1/images/{image_id}")
        finally:
            worker.process.send_signal(signal.SIGCONT)
        overtaken = await in_flight

        assert cached_before == []  # held mid-render: the path this test is about
        assert deleted.status_code == 204
        assert overtaken.status_code == 404
        for _ in range(3):
            assert (await client.get(f"/v1/images/{image_id}?format=png")).status_code == 404
        assert redis_client.keys(f"{rendition_prefix(image_id)}espcn*") == []
        assert redis_client.exists(f"{rendition_prefix(image_id)}deleted")


async def test_overlapping_deletes_of_one_image_all_answer_204_and_debit_the_ledger_once(
    client: httpx.AsyncClient,
    app: FastAPI,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """Eight DELETEs, the object's removal held until all eight have reached the service:
    each answers 204 (none sees it half gone), and the ledger counts one image fewer."""
    image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
    before = await fleet_ledger(client)
    service = app.state.image_service
    store = service.store
    removing, deleting = store.delete, service.delete
    arrived, all_arrived = 0, asyncio.Event()

    async def counted(image: str, owner: str | None = None) -> None:
        nonlocal arrived
        arrived += 1
        if arrived == 8:
            all_arrived.set()
        await deleting(image, owner)

    async def held(key: str) -> None:
        await all_arrived.wait()
        await removing(key)

    store.delete, service.delete = held, counted
    try:
        async with asyncio.timeout(60):
            answers = await asyncio.gather(
                *(client.delete(f"/v1/images/{image_id}") for _ in range(8))
            )
    finally:
        del store.delete, service.delete
    after = await fleet_ledger(client)

    assert [a.status_code for a in answers] == [204] * 8
    assert before[2] - after[2] == 1
    assert before[0] - after[0] > 0
    assert (await client.get(f"/v1/images/{image_id}")).status_code == 404


async def test_a_delete_that_finds_the_image_gone_by_an_overlapping_deletion_answers_204(
    client: httpx.AsyncClient,
    app: FastAPI,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """A DELETE whose own read of the image answers only after another DELETE has removed it
    came while that deletion was under way: 204, as if it had joined it. One sent after both
    is 404, and the ledger counts one image fewer."""
    image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
    before = await fleet_ledger(client)
    service = app.state.image_service
    reading = service.meta
    slow_read_started, first_answered = asyncio.Event(), asyncio.Event()

    async def first_read_held(image: str) -> object:
        if not slow_read_started.is_set():
            slow_read_started.set()
            await first_answered.wait()
        return await reading(image)

    service.meta = first_read_held
    try:
        async with asyncio.timeout(60):
            slow = asyncio.create_task(client.delete(f"/v1/images/{image_id}"))
            await slow_read_started.wait()
            first = await client.delete(f"/v1/images/{image_id}")
            first_answered.set()
            overlapping = await slow
    finally:
        del service.meta
    late = await client.delete(f"/v1/images/{image_id}")
    after = await fleet_ledger(client)

    assert (first.status_code, overlapping.status_code, late.status_code) == (204, 204, 404)
    assert before[2] - after[2] == 1


async def test_a_delete_of_an_image_already_gone_is_404_and_debits_nothing(
    client: httpx.AsyncClient,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    image_id = await upload(client, encode(photo.resize((64, 48)), "PNG"))
    before = await fleet_ledger(client)

    first = await client.delete(f"/v1/images/{image_id}")
    again = await client.delete(f"/v1/images/{image_id}")
    after = await fleet_ledger(client)

    assert (first.status_code, again.status_code) == (204, 404)
    assert again.json()["error"]["code"] == "not_found"
    assert before[2] - after[2] == 1


@pytest.mark.slow
def test_a_delete_served_by_one_process_is_seen_by_the_other(
    tmp_path: Path,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """``srstore serve --workers 2`` in the embedded default: each process has its own
    in-process cache; after the DELETE neither serves the image."""
    log = tmp_path / "serve.log"
    api = start_api({"SRSTORE_DATA_DIR": str(tmp_path / "data")}, workers=2, log_path=log)
    try:
        created = httpx.post(
            f"{api.url}/v1/images",
            content=encode(photo.resize((64, 48)), "PNG"),
            headers={"content-type": "image/png"},
            timeout=30,
        )
        assert created.status_code == 201
        image_id = created.json()["id"]
        with httpx.Client(base_url=api.url, timeout=30) as http:
            compacted_sync(http, image_id)
        image = f"{api.url}/v1/images/{image_id}"
        # Both processes sweep pending/, but only one compacts the image (checked in their
        # log below), and it cached the read: on fresh connections, which the kernel hands
        # to either process as it likes, only the other process's first read is a MISS.
        reads = [httpx.get(image, timeout=30) for _ in range(24)]
        assert [read.status_code for read in reads] == [200] * 24
        assert [read.headers["x-cache"] for read in reads].count("MISS") <= 1

        assert httpx.delete(image, timeout=30).status_code == 204
        after = [httpx.get(image, timeout=30).status_code for _ in range(12)]

        assert after == [404] * 12
    finally:
        api.stop()
    compactions = re.findall(rf"compaction of {image_id}: (\w+)", log.read_text())
    assert compactions.count("done") == 1, compactions
    assert set(compactions) <= {"done", "busy", "gone"}, compactions


@pytest.mark.slow
async def test_a_soak_of_deletes_racing_reads_serves_no_deleted_image(
    client: httpx.AsyncClient,
) -> None:
    """The bounded in-process form of ``python -m bench.delete_soak`` (four seconds, and on
    until five deletes raced the readers, however busy the machine)."""
    result = await soak(client, duration=4.0, readers=4, min_deletes=5)

    assert result.stale == []
    assert result.deletes >= 5
    assert result.ok > 0 and result.not_found > 0
    assert result.other == []
