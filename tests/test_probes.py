"""Probes and scrapes answer within their timeouts whatever a dependency does, and say
whether this process can serve reads (a down cache cannot stop it: reads go uncached)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import httpx
from fastapi import FastAPI

from config.settings import Settings
from tests.conftest import encode, serving
from tests.support.metrics import samples
from tests.support.proxy import DelayProxy
from tests.support.servers import RedisServer, SeaweedServer
from tests.support.waiting import until

PROBE_TIMEOUT = 3.0  # the kubelet's timeoutSeconds in deploy/k8s/api.yaml
STORE_UP = 'srstore_dependency_up{dependency="object_store"}'
CACHE_UP = 'srstore_dependency_up{dependency="cache"}'


async def probe(client: httpx.AsyncClient, path: str) -> httpx.Response:
    return await client.get(path, timeout=PROBE_TIMEOUT)


def dependency_down(app: FastAPI, name: str) -> Callable[[], bool]:
    """Whether the process's last ping of ``name`` failed (what /readyz and /metrics report)."""
    return lambda: not app.state.image_service.dependencies.up()[name]


def store_down(app: FastAPI) -> Callable[[], bool]:
    return dependency_down(app, "object_store")


def cache_down(app: FastAPI) -> Callable[[], bool]:
    return dependency_down(app, "cache")


async def test_a_frozen_object_store_fails_readiness_at_once_and_the_scrape_says_so(
    full_settings: Settings, seaweed_server: SeaweedServer
) -> None:
    """The store accepts connections and never answers (every byte held by a proxy)."""
    proxy = DelayProxy(seaweed_server.s3_port, delay=0)
    settings = full_settings.model_copy(
        update={"s3_endpoint_url": proxy.url, "dependency_check_seconds": 0.2}
    )
    try:
        async with serving(settings) as (app, client):
            assert (await probe(client, "/readyz")).status_code == 200
            proxy.freeze()
            await until(store_down(app), "a ping of the frozen store timing out")

            ready = await probe(client, "/readyz")
            scraped = await probe(client, "/metrics")
            live = await probe(client, "/healthz")
            proxy.thaw()
            await until(lambda: not store_down(app)(), "a ping of the thawed store answering")
            again = await probe(client, "/readyz")
    finally:
        proxy.stop()

    assert ready.status_code == 503
    assert ready.json()["error"]["code"] == "storage_unavailable"
    assert scraped.status_code == 200
    assert samples(scraped.text)[STORE_UP] == 0
    assert live.status_code == 200
    assert again.status_code == 200


async def test_a_frozen_cache_leaves_the_process_ready_and_reads_bypass_it(
    full_settings: Settings,
    redis_server: RedisServer,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """Redis (cache, ledger, model pointer) frozen: reads are served uncached, so the
    process can still serve them and /readyz stays 200; the scrape says the cache is down."""
    proxy = DelayProxy(redis_server.port, delay=0)
    url = f"redis://127.0.0.1:{proxy.server_address[1]}/0"
    hangs = Settings.model_fields["cache_timeout_seconds"].default
    settings = full_settings.model_copy(
        update={"redis_url": url, "dependency_check_seconds": 0.2, "cache_timeout_seconds": hangs}
    )
    try:
        async with serving(settings) as (app, client):
            created = await client.post(
                "/v1/images",
                content=encode(photo.resize((64, 48)), "PNG"),
                headers={"content-type": "image/png"},
            )
            proxy.freeze()
            await until(cache_down(app), "a ping of the frozen cache timing out")

            ready = await probe(client, "/readyz")
            scraped = await probe(client, "/metrics")
            read = await client.get(f"/v1/images/{created.json()['id']}?format=png")
            proxy.thaw()
    finally:
        proxy.stop()

    assert ready.status_code == 200
    assert ready.json()["cache_state"].startswith("down")
    assert samples(scraped.text)[CACHE_UP] == 0
    assert samples(scraped.text)[STORE_UP] == 1
    assert read.status_code == 200
    assert read.headers["x-cache"] == "BYPASS"


async def test_a_full_local_disk_makes_the_store_unready_and_refuses_uploads(
    tmp_path: Path,
    photo,  # type: ignore[no-untyped-def]
) -> None:
    """More free space required than the disk has: what a full disk looks like to srstore."""
    settings = Settings(data_dir=tmp_path / "data", local_min_free_bytes=2**62)
    async with serving(settings) as (_, client):
        ready = await probe(client, "/readyz")
        scraped = await probe(client, "/metrics")
        upload = await client.post(
            "/v1/images",
            content=encode(photo.resize((16, 16)), "PNG"),
            headers={"content-type": "image/png"},
        )

    assert ready.status_code == 503
    assert samples(scraped.text)[STORE_UP] == 0
    assert upload.status_code == 503
    assert upload.json()["error"]["code"] == "storage_unavailable"
    assert upload.headers["retry-after"] == "5"  # README: an outage answers Retry-After: 5
    assert not list((tmp_path / "data" / "objects").rglob("*.meta.json"))
