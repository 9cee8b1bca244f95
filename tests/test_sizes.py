"""Sizes on read: ?w=&h=&fit=&dpr=&enlarge=, and which sizes run the model."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from config.settings import Settings
from tests.conftest import encode, serving
from tests.support.compaction import compacted
from tests.support.metrics import samples


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str = "image/jpeg") -> str:
    response = await client.post("/v1/images", files={"file": ("photo", data, content_type)})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return str(response.json()["id"])


def decode(response: httpx.Response) -> Image.Image:
    assert response.status_code == 200, response.text
    return Image.open(io.BytesIO(response.content))


def psnr(a: Image.Image, b: Image.Image) -> float:
    error = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    return float(10 * np.log10(255**2 / max(np.mean(error**2), 1e-12)))


@contextmanager
def model_runs(app: FastAPI, settings: Settings, upscaler: object) -> Iterator[list[object]]:
    """Every network run in this process, or every job handed to the workers in queue mode."""
    renderer = app.state.image_service.renderer
    counted, method = (
        (renderer.queue, "enqueue") if settings.inference == "queue" else (upscaler, "upscale")
    )
    calls: list[object] = []
    original = getattr(counted, method)

    def counting(*args: object) -> object:
        calls.append(args)
        return original(*args)

    setattr(counted, method, counting)
    try:
        yield calls
    finally:
        delattr(counted, method)


async def upscaler_of(app: FastAPI, settings: Settings) -> object:
    if settings.inference == "queue":
        return None
    return await app.state.image_service.renderer.engine.models.get(app.state.models.label)


def alpha_image(width: int = 203, height: int = 131) -> Image.Image:
    """A gradient with a transparent left third: odd sizes on both sides."""
    rng = np.random.default_rng(3)
    pixels = np.zeros((height, width, 4), np.uint8)
    pixels[..., 0] = np.linspace(0, 255, width, dtype=np.uint8)[None, :]
    pixels[..., 1] = np.linspace(0, 255, height, dtype=np.uint8)[:, None]
    pixels[..., 2] = rng.integers(100, 140, (height, width), dtype=np.uint8)
    pixels[..., 3] = 255
    pixels[:, : width // 3, 3] = 0
    return Image.fromarray(pixels, "RGBA")


async def test_a_thumbnail_at_or_below_the_stored_size_runs_no_model(
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    photo: Image.Image,
    photo_bytes: bytes,
) -> None:
    image_id = await upload(client, photo_bytes)  # 602x402, stored at 151x101
    before = samples((await client.get("/metrics")).text)
    upscaler = await upscaler_of(app, settings)

    with model_runs(app, settings, upscaler) as runs:
        thumb = await client.get(f"/v1/images/{image_id}", params={"w": 150, "format": "png"})

    after = samples((await client.get("/metrics")).text)
    assert runs == []
    source = 'srstore_renditions_total{source="stored_copy"}'
    assert after[source] == before.get(source, 0) + 1
    assert thumb.headers["x-model-version"] == "none"
    served = decode(thumb)
    assert served.size == (150, 100)
    reference = photo.resize((150, 100), Image.Resampling.LANCZOS)
    assert psnr(served.convert("RGB"), reference) > 30


async def test_a_size_above_the_stored_copy_is_super_resolved_then_resized(
    client: httpx.AsyncClient,
    app: FastAPI,
    settings: Settings,
    photo: Image.Image,
    photo_bytes: bytes,
) -> None:
    image_id = await upload(client, photo_bytes)
    upscaler = await upscaler_of(app, settings)

    with model_runs(app, settings, upscaler) as runs:
        response = await client.get(f"/v1/images/{image_id}", params={"w": 400, "format": "png"})

    assert len(runs) == 1
    assert response.headers["x-model-version"] == app.state.models.label
    served = decode(response)
    assert served.size == (400, 267)
    assert psnr(served.convert("RGB"), photo.resize((400, 267), Image.Resampling.LANCZOS)) > 27


@pytest.fixture
async def embedded(embedded_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(embedded_settings) as (_, http):
        yield http


@pytest.mark.parametrize(
    ("params", "size"),
    [
        ({"w": 40, "h": 40, "fit": "inside"}, (40, 26)),
        ({"w": 40, "h": 40}, (40, 26)),  # inside is the default fit
        ({"w": 40, "h": 40, "fit": "contain"}, (40, 40)),
        ({"w": 40, "h": 40, "fit": "cover"}, (40, 40)),
        ({"w": 40, "h": 40, "fit": "fill"}, (40, 40)),
        ({"w": 101}, (101, 65)),
        ({"h": 65}, (101, 65)),
        ({"w": 20, "dpr": 2.5}, (50, 32)),
        ({"w": 150, "h": 150, "fit": "cover"}, (131, 131)),  # above the stored copy: the model
    ],
)
async def test_each_size_and_fit_of_an_odd_sized_alpha_image(
    embedded: httpx.AsyncClient, params: dict[str, object], size: tuple[int, int]
) -> None:
    image_id = await upload(embedded, encode(alpha_image(), "PNG"), "image/png")

    served = decode(await embedded.get(f"/v1/images/{image_id}", params=params))

    assert served.format == "PNG"
    assert served.size == size
    alpha = np.asarray(served.getchannel("A"))
    assert alpha[:, 0].max() < 16  # the transparent third is still transparent
    assert alpha[size[1] // 2, -1] > 240


async def test_contain_pads_with_transparency_around_the_image(
    embedded: httpx.AsyncClient,
) -> None:
    image_id = await upload(embedded, encode(alpha_image(), "PNG"), "image/png")

    served = decode(
        await embedded.get(f"/v1/images/{image_id}", params={"w": 40, "h": 40, "fit": "contain"})
    )

    alpha = np.asarray(served.getchannel("A"))
    assert alpha[:7].max() == 0 and alpha[-7:].max() == 0  # 7-pixel bands above and below
    assert alpha[20, 39] > 240


async def test_never_beyond_the_upload_size_unless_enlarge(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(embedded, photo_bytes)
    plain = await embedded.get(f"/v1/images/{image_id}")

    capped = await embedded.get(f"/v1/images/{image_id}", params={"w": 1200})
    enlarged = await embedded.get(f"/v1/images/{image_id}", params={"w": 1204, "enlarge": "true"})

    assert decode(capped).size == (602, 402)
    assert capped.headers["etag"] == plain.headers["etag"]  # the same rendition
    assert capped.headers["x-cache"] == "HIT"
    assert decode(enlarged).size == (1204, 804)


async def test_dpr_multiplies_the_size_into_the_same_rendition(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(embedded, photo_bytes)

    doubled = await embedded.get(f"/v1/images/{image_id}", params={"w": 100, "dpr": 2})
    direct = await embedded.get(f"/v1/images/{image_id}", params={"w": 200})

    assert decode(doubled).size == (200, 134)
    assert doubled.headers["etag"] == direct.headers["etag"]
    assert direct.headers["x-cache"] == "HIT"
    assert doubled.content == direct.content


@pytest.mark.parametrize(
    "params",
    [
        {"w": 0},
        {"w": -5},
        {"w": "abc"},
        {"w": 10**12},
        {"h": 16385},
        {"w": 100, "dpr": 0},
        {"w": 100, "dpr": 100},
        {"w": 100, "dpr": "nan"},
        {"w": 100, "fit": "stretch"},
        {"w": 100, "enlarge": "perhaps"},
        {"format": "gif"},
        {"format": "bmp"},  # BMP and TIFF uploads are served as PNG; neither is an output
        {"format": "tiff"},
    ],
)
async def test_hostile_sizes_get_a_422_json_error(
    embedded: httpx.AsyncClient, photo_bytes: bytes, params: dict[str, object]
) -> None:
    image_id = await upload(embedded, photo_bytes)

    response = await embedded.get(f"/v1/images/{image_id}", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"
    assert response.headers["cache-control"] == "no-store"


async def test_enlarge_is_bounded_by_the_pixel_limit(tmp_path: Path, photo_bytes: bytes) -> None:
    async with serving(Settings(data_dir=tmp_path, max_pixels=1_000_000)) as (_, client):
        image_id = await upload(client, photo_bytes)

        response = await client.get(f"/v1/images/{image_id}", params={"w": 16384, "enlarge": "1"})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_size"


@pytest.mark.parametrize(("fmt", "mode"), [("png", "L"), ("jpeg", "L"), ("avif", "L")])
async def test_greyscale_stays_greyscale_at_every_size(
    embedded: httpx.AsyncClient, photo: Image.Image, fmt: str, mode: str
) -> None:
    image_id = await upload(embedded, encode(photo.convert("L"), "PNG"), "image/png")

    for params in ({}, {"w": 100}, {"w": 300}):
        served = decode(
            await embedded.get(f"/v1/images/{image_id}", params={**params, "format": fmt})
        )
        assert served.mode == mode, params


@pytest.mark.parametrize(
    ("mode", "codec"),
    [("L", "webp"), ("L", "png"), ("RGB", "webp")],  # a PNG stored copy stays one channel
)
@pytest.mark.parametrize("box", [100, 300])  # from the stored copy; through the model
async def test_contain_pads_an_opaque_image_with_white(
    tmp_path: Path, mode: str, codec: str, box: int
) -> None:
    """A dark 3:2 image in a square box: white bands above and below, the image between."""
    dark = Image.new(mode, (600, 400), 40 if mode == "L" else (40, 40, 40))
    async with serving(Settings(data_dir=tmp_path, stored_codec=codec)) as (_, client):  # type: ignore[arg-type]
        image_id = await upload(client, encode(dark, "PNG"), "image/png")
        served = decode(
            await client.get(
                f"/v1/images/{image_id}",
                params={"w": box, "h": box, "fit": "contain", "format": "png"},
            )
        )

    pixels = np.asarray(served.convert("L"))
    band = box // 6  # (box - 2/3 box) / 2 rows each side
    assert served.mode == mode and served.size == (box, box)
    assert pixels[: band - 1].min() == 255 and pixels[-band + 1 :].min() == 255
    assert abs(int(pixels[box // 2, box // 2]) - 40) <= 3


@pytest.mark.parametrize("fit", ["cover", "fill", "inside", "contain"])
async def test_enlarge_is_bounded_by_the_pixels_it_computes_not_only_those_it_sends(
    tmp_path: Path, photo_bytes: bytes, fit: str
) -> None:
    """``cover`` crops after scaling: a 4000x1 box on a 3:2 image scales it to 4000x2671
    first, and that intermediate is what the pixel limit must bound."""
    async with serving(Settings(data_dir=tmp_path, max_pixels=1_000_000)) as (_, client):
        image_id = await upload(client, photo_bytes)
        params = {"w": 4000, "h": 1 if fit == "cover" else 2000, "fit": fit, "enlarge": "true"}

        response = await client.get(f"/v1/images/{image_id}", params=params)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_size"
