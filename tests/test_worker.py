"""Queue mode: real ``srstore worker`` processes behind the API, real Redis and SeaweedFS."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import redis
import torch
from prometheus_client.parser import text_string_to_metric_families

from cache import CacheKey, CacheUnavailable
from config.settings import Settings
from keyspace import queue_shard
from models.archs import build_model
from models.weights import weights_path
from render.compaction import plain_read_key
from render.queue import GROUP, RenderJob
from tests.conftest import forget_active_model, queue_env, serving, settings_from
from tests.support.compaction import compacted
from tests.support.metrics import samples
from tests.support.process import ApiProcess, WorkerProcess, start_api, start_worker
from tests.support.proxy import DelayProxy
from tests.support.servers import RedisServer, SeaweedServer, free_port, wait_until
from tests.support.threads import Helper, join_all

pytestmark = pytest.mark.full


@pytest.fixture
def env(redis_server: RedisServer, seaweed_server: SeaweedServer) -> dict[str, str]:
    forget_active_model(redis_server.url)
    return queue_env(redis_server, seaweed_server)


@pytest.fixture(scope="session")
def espcn_weights(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Untrained ESPCN weights as version 1: the network path, whatever the trainer ships."""
    directory = tmp_path_factory.mktemp("weights")
    torch.save(build_model("espcn").state_dict(), weights_path(directory, "espcn", 1))
    return str(directory)


async def upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# Compaction (on the same workers) caches the plain read of every upload; the render tests
# read a PNG of the JPEG upload, which only a render job makes.
PNG = {"format": "png"}


def jobs(worker: WorkerProcess, outcome: str) -> float:
    for family in text_string_to_metric_families(worker.metrics()):
        for sample in family.samples:
            if sample.name == "srstore_worker_jobs_total" and sample.labels == {"outcome": outcome}:
                return sample.value
    return 0.0


def pending(redis_client: redis.Redis, stream: str) -> list[str]:
    """The consumers holding unacknowledged jobs."""
    entries = redis_client.xpending_range(stream, GROUP, min="-", max="+", count=100)
    return [entry["consumer"].decode() for entry in entries]


