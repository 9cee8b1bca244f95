"""Admins upload, validate, activate and roll back model versions through /v1/admin."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from fastapi import FastAPI
from PIL import Image
from pydantic import SecretStr, ValidationError

from config.settings import Settings
from imaging import StoredCodec, bicubic_upscale, degrade
from imaging.quality import luma_psnr
from models.control import RedisControl
from models.validation import canary_images
from tests.conftest import SHIPPED_ESPCN_LEVELS, serving
from tests.support.compaction import compacted
from tests.support.pixels import (
    decode,
    expected_render,
    max_difference,
    mean_difference,
    upscaler_for,
)
from tests.support.weights import noisy, rendered_by_brightened, to_bytes

TOKEN = "test-admin-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture(params=["embedded", "full", "cluster"])
def settings(request: pytest.FixtureRequest) -> Settings:
    """The admin API does not depend on the inference transport; it does on where the
    pointer lives: one Redis, or a Redis Cluster."""
    return request.getfixturevalue(f"{request.param}_settings")  # type: ignore[no-any-return]


@pytest.fixture
async def admin_served(
    settings: Settings, shipped_dir: Path
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    configured = settings.model_copy(
        update={"admin_token": SecretStr(TOKEN), "weights_dir": shipped_dir}
    )
    async with serving(configured) as pair:
        yield pair


@pytest.fixture
def admin_app(admin_served: tuple[FastAPI, httpx.AsyncClient]) -> FastAPI:
    return admin_served[0]


@pytest.fixture
def admin(admin_served: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return admin_served[1]


async def upload_model(
    http: httpx.AsyncClient, weights: bytes, card: dict, headers: dict | None = None
) -> httpx.Response:
    return await http.post(
        "/v1/admin/models",
        files={"weights": ("w.pt", weights, "application/octet-stream")},
        data={"card": json.dumps(card)},
        headers=AUTH if headers is None else headers,
    )


async def activate(http: httpx.AsyncClient, name: str, version: int, **extra) -> httpx.Response:
    body = {"name": name, "version": version, **extra}
    return await http.put("/v1/admin/models/active", json=body, headers=AUTH)


async def served_version_within(
    http: httpx.AsyncClient, url: str, wanted: str, seconds: float
) -> str:
    """The model version serving ``url``, read again until it is ``wanted`` or ``seconds``
    have passed."""
    deadline = asyncio.get_running_loop().time() + seconds
    while True:
        version = (await http.get(url)).headers["x-model-version"]
        if version == wanted or asyncio.get_running_loop().time() >= deadline:
            return version
        await asyncio.sleep(0.1)


def canary_psnr(levels: int) -> tuple[float, float]:
    """Mean Y-PSNR on the canary set of what :func:`brightened` renders, and of bicubic."""
    model, baseline = [], []
    for original in canary_images():
        low = degrade(original, StoredCodec())
        model.append(luma_psnr(rendered_by_brightened(low, levels), original))
        baseline.append(luma_psnr(bicubic_upscale(low), original))
    return float(np.mean(model)), float(np.mean(baseline))


async def test_shipped_weights_are_registered_scored_and_the_configured_model_is_active(
    admin: httpx.AsyncClient,
) -> None:
    listing = (await admin.get("/v1/admin/models", headers=AUTH)).json()

    assert listing["active"] == {"name": "espcn", "version": 1}
    assert [(m["name"], m["version"]) for m in listing["models"]] == [("espcn", 1), ("srcnn", 1)]
    canary = {m["name"]: m["card"]["canary"] for m in listing["models"]}
    for name, levels in (("espcn", SHIPPED_ESPCN_LEVELS), ("srcnn", 0)):
        model_psnr, bicubic_psnr = canary_psnr(levels)
        assert canary[name]["model_psnr"] == pytest.approx(model_psnr, abs=1e-3)
        assert canary[name]["bicubic_psnr"] == pytest.approx(bicubic_psnr, abs=1e-3)
        assert canary[name]["gain_db"] == pytest.approx(model_psnr - bicubic_psnr, abs=2e-3)
    # Brightening every pixel costs PSNR: the brighter version scores far lower.
    assert canary["espcn"]["gain_db"] < canary["srcnn"]["gain_db"] - 3


async def test_an_uploaded_version_is_scored_and_listed(admin: httpx.AsyncClient) -> None:
    response = await upload_model(admin, to_bytes(noisy("espcn")), {"name": "espcn", "version": 2})

    assert response.status_code == 201, response.text
    assert response.json()["card"]["canary"]["gain_db"] < 0
    listing = (await admin.get("/v1/admin/models", headers=AUTH)).json()
    assert ("espcn", 2) in [(m["name"], m["version"]) for m in listing["models"]]


@pytest.mark.parametrize(
    ("weights", "card", "code"),
    [
        (b"not a checkpoint", {"name": "espcn", "version": 3}, "invalid_weights"),
        (to_bytes(noisy("srcnn")), {"name": "espcn", "version": 3}, "invalid_weights"),
        (to_bytes(noisy("espcn")), {"name": "edsr", "version": 3}, "invalid_card"),
        (to_bytes(noisy("espcn")), {"name": "espcn"}, "invalid_card"),
    ],
    ids=["corrupt", "mislabelled", "unknown-architecture", "no-version"],
)
async def test_a_file_that_is_not_what_it_claims_is_refused_and_stored_nowhere(
    admin: httpx.AsyncClient, weights: bytes, card: dict, code: str
) -> None:
    response = await upload_model(admin, weights, card)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    listing = (await admin.get("/v1/admin/models", headers=AUTH)).json()
    assert len(listing["models"]) == 2


async def test_a_version_cannot_be_uploaded_twice(admin: httpx.AsyncClient) -> None:
    response = await upload_model(admin, to_bytes(noisy("espcn")), {"name": "espcn", "version": 1})

    assert response.status_code == 409


async def test_a_worse_version_is_refused_unless_forced(admin: httpx.AsyncClient) -> None:
    await upload_model(admin, to_bytes(noisy("espcn")), {"name": "espcn", "version": 2})

    refused = await activate(admin, "espcn", 2)
    forced = await activate(admin, "espcn", 2, force=True)

    assert refused.status_code == 409
    assert refused.json()["error"]["code"] == "worse_than_active"
    assert forced.status_code == 200
    assert forced.json()["swap"]["forced"] is True


async def test_activating_an_unknown_version_is_404(admin: httpx.AsyncClient) -> None:
    assert (await activate(admin, "espcn", 99)).status_code == 404


async def test_a_swap_changes_what_serves_and_a_rollback_finds_the_old_entries_warm(
    admin: httpx.AsyncClient, admin_app: FastAPI, shipped_dir: Path, photo_bytes: bytes
) -> None:
    image = await admin.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    url = f"/v1/images/{image.json()['id']}"
    stored = (await admin.get(f"{url}/stored")).content
    before = await admin.get(url)
    await activate(admin, "srcnn", 1)
    await admin_app.state.models.refresh()

    after = await admin.get(url)
    rolled = await admin.post("/v1/admin/models/rollback", headers=AUTH)
    await admin_app.state.models.refresh()
    again = await admin.get(url)

    assert before.headers["x-model-version"] == "espcn:1"
    assert (after.headers["x-model-version"], after.headers["x-cache"]) == ("srcnn:1", "MISS")
    assert rolled.json()["active"] == {"name": "espcn", "version": 1}
    assert (again.headers["x-model-version"], again.headers["x-cache"]) == ("espcn:1", "HIT")
    assert again.content == before.content
    # What each response shows is the named version's rendering, and the two differ.
    for response in (before, after):
        label = response.headers["x-model-version"]
        expected = expected_render(stored, (602, 402), upscaler_for(label, shipped_dir))
        assert mean_difference(decode(response.content), expected) < 1.5
    assert mean_difference(decode(before.content), decode(after.content)) > 5


async def test_a_range_resumed_across_a_swap_is_never_spliced_from_two_renders(
    admin: httpx.AsyncClient, admin_app: FastAPI, photo_bytes: bytes
) -> None:
    """The first half fetched before a swap, the rest asked for after it: whichever validator
    the client sends in If-Range, the answer is the whole new rendition, never its tail."""
    image = await admin.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    url = f"/v1/images/{image.json()['id']}"
    before = await admin.get(url)
    half = len(before.content) // 2
    head = await admin.get(url, headers={"range": f"bytes=0-{half - 1}"})
    await activate(admin, "srcnn", 1)
    await admin_app.state.models.refresh()

    rest = {
        validator: await admin.get(
            url, headers={"range": f"bytes={half}-", "if-range": head.headers[validator]}
        )
        for validator in ("last-modified", "etag")
    }

    assert head.status_code == 206 and head.content == before.content[:half]
    after = await admin.get(url)
    assert after.headers["x-model-version"] == "srcnn:1" and after.content != before.content
    for validator, response in rest.items():
        assert (validator, response.status_code) == (validator, 200)
        assert response.content == after.content


async def test_every_swap_is_recorded(admin: httpx.AsyncClient) -> None:
    await activate(admin, "srcnn", 1)
    await admin.post("/v1/admin/models/rollback", headers=AUTH)

    swaps = (await admin.get("/v1/admin/models/history", headers=AUTH)).json()["swaps"]

    assert [(s["action"], s["from_label"], s["to_label"]) for s in swaps] == [
        ("rollback", "srcnn:1", "espcn:1"),
        ("activate", "espcn:1", "srcnn:1"),
        ("bootstrap", None, "espcn:1"),
    ]
    assert all(s["at"] for s in swaps)


async def test_the_active_version_is_a_metric(admin: httpx.AsyncClient) -> None:
    text = (await admin.get("/metrics")).text

    assert 'srstore_model_info{name="espcn",version="1"} 1.0' in text


ADMIN_CALLS = [
    ("GET", "/v1/admin/models"),
    ("POST", "/v1/admin/models"),
    ("PUT", "/v1/admin/models/active"),
    ("POST", "/v1/admin/models/rollback"),
    ("GET", "/v1/admin/models/history"),
]


@pytest.fixture
async def guarded(embedded_settings: Settings, tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    """An embedded app with a token and no weights: enough to exercise the guard."""
    configured = embedded_settings.model_copy(
        update={"admin_token": SecretStr(TOKEN), "weights_dir": tmp_path / "none"}
    )
    async with serving(configured) as (_, http):
        yield http


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
@pytest.mark.parametrize("header", [None, "Bearer wrong-token", f"Basic {TOKEN}", "Bearer "])
async def test_every_admin_endpoint_refuses_a_missing_or_wrong_token(
    guarded: httpx.AsyncClient, method: str, path: str, header: str | None
) -> None:
    headers = {"authorization": header} if header else {}

    response = await guarded.request(method, path, headers=headers)

    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert TOKEN not in response.text


@pytest.mark.parametrize(("method", "path"), ADMIN_CALLS)
async def test_without_a_configured_token_the_admin_api_is_off(
    embedded_settings: Settings, method: str, path: str
) -> None:
    async with serving(embedded_settings) as (_, http):
        response = await http.request(method, path, headers=AUTH)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "admin_disabled"
    # Where to act: the server's environment, not the shell of the client that was refused.
    assert "SRSTORE_ADMIN_TOKEN in the environment of srstore serve" in response.text


def test_a_blank_token_leaves_the_admin_api_off_and_a_short_one_is_refused() -> None:
    assert Settings(admin_token="  ").admin_token is None
    with pytest.raises(ValidationError, match="at least 16"):
        Settings(admin_token="secret")


@pytest.mark.parametrize(
    "placeholder",
    ["REPLACE_ME_WITH_32_RANDOM_CHARACTERS", "changeme-changeme-changeme", "<your-token-here>!!"],
)
def test_a_placeholder_token_from_a_manifest_or_example_is_refused(placeholder: str) -> None:
    """A token copied from a template is public: start-up stops instead of opening the API."""
    with pytest.raises(ValidationError, match="SRSTORE_ADMIN_TOKEN is a placeholder"):
        Settings(admin_token=placeholder)
    with pytest.raises(ValidationError, match="SRSTORE_URL_SIGNING_KEY is a placeholder"):
        Settings(url_signing_key=placeholder)


async def test_a_request_in_flight_during_a_swap_finishes_on_the_version_it_started_on(
    admin: httpx.AsyncClient, admin_app: FastAPI, shipped_dir: Path, photo_bytes: bytes
) -> None:
    image = await admin.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )
    url = f"/v1/images/{image.json()['id']}"
    await compacted(admin, image.json()["id"])  # its scoring runs the network too
    stored = (await admin.get(f"{url}/stored")).content
    upscaler = await admin_app.state.image_service.renderer.engine.models.get("espcn:1")
    entered, release = threading.Event(), threading.Event()
    original = upscaler.upscale

    def held(low_res: Image.Image) -> Image.Image:
        entered.set()
        assert release.wait(timeout=60)
        return original(low_res)

    upscaler.upscale = held
    try:
        in_flight = asyncio.create_task(admin.get(url, params={"format": "png"}))
        assert await asyncio.to_thread(entered.wait, 60)
        assert (await activate(admin, "srcnn", 1)).status_code == 200
        await admin_app.state.models.refresh()
        release.set()
        started_before = await in_flight
    finally:
        release.set()
        del upscaler.upscale
    started_after = await admin.get(url, params={"format": "png"})

    for response, label in ((started_before, "espcn:1"), (started_after, "srcnn:1")):
        assert response.headers["x-model-version"] == label
        expected = expected_render(stored, (602, 402), upscaler_for(label, shipped_dir))
        assert max_difference(decode(response.content), expected) <= 1


@pytest.mark.full
@pytest.mark.parametrize(("poll_seconds", "follows"), [(0.2, True), (3600, False)])
async def test_without_an_announcement_each_process_polls_the_pointer(
    full_settings: Settings,
    shipped_dir: Path,
    redis_client: redis.Redis,
    photo_bytes: bytes,
    poll_seconds: float,
    follows: bool,
) -> None:
    """SRSTORE_MODEL_POLL_SECONDS: a swap whose announcement was lost still arrives."""
    configured = full_settings.model_copy(
        update={"weights_dir": shipped_dir, "model_poll_seconds": poll_seconds}
    )
    async with serving(configured) as (_, http):
        image = await http.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        url = f"/v1/images/{image.json()['id']}"
        before = (await http.get(url)).headers["x-model-version"]
        redis_client.set(RedisControl.ACTIVE, "srcnn:1")  # the pointer moves, nobody is told
        after = await served_version_within(http, url, "srcnn:1", seconds=3)

    assert before == "espcn:1"
    assert after == ("srcnn:1" if follows else "espcn:1")


@pytest.mark.full
async def test_an_announcement_that_is_not_a_label_is_skipped_and_the_next_swap_still_arrives(
    full_settings: Settings,
    shipped_dir: Path,
    redis_client: redis.Redis,
    photo_bytes: bytes,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With no poll to fall back on, a process hears the swap after a garbled announcement
    (an operator's stray PUBLISH, say) as it would without it."""
    configured = full_settings.model_copy(
        update={"weights_dir": shipped_dir, "model_poll_seconds": 3600}
    )
    async with serving(configured) as (_, http):
        image = await http.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        url = f"/v1/images/{image.json()['id']}"
        before = (await http.get(url)).headers["x-model-version"]
        redis_client.publish(RedisControl.CHANNEL, "not a label")
        redis_client.set(RedisControl.ACTIVE, "srcnn:1")
        redis_client.publish(RedisControl.CHANNEL, "srcnn:1")
        after = await served_version_within(http, url, "srcnn:1", seconds=5)

    assert (before, after) == ("espcn:1", "srcnn:1")
    assert any(r.levelname == "WARNING" and "not a label" in r.getMessage() for r in caplog.records)
