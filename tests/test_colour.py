"""Colour management on upload: embedded ICC profiles are converted to sRGB (ImageCms).

The profiles are Debian's (icc-profiles-free, libgs-common), installed by ``make test``.
"""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image, ImageCms

from config.settings import Settings
from tests.conftest import encode, serving

ICC = Path("/usr/share/color/icc")
ADOBE_RGB = ICC / "compatibleWithAdobeRGB1998.icc"
CMYK = ICC / "ghostscript" / "ps_cmyk.icc"
GREY = ICC / "Gray.icc"
SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@pytest.fixture
async def embedded(embedded_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(embedded_settings) as (_, http):
        yield http


async def served_png(client: httpx.AsyncClient, data: bytes, content_type: str) -> Image.Image:
    response = await client.post("/v1/images", files={"file": ("f", data, content_type)})
    assert response.status_code == 201, response.text
    image_id = response.json()["id"]
    served = await client.get(f"/v1/images/{image_id}", params={"format": "png"})
    assert served.status_code == 200
    return Image.open(io.BytesIO(served.content))


def flat(colour: tuple[int, ...], mode: str = "RGB") -> Image.Image:
    return Image.new(mode, (64, 48), colour)


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())


async def test_a_wide_gamut_photo_is_converted_to_srgb(embedded: httpx.AsyncClient) -> None:
    source = flat((60, 150, 60))  # a green that sRGB shows more saturated than Adobe RGB's
    profile = ADOBE_RGB.read_bytes()
    expected = ImageCms.profileToProfile(source, ImageCms.ImageCmsProfile(str(ADOBE_RGB)), SRGB)
    assert expected is not None

    served = await served_png(embedded, encode(source, "PNG", icc_profile=profile), "image/png")

    assert "icc_profile" not in served.info  # output is plain sRGB
    assert mean_difference(served, expected) < 2
    assert mean_difference(served, source) > 8  # what serving it unconverted would look like


async def test_cmyk_converts_through_its_own_profile(embedded: httpx.AsyncClient) -> None:
    source = flat((20, 80, 160, 30), "CMYK")
    profile = ImageCms.ImageCmsProfile(str(CMYK))
    expected = ImageCms.profileToProfile(source, profile, SRGB, outputMode="RGB")
    assert expected is not None
    data = encode(source, "JPEG", quality=95, icc_profile=CMYK.read_bytes())

    served = await served_png(embedded, data, "image/jpeg")

    assert served.mode == "RGB"
    assert mean_difference(served, expected) < 3
    assert mean_difference(served, source.convert("RGB")) > 10  # Pillow's naive conversion


async def test_greyscale_with_a_profile_stays_greyscale(embedded: httpx.AsyncClient) -> None:
    source = flat((100,), "L")

    served = await served_png(
        embedded, encode(source, "PNG", icc_profile=GREY.read_bytes()), "image/png"
    )

    assert served.mode == "L"


async def test_an_unreadable_profile_is_ignored_not_refused(embedded: httpx.AsyncClient) -> None:
    source = flat((60, 150, 60))

    served = await served_png(
        embedded, encode(source, "PNG", icc_profile=b"not a profile" * 10), "image/png"
    )

    assert mean_difference(served, source) < 2
