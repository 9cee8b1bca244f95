"""A model swap reaches every API process and the worker, without a restart or a failed request."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from PIL import Image

from tests.conftest import forget_active_model, queue_env
from tests.support.pixels import (
    decode,
    expected_render,
    max_difference,
    mean_difference,
    upscaler_for,
)
from tests.support.process import ApiProcess, start_api, start_worker
from tests.support.servers import RedisServer, SeaweedServer
from tests.support.threads import Helper

TOKEN = "fleet-admin-token"


@pytest.fixture
def fleet(
    tmp_path: Path,
    shipped_dir: Path,
    redis_server: RedisServer,
    seaweed_server: SeaweedServer,
) -> Iterator[list[ApiProcess]]:
    """Two API processes in queue mode and one worker rendering for both."""
    forget_active_model(redis_server.url)
    env = {
        **queue_env(redis_server, seaweed_server),
        "SRSTORE_WEIGHTS_DIR": str(shipped_dir),
        "SRSTORE_ADMIN_TOKEN": TOKEN,
        "SRSTORE_DATA_DIR": str(tmp_path / "data"),
    }
    processes = [start_api(env), start_api(env)]
    worker = start_worker(env, "fleet", tmp_path)
    yield processes
    worker.stop()
    for process in processes:
        process.stop()


def srstore_models(api: ApiProcess, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "srstore.cli", "models", "--url", api.url, *args],
        env={**os.environ, "SRSTORE_ADMIN_TOKEN": TOKEN},
        capture_output=True,
        text=True,
        check=True,
    )


def served_versions(fleet: list[ApiProcess], path: str) -> set[str]:
    return {httpx.get(api.url + path).headers["x-model-version"] for api in fleet}


def served_pixels(fleet: list[ApiProcess], path: str) -> list[Image.Image]:
    return [decode(httpx.get(api.url + path, params={"format": "png"}).content) for api in fleet]


def rendered_by(label: str, shipped_dir: Path, stored: bytes) -> Image.Image:
    return expected_render(stored, (602, 402), upscaler_for(label, shipped_dir))


def switched_within(fleet: list[ApiProcess], label: str, seconds: float) -> bool:
    """Whether every process names ``label`` as its model (``/readyz``) within ``seconds``."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if {httpx.get(api.url + "/readyz").json()["model"] for api in fleet} == {label}:
            return True
        time.sleep(0.02)
    return False


@pytest.mark.slow
def test_activate_and_rollback_reach_every_process_under_load(
    fleet: list[ApiProcess], shipped_dir: Path, photo_bytes: bytes
) -> None:
    created = httpx.post(
        f"{fleet[0].url}/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    path = f"/v1/images/{created.json()['id']}"
    stored = httpx.get(f"{fleet[0].url}{path}/stored").content
    espcn, srcnn = (rendered_by(label, shipped_dir, stored) for label in ("espcn:1", "srcnn:1"))
    assert mean_difference(espcn, srcnn) > 5  # the two versions are told apart by their pixels
    assert served_versions(fleet, path) == {"espcn:1"}
    assert all(max_difference(image, espcn) <= 1 for image in served_pixels(fleet, path))
    statuses: list[int] = []
    stop = threading.Event()

    def load() -> None:
        with httpx.Client(timeout=30) as http:
            while not stop.is_set() and len(statuses) < 2000:
                for api in fleet:
                    statuses.append(http.get(api.url + path).status_code)

    loader = Helper(load, name="load")
    loader.start()
    try:
        srstore_models(fleet[0], "activate", "srcnn", "1")
        switched = switched_within(fleet, "srcnn:1", seconds=1.0)
        served_after_swap = served_versions(fleet, path)
        pixels_after_swap = served_pixels(fleet, path)
        srstore_models(fleet[1], "rollback")
        rolled_back = switched_within(fleet, "espcn:1", seconds=1.0)
        served_after_rollback = served_versions(fleet, path)
        pixels_after_rollback = served_pixels(fleet, path)
    finally:
        stop.set()
        loader.join(timeout=60)

    assert switched and rolled_back
    assert (served_after_swap, served_after_rollback) == ({"srcnn:1"}, {"espcn:1"})
    assert all(max_difference(image, srcnn) <= 1 for image in pixels_after_swap)
    assert all(max_difference(image, espcn) <= 1 for image in pixels_after_rollback)
    assert statuses and set(statuses) == {200}
    history = srstore_models(fleet[0], "history", "--json").stdout
    assert '"to_label": "srcnn:1"' in history
