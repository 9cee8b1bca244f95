"""Requests refused before they cost anything: the admin token before the body, a body limit
on every route, and (against a real server) connections that never finish their request."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from pydantic import SecretStr

from config.settings import Settings
from tests.conftest import serving
from tests.support.process import ApiProcess, start_api
from tests.test_bad_input import assert_error
from tests.test_hostile_input import peak_rss_mib, send_until_answered

TOKEN = "a-long-enough-admin-token"
MULTIPART_HEAD = b'--xyz\r\nContent-Disposition: form-data; name="weights"; filename="w.pt"\r\n\r\n'


@pytest.fixture(scope="module")
def admin_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = start_api(
        {
            "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("admin")),
            "SRSTORE_ADMIN_TOKEN": TOKEN,
        }
    )
    yield api
    api.stop()


@pytest.fixture(scope="module")
def admin_off_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = start_api({"SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("off"))})
    yield api
    api.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("target", "content_type", "head"),
    [
        ("POST /v1/admin/models", "multipart/form-data; boundary=xyz", MULTIPART_HEAD),
        ("PUT /v1/admin/models/active", "application/json", b'{"name": "'),
    ],
)
@pytest.mark.parametrize(("api_fixture", "status"), [("admin_api", 401), ("admin_off_api", 403)])
def test_an_admin_route_refuses_a_huge_body_from_its_headers(
    request: pytest.FixtureRequest,
    api_fixture: str,
    status: int,
    target: str,
    content_type: str,
    head: bytes,
) -> None:
    """256 MiB streamed without a token: the refusal comes after the headers, memory flat."""
    api: ApiProcess = request.getfixturevalue(api_fixture)
    before = peak_rss_mib(api.process.pid)

    sent, reply = send_until_answered(api.port, content_type, head, 256 * 2**20, target)

    assert reply.startswith(f"HTTP/1.1 {status} ".encode()), reply[:80]
    assert sent < 32 * 2**20
    assert peak_rss_mib(api.process.pid) - before < 32


@pytest.fixture
async def guarded(embedded_settings: Settings) -> Iterator[httpx.AsyncClient]:
    configured = embedded_settings.model_copy(
        update={"admin_token": SecretStr(TOKEN), "max_model_upload_bytes": 4096}
    )
    async with serving(configured) as (_, http):
        yield http  # type: ignore[misc]


AUTH = {"authorization": f"Bearer {TOKEN}"}


async def test_a_json_body_over_64_kib_is_413_even_with_the_token(
    guarded: httpx.AsyncClient,
) -> None:
    body = json.dumps({"name": "espcn", "version": 1, "padding": "x" * 70_000})

    response = await guarded.put(
        "/v1/admin/models/active",
        content=body,
        headers={**AUTH, "content-type": "application/json"},
    )

    assert_error(response, 413, "body_too_large")


async def test_a_chunked_body_without_a_length_is_counted_too(
    guarded: httpx.AsyncClient,
) -> None:
    async def chunks() -> object:
        for _ in range(100):
            yield b"x" * 1024

    response = await guarded.put(
        "/v1/admin/models/active",
        content=chunks(),  # type: ignore[arg-type]
        headers={**AUTH, "content-type": "application/json"},
    )

    assert_error(response, 413, "body_too_large")


async def test_a_model_upload_over_its_limit_is_413(
    guarded: httpx.AsyncClient, tmp_path: Path
) -> None:
    response = await guarded.post(
        "/v1/admin/models",
        headers=AUTH,
        files={"weights": ("w.pt", b"\0" * 8192)},
        data={"card": "{}"},
    )

    assert_error(response, 413, "body_too_large")


@pytest.mark.parametrize("method", ["GET", "DELETE"])
async def test_a_body_on_a_bodiless_route_is_bounded(
    guarded: httpx.AsyncClient, method: str
) -> None:
    path = "/v1/images/" + "A" * 22

    big = await guarded.request(method, path, content=b"x" * 100_000)
    small = await guarded.request(method, path, content=b"x" * 100)

    assert_error(big, 413, "body_too_large")
    assert small.status_code == 404


@pytest.mark.parametrize(
    ("method", "path"),
    [("DELETE", "/v1/images/" + "A" * 22), ("PUT", "/v1/admin/models/active")],
)
async def test_a_chunked_body_is_refused_once_past_the_limit_not_read_to_its_end(
    guarded: httpx.AsyncClient, method: str, path: str
) -> None:
    """64 MiB offered in 64 KiB chunks without a length: the service stops reading after
    the chunk that takes it past its 64 KiB limit, so the rest is never sent."""
    sent = 0

    async def chunks() -> AsyncIterator[bytes]:
        nonlocal sent
        for _ in range(1024):
            sent += 1
            yield b"x" * 65_536

    response = await guarded.request(
        method,
        path,
        content=chunks(),
        headers={**AUTH, "content-type": "application/json"},
    )

    assert_error(response, 413, "body_too_large")
    assert sent <= 3
