"""Shared fixtures: real Redis and SeaweedFS servers once per session, and app clients.

Every test that takes ``client`` runs three times: in the embedded default (local
directory + in-process cache), in full mode against the real servers, and in queue mode,
where a real ``srstore worker`` process renders the misses. The modules that override
``settings`` with :data:`CLUSTER_MODES` run twice more, on a real Redis Cluster (3 masters,
3 replicas, started once per session when first needed): full mode, and queue mode with the
queue sharded over the masters.
"""

from __future__ import annotations

import io
import os
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import redis
from fastapi import FastAPI
from PIL import Image

from app.main import create_app
from config.settings import Settings
from models.control import RedisControl
from tests.support.process import WorkerProcess, start_worker
from tests.support.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisClusterServer,
    RedisServer,
    SeaweedServer,
    start_redis,
    start_redis_cluster,
    start_seaweed,
)
from tests.support.weights import brightened, write_shipped, zero_residual

# The suite loads models in hundreds of app and worker processes; compiling each in the
# background would only take CPU from the tests. tests/test_compiling.py covers compiling.
os.environ.setdefault("SRSTORE_COMPILE", "off")

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding slow tests first (each file's own order kept).

    ``make test`` hands whole files to pytest-xdist workers in this order, so the long files
    start at once instead of ending the run on one busy worker. Servers are per worker: each
    worker's session fixtures start their own Redis and SeaweedFS on free ports.
    """
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = start_redis(tmp_path_factory.mktemp("redis"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterServer]:
    """Shared by the session's tests: none of them kills its nodes (the failover test starts
    a cluster of its own)."""
    cluster = start_redis_cluster(tmp_path_factory.mktemp("redis-cluster"))
    yield cluster
    cluster.stop()


@pytest.fixture(scope="session")
def seaweed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    os.environ.setdefault("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    server = start_seaweed(tmp_path_factory.mktemp("seaweed"))
    yield server
    server.stop()


@pytest.fixture
def redis_client(redis_server: RedisServer) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_server.url)
    yield client
    client.close()


def forget_active_model(redis_url: str, cluster: bool = False) -> None:
    """The model pointer and audit trail are fleet-wide: each test's fleet starts without."""
    client = redis.RedisCluster.from_url(redis_url) if cluster else redis.Redis.from_url(redis_url)
    client.delete(RedisControl.ACTIVE, RedisControl.AUDIT)
    client.close()


SHARED_BUCKET = "srstore-tests"
# The in-process apps' Redis timeout. The default (0.5 s) is for a Redis that hangs; four
# test workers on two cores can hold a healthy cluster's connect that long, and a read then
# answers BYPASS where the test expects MISS. Tests of a hung Redis set the default back.
CACHE_TIMEOUT_SECONDS = 5.0


def unique_bucket() -> str:
    return f"srstore-{uuid.uuid4().hex[:12]}"


SHIPPED_ESPCN_LEVELS = 12


@pytest.fixture
def shipped_dir(tmp_path: Path) -> Path:
    """A weights directory shipping two versions that render visibly different pixels.

    ESPCN v1 (active first) brightens luma by ``SHIPPED_ESPCN_LEVELS``; SRCNN v1 adds nothing
    to its bicubic upscale, so it scores higher and may be activated without ``force``.
    """
    directory = tmp_path / "weights"
    write_shipped(directory, "espcn", 1, brightened("espcn", SHIPPED_ESPCN_LEVELS))
    write_shipped(directory, "srcnn", 1, zero_residual("srcnn"))
    return directory


@pytest.fixture
def embedded_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def full_settings(
    tmp_path: Path, redis_server: RedisServer, seaweed_server: SeaweedServer
) -> Settings:
    """A fresh fleet: its own key prefix in the shared bucket, no active model pointer yet."""
    forget_active_model(redis_server.url)
    return Settings(
        data_dir=tmp_path / "data",
        s3_bucket=SHARED_BUCKET,
        s3_prefix=f"{uuid.uuid4().hex[:12]}/",
        s3_endpoint_url=seaweed_server.endpoint_url,
        redis_url=redis_server.url,
        cache_timeout_seconds=CACHE_TIMEOUT_SECONDS,
    )


@pytest.fixture
def cluster_settings(
    tmp_path: Path, redis_cluster: RedisClusterServer, seaweed_server: SeaweedServer
) -> Settings:
    """Full mode on the Redis Cluster: a fresh fleet, as in ``full_settings``."""
    forget_active_model(redis_cluster.url, cluster=True)
    return Settings(
        data_dir=tmp_path / "data",
        s3_bucket=SHARED_BUCKET,
        s3_prefix=f"{uuid.uuid4().hex[:12]}/",
        s3_endpoint_url=seaweed_server.endpoint_url,
        redis_url=redis_cluster.url,
        redis_cluster=True,
        redis_wait_replicas=1,
        cache_timeout_seconds=CACHE_TIMEOUT_SECONDS,
    )


