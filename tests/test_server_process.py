"""The real ``srstore serve`` process in full mode: real Redis, real SeaweedFS, over HTTP."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from PIL import Image

from keyspace import rendition_prefix
from tests.conftest import unique_bucket
from tests.support.metrics import samples
from tests.support.process import ApiProcess, start_api
from tests.support.servers import RedisServer, SeaweedServer


@pytest.fixture(scope="module")
def api(
    tmp_path_factory: pytest.TempPathFactory,
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
) -> Iterator[ApiProcess]:
    process = start_api(
        {
            "SRSTORE_S3_BUCKET": unique_bucket(),
            "SRSTORE_S3_ENDPOINT_URL": seaweed_server.endpoint_url,
            "SRSTORE_REDIS_URL": redis_server.url,
            "SRSTORE_CACHE_TTL_SECONDS": "300",
            "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("api-data")),
        }
    )
    yield process
    process.stop()


def test_upload_fetch_and_sliding_ttl_over_http(
    api: ApiProcess, photo_bytes: bytes, redis_client: redis.Redis
) -> None:
    with httpx.Client(base_url=api.url) as http:
        created = http.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        assert created.status_code == 201
        image_id = created.json()["id"]
        miss = http.get(f"/v1/images/{image_id}")
        renditions = redis_client.scan_iter(f"{rendition_prefix(image_id)}*")
        (entry,) = [k for k in renditions if b":keys" not in k and b":meta:" not in k]
        redis_client.expire(entry, 10)
        hit = http.get(f"/v1/images/{image_id}")

    assert (miss.headers["x-cache"], hit.headers["x-cache"]) == ("MISS", "HIT")
    assert Image.open(io.BytesIO(hit.content)).size == (602, 402)
    assert 295 <= redis_client.ttl(entry) <= 300


def test_readiness_names_the_real_backends(api: ApiProcess) -> None:
    ready = httpx.get(f"{api.url}/readyz").json()

    assert ready["storage"] == "S3Store"
    assert ready["cache"] == "RedisCache"


def test_metrics_count_uploads_and_cache_results(api: ApiProcess, photo_bytes: bytes) -> None:
    with httpx.Client(base_url=api.url) as http:
        before = samples(http.get("/metrics").text)
        image_id = http.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        ).json()["id"]
        http.get(f"/v1/images/{image_id}")
        http.get(f"/v1/images/{image_id}")
        after = samples(http.get("/metrics").text)

    def moved(name: str) -> float:
        return after.get(name, 0) - before.get(name, 0)

    assert moved('srstore_cache_requests_total{result="hit"}') == 1
    assert moved('srstore_cache_requests_total{result="miss"}') == 1
    assert moved("srstore_original_bytes_total") == len(photo_bytes)
    superres = [k for k in after if k.startswith("srstore_superres_seconds_count")]
    assert sum(moved(k) for k in superres) == 1


def test_the_embedded_default_needs_no_other_service(tmp_path: Path, photo_bytes: bytes) -> None:
    api = start_api({"SRSTORE_DATA_DIR": str(tmp_path)})
    try:
        with httpx.Client(base_url=api.url) as http:
            image_id = http.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            ).json()["id"]
            served = http.get(f"/v1/images/{image_id}")
    finally:
        api.stop()

    assert served.status_code == 200
    assert served.headers["x-cache"] == "MISS"
    assert list((tmp_path / "objects" / "images").iterdir())
