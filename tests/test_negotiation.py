"""Format negotiation from Accept, Vary, and AVIF on upload and output."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from config.settings import Settings
from tests.conftest import encode, serving
from tests.support.compaction import compacted

CHROME = "image/avif,image/webp,image/apng,image/svg+xml,image/*,*/*;q=0.8"
SAFARI_OLD = "image/webp,image/png,image/svg+xml,image/*;q=0.8,video/*;q=0.8,*/*;q=0.5"


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str) -> str:
    response = await client.post("/v1/images", files={"file": ("photo", data, content_type)})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return str(response.json()["id"])


@pytest.fixture
async def embedded(embedded_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(embedded_settings) as (_, http):
        yield http


@pytest.mark.parametrize(
    ("upload_format", "accept", "served"),
    [
        ("JPEG", CHROME, "image/avif"),
        ("PNG", CHROME, "image/avif"),
        ("JPEG", SAFARI_OLD, "image/webp"),
        ("PNG", SAFARI_OLD, "image/webp"),
        ("JPEG", "*/*", "image/jpeg"),
        ("PNG", "image/*", "image/png"),
        ("JPEG", "", "image/jpeg"),
        ("JPEG", "image/avif;q=0, image/webp", "image/webp"),
        ("JPEG", "image/avif;q=0, image/webp;q=0", "image/jpeg"),
        ("PNG", "IMAGE/WEBP;Q=0.5", "image/webp"),
    ],
)
async def test_negotiation_matrix_and_vary(
    embedded: httpx.AsyncClient, photo: Image.Image, upload_format: str, accept: str, served: str
) -> None:
    media = f"image/{upload_format.lower()}"
    image_id = await upload(embedded, encode(photo, upload_format), media)

    response = await embedded.get(f"/v1/images/{image_id}", headers={"accept": accept})

    assert response.status_code == 200
    assert response.headers["content-type"] == served
    assert Image.open(io.BytesIO(response.content)).format == served.split("/")[1].upper()
    assert response.headers["vary"] == "Accept"


async def test_an_explicit_format_wins_over_accept_and_does_not_vary(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(embedded, photo_bytes, "image/jpeg")

    response = await embedded.get(
        f"/v1/images/{image_id}", params={"format": "png"}, headers={"accept": CHROME}
    )

    assert response.headers["content-type"] == "image/png"
    assert "vary" not in response.headers


async def test_a_negotiated_format_is_the_same_rendition_as_the_explicit_one(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(embedded, photo_bytes, "image/jpeg")

    negotiated = await embedded.get(f"/v1/images/{image_id}", headers={"accept": SAFARI_OLD})
    explicit = await embedded.get(f"/v1/images/{image_id}", params={"format": "webp"})

    assert explicit.headers["etag"] == negotiated.headers["etag"]
    assert explicit.headers["x-cache"] == "HIT"
    assert explicit.content == negotiated.content


async def test_revalidation_of_a_negotiated_response_varies_too(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(embedded, photo_bytes, "image/jpeg")
    first = await embedded.get(f"/v1/images/{image_id}", headers={"accept": CHROME})

    again = await embedded.get(
        f"/v1/images/{image_id}",
        headers={"accept": CHROME, "if-none-match": first.headers["etag"]},
    )
    other_format = await embedded.get(
        f"/v1/images/{image_id}", headers={"if-none-match": first.headers["etag"]}
    )

    assert again.status_code == 304 and again.headers["vary"] == "Accept"
    assert other_format.status_code == 200  # the JPEG is another representation
    assert other_format.headers["content-type"] == "image/jpeg"


async def test_avif_can_be_switched_off(tmp_path: Path, photo_bytes: bytes) -> None:
    async with serving(Settings(data_dir=tmp_path, output_avif=False)) as (_, client):
        image_id = await upload(client, photo_bytes, "image/jpeg")

        response = await client.get(f"/v1/images/{image_id}", headers={"accept": CHROME})
        explicit = await client.get(f"/v1/images/{image_id}", params={"format": "avif"})

    assert response.headers["content-type"] == "image/webp"
    assert explicit.headers["content-type"] == "image/avif"


async def test_an_avif_upload_with_alpha_is_stored_and_served_as_avif(
    client: httpx.AsyncClient,
) -> None:
    pixels = np.zeros((96, 128, 4), np.uint8)
    pixels[..., 0] = 200
    pixels[..., 1] = np.linspace(0, 255, 128, dtype=np.uint8)[None, :]
    pixels[..., 3] = 255
    pixels[:, :40, 3] = 0
    avif = encode(Image.fromarray(pixels, "RGBA"), "AVIF", quality=90)

    response = await client.post("/v1/images", content=avif, headers={"content-type": "image/avif"})
    assert response.status_code == 201, response.text
    meta = response.json()
    served = await client.get(f"/v1/images/{meta['id']}")
    as_png = await client.get(f"/v1/images/{meta['id']}", params={"format": "png"})

    assert (meta["content_type"], meta["served_format"]) == ("image/avif", "avif")
    assert served.headers["content-type"] == "image/avif"
    image = Image.open(io.BytesIO(served.content))
    assert (image.format, image.size) == ("AVIF", (128, 96))
    alpha = np.asarray(Image.open(io.BytesIO(as_png.content)).getchannel("A"))
    assert alpha[:, :30].max() < 16 and alpha[:, 60:].min() > 240
