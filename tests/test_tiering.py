"""Tiering by access (SRSTORE_TIERING=on): a hot image is kept and served as uploaded, and
compacted to the x4 copy once unread for SRSTORE_COMPACT_AFTER_IDLE.

Through the API in embedded mode and against real Redis and SeaweedFS; time is a clock the
test moves (the sweep is the one the service runs, called at once instead of waited for).
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI
from PIL import Image
from prometheus_client import REGISTRY
from pydantic import ValidationError

from app.services.tiering import SWEEP_LEASE, Tiering
from config.settings import Settings
from policy import NO_MODEL
from render.compaction import pending_key
from render.images import object_key
from tests.conftest import serving
from tests.support.compaction import compacted, evict, keys
from tests.support.metrics import samples
from tests.support.process import WorkerProcess

IDLE = 600.0


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


def renditions(source: str) -> float:
    return REGISTRY.get_sample_value("srstore_renditions_total", {"source": source}) or 0.0


def tiered(settings: Settings) -> Settings:
    return settings.model_copy(update={"tiering": True, "compact_after_idle": IDLE})


def tiering_of(app: FastAPI, clock: Clock) -> Tiering:
    tiering: Tiering = app.state.image_service.tiering
    tiering.clock = clock
    return tiering


@pytest.fixture(params=["embedded", "full"])
async def hot(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings: Settings = request.getfixturevalue(f"{request.param}_settings")
    async with serving(tiered(settings)) as pair:
        yield pair


async def upload(client: httpx.AsyncClient, data: bytes) -> dict:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 201, response.text
    return dict(await compacted(client, response.json()["id"]))


def size(data: bytes) -> tuple[int, int]:
    return Image.open(io.BytesIO(data)).size


async def test_a_hot_image_is_served_as_uploaded_with_no_model_run_and_no_decode(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    app, client = hot
    tiering_of(app, Clock())
    meta = await upload(client, photo_bytes)
    model_runs, as_stored = renditions("model"), renditions("as_stored")

    read = await client.get(f"/v1/images/{meta['id']}")

    assert (meta["representation"], meta["receipt"]["policy"]) == ("original", "original")
    assert read.status_code == 200
    assert read.content == photo_bytes  # the upload's own bytes: nothing decoded or encoded
    assert read.headers["x-model-version"] == NO_MODEL
    assert renditions("model") == model_runs
    assert renditions("as_stored") == as_stored + 1


async def test_a_hot_upload_is_its_own_bytes_from_the_first_read_with_no_model_run(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    """No x4 copy stands in while a compaction runs: there is none to run, so a read straight
    after the 201 (the replayed trace's first reads) never needs the model."""
    app, client = hot
    tiering_of(app, Clock())
    model_runs = renditions("model")

    response = await client.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    image_id = response.json()["id"]
    reads = [await client.get(f"/v1/images/{image_id}") for _ in range(3)]
    thumbnail = await client.get(f"/v1/images/{image_id}", params={"w": "100"})

    assert response.status_code == 201
    assert response.json()["receipt"]["state"] == "done"
    assert await keys(app.state.image_service.store, image_id) == [object_key(image_id)]
    assert [read.content for read in reads] == [photo_bytes] * 3
    assert thumbnail.status_code == 200 and size(thumbnail.content)[0] == 100
    assert renditions("model") == model_runs


async def test_an_image_unread_for_the_idle_time_is_compacted_to_x4_then_served_by_the_model(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    app, client = hot
    clock = Clock()
    tiering = tiering_of(app, clock)
    meta = await upload(client, photo_bytes)
    image_id = meta["id"]

    clock.now += IDLE / 2
    assert (await client.get(f"/v1/images/{image_id}")).status_code == 200
    clock.now += IDLE / 2 + 1  # idle since the upload, not since the read
    handed_while_read = await tiering.sweep()
    still_hot = (await client.get(f"/v1/images/{image_id}/meta")).json()

    clock.now += IDLE + 1
    handed_when_idle = await tiering.sweep()
    cold = await compacted(client, image_id)
    model_runs = renditions("model")
    read = await client.get(f"/v1/images/{image_id}")  # nothing cached for an idle image

    assert handed_while_read == 0 and still_hot["representation"] == "original"
    assert handed_when_idle == 1
    assert cold["representation"] == "x4" and abs(cold["stored_width"] - meta["width"] / 4) <= 1
    assert cold["receipt"]["state"] == "done" and cold["receipt"]["policy"] == "downscale"
    assert read.status_code == 200 and size(read.content) == (meta["width"], meta["height"])
    assert read.headers["x-model-version"] == cold["receipt"]["model"] != NO_MODEL
    assert read.headers["x-cache"] == "MISS" and renditions("model") == model_runs + 1
    assert await tiering.sweep() == 0  # compacted once, then no longer tracked


async def test_a_read_racing_the_cold_compaction_gets_a_whole_image(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    """The reading process remembered the hot copy's metadata; the store now holds the x4
    copy (its compaction held before the swap): the read is planned again, never served
    the x4 bytes as if they were the image."""
    app, client = hot
    clock = Clock()
    tiering = tiering_of(app, clock)
    meta = await upload(client, photo_bytes)
    image_id = meta["id"]
    assert (await client.get(f"/v1/images/{image_id}")).content == photo_bytes
    compactor = app.state.image_service.compactions.compactor
    scored, release = asyncio.Event(), asyncio.Event()
    score = compactor._score

    async def held(*args: object) -> object:
        result = await score(*args)
        scored.set()
        await release.wait()
        return result

    compactor._score = held
    clock.now += IDLE + 1
    assert await tiering.sweep() == 1
    await asyncio.wait_for(scored.wait(), 60)
    during = await client.get(f"/v1/images/{image_id}")
    thumbnail = await client.get(f"/v1/images/{image_id}", params={"w": "100"})
    release.set()
    cold = await compacted(client, image_id)
    after = await client.get(f"/v1/images/{image_id}")

    assert during.status_code == 200 and size(during.content) == (meta["width"], meta["height"])
    assert during.headers["x-model-version"] != NO_MODEL
    assert thumbnail.status_code == 200 and size(thumbnail.content)[0] == 100
    assert cold["representation"] == "x4"
    assert after.status_code == 200 and size(after.content) == (meta["width"], meta["height"])


async def test_an_image_deleted_while_going_cold_is_never_written_back(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    app, client = hot
    clock = Clock()
    tiering = tiering_of(app, clock)
    service = app.state.image_service
    meta = await upload(client, photo_bytes)
    image_id = meta["id"]
    put = service.store.put
    deleted: list[int] = []

    async def delete_first(key: str, data: bytes, metadata: dict[str, str]) -> None:
        if key == pending_key(image_id) and not deleted:
            deleted.append((await client.delete(f"/v1/images/{image_id}")).status_code)
        await put(key, data, metadata)

    tiering.store.put = delete_first  # type: ignore[method-assign]
    clock.now += IDLE + 1
    handed = await tiering.sweep()
    tiering.store.put = put  # type: ignore[method-assign]

    assert deleted == [204]
    assert handed == 0
    assert await keys(service.store, image_id) == []
    assert (await client.get(f"/v1/images/{image_id}")).status_code == 404
    assert object_key(image_id) not in await service.store.list_keys("images/")


async def test_an_image_whose_compaction_would_not_pay_for_itself_stays_as_uploaded(
    embedded_settings: Settings, photo_bytes: bytes
) -> None:
    """The 25 KB photo saves about $5e-7 of storage a month as its x4 copy; its compaction
    costs about $7.5e-7 of CPU at the default prices: within a week's horizon it never pays
    back, within the default year it does (the tests above)."""
    week = tiered(embedded_settings).model_copy(update={"cold_horizon": 7 * 86_400})
    clock = Clock()
    async with serving(week) as (app, client):
        tiering = tiering_of(app, clock)
        image_id = (await upload(client, photo_bytes))["id"]
        clock.now += IDLE + 1
        handed = await tiering.sweep()
        kept = (await client.get(f"/v1/images/{image_id}/meta")).json()
        stored = await keys(app.state.image_service.store, image_id)
        idle = await tiering.ledger.idle(clock.now, 1000)

    assert handed == 0
    assert kept["representation"] == "original" and kept["receipt"]["state"] == "done"
    assert stored == [object_key(image_id)]  # no pending compaction
    assert image_id not in idle  # not looked at again unless read again


@pytest.mark.parametrize("mode", ["embedded", "full"])
async def test_reads_survive_a_restart(
    mode: str, request: pytest.FixtureRequest, photo_bytes: bytes
) -> None:
    """A read recorded by one process keeps the image hot for the next (no object-store write)."""
    settings = tiered(request.getfixturevalue(f"{mode}_settings"))
    clock = Clock()
    async with serving(settings) as (app, client):
        tiering_of(app, clock)
        image_id = (await upload(client, photo_bytes))["id"]
        clock.now += IDLE - 10
        assert (await client.get(f"/v1/images/{image_id}")).status_code == 200
    clock.now += 20  # idle since the upload, not since the read
    async with serving(settings) as (app, client):
        tiering = tiering_of(app, clock)
        handed_after_restart = await tiering.sweep()
        clock.now += IDLE
        handed_later = await tiering.sweep()

    assert (handed_after_restart, handed_later) == (0, 1)


def test_the_idle_time_reads_as_people_write_it() -> None:
    assert Settings(compact_after_idle="30m").compact_after_idle == 1800
    assert Settings(compact_after_idle="7d").compact_after_idle == 7 * 86_400
    assert Settings(compact_after_idle=90).compact_after_idle == 90
    assert Settings().tiering is False and Settings().cold_policy == "downscale"
    assert Settings(cold_horizon="90d").cold_horizon == 90 * 86_400
    with pytest.raises(ValidationError):
        Settings(compact_after_idle="soon")
    with pytest.raises(ValidationError):
        Settings(cold_floor="ssim:2")


async def test_a_read_ledger_entry_that_is_no_image_id_is_forgotten_and_the_sweep_goes_on(
    hot: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    """The read ledger may be shared (one Redis for several fleets): a name that is not an
    image id never stops the sweep of the images that are."""
    app, client = hot
    clock = Clock()
    tiering = tiering_of(app, clock)
    meta = await upload(client, photo_bytes)
    await tiering.ledger.touch({"not-an-image-id": clock.now})

    clock.now += IDLE + 1
    handed = await tiering.sweep()
    cold = await compacted(client, meta["id"])

    assert handed == 1
    assert cold["representation"] == "x4"
    assert "not-an-image-id" not in await tiering.ledger.idle(clock.now, 1000)


def worker_counts(worker: WorkerProcess) -> tuple[float, float, float]:
    """The worker's compactions done, its render jobs, and its model runs, as it counts them."""
    values = samples(worker.metrics())
    return (
        values.get('srstore_compactions_total{outcome="done"}', 0.0),
        values.get('srstore_worker_jobs_total{outcome="rendered"}', 0.0),
        values.get('srstore_renditions_total{source="model"}', 0.0),
    )


async def worker_counted(
    worker: WorkerProcess, at_least: tuple[float, float, float], timeout: float = 60
) -> tuple[float, float, float]:
    """The worker's counts once each has reached ``at_least``: it counts a job just after
    the API has seen its result, so the test waits for the count, never assumes it."""
    deadline = time.monotonic() + timeout
    while True:
        counts = await asyncio.to_thread(worker_counts, worker)
        if all(count >= least for count, least in zip(counts, at_least, strict=True)):
            return counts
        if time.monotonic() > deadline:
            return counts  # the assertions say which count never came
        await asyncio.sleep(0.05)


@pytest.mark.full
async def test_in_queue_mode_a_cold_image_is_compacted_by_the_worker_then_rendered_by_the_model(
    queue_settings: Settings,
    queue_deployment: tuple[dict[str, str], WorkerProcess],
    photo_bytes: bytes,
) -> None:
    """The API (no model of its own at work) sweeps and queues; a real ``srstore worker``
    process compacts the idle image, and renders it when it is read again."""
    _, worker = queue_deployment
    clock = Clock()
    async with serving(tiered(queue_settings)) as (app, client):
        tiering = tiering_of(app, clock)
        meta = await upload(client, photo_bytes)
        image_id = meta["id"]
        before_hot_read = worker_counts(worker)
        hot = await client.get(f"/v1/images/{image_id}")
        after_hot_read = worker_counts(worker)

        clock.now += IDLE + 1
        handed = await tiering.sweep()
        cold = await compacted(client, image_id)
        done, rendered, model_runs = after_hot_read
        compacted_counts = await worker_counted(worker, (done + 1, rendered, model_runs))
        await evict(app, image_id)  # what compaction cached: the read below is a miss
        read = await client.get(f"/v1/images/{image_id}")
        done, rendered, model_runs = compacted_counts
        after_cold_read = await worker_counted(worker, (done, rendered + 1, model_runs + 1))

    assert hot.content == photo_bytes and hot.headers["x-model-version"] == NO_MODEL
    assert after_hot_read == before_hot_read  # no job of any kind for a hot read
    assert handed == 1
    assert cold["representation"] == "x4" and cold["receipt"]["state"] == "done"
    assert compacted_counts[0] == after_hot_read[0] + 1  # the worker compacted it, once
    assert read.status_code == 200 and size(read.content) == (meta["width"], meta["height"])
    assert read.headers["x-model-version"] == cold["receipt"]["model"] != NO_MODEL
    assert after_cold_read[1:] == (compacted_counts[1] + 1, compacted_counts[2] + 1)


@pytest.mark.parametrize("mode", ["embedded", "full"])
async def test_of_two_replicas_sweeping_at_once_one_hands_each_idle_image_on(
    mode: str, request: pytest.FixtureRequest, photo_bytes: bytes
) -> None:
    """Each replica runs the sweep loop; the sweep's lease lets one of them sweep at a time,
    so an idle image is handed to compaction once, not once per replica."""
    settings = tiered(request.getfixturevalue(f"{mode}_settings"))
    clock = Clock()
    async with serving(settings) as (first_app, first), serving(settings) as (second_app, second):
        replicas = [(tiering_of(first_app, clock), first), (tiering_of(second_app, clock), second)]
        early = [(await upload(first, photo_bytes))["id"] for _ in range(2)]
        clock.now += IDLE + 1
        raced = await asyncio.gather(*(replica.sweep() for replica, _ in replicas))
        (sweeper, swept_by), (other, other_client) = replicas if raced[0] else replicas[::-1]
        late = (await upload(first, photo_bytes))["id"]
        clock.now += IDLE + 1
        async with sweeper.leases.hold(SWEEP_LEASE) as held:  # as if its next sweep ran now
            while_it_sweeps = await other.sweep()
        after_it_swept = await other.sweep()
        # each through the replica that compacted it (embedded replicas cache metadata apart)
        cold = [await compacted(swept_by, image_id) for image_id in early]
        cold.append(await compacted(other_client, late))

    assert sorted(raced) == [0, 2]
    assert held and while_it_sweeps == 0
    assert after_it_swept == 1
    assert [meta["representation"] for meta in cold] == ["x4"] * 3
