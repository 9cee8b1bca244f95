"""Dependency outages under load, with real processes: Redis, SeaweedFS and ``srstore serve``.

Each test starts what it breaks (its own Redis, SeaweedFS or API process), drives a small
bounded load from threads while killing and restarting it, then checks that every upload
acknowledged with 201 reads back identical: zero acknowledged uploads lost.
"""

from __future__ import annotations

import hashlib
import io
import signal
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from config.settings import Settings
from imaging import decode_upload, downscale, encode_stored
from render.images import ImageMeta
from tests.support.process import start_api
from tests.support.servers import (
    S3_ACCESS_KEY,
    S3_SECRET_KEY,
    RedisServer,
    SeaweedServer,
    start_redis,
    start_seaweed,
    wait_until,
)
from tests.support.threads import Helper, join_all

pytestmark = pytest.mark.full

MAX_ACKED_UPLOADS = 150  # acknowledged uploads per load run, whatever happens (each is read back)
FETCH_PAUSE = 0.05  # seconds a load thread waits after each fetch: a small load, not a spin
WAIT = 60  # seconds any single condition may take to come true before the test fails


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sample_png(seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    width, height = (int(v) for v in rng.integers(24, 96, 2))
    pixels = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGB").save(buffer, "PNG")
    return buffer.getvalue()


def expected_stored(data: bytes) -> str:
    """What the service must keep for these bytes: the pipeline is deterministic."""
    settings = Settings()
    image = decode_upload(data, settings.max_pixels).image
    return sha(encode_stored(downscale(image), settings.codec))


@dataclass
class Acked:
    image_id: str
    stored_sha: str  # computed here from the uploaded bytes


@dataclass
class Load:
    """Uploads and fetches from two threads until stopped or MAX_ACKED_UPLOADS are acknowledged.

    Only acknowledged uploads use up the budget. Fetches answered from the cache and uploads
    refused during an outage are quick, and when they counted, a slow restart on a busy
    machine spent the whole budget on them before the server was back (CI, 2026-12-04): the
    load then had nothing left to show that uploads work again. Every fetch is paced instead.
    An assertion failing in a load thread fails the test when :meth:`stop` joins it.
    """

    url: str
    fetch_ids: list[str]
    acked: list[Acked] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    cache: Counter[str] = field(default_factory=Counter)
    stop_event: threading.Event = field(default_factory=threading.Event)
    sent: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[Helper] = field(default_factory=list)

    def start(self) -> Load:
        self._threads = [Helper(self._run, worker, name=f"load-{worker}") for worker in (0, 1)]
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self.stop_event.set()
        join_all(self._threads, timeout=WAIT)

    def summary(self) -> str:
        """Printed by each test (``pytest -s`` shows it): the figures RELIABILITY.md cites."""
        return f"acked {len(self.acked)}, statuses {dict(self.statuses)}, cache {dict(self.cache)}"

    def count(self, status: str) -> int:
        with self._lock:
            return self.statuses[status]

    def _take_turn(self) -> int | None:
        with self._lock:
            if self.stop_event.is_set() or len(self.acked) >= MAX_ACKED_UPLOADS:
                return None
            self.sent += 1
            return self.sent

    def _run(self, worker: int) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while (turn := self._take_turn()) is not None:
                try:
                    if worker == 0 or turn % 3 == 0:
                        self._upload(http, turn)
                    else:
                        self._fetch(http, self.fetch_ids[turn % len(self.fetch_ids)])
                except httpx.TransportError as exc:
                    with self._lock:
                        self.statuses[type(exc).__name__] += 1
                    self.stop_event.wait(0.05)

    def _upload(self, http: httpx.Client, turn: int) -> None:
        data = sample_png(10_000 + turn)
        response = http.post("/v1/images", content=data, headers={"content-type": "image/png"})
        with self._lock:
            self.statuses[str(response.status_code)] += 1
            if response.status_code == 201:
                self.acked.append(Acked(response.json()["id"], expected_stored(data)))
        if response.status_code == 503:
            assert response.headers["retry-after"] == "5"
            self.stop_event.wait(0.1)  # a polite client backs off (less than Retry-After says)

    def _fetch(self, http: httpx.Client, image_id: str) -> None:
        response = http.get(f"/v1/images/{image_id}", params={"format": "png"})
        with self._lock:
            self.statuses[str(response.status_code)] += 1
            if response.status_code == 200:
                self.cache[response.headers["x-cache"]] += 1
        self.stop_event.wait(0.1 if response.status_code == 503 else FETCH_PAUSE)


def upload(http: httpx.Client, data: bytes) -> str:
    response = http.post("/v1/images", content=data, headers={"content-type": "image/png"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def rendered(http: httpx.Client, image_id: str, fmt: str = "png") -> httpx.Response:
    return http.get(f"/v1/images/{image_id}", params={"format": fmt})


def fingerprint(http: httpx.Client, image_id: str) -> tuple[str, str]:
    """Checksums of the stored copy and of the rendered output."""
    stored = http.get(f"/v1/images/{image_id}/stored")
    served = rendered(http, image_id)
    assert (stored.status_code, served.status_code) == (200, 200)
    return sha(stored.content), sha(served.content)


def forget_renditions(redis_url: str) -> None:
    """Empty the HR cache, and only it: the session's Redis also holds other tests' queues."""
    client = redis.Redis.from_url(redis_url)
    for key in client.scan_iter("hr:*"):
        client.delete(key)
    client.close()


def assert_all_readable(http: httpx.Client, acked: list[Acked]) -> None:
    for upload_ in acked:
        stored = http.get(f"/v1/images/{upload_.image_id}/stored")
        assert stored.status_code == 200, (upload_.image_id, stored.text)
        assert sha(stored.content) == upload_.stored_sha
        meta = http.get(f"/v1/images/{upload_.image_id}/meta").json()
        assert meta["stored_bytes"] == len(stored.content)


def assert_log_is_clean(log: Path, *secrets: str) -> None:
    """No traceback, no 500, no secret; and the access log is there, so a 500 would show."""
    text = log.read_text(errors="replace")
    assert '"POST /v1/images HTTP/1.1" 201' in text
    assert "Traceback" not in text
    assert " 500 " not in text
    for secret in secrets:
        assert secret not in text


def api_env(seaweed: SeaweedServer, redis_url: str, bucket: str, data_dir: Path) -> dict[str, str]:
    return {
        "SRSTORE_S3_BUCKET": bucket,
        "SRSTORE_S3_ENDPOINT_URL": seaweed.endpoint_url,
        "SRSTORE_REDIS_URL": redis_url,
        "SRSTORE_CACHE_RETRY_SECONDS": "0.5",
        "SRSTORE_DATA_DIR": str(data_dir),
        "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY,
    }


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    (tmp_path / "redis-own").mkdir()
    server = start_redis(tmp_path / "redis-own")
    yield server
    server.stop()


@pytest.fixture
def own_seaweed(tmp_path: Path) -> Iterator[SeaweedServer]:
    server = start_seaweed(tmp_path / "seaweed-own")
    yield server
    server.kill()  # its data dir is thrown away; a graceful stop can take seconds


def eventually(condition: Callable[[], bool], what: str) -> None:
    wait_until(condition, WAIT, what)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGSTOP"])
def test_a_redis_outage_serves_uncached_and_the_cache_comes_back_by_itself(
    tmp_path: Path, own_redis: RedisServer, seaweed_server: SeaweedServer, how: str
) -> None:
    """SIGKILL: Redis is gone and restarts empty. SIGSTOP: it hangs, then resumes."""
    log = tmp_path / "api.log"
    api = start_api(
        api_env(seaweed_server, own_redis.url, f"srstore-{uuid.uuid4().hex[:12]}", tmp_path),
        log_path=log,
    )
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ids = [upload(http, sample_png(seed)) for seed in range(3)]
            before = {i: sha(rendered(http, i).content) for i in ids}
            assert rendered(http, ids[0]).headers["x-cache"] == "HIT"
            load = Load(api.url, ids).start()
            try:
                eventually(lambda: load.count("201") >= 3, "uploads before the outage")
                if how == "SIGKILL":
                    own_redis.kill()
                else:
                    own_redis.process.send_signal(signal.SIGSTOP)
                eventually(lambda: load.cache["BYPASS"] >= 5, "fetches served uncached")
                during = rendered(http, ids[1])
                late_upload = upload(http, sample_png(99))
                if how == "SIGKILL":
                    own_redis.restart()
                else:
                    own_redis.process.send_signal(signal.SIGCONT)
                eventually(
                    lambda: rendered(http, late_upload).headers["x-cache"] == "HIT",
                    "the cache back after Redis returned",
                )
            finally:
                load.stop()
                own_redis.process.send_signal(signal.SIGCONT)
            after = {i: sha(rendered(http, i).content) for i in ids}
            assert_all_readable(http, load.acked)
    finally:
        api.stop()

    print(load.summary())
    assert (during.status_code, during.headers["x-cache"]) == (200, "BYPASS")
    assert sha(during.content) == before[ids[1]]
    assert after == before
    assert set(load.statuses) <= {"200", "201"}, load.statuses
    assert load.acked
    assert_log_is_clean(log, S3_SECRET_KEY)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_an_object_store_outage_answers_503_and_loses_no_acknowledged_upload(
    tmp_path: Path, own_seaweed: SeaweedServer, redis_server: RedisServer, how: str
) -> None:
    bucket = f"srstore-{uuid.uuid4().hex[:12]}"
    log = tmp_path / "api.log"
    api = start_api(api_env(own_seaweed, redis_server.url, bucket, tmp_path), log_path=log)
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ids = [upload(http, sample_png(seed)) for seed in range(3)]
            before = {i: fingerprint(http, i) for i in ids}
            load = Load(api.url, ids).start()
            try:
                eventually(lambda: load.count("201") >= 3, "uploads before the outage")
                own_seaweed.kill() if how == "SIGKILL" else own_seaweed.stop()
                eventually(lambda: load.count("503") >= 5, "uploads refused during the outage")
                refused = http.post(
                    "/v1/images", content=sample_png(7), headers={"content-type": "image/png"}
                )
                uncached = rendered(http, ids[0], fmt="webp")
                cached = rendered(http, ids[0])
                own_seaweed.restart()
                eventually(lambda: _upload_works(http), "uploads after the store returned")
                acked_before_return = len(load.acked)
                eventually(lambda: len(load.acked) > acked_before_return, "load acked again")
            finally:
                load.stop()
            forget_renditions(redis_server.url)  # renders now come from the store
            after = {i: fingerprint(http, i) for i in ids}
            assert_all_readable(http, load.acked)
    finally:
        api.stop()

    print(load.summary())
    assert refused.status_code == 503
    assert refused.headers["retry-after"] == "5"
    assert refused.json()["error"]["code"] == "storage_unavailable"
    assert own_seaweed.endpoint_url.removeprefix("http://") not in refused.text
    assert uncached.status_code == 503
    assert (cached.status_code, cached.headers["x-cache"]) == (200, "HIT")
    assert after == before
    assert set(load.statuses) <= {"200", "201", "503"}, load.statuses
    assert load.acked
    assert_every_object_is_whole(own_seaweed, bucket)
    assert_log_is_clean(log, S3_SECRET_KEY)


def _upload_works(http: httpx.Client) -> bool:
    response = http.post("/v1/images", content=sample_png(5), headers={"content-type": "image/png"})
    return response.status_code == 201


def assert_every_object_is_whole(seaweed: SeaweedServer, bucket: str) -> None:
    """Nothing half-written: every object in the bucket has its metadata and its pixels."""
    s3 = boto3.client(
        "s3",
        endpoint_url=seaweed.endpoint_url,
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
        region_name="us-east-1",
    )
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix="images/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    assert keys
    for key in keys:
        obj = s3.get_object(Bucket=bucket, Key=key)
        meta = ImageMeta.from_metadata(obj["Metadata"])
        data = obj["Body"].read()
        assert len(data) == meta.stored_bytes
        assert Image.open(io.BytesIO(data)).size == (meta.stored_width, meta.stored_height)


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM"])
def test_restarting_the_api_under_load_loses_no_acknowledged_upload(
    tmp_path: Path, redis_server: RedisServer, seaweed_server: SeaweedServer, how: str
) -> None:
    env = api_env(seaweed_server, redis_server.url, f"srstore-{uuid.uuid4().hex[:12]}", tmp_path)
    log = tmp_path / "api.log"
    api = start_api(env, log_path=log)
    port = api.port
    try:
        with httpx.Client(base_url=api.url, timeout=30) as http:
            ids = [upload(http, sample_png(seed)) for seed in range(2)]
        load = Load(api.url, ids).start()
        try:
            eventually(lambda: load.count("201") >= 5, "uploads before the restart")
            api.kill() if how == "SIGKILL" else api.stop()
            acked_before_restart = len(load.acked)
            api = start_api(env, port=port, log_path=log)
            eventually(lambda: len(load.acked) >= acked_before_restart + 5, "uploads after it")
        finally:
            load.stop()
        with httpx.Client(base_url=api.url, timeout=30) as http:
            assert_all_readable(http, load.acked)
    finally:
        api.stop()

    print(load.summary())
    # While the process is down, connections are refused or cut; nothing else goes wrong.
    transport_errors = {"ConnectError", "ReadError", "RemoteProtocolError"}
    assert set(load.statuses) <= {"200", "201", *transport_errors}, load.statuses
    assert len(load.acked) >= 10
    assert_log_is_clean(log, S3_SECRET_KEY)
