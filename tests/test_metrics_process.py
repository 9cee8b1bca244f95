"""/metrics from the real ``srstore serve`` process: several workers, and restarts."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.conftest import unique_bucket
from tests.support.compaction import compacted_sync
from tests.support.metrics import ledger, samples
from tests.support.process import start_api
from tests.support.servers import RedisServer, SeaweedServer


def upload(url: str, data: bytes) -> str:
    response = httpx.post(f"{url}/v1/images", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def scrape(url: str) -> dict[str, float]:
    return samples(httpx.get(f"{url}/metrics").text)


@pytest.mark.slow
def test_two_workers_answer_every_scrape_with_the_same_merged_counters(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    multiproc = tmp_path / "prometheus"
    api = start_api(
        {"SRSTORE_DATA_DIR": str(tmp_path), "PROMETHEUS_MULTIPROC_DIR": str(multiproc)},
        workers=2,
    )
    try:
        image_id = upload(api.url, photo_bytes)
        stored_bytes = len(httpx.get(f"{api.url}/v1/images/{image_id}/stored").content)
        for _ in range(12):  # a fresh connection each, so both workers take requests
            assert httpx.get(f"{api.url}/v1/images/{image_id}").status_code == 200
        scrapes = [scrape(api.url) for _ in range(6)]
    finally:
        api.stop()

    for values in scrapes:
        fetches = sum(
            values[f'srstore_cache_requests_total{{result="{result}"}}']
            for result in ("hit", "miss")
        )
        assert fetches == 12
        assert values["srstore_images_uploaded_total"] == 1
        assert ledger(values) == (len(photo_bytes), stored_bytes, 1)
    assert list(multiproc.glob("*.db"))


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["embedded", "full"])
def test_the_ledger_survives_a_restart(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path, photo_bytes: bytes
) -> None:
    env = {"SRSTORE_DATA_DIR": str(tmp_path)}
    if mode == "full":
        redis_server: RedisServer = request.getfixturevalue("redis_server")
        seaweed_server: SeaweedServer = request.getfixturevalue("seaweed_server")
        env |= {
            "SRSTORE_REDIS_URL": redis_server.url,
            "SRSTORE_S3_BUCKET": unique_bucket(),
            "SRSTORE_S3_ENDPOINT_URL": seaweed_server.endpoint_url,
        }
    first = start_api(env)
    try:
        before = ledger(scrape(first.url))
        uploaded = [upload(first.url, photo_bytes) for _ in range(2)]
        with httpx.Client(base_url=first.url) as client:
            for image_id in uploaded:
                compacted_sync(client, image_id)
        written = ledger(scrape(first.url))
    finally:
        first.stop()
    second = start_api(env)
    try:
        reread = ledger(scrape(second.url))
    finally:
        second.stop()

    assert written[0] - before[0] == 2 * len(photo_bytes)
    assert written[2] - before[2] == 2
    assert reread == written
