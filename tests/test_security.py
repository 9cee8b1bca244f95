"""No one let in: unguessable ids, keys only from valid ids, no secrets out, safe headers."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from app.main import create_app
from app.services.images import new_image_id
from config.settings import Settings
from render.images import InvalidImageId, object_key
from tests.conftest import encode
from tests.support.servers import S3_ACCESS_KEY, S3_SECRET_KEY, free_port

SECRET = "hunter2-not-for-logs"


def test_ids_carry_128_random_bits_and_are_all_distinct() -> None:
    issued = {new_image_id() for _ in range(10_000)}

    assert len(issued) == 10_000
    assert all(object_key(image_id) == f"images/{image_id}" for image_id in issued)
    assert {len(image_id) for image_id in issued} == {22}  # 16 bytes, base64url, no padding


def test_every_one_of_the_128_bits_of_an_id_is_a_fair_coin() -> None:
    """Per-bit frequencies over 10,000 ids: a fixed, derived or 64-bit-padded half fails."""
    count = 10_000
    ids = [base64.urlsafe_b64decode(new_image_id() + "==") for _ in range(count)]
    bits = np.unpackbits(np.frombuffer(b"".join(ids), np.uint8).reshape(count, 16), axis=1)

    assert bits.shape == (count, 128)
    ones = bits.sum(axis=0)
    # Binomial(10,000, 1/2) has a standard deviation of 50: 6 of them either side.
    assert ones.min() > count / 2 - 300 and ones.max() < count / 2 + 300
    # Neighbouring bits are not tied together either (half of the pairs agree).
    agree = (bits[:, 1:] == bits[:, :-1]).sum(axis=0)
    assert agree.min() > count / 2 - 300 and agree.max() < count / 2 + 300


@pytest.mark.parametrize(
    "image_id",
    ["../AAAAAAAAAAAAAAAAAAA", "AAAAAAAAAAAAAAAAAAAAA/", "AAAAAAAAAAAAAAAAAAAA\x00A", "", "A" * 23],
)
def test_object_keys_come_only_from_valid_ids(image_id: str) -> None:
    with pytest.raises(InvalidImageId):
        object_key(image_id)


async def test_the_id_and_the_stored_path_never_come_from_the_upload(
    tmp_path: Path,
) -> None:
    app = create_app(Settings(data_dir=tmp_path / "data"))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
            response = await http.post(
                "/v1/images",
                files={"file": ("../../../escape.png", encode(Image.new("L", (4, 4)), "PNG"))},
            )

    image_id = response.json()["id"]
    assert "escape" not in image_id
    written = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert all(path.startswith("data/") and "escape" not in path for path in written)
    assert [path for path in written if path.startswith("data/objects/images/")] == [
        f"data/objects/images/{image_id}",
        f"data/objects/images/{image_id}.meta.json",
    ]


async def test_content_type_comes_from_the_bytes_not_the_declaration(
    client: httpx.AsyncClient,
) -> None:
    png = encode(Image.new("RGB", (10, 6), (0, 128, 255)), "PNG")

    created = await client.post("/v1/images", files={"file": ("a.jpg", png, "image/jpeg")})
    served = await client.get(f"/v1/images/{created.json()['id']}")

    assert created.json()["content_type"] == "image/png"
    assert served.headers["content-type"] == "image/png"
    assert Image.open(io.BytesIO(served.content)).format == "PNG"


async def test_every_response_says_nosniff_errors_included(
    client: httpx.AsyncClient, app: FastAPI
) -> None:
    png = encode(Image.new("RGB", (8, 8)), "PNG")
    image_id = (
        await client.post("/v1/images", content=png, headers={"content-type": "image/png"})
    ).json()["id"]
    responses = [
        await client.get(f"/v1/images/{image_id}"),
        await client.get(f"/v1/images/{image_id}/stored"),
        await client.get("/nowhere"),  # 404 with no route
        await client.put(f"/v1/images/{image_id}"),  # 405
        await client.get("/v1/images/bad"),  # 400
        await client.post("/v1/images", content=b"x", headers={"content-type": "text/html"}),
        await client.get(f"/v1/images/{image_id}?quality=0"),  # 422
        await client.post(
            "/v1/images",
            content=b"\0" * 10,
            headers={"content-type": "image/png", "content-length": str(2**40)},
        ),  # 413
        await client.get("/healthz"),
        await client.get("/metrics"),
        await client.get("/openapi.json"),
    ]

    assert {r.headers.get("x-content-type-options") for r in responses} == {"nosniff"}
    assert {r.status_code for r in responses} >= {200, 400, 404, 405, 413, 415, 422}


async def test_an_unexpected_error_is_a_json_500_with_nosniff_and_no_detail(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(embedded_settings)
    async with app.router.lifespan_context(app):

        async def broken(*_: object) -> None:
            raise RuntimeError(f"internal detail {SECRET}")

        app.state.image_service.delivery.meta = broken
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
            response = await http.get("/v1/images/AAAAAAAAAAAAAAAAAAAAAA/meta")

    assert response.status_code == 500
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.json()["error"]["code"] == "internal_error"
    assert SECRET not in response.text
    assert "internal detail" in caplog.text  # the operator still sees what went wrong


@pytest.fixture
async def unreachable_app(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[FastAPI]:
    """An app whose object store and Redis (URL with a password) are both down."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", S3_ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", S3_SECRET_KEY)
    settings = Settings(
        data_dir=tmp_path,
        s3_bucket="srstore-down",
        s3_endpoint_url=f"http://127.0.0.1:{free_port()}",
        redis_url=f"redis://:{SECRET}@127.0.0.1:{free_port()}/0",
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        yield app


async def test_an_outage_answers_503_without_internal_urls_or_secrets(
    unreachable_app: FastAPI, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings: Settings = unreachable_app.state.settings
    transport = httpx.ASGITransport(app=unreachable_app)
    async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
        png = encode(Image.new("RGB", (8, 8)), "PNG")
        responses = [
            await http.post("/v1/images", content=png, headers={"content-type": "image/png"}),
            await http.get("/v1/images/AAAAAAAAAAAAAAAAAAAAAA"),
            await http.get("/v1/images/AAAAAAAAAAAAAAAAAAAAAA/stored"),
            await http.get("/readyz"),
        ]

    assert [r.status_code for r in responses] == [503] * 4
    assert all(r.headers["retry-after"] for r in responses)
    assert all(r.headers["x-content-type-options"] == "nosniff" for r in responses)
    endpoint = str(settings.s3_endpoint_url)
    for response in responses:
        assert endpoint.removeprefix("http://") not in response.text
        assert SECRET not in response.text
        assert "127.0.0.1" not in response.text
    assert SECRET not in caplog.text
    assert S3_SECRET_KEY not in caplog.text
    assert "unavailable" in caplog.text


async def test_the_output_never_exceeds_the_configured_pixels(tmp_path: Path) -> None:
    """Output is input-sized, and input is bounded by SRSTORE_MAX_PIXELS."""
    app = create_app(Settings(data_dir=tmp_path, max_pixels=64 * 48))
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
            at_limit = await http.post(
                "/v1/images", files={"file": ("a", encode(Image.new("RGB", (64, 48)), "PNG"))}
            )
            over = await http.post(
                "/v1/images", files={"file": ("b", encode(Image.new("RGB", (65, 48)), "PNG"))}
            )
            served = await http.get(
                f"/v1/images/{at_limit.json()['id']}", params={"format": "webp", "quality": 100}
            )

    assert at_limit.status_code == 201
    assert over.status_code == 413
    assert Image.open(io.BytesIO(served.content)).size == (64, 48)
