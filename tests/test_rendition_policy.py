"""What one image can be made to render: enlargements bounded, qualities snapped to a few steps
unless the URL is signed, a quota of distinct renditions, and HEAD without a render."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from app.services.renditions import RenditionBudget, RenditionLimit, sign, snap_quality
from config.settings import Settings, load_settings
from tests.conftest import serving

SIGNING_KEY = "a-signing-key-long-enough"


async def _upload(client: httpx.AsyncClient, photo_bytes: bytes) -> str:
    response = await client.post("/v1/images", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


@pytest.fixture
async def policed(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(data_dir=tmp_path, max_output_pixels=1_000_000, max_renditions_per_image=4)
    async with serving(settings) as pair:
        yield pair


async def test_an_enlargement_stops_at_the_output_pixel_limit(
    policed: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    _, client = policed
    image_id = await _upload(client, photo_bytes)  # 602x402
    within = await client.get(f"/v1/images/{image_id}?w=1200&enlarge=true&format=jpeg")
    beyond = await client.get(f"/v1/images/{image_id}?w=1300&enlarge=true&format=jpeg")

    assert within.status_code == 200  # 1200x801: 961,200 pixels
    assert beyond.status_code == 422  # 1300x868: 1,128,400 pixels
    assert beyond.json()["error"]["code"] == "invalid_size"
    own = await client.get(f"/v1/images/{image_id}?w=602&enlarge=true&format=jpeg")
    assert own.status_code == 200


def test_qualities_snap_to_the_nearest_step() -> None:
    steps = Settings.model_fields["quality_steps"].default
    assert snap_quality(88, steps) == 90
    assert snap_quality(1, steps) == min(steps)
    assert snap_quality(100, steps) == max(steps)
    assert all(snap_quality(step, steps) == step for step in steps)
    assert load_settings({"SRSTORE_QUALITY_STEPS": "50,80"}).quality_steps == {50, 80}


async def test_unsigned_qualities_share_one_rendition_per_step(
    policed: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    _, client = policed
    image_id = await _upload(client, photo_bytes)
    url = f"/v1/images/{image_id}?w=100&format=webp&quality="
    answers = [await client.get(url + str(q)) for q in (88, 89, 90, 91, 92)]

    assert {a.status_code for a in answers} == {200}
    assert len({a.headers["etag"] for a in answers}) == 1
    assert [a.headers["x-cache"] for a in answers] == ["MISS"] + ["HIT"] * 4
    lower = await client.get(url + "40")
    assert lower.headers["etag"] != answers[0].headers["etag"]


async def test_a_signed_url_gets_the_exact_quality(tmp_path: Path, photo_bytes: bytes) -> None:
    settings = Settings(data_dir=tmp_path, url_signing_key=SecretStr(SIGNING_KEY))
    async with serving(settings) as (_, client):
        image_id = await _upload(client, photo_bytes)

        def signed(quality: int) -> str:
            query = [("format", "webp"), ("quality", str(quality))]
            sig = sign(SIGNING_KEY, image_id, query)
            return f"/v1/images/{image_id}?format=webp&quality={quality}&sig={sig}"

        exact = await client.get(signed(88))
        step = await client.get(signed(90))
    assert exact.status_code == step.status_code == 200
    assert exact.headers["etag"] != step.headers["etag"]


async def test_past_its_quota_an_image_refuses_new_renditions_but_serves_the_old(
    policed: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    _, client = policed
    image_id, other_id = await _upload(client, photo_bytes), await _upload(client, photo_bytes)
    made = [await client.get(f"/v1/images/{image_id}?w={w}") for w in (50, 60, 70, 80)]
    refused = await client.get(f"/v1/images/{image_id}?w=90")

    assert [a.status_code for a in made] == [200] * 4
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rendition_limit"
    assert 1 <= int(refused.headers["retry-after"]) <= 300
    assert (await client.get(f"/v1/images/{image_id}?w=50")).status_code == 200
    assert (await client.get(f"/v1/images/{image_id}")).status_code == 200  # no options
    assert (await client.get(f"/v1/images/{other_id}?w=90")).status_code == 200


def test_the_quota_starts_again_after_its_window() -> None:
    now = [0.0]
    budget = RenditionBudget(per_image=2, window_seconds=60, clock=lambda: now[0])
    budget.admit("a", "k1")
    budget.admit("a", "k2")
    now[0] = 30
    with pytest.raises(RenditionLimit) as refused:
        budget.admit("a", "k3")
    assert refused.value.retry_after == 30
    budget.admit("a", "k1")  # one already made
    now[0] = 61
    budget.admit("a", "k3")


async def test_head_of_a_rendition_not_made_yet_answers_from_the_plan(
    policed: tuple[FastAPI, httpx.AsyncClient], photo_bytes: bytes
) -> None:
    _, client = policed
    image_id = await _upload(client, photo_bytes)
    url = f"/v1/images/{image_id}?w=1200&enlarge=true&format=avif"

    head = await client.head(url)
    got = await client.get(url)
    again = await client.head(url)

    assert head.status_code == 200
    assert "content-length" not in head.headers
    assert head.headers["content-type"] == "image/avif"
    assert head.headers["etag"] == got.headers["etag"]
    assert got.headers["x-cache"] == "MISS"  # the HEAD rendered and cached nothing
    assert again.headers["x-cache"] == "HIT"
    assert int(again.headers["content-length"]) == len(got.content)
