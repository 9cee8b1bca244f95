"""``GET /v1/images``: every stored image, page by page, from the object store's own listing.

Run on the local store and on SeaweedFS, each test with a store of its own (queue mode shares
one bucket across the session, and the listing does not depend on where images are rendered).
"""

from __future__ import annotations

import base64
from collections.abc import AsyncIterator

import httpx
import pytest
from PIL import Image

from tests.conftest import encode, serving
from tests.support.compaction import compacted


@pytest.fixture(params=["embedded", "full"])
async def client(request: pytest.FixtureRequest) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(request.getfixturevalue(f"{request.param}_settings")) as (_, http):
        yield http


async def upload_tiles(client: httpx.AsyncClient, count: int) -> dict[str, dict]:
    """``count`` small distinct PNGs, by id, with their upload answers."""
    uploaded = {}
    for shade in range(count):
        data = encode(Image.new("RGB", (8 + shade, 8), (shade * 40, 90, 200)), "PNG")
        response = await client.post("/v1/images", files={"file": ("t.png", data, "image/png")})
        assert response.status_code == 201, response.text
        uploaded[response.json()["id"]] = await compacted(client, response.json()["id"])
    return uploaded


async def list_all(client: httpx.AsyncClient, limit: int) -> list[dict]:
    """Every page, following next_cursor until it is null."""
    pages: list[dict] = []
    params: dict[str, str | int] = {"limit": limit}
    while True:
        response = await client.get("/v1/images", params=params)
        assert response.status_code == 200, response.text
        pages.append(response.json())
        if pages[-1]["next_cursor"] is None:
            return pages
        params["cursor"] = pages[-1]["next_cursor"]


async def test_pages_list_every_image_once_in_id_order_with_its_upload_answer(
    client: httpx.AsyncClient,
) -> None:
    uploaded = await upload_tiles(client, 5)

    pages = await list_all(client, limit=2)

    assert [len(page["images"]) for page in pages] == [2, 2, 1]
    listed = [image for page in pages for image in page["images"]]
    assert [image["id"] for image in listed] == sorted(uploaded)
    assert all(image == uploaded[image["id"]] for image in listed)


async def test_an_empty_store_lists_nothing(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/images")

    assert response.status_code == 200
    assert response.json() == {"images": [], "next_cursor": None}


async def test_a_deleted_image_is_no_longer_listed(client: httpx.AsyncClient) -> None:
    uploaded = await upload_tiles(client, 3)
    victim = sorted(uploaded)[1]

    assert (await client.delete(f"/v1/images/{victim}")).status_code == 204
    pages = await list_all(client, limit=100)

    assert [image["id"] for image in pages[0]["images"]] == sorted(set(uploaded) - {victim})


async def test_the_default_page_holds_24_images(client: httpx.AsyncClient) -> None:
    await upload_tiles(client, 25)

    first = (await client.get("/v1/images")).json()
    rest = (await client.get("/v1/images", params={"cursor": first["next_cursor"]})).json()

    assert (len(first["images"]), len(rest["images"]), rest["next_cursor"]) == (24, 1, None)


@pytest.mark.parametrize("limit", ["0", "101", "many"])
async def test_a_limit_outside_1_to_100_is_refused(client: httpx.AsyncClient, limit: str) -> None:
    response = await client.get("/v1/images", params={"limit": limit})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_request"


@pytest.mark.parametrize(
    "cursor",
    [
        "not a cursor!",
        base64.urlsafe_b64encode(b"models/espcn/1/card.json").decode(),
        "A" * 400,
        "",
    ],
)
async def test_a_cursor_no_page_handed_out_is_a_400(client: httpx.AsyncClient, cursor: str) -> None:
    response = await client.get("/v1/images", params={"cursor": cursor})

    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_cursor"


async def test_the_openapi_schema_documents_the_listing(client: httpx.AsyncClient) -> None:
    schema = (await client.get("/openapi.json")).json()

    listing = schema["paths"]["/v1/images"]["get"]
    params = {p["name"]: p["schema"] for p in listing["parameters"]}
    assert params["limit"]["maximum"] == 100 and params["limit"]["minimum"] == 1
    assert set(params) == {"limit", "cursor"}
    page = schema["components"]["schemas"]["ImagePage"]["properties"]
    assert set(page) == {"images", "next_cursor"}
