"""Small inputs that would cost a lot: refused from their bytes, or served so they cannot
amplify; and the odd images of issue 12 decoded as they are."""

from __future__ import annotations

import asyncio
import io

import httpx
import numpy as np
import pytest
from PIL import Image

from config.settings import Settings
from tests.conftest import encode, serving
from tests.test_bad_input import assert_error
from tests.test_metrics import scrape


async def post(client: httpx.AsyncClient, data: bytes) -> httpx.Response:
    return await client.post("/v1/images", files={"file": ("x", data, "application/octet-stream")})


def progressive_jpeg_with_scans(scans: int) -> bytes:
    """A real progressive JPEG whose last (smallest-cost) scan is repeated: libjpeg decodes
    every repeat, as the 267 KB attack file of issue 12 made it do ~1000 times."""
    noise = np.random.default_rng(4).integers(0, 255, (64, 64, 3), dtype=np.uint8)
    data = encode(Image.fromarray(noise).resize((512, 512)), "JPEG", progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    repeats = scans - data.count(b"\xff\xda")
    return data[:end] + data[last:end] * repeats + data[end:]


async def test_a_progressive_jpeg_with_hundreds_of_scans_is_refused_from_its_bytes(
    client: httpx.AsyncClient,
) -> None:
    response = await post(client, progressive_jpeg_with_scans(300))

    assert_error(response, 413, "image_too_large")
    assert "300 scans" in response.json()["error"]["message"]


async def test_an_ordinary_progressive_jpeg_is_accepted(client: httpx.AsyncClient) -> None:
    response = await post(client, progressive_jpeg_with_scans(12))

    assert response.status_code == 201, response.text


async def test_a_jpeg_cut_after_its_header_is_corrupt_not_a_grey_image(
    client: httpx.AsyncClient,
) -> None:
    """776 bytes declaring 7000x7000, closed with an end-of-image marker: libjpeg fills the
    missing 49 megapixels with grey and reports no error."""
    whole = encode(Image.new("RGB", (7000, 7000), (10, 200, 30)), "JPEG", quality=50)
    cut = whole[:776] + b"\xff\xd9"

    response = await post(client, cut)

    assert_error(response, 422, "invalid_image")
    assert "truncated" in response.json()["error"]["message"]


async def test_an_rgb_png_with_a_trns_colour_key_keeps_its_transparency(
    client: httpx.AsyncClient,
) -> None:
    pixels = np.zeros((16, 16, 3), dtype=np.uint8)
    pixels[:, 8:] = (200, 30, 30)
    data = encode(Image.fromarray(pixels, "RGB"), "PNG", transparency=(0, 0, 0))

    created = await post(client, data)
    served = await client.get(f"/v1/images/{created.json()['id']}")

    image = Image.open(io.BytesIO(served.content))
    assert image.mode == "RGBA"
    alpha = np.asarray(image.getchannel("A"))
    assert alpha[:, :6].max() < 40  # the key colour: transparent
    assert alpha[:, 10:].min() > 215  # the rest: opaque


@pytest.mark.parametrize("fmt", ["TIFF", "BMP"])
async def test_tiff_and_bmp_uploads_are_served_as_compressed_png(
    client: httpx.AsyncClient, fmt: str
) -> None:
    """A deflate TIFF of a flat 1200x1200 image is a few KB; served raw it was 4.3 MB."""
    options = {"compression": "tiff_adobe_deflate"} if fmt == "TIFF" else {}
    data = encode(Image.new("RGB", (1200, 1200), (40, 90, 160)), fmt, **options)

    created = await post(client, data)
    served = await client.get(f"/v1/images/{created.json()['id']}")

    assert created.json()["served_format"] == "png"
    assert served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).size == (1200, 1200)
    assert len(served.content) < 1200 * 1200 * 3 / 20


@pytest.mark.slow
async def test_an_upload_wider_than_webp_can_store_is_kept_and_served(
    client: httpx.AsyncClient,
) -> None:
    """65600 px wide: the stored copy (16400 px) is over WebP's 16383, so it is kept as PNG."""
    data = encode(Image.new("RGB", (65600, 4), (9, 99, 199)), "PNG")

    created = await post(client, data)
    served = await client.get(f"/v1/images/{created.json()['id']}")

    assert created.status_code == 201, created.text
    assert served.status_code == 200
    assert Image.open(io.BytesIO(served.content)).size == (65600, 4)


@pytest.mark.parametrize(("width", "fmt"), [(16400, "webp"), (65600, "jpeg")])
async def test_a_format_that_cannot_encode_the_image_is_a_4xx_before_any_render(
    client: httpx.AsyncClient, width: int, fmt: str
) -> None:
    created = await post(client, encode(Image.new("RGB", (width, 4), (9, 99, 199)), "PNG"))
    image_id = created.json()["id"]
    before = await scrape(client)

    answers = [await client.get(f"/v1/images/{image_id}?format={fmt}") for _ in range(2)]

    for answer in answers:
        assert_error(answer, 422, "unencodable_format")
    after = await scrape(client)
    renders = 'srstore_render_seconds_count{stage="superres"}'
    assert after.get(renders, 0) == before.get(renders, 0)
    assert (await client.get(f"/v1/images/{image_id}?format=png")).status_code == 200


def noise_png(side: int) -> bytes:
    pixels = np.random.default_rng(side).integers(0, 255, (side, side, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), "PNG")


async def test_an_upload_whose_decode_exceeds_the_memory_budget_is_413(
    embedded_settings: Settings,
) -> None:
    """512x512 needs about 3 MiB to decode (12 bytes a pixel); the budget is 1 MiB."""
    settings = embedded_settings.model_copy(update={"decode_memory_budget_bytes": 2**20})
    async with serving(settings) as (_, client):
        response = await post(client, noise_png(512))

    assert_error(response, 413, "image_too_large")
    assert "DECODE_MEMORY_BUDGET" in response.json()["error"]["message"]


async def test_uploads_beyond_the_decode_budget_get_503_with_retry_after(
    embedded_settings: Settings,
) -> None:
    """A budget for one 1000x1000 decode at a time, no waiting: of four at once, the first is
    decoded and the others are told to come back, before any of their pixels is decoded."""
    settings = embedded_settings.model_copy(
        update={"decode_memory_budget_bytes": 16 * 2**20, "decode_wait_seconds": 0}
    )
    data = noise_png(1000)
    async with serving(settings) as (_, client):
        answers = await asyncio.gather(*(post(client, data) for _ in range(4)))
        later = await post(client, data)

    statuses = sorted(a.status_code for a in answers)
    assert statuses[0] == 201 and statuses[-1] == 503, statuses
    assert set(statuses) == {201, 503}
    for busy in (a for a in answers if a.status_code == 503):
        assert_error(busy, 503, "decode_busy")
        assert busy.headers["retry-after"]
    assert later.status_code == 201  # the budget was given back
