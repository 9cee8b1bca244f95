"""Bounding the renditions anonymous clients can make: signed URLs and allowed widths."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from app.services.renditions import sign
from config.settings import Settings
from srstore.cli import main
from tests.conftest import serving
from tests.support.compaction import compacted

KEY = "a-signing-key-of-32-characters!!"


async def upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/v1/images", files={"file": ("a.jpg", data, "image/jpeg")})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return str(response.json()["id"])


@pytest.fixture
async def signing(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(Settings(data_dir=tmp_path, url_signing_key=KEY)) as (_, http):
        yield http


async def test_a_plain_url_needs_no_signature(
    signing: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(signing, photo_bytes)

    assert (await signing.get(f"/v1/images/{image_id}")).status_code == 200


@pytest.mark.parametrize(
    "query",
    [
        [("w", "100")],
        [("h", "100")],
        [("fit", "cover")],
        [("dpr", "2")],
        [("enlarge", "true")],
        [("format", "png")],
        [("quality", "50")],  # alone: it changes the bytes (and the cache entry) too
        [("quality", "50"), ("format", "webp")],
    ],
)
async def test_unsigned_option_urls_are_refused_with_403(
    signing: httpx.AsyncClient, photo_bytes: bytes, query: list[tuple[str, str]]
) -> None:
    image_id = await upload(signing, photo_bytes)

    response = await signing.get(f"/v1/images/{image_id}", params=query)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert response.headers["cache-control"] == "no-store"


async def test_a_signed_url_is_served_in_any_parameter_order(
    signing: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(signing, photo_bytes)
    query = [("w", "100"), ("fit", "cover"), ("h", "100")]
    sig = sign(KEY, image_id, query)

    response = await signing.get(f"/v1/images/{image_id}", params=[*query, ("sig", sig)])
    reordered = await signing.get(f"/v1/images/{image_id}", params=[("sig", sig), *reversed(query)])

    assert response.status_code == reordered.status_code == 200
    assert response.headers["etag"] == reordered.headers["etag"]


async def test_a_signature_does_not_carry_over_to_other_options_or_images(
    signing: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await upload(signing, photo_bytes)
    other_id = await upload(signing, photo_bytes)
    sig = sign(KEY, image_id, [("w", "100")])

    tampered = await signing.get(f"/v1/images/{image_id}", params={"w": 1000, "sig": sig})
    elsewhere = await signing.get(f"/v1/images/{other_id}", params={"w": 100, "sig": sig})
    wrong_key = await signing.get(
        f"/v1/images/{image_id}",
        params={"w": 100, "sig": sign("another-key-of-enough-length", image_id, [("w", "100")])},
    )

    assert [r.status_code for r in (tampered, elsewhere, wrong_key)] == [403, 403, 403]


@pytest.mark.parametrize("sig", ["é" * 43, "", "x" * 128, "%00"])
async def test_a_malformed_signature_is_a_403_not_a_crash(
    signing: httpx.AsyncClient, photo_bytes: bytes, sig: str
) -> None:
    image_id = await upload(signing, photo_bytes)

    response = await signing.get(f"/v1/images/{image_id}", params={"w": 100, "sig": sig})

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"


@pytest.fixture
async def widths(tmp_path: Path) -> AsyncIterator[httpx.AsyncClient]:
    settings = Settings(data_dir=tmp_path, allowed_widths="100,300")  # type: ignore[arg-type]
    async with serving(settings) as (_, http):
        yield http


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"w": 100}, 200),
        ({"w": 300, "format": "webp"}, 200),
        ({"w": 150, "dpr": 2}, 200),
        ({"w": 101}, 400),
        ({"w": 100, "h": 50}, 400),
        ({"h": 100}, 400),
        ({}, 200),
    ],
)
async def test_unsigned_sizes_must_be_one_of_the_allowed_widths(
    widths: httpx.AsyncClient, photo_bytes: bytes, params: dict[str, object], status: int
) -> None:
    image_id = await upload(widths, photo_bytes)

    response = await widths.get(f"/v1/images/{image_id}", params=params)

    assert response.status_code == status
    if status == 400:
        assert response.json()["error"]["code"] == "size_not_allowed"


async def test_a_signed_url_may_ask_for_any_width(tmp_path: Path, photo_bytes: bytes) -> None:
    settings = Settings(data_dir=tmp_path, allowed_widths="100", url_signing_key=KEY)  # type: ignore[arg-type]
    async with serving(settings) as (_, client):
        image_id = await upload(client, photo_bytes)
        sig = sign(KEY, image_id, [("w", "123")])

        response = await client.get(f"/v1/images/{image_id}", params={"w": 123, "sig": sig})

    assert response.status_code == 200


async def test_the_cli_prints_a_url_the_service_accepts(
    signing: httpx.AsyncClient,
    photo_bytes: bytes,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    image_id = await upload(signing, photo_bytes)
    monkeypatch.setenv("SRSTORE_URL_SIGNING_KEY", KEY)

    assert main(["sign-url", image_id, "w=120", "fit=cover", "h=80"]) == 0

    url = capsys.readouterr().out.strip()
    response = await signing.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"] == "image/jpeg"