def queue_env(
    redis_server: RedisServer | RedisClusterServer, seaweed_server: SeaweedServer
) -> dict[str, str]:
    """SRSTORE_* settings of a queue-mode deployment with its own bucket and stream; on a
    cluster, the queue has a shard per master."""
    cluster = isinstance(redis_server, RedisClusterServer)
    return {
        **(
            {
                "SRSTORE_REDIS_CLUSTER": "true",
                "SRSTORE_QUEUE_SHARDS": "3",
                "SRSTORE_REDIS_WAIT_REPLICAS": "1",
            }
            if cluster
            else {}
        ),
        "SRSTORE_INFERENCE": "queue",
        "SRSTORE_REDIS_URL": redis_server.url,
        "SRSTORE_S3_BUCKET": unique_bucket(),
        "SRSTORE_S3_ENDPOINT_URL": seaweed_server.endpoint_url,
        "SRSTORE_QUEUE_STREAM": f"srstore:render:{uuid.uuid4().hex[:8]}",
        "SRSTORE_CLAIM_IDLE_SECONDS": "1",
        # a worker killed mid-compaction leaves its lease to lapse before an heir takes over
        "SRSTORE_COMPACTION_LEASE_SECONDS": "3",
    }


def settings_from(env: dict[str, str], **overrides: object) -> Settings:
    fields = {k.removeprefix("SRSTORE_").lower(): v for k, v in env.items()}
    return Settings(**{**fields, **overrides})  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def queue_deployment(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
) -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    """One worker serving the API tests in queue mode, for the whole session."""
    env = queue_env(redis_server, seaweed_server)
    worker = start_worker(env, "session", tmp_path_factory.mktemp("worker"))
    yield env, worker
    worker.stop()


@pytest.fixture
def queue_settings(
    tmp_path: Path, queue_deployment: tuple[dict[str, str], WorkerProcess]
) -> Settings:
    env = queue_deployment[0]
    forget_active_model(env["SRSTORE_REDIS_URL"])
    return settings_from(env, data_dir=tmp_path / "data")


@pytest.fixture(scope="session")
def cluster_queue_deployment(
    tmp_path_factory: pytest.TempPathFactory,
    redis_cluster: RedisClusterServer,
    seaweed_server: SeaweedServer,
) -> Iterator[tuple[dict[str, str], WorkerProcess]]:
    """One worker reading every shard of a queue on the cluster, for the whole session."""
    env = queue_env(redis_cluster, seaweed_server)
    worker = start_worker(env, "cluster-session", tmp_path_factory.mktemp("cluster-worker"))
    yield env, worker
    worker.stop()


@pytest.fixture
def cluster_queue_settings(
    tmp_path: Path, cluster_queue_deployment: tuple[dict[str, str], WorkerProcess]
) -> Settings:
    env = cluster_queue_deployment[0]
    forget_active_model(env["SRSTORE_REDIS_URL"], cluster=True)
    return settings_from(env, data_dir=tmp_path / "data")


MODES = ["embedded", "full", "queue"]
# A module whose tests should also hold on a Redis Cluster overrides ``settings`` with these.
CLUSTER_MODES = [*MODES, "cluster", "cluster_queue"]


@pytest.fixture(params=MODES)
def settings(request: pytest.FixtureRequest) -> Settings:
    return request.getfixturevalue(f"{request.param}_settings")  # type: ignore[no-any-return]


@asynccontextmanager
async def serving(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """An app started with ``settings``, and a client talking to it in-process."""
    application = create_app(settings)
    async with application.router.lifespan_context(application):
        transport = httpx.ASGITransport(app=application)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
            yield application, http


def costly_options(settings: Settings) -> Settings:
    """``settings`` whose callers without a key (these tests' loopback client) may ask uploads
    for ``?policy=`` and ``?floor=``, as an operator who enabled it would."""
    return settings.model_copy(update={"anonymous_costly_options": True})


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serving(settings) as pair:
        yield pair


@pytest.fixture
def app(served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return served[0]


@pytest.fixture
def client(served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served[1]


@pytest.fixture(scope="session")
def photo_bytes() -> bytes:
    """A real 602x402 JPEG photograph."""
    return (DATA / "flower.jpg").read_bytes()


@pytest.fixture(scope="session")
def photo(photo_bytes: bytes) -> Image.Image:
    return Image.open(io.BytesIO(photo_bytes)).convert("RGB")


def encode(image: Image.Image, fmt: str, **options: object) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.getvalue()
