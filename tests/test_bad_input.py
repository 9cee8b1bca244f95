"""Bad input gets a clear JSON 4xx and nothing is stored."""

from __future__ import annotations

import httpx
import pytest
from PIL import Image

from config.settings import Settings
from tests.conftest import encode


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/json"
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    ("body", "content_type", "status", "code"),
    [
        (b"", "image/png", 422, "invalid_image"),
        (b"hello, not an image", "image/png", 415, "unsupported_media_type"),
        (
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            "image/svg+xml",
            415,
            "unsupported_media_type",
        ),
        (b"{}", "application/json", 415, "unsupported_media_type"),
    ],
)
async def test_bodies_that_are_not_images_are_refused(
    client: httpx.AsyncClient, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = await client.post("/v1/images", content=body, headers={"content-type": content_type})

    assert_error(response, status, code)


async def test_a_truncated_jpeg_is_refused(client: httpx.AsyncClient, photo_bytes: bytes) -> None:
    response = await client.post(
        "/v1/images",
        content=photo_bytes[: len(photo_bytes) // 3],
        headers={"content-type": "image/jpeg"},
    )

    assert_error(response, 422, "invalid_image")


async def test_multipart_without_a_file_field_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/images", data={"other": "x"}, files={"x": ("a", b"b")})

    assert_error(response, 400, "bad_request")


async def test_a_declared_decompression_bomb_is_refused_from_its_header(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    bomb = encode(Image.new("L", (10_000, 10_000)), "PNG", optimize=True)
    assert len(bomb) < settings.max_upload_bytes

    response = await client.post("/v1/images", content=bomb, headers={"content-type": "image/png"})

    assert_error(response, 413, "image_too_large")


async def test_a_body_over_the_upload_limit_is_refused(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    response = await client.post(
        "/v1/images",
        content=b"\0" * (settings.max_upload_bytes + 1),
        headers={"content-type": "image/png"},
    )

    assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize("image_id", ["short", "x" * 400, "a.b.c", "%2E%2E%5Cwin.ini"])
async def test_malformed_ids_are_refused(client: httpx.AsyncClient, image_id: str) -> None:
    response = await client.get(f"/v1/images/{image_id}")

    assert_error(response, 400, "invalid_id")


async def test_a_path_traversal_id_matches_no_route(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/images/..%2F..%2Fetc%2Fpasswd")

    assert_error(response, 404, "not_found")


async def test_an_unknown_id_is_404(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/images/AAAAAAAAAAAAAAAAAAAAAA")

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("query", ["format=gif", "quality=0", "quality=101", "quality=high"])
async def test_unknown_query_values_are_refused(
    client: httpx.AsyncClient, photo_bytes: bytes, query: str
) -> None:
    upload = await client.post(
        "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
    )

    response = await client.get(f"/v1/images/{upload.json()['id']}?{query}")

    assert_error(response, 422, "invalid_request")
