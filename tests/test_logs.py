"""Structured logs and request ids: from the API, under plain uvicorn, and in the worker."""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx
import pytest

from config.settings import Settings
from keyspace import rendition_prefix
from tests.conftest import queue_env, serving, settings_from
from tests.support.process import start_api, start_worker
from tests.support.servers import RedisServer, SeaweedServer, wait_until


def json_lines(path: Path) -> list[dict[str, object]]:
    """Every line of the log, each of which must be one JSON object."""
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


async def test_a_request_id_is_taken_from_the_client_or_made(tmp_path: Path) -> None:
    async with serving(Settings(data_dir=tmp_path / "data")) as (_, client):
        given = await client.get("/healthz", headers={"x-request-id": "trace-1f2e/3"})
        made = [await client.get("/healthz") for _ in range(2)]
        hostile = await client.get("/healthz", headers={"x-request-id": "a b\tc" + "x" * 200})
        error = await client.get("/v1/images/not-an-id")

    assert given.headers["x-request-id"] == "trace-1f2e/3"
    ids = [r.headers["x-request-id"] for r in (*made, hostile, error)]
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    assert len(set(ids)) == 4


def test_srstore_serve_writes_json_lines_with_the_request_id(tmp_path: Path) -> None:
    log = tmp_path / "api.log"
    env = {"SRSTORE_DATA_DIR": str(tmp_path / "data"), "SRSTORE_LOG_FORMAT": "json"}
    api = start_api(env, log_path=log)
    try:
        answer = httpx.get(f"{api.url}/healthz", headers={"x-request-id": "trace-serve"})
        wait_until(lambda: "trace-serve" in log.read_text(), 20, "the access log line")
    finally:
        api.stop()

    lines = json_lines(log)
    assert answer.headers["x-request-id"] == "trace-serve"
    assert {"time", "level", "logger", "message"} <= set(lines[0])
    (access,) = [line for line in lines if line.get("request_id") == "trace-serve"]
    assert access["logger"] == "uvicorn.access" and "GET /healthz" in str(access["message"])
    assert any("srstore ready" in str(line["message"]) for line in lines)


def test_plain_uvicorn_logs_json_too(tmp_path: Path) -> None:
    log = tmp_path / "uvicorn.log"
    env = {"SRSTORE_DATA_DIR": str(tmp_path / "data"), "SRSTORE_LOG_FORMAT": "json"}
    api = start_api(env, asgi_app="app.main:app", log_path=log)
    api.stop()

    loggers = {line["logger"] for line in json_lines(log)}
    assert {"uvicorn.error", "srstore"} <= loggers


@pytest.mark.full
async def test_the_worker_logs_a_job_under_the_request_id_that_queued_it(
    redis_server: RedisServer, seaweed_server: SeaweedServer, tmp_path: Path, photo_bytes: bytes
) -> None:
    env = queue_env(redis_server, seaweed_server)
    worker = start_worker({**env, "SRSTORE_LOG_FORMAT": "json"}, "logs", tmp_path)
    try:
        async with serving(settings_from(env)) as (_, client):
            image_id = (
                await client.post(
                    "/v1/images",
                    content=photo_bytes,
                    headers={"content-type": "image/jpeg", "x-request-id": "trace-upload"},
                )
            ).json()["id"]
            # A PNG of the JPEG upload: a rendition its compaction does not cache.
            answer = await client.get(
                f"/v1/images/{image_id}?format=png", headers={"x-request-id": "trace-job"}
            )
    finally:
        worker.stop()

    lines = json_lines(tmp_path / "worker-logs.log")
    traced = [line for line in lines if line.get("request_id") == "trace-job"]
    (job,) = [line for line in traced if line["logger"] == "worker.consumer"]
    assert answer.status_code == 200
    rendition = re.escape(rendition_prefix(image_id))
    assert re.fullmatch(rf"job \S+ for {rendition}\S+: rendered in \d+ ms", str(job["message"]))
    # The upload's compaction, a job too, logs under the upload's id.
    assert all(line.get("request_id") in (None, "trace-job", "trace-upload") for line in lines)