async def eventually(condition: Callable[[], bool], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


@pytest.mark.slow
async def test_two_workers_on_one_host_with_the_same_settings_share_the_queue(
    env: dict[str, str], espcn_weights: str, tmp_path: Path, photo_bytes: bytes
) -> None:
    env = {**env, "SRSTORE_WEIGHTS_DIR": espcn_weights, "SRSTORE_RENDER_THREADS": "1"}
    metrics_port = free_port()
    workers = [start_worker(env, name, tmp_path, metrics_port) for name in ("one", "two")]
    try:
        async with serving(settings_from(env)) as (_, client):
            ids = [await upload(client, photo_bytes) for _ in range(6)]
            responses = await asyncio.gather(
                *(client.get(f"/v1/images/{i}", params=PNG) for i in ids)
            )
        rendered = [jobs(worker, "rendered") for worker in workers]
        scraped = [worker.metrics() for worker in workers]
    finally:
        exits = [worker.stop() for worker in workers]

    assert [r.status_code for r in responses] == [200] * 6
    assert {r.headers["x-cache"] for r in responses} == {"MISS"}
    assert {r.headers["x-model-version"] for r in responses} == {"espcn:1"}
    assert sum(rendered) == 6
    assert min(rendered) >= 1
    assert all("srstore_batch_size_count" in text for text in scraped)
    assert workers[0].metrics_port == metrics_port
    assert workers[1].metrics_port > metrics_port, "the second takes the next free port"
    assert exits == [0, 0]


@pytest.mark.slow
async def test_a_killed_workers_job_is_finished_by_another(
    env: dict[str, str],
    seaweed_server: SeaweedServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    photo_bytes: bytes,
) -> None:
    # The first worker's object store never answers, so it is mid-job when it is killed.
    blackhole = DelayProxy(seaweed_server.s3_port, delay=3600)
    stuck = start_worker({**env, "SRSTORE_S3_ENDPOINT_URL": blackhole.url}, "stuck", tmp_path)
    stream = queue_shard(env["SRSTORE_QUEUE_STREAM"], 0)  # the deployment's one shard
    try:
        async with serving(settings_from(env)) as (_, client):
            image_id = await upload(client, photo_bytes)
            request = asyncio.create_task(client.get(f"/v1/images/{image_id}", params=PNG))
            await eventually(lambda: pending(redis_client, stream) == ["stuck"])
            survivor = start_worker(env, "survivor", tmp_path)
            stuck.kill()
            response = await request
        claimed = jobs(survivor, "rendered")
        survivor.stop()
    finally:
        stuck.kill()
        blackhole.stop()

    assert response.status_code == 200
    assert response.headers["x-cache"] == "MISS"
    assert claimed == 1
    assert pending(redis_client, stream) == []


async def test_a_worker_carries_on_when_redis_loses_the_job_stream(
    env: dict[str, str],
    espcn_weights: str,
    redis_client: redis.Redis,
    tmp_path: Path,
    photo_bytes: bytes,
) -> None:
    env = {**env, "SRSTORE_WEIGHTS_DIR": espcn_weights}
    worker = start_worker(env, "survivor", tmp_path)
    try:
        async with serving(settings_from(env)) as (_, client):
            await eventually(
                lambda: redis_client.exists(queue_shard(env["SRSTORE_QUEUE_STREAM"], 0)) == 1
            )
            redis_client.delete(
                queue_shard(env["SRSTORE_QUEUE_STREAM"], 0)
            )  # as a restart without persistence
            image_id = await upload(client, photo_bytes)
            response = await client.get(f"/v1/images/{image_id}", params=PNG)
    finally:
        worker.stop()

    assert response.status_code == 200
    assert response.headers["x-cache"] == "MISS"


async def test_sigterm_finishes_the_job_in_hand_then_exits_0(
    env: dict[str, str],
    seaweed_server: SeaweedServer,
    redis_client: redis.Redis,
    tmp_path: Path,
    photo_bytes: bytes,
) -> None:
    # The worker's object store answers after 2 s, so the job is in flight at SIGTERM.
    slow = DelayProxy(seaweed_server.s3_port, delay=2)
    worker = start_worker({**env, "SRSTORE_S3_ENDPOINT_URL": slow.url}, "draining", tmp_path)
    stream = queue_shard(env["SRSTORE_QUEUE_STREAM"], 0)  # the deployment's one shard
    try:
        async with serving(settings_from(env)) as (_, client):
            image_id = await upload(client, photo_bytes)
            request = asyncio.create_task(client.get(f"/v1/images/{image_id}", params=PNG))
            await eventually(lambda: pending(redis_client, stream) == ["draining"])
            exit_status = await asyncio.to_thread(worker.stop)
            response = await request
    finally:
        worker.kill()
        slow.stop()

    assert exit_status == 0
    assert response.status_code == 200
    assert pending(redis_client, stream) == []


async def test_a_miss_no_worker_takes_in_time_is_503_with_retry_after(
    env: dict[str, str], photo_bytes: bytes
) -> None:
    async with serving(settings_from(env, request_deadline_seconds=0.5)) as (_, client):
        image_id = await upload(client, photo_bytes)
        response = await client.get(f"/v1/images/{image_id}")

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "render_timeout"
    assert int(response.headers["retry-after"]) > 0


async def test_a_full_queue_refuses_a_miss_at_once_with_503(
    env: dict[str, str], photo_bytes: bytes
) -> None:
    settings = settings_from(env, request_deadline_seconds=0.5, queue_max_length=1)
    async with serving(settings) as (_, client):
        first, second = [await upload(client, photo_bytes) for _ in range(2)]
        waited = await client.get(f"/v1/images/{first}")  # its job stays queued: no worker
        refused = await client.get(f"/v1/images/{second}")

    assert waited.json()["error"]["code"] == "render_timeout"
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "queue_full"
    assert "retry-after" in refused.headers


async def test_a_full_queues_retry_after_is_its_backlog_at_the_fleets_rate(
    env: dict[str, str], photo_bytes: bytes, redis_client: redis.Redis
) -> None:
    stream = env["SRSTORE_QUEUE_STREAM"]
    settings = settings_from(env, request_deadline_seconds=30, queue_max_length=20)
    async with serving(settings) as (app, client):
        image_id = await upload(client, photo_bytes)
        for n in range(20):  # a backlog no worker is taking
            redis_client.xadd(queue_shard(stream, 0), {"image_id": f"waiting-{n}"})
        before = await client.get(f"/v1/images/{image_id}")
        for n in range(8):  # the fleet finishes 8 renders within a second
            redis_client.publish(f"{stream}:done:finished-{n}", '{"code": null, "message": ""}')
        heard = app.state.image_service.renderer.backlog
        await eventually(lambda: len(heard._finished) == 8)
        after = await client.get(f"/v1/images/{image_id}")

    assert before.json()["error"]["code"] == after.json()["error"]["code"] == "queue_full"
    assert before.headers["retry-after"] == "30"  # nothing finished yet: the deadline
    assert after.headers["retry-after"] == "3"  # 20 jobs at 8 a second, rounded up


@pytest.mark.slow
def test_misses_in_two_api_processes_queue_one_job(
    env: dict[str, str], tmp_path: Path, photo_bytes: bytes, redis_client: redis.Redis
) -> None:
    """Two real ``srstore serve`` processes miss the same image; one job reaches the stream."""
    apis = [start_api({**env, "SRSTORE_DATA_DIR": str(tmp_path / "data")}) for _ in range(2)]
    try:
        created = httpx.post(
            f"{apis[0].url}/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        path = f"/v1/images/{created.json()['id']}"
        responses: dict[int, httpx.Response] = {}

        def fetch(index: int) -> None:
            responses[index] = httpx.get(apis[index].url + path, timeout=60)

        fetchers = [Helper(fetch, index, name=f"fetch-{index}") for index in (0, 1)]
        for fetcher in fetchers:
            fetcher.start()
        wait_until(lambda: sum(enqueued(apis).values()) == 2, 30, "a miss enqueued by each")
        outcomes = enqueued(apis)
        queued = redis_client.xlen(queue_shard(env["SRSTORE_QUEUE_STREAM"], 0))
        worker = start_worker(env, "late", tmp_path)
        join_all(fetchers, timeout=60)
        rendered = jobs(worker, "rendered")
        worker.stop()
    finally:
        for api in apis:
            api.stop()

    assert queued == 1
    assert outcomes == {"queued": 1, "joined": 1}
    assert [responses[i].status_code for i in (0, 1)] == [200, 200]
    assert responses[0].content == responses[1].content
    assert rendered == 1


def enqueued(apis: list[ApiProcess]) -> dict[str, int]:
    """What became of the misses the API processes sent to the queue, summed over them."""
    outcomes: dict[str, int] = {}
    for api in apis:
        for name, value in samples(httpx.get(f"{api.url}/metrics").text).items():
            if name.startswith("srstore_queue_enqueues_total{"):
                outcome = name.split('"')[1]
                outcomes[outcome] = outcomes.get(outcome, 0) + int(value)
    return outcomes


async def test_a_job_whose_result_is_cached_is_acknowledged_without_rendering(
    queue_settings: Settings,
    queue_deployment: tuple[dict[str, str], WorkerProcess],
    photo_bytes: bytes,
) -> None:
    _, worker = queue_deployment
    async with serving(queue_settings) as (app, client):
        image_id = await upload(client, photo_bytes)
        await compacted(client, image_id)  # it caches the plain read: the key below, after
        service = app.state.image_service
        key = plain_read_key(await service.meta(image_id), app.state.models.label, queue_settings)
        assert key is not None
        await service.cache.put(key, b"already rendered elsewhere")
        before = jobs(worker, "cached")

        served = await service.renderer.render(key)

    assert served == b"already rendered elsewhere"
    assert jobs(worker, "cached") == before + 1


async def test_a_garbled_completion_is_logged_and_the_miss_is_still_woken_by_its_worker(
    queue_settings: Settings, photo_bytes: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    """A message on a waited-for key's completion channel that is not an outcome (a worker
    of another version in a rolling deploy, say) is skipped, and the subscription goes on:
    the miss is woken by its own job's outcome, not by its deadline."""
    settings = queue_settings.model_copy(update={"request_deadline_seconds": 60.0})
    async with serving(settings) as (app, client):
        image_id = await upload(client, photo_bytes)
        renderer = app.state.image_service.renderer
        enqueue = renderer.queue.enqueue

        async def enqueue_then_garble(job: RenderJob) -> object:
            enqueued = await enqueue(job)
            channel = renderer.queue.done_channel(str(job.key))
            await renderer.client.publish(channel, "not an outcome")
            return enqueued

        renderer.queue.enqueue = enqueue_then_garble
        started = time.monotonic()
        try:
            response = await client.get(f"/v1/images/{image_id}", params=PNG)
        finally:
            del renderer.queue.enqueue
        waited = time.monotonic() - started

    assert response.status_code == 200
    assert waited < 30  # woken by the worker's outcome, not by the 60 s deadline
    assert any(
        record.levelname == "WARNING" and "not an outcome" in record.getMessage()
        for record in caplog.records
    )


async def test_a_finished_render_is_read_again_not_queued_again_while_the_cache_is_unreadable(
    queue_settings: Settings, photo_bytes: bytes
) -> None:
    """The worker wrote the rendition, but this process's read of it fails (Redis answered too
    slowly, and the cache now skips Redis for a moment): the waiter reads again until the
    deadline. Queuing another job would only be acknowledged as already cached, again and
    again until the cache came back (1076 jobs for one miss were once counted)."""
    async with serving(queue_settings) as (app, client):
        image_id = await upload(client, photo_bytes)
        renderer = app.state.image_service.renderer
        enqueued: list[object] = []
        failed_reads: list[CacheKey] = []
        enqueue, get = renderer.queue.enqueue, renderer.cache.get

        async def counting_enqueue(job: object) -> object:
            enqueued.append(job)
            return await enqueue(job)

        async def get_failing_once_after_the_job(key: CacheKey) -> bytes | None:
            if enqueued and not failed_reads:
                failed_reads.append(key)
                raise CacheUnavailable("Redis: Timeout reading from socket")
            return await get(key)  # type: ignore[no-any-return]

        renderer.queue.enqueue = counting_enqueue
        renderer.cache.get = get_failing_once_after_the_job
        try:
            response = await client.get(f"/v1/images/{image_id}")
        finally:
            del renderer.queue.enqueue, renderer.cache.get

    assert response.status_code == 200
    assert len(failed_reads) == 1
    assert len(enqueued) == 1
