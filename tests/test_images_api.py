"""What a client sees through /v1/images, in the embedded default and in full mode."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from app.services.singleflight import SingleFlight
from cache import CacheKey, ImageDeleted
from config.settings import Settings
from imaging import bicubic_upscale, crop_to
from imaging.quality import luma_psnr
from models.engine import BicubicUpscaler
from models.weights import SHIPPED_WEIGHTS_DIR, find_weights
from tests.conftest import CLUSTER_MODES, encode
from tests.support.compaction import compacted, evict, until_pending_dropped
from tests.support.pixels import expected_render, max_difference, mean_difference, upscaler_for

Compute = Callable[[], Coroutine[Any, Any, bytes]]


@pytest.fixture(params=CLUSTER_MODES)
def settings(request: pytest.FixtureRequest) -> Settings:
    """These tests hold on a Redis Cluster too (full and queue mode): see tests/conftest.py."""
    return request.getfixturevalue(f"{request.param}_settings")  # type: ignore[no-any-return]


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str = "image/jpeg") -> dict:
    response = await client.post("/v1/images", files={"file": ("photo", data, content_type)})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return response.json()


def decode(response: httpx.Response) -> Image.Image:
    return Image.open(io.BytesIO(response.content))


async def test_upload_answers_201_with_location_and_the_stored_sizes(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    response = await client.post("/v1/images", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})

    assert response.status_code == 201
    meta = response.json()
    assert response.headers["location"] == f"/v1/images/{meta['id']}"
    assert (meta["width"], meta["height"]) == (602, 402)
    assert (meta["stored_width"], meta["stored_height"]) == (151, 101)
    assert meta["content_type"] == "image/jpeg"
    assert meta["original_bytes"] == len(photo_bytes)
    stored = await client.get(f"/v1/images/{meta['id']}/stored")
    assert meta["stored_bytes"] == len(stored.content)
    assert decode(stored).size == (151, 101)


async def test_a_raw_image_body_is_accepted_like_multipart(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    response = await client.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )

    assert response.status_code == 201
    assert response.json()["width"] == 602


async def test_fetch_returns_the_original_size_and_format_then_hits_the_cache(
    client: httpx.AsyncClient, app: FastAPI, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    await evict(app, meta["id"])

    first = await client.get(f"/v1/images/{meta['id']}")
    second = await client.get(f"/v1/images/{meta['id']}")

    assert first.status_code == second.status_code == 200
    assert first.headers["content-type"] == "image/jpeg"
    assert decode(first).size == (602, 402)
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.content == second.content
    assert first.headers["etag"] == second.headers["etag"]
    assert "max-age" in first.headers["cache-control"]
    assert first.headers["x-content-type-options"] == "nosniff"


@pytest.mark.parametrize(("fmt", "media_type"), [("png", "image/png"), ("webp", "image/webp")])
async def test_format_query_converts_the_output(
    client: httpx.AsyncClient, photo_bytes: bytes, fmt: str, media_type: str
) -> None:
    meta = await upload(client, photo_bytes)

    response = await client.get(f"/v1/images/{meta['id']}", params={"format": fmt, "quality": 70})

    assert response.headers["content-type"] == media_type
    assert decode(response).format == fmt.upper()


async def test_the_pixels_served_are_those_of_the_model_the_header_names(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)

    response = await client.get(f"/v1/images/{meta['id']}", params={"format": "png"})
    stored = (await client.get(f"/v1/images/{meta['id']}/stored")).content

    newest = find_weights(SHIPPED_WEIGHTS_DIR, "espcn")
    assert newest is not None
    assert response.headers["x-model-version"] == f"espcn:{newest.version}"
    served = decode(response)
    named = upscaler_for(response.headers["x-model-version"], SHIPPED_WEIGHTS_DIR)
    assert max_difference(served, expected_render(stored, served.size, named)) <= 1
    # The network visibly changes the picture: bicubic in its place would not pass.
    assert mean_difference(served, expected_render(stored, served.size, BicubicUpscaler())) > 0.5


async def test_if_none_match_gets_304_without_a_body(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    etag = (await client.get(f"/v1/images/{meta['id']}")).headers["etag"]

    response = await client.get(f"/v1/images/{meta['id']}", headers={"if-none-match": etag})

    assert response.status_code == 304
    assert response.content == b""


async def test_head_gives_the_headers_of_get(client: httpx.AsyncClient, photo_bytes: bytes) -> None:
    meta = await upload(client, photo_bytes)
    got = await client.get(f"/v1/images/{meta['id']}")

    head = await client.head(f"/v1/images/{meta['id']}")

    assert head.status_code == 200
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-type"] == got.headers["content-type"]


async def test_meta_returns_what_upload_returned_with_the_receipt_completed(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)

    described = (await client.get(f"/v1/images/{meta['id']}/meta")).json()

    assert meta["receipt"]["state"] == "pending"
    assert described["receipt"]["state"] == "done"
    assert {**described, "receipt": None} == {**meta, "receipt": None}


async def test_delete_removes_the_image_and_its_cached_renditions(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    await client.get(f"/v1/images/{meta['id']}")

    deleted = await client.delete(f"/v1/images/{meta['id']}")

    assert deleted.status_code == 204
    for path in ("", "/meta", "/stored"):
        response = await client.get(f"/v1/images/{meta['id']}{path}")
        assert response.status_code == 404
        assert response.json()["error"]["code"] == "not_found"
    assert (await client.delete(f"/v1/images/{meta['id']}")).status_code == 404


async def test_sixteen_concurrent_misses_run_one_inference(
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    photo_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    meta = await upload(client, photo_bytes)
    await evict(app, meta["id"])
    renderer = app.state.image_service.renderer
    # In-process, count network runs; in queue mode, count the jobs handed to the workers.
    if settings.inference == "queue":
        counted, method = renderer.queue, "enqueue"
    else:
        counted, method = await renderer.engine.models.get(app.state.models.label), "upscale"
    calls = []
    original = getattr(counted, method)

    def counting(*args: object) -> object:
        calls.append(args)
        return original(*args)

    # The render starts once all sixteen have asked for it: on a loaded machine a late request
    # would otherwise arrive after the render and be a hit, and the test would not test a thing.
    asked: list[str] = []
    all_asked = asyncio.Event()
    run = SingleFlight.run

    async def gathered_run(flights: SingleFlight[bytes], key: str, compute: Compute) -> bytes:
        asked.append(key)
        if len(asked) == 16:
            all_asked.set()

        async def once_all_asked() -> bytes:
            await asyncio.wait_for(all_asked.wait(), timeout=60)
            return await compute()

        return await run(flights, key, once_all_asked)

    monkeypatch.setattr(SingleFlight, "run", gathered_run)
    setattr(counted, method, counting)
    try:
        responses = await asyncio.gather(
            *(client.get(f"/v1/images/{meta['id']}") for _ in range(16))
        )
    finally:
        delattr(counted, method)

    assert [r.status_code for r in responses] == [200] * 16
    assert len({r.content for r in responses}) == 1
    assert len(set(asked)) == 1
    assert len(calls) == 1


@pytest.mark.parametrize(
    ("mode", "size"), [("RGBA", (37, 23)), ("L", (50, 41)), ("P", (64, 64)), ("RGB", (3, 2))]
)
async def test_every_mode_and_odd_size_comes_back_at_its_exact_size(
    client: httpx.AsyncClient, mode: str, size: tuple[int, int]
) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 255, (size[1], size[0], 4), dtype=np.uint8)
    source = Image.fromarray(pixels, "RGBA")
    image = source.convert(mode) if mode == "RGBA" else source.convert("RGB").convert(mode)
    meta = await upload(client, encode(image, "PNG"), "image/png")

    response = await client.get(f"/v1/images/{meta['id']}")

    served = decode(response)
    assert served.size == size
    assert served.format == "PNG"
    assert ("A" in served.getbands()) == (mode == "RGBA")


async def test_served_image_is_close_to_the_original(
    client: httpx.AsyncClient, photo: Image.Image, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)

    served = decode(await client.get(f"/v1/images/{meta['id']}", params={"format": "png"}))

    error = np.asarray(served, np.float64) - np.asarray(photo, np.float64)
    psnr = 10 * np.log10(255**2 / np.mean(error**2))
    assert psnr > 25


async def test_a_textured_photo_comes_back_closer_than_bicubic_would_bring_it(
    client: httpx.AsyncClient,
) -> None:
    photo_path = Path(__file__).parents[1] / "models" / "canary" / "meadow.jpg"
    original = Image.open(photo_path).convert("RGB")
    meta = await upload(client, photo_path.read_bytes())

    served = decode(await client.get(f"/v1/images/{meta['id']}", params={"format": "png"}))
    stored = decode(await client.get(f"/v1/images/{meta['id']}/stored"))

    assert served.size == original.size
    baseline = crop_to(bicubic_upscale(stored.convert("RGB")), *original.size)
    assert luma_psnr(served, original) > luma_psnr(baseline, original)


async def test_transparency_comes_back_where_it_was(client: httpx.AsyncClient) -> None:
    width, height = 96, 64
    pixels = np.random.default_rng(3).integers(0, 255, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = np.linspace(0, 255, width).round().astype(np.uint8)[None, :]
    meta = await upload(client, encode(Image.fromarray(pixels, "RGBA"), "PNG"), "image/png")

    served = decode(await client.get(f"/v1/images/{meta['id']}"))

    alpha = np.asarray(served.getchannel("A"), np.float64)
    assert served.size == (width, height)
    # A 4x reduction and bicubic enlargement of a smooth ramp: off by a few levels at most.
    assert np.abs(alpha - pixels[..., 3]).mean() < 3
    assert alpha[:, :8].mean() < 20 and alpha[:, -8:].mean() > 235


async def served_key(client: httpx.AsyncClient, app: FastAPI, url: str) -> CacheKey:
    """Fetch ``url`` once; the key its rendition was looked up under (not the metadata's)."""
    cache = app.state.image_service.cache
    looked_up: list[CacheKey] = []
    get = cache.get

    async def recording(key: CacheKey) -> bytes | None:
        looked_up.append(key)
        return await get(key)

    cache.get = recording
    try:
        assert (await client.get(url)).status_code == 200
    finally:
        del cache.get
    (key,) = {key for key in looked_up if key.model == app.state.models.label}
    return key


async def test_a_rendition_cached_while_a_delete_runs_does_not_outlive_the_image(
    client: httpx.AsyncClient, app: FastAPI, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    service = app.state.image_service
    await until_pending_dropped(service.store, meta["id"])  # compaction wrote its last
    key = await served_key(client, app, f"/v1/images/{meta['id']}")
    delete_object = service.store.delete
    refused: list[str] = []

    async def delete_as_a_render_lands(object_key: str) -> None:
        try:
            await service.cache.put(key, b"a render that finished during the delete")
        except ImageDeleted:
            refused.append(object_key)  # the delete mark came first: see test_delete_finality
        await delete_object(object_key)

    service.store.delete = delete_as_a_render_lands
    try:
        deleted = await client.delete(f"/v1/images/{meta['id']}")
    finally:
        del service.store.delete

    assert deleted.status_code == 204
    assert refused == [f"images/{meta['id']}"]  # compaction already removed pending/
    assert await service.cache.get(key) is None


async def test_renditions_are_gone_before_the_object_is(
    client: httpx.AsyncClient, app: FastAPI, photo_bytes: bytes
) -> None:
    """A process that dies right after removing the object leaves no rendition behind."""
    meta = await upload(client, photo_bytes)
    service = app.state.image_service
    await until_pending_dropped(service.store, meta["id"])  # compaction's own delete is done
    key = await served_key(client, app, f"/v1/images/{meta['id']}")
    assert await service.cache.get(key) is not None
    left_when_the_object_went: list[bytes | None] = []
    delete_object = service.store.delete

    async def observed(object_key: str) -> None:
        left_when_the_object_went.append(await service.cache.get(key))
        await delete_object(object_key)

    service.store.delete = observed
    try:
        assert (await client.delete(f"/v1/images/{meta['id']}")).status_code == 204
    finally:
        del service.store.delete

    assert left_when_the_object_went == [None]


async def test_an_explicit_quality_is_a_rendition_of_its_own(
    client: httpx.AsyncClient, app: FastAPI, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    await evict(app, meta["id"])
    url = f"/v1/images/{meta['id']}"

    lowest = await client.get(url, params={"format": "jpeg", "quality": 30})  # the lowest step
    default = await client.get(url, params={"format": "jpeg"})

    assert (lowest.headers["x-cache"], default.headers["x-cache"]) == ("MISS", "MISS")
    assert len(lowest.content) < len(default.content) / 2
