"""Cheap requests that used to cost everyone: invented methods growing /metrics, HEAD refused
where GET answers, a refused upload read to its end, framable docs, racing DELETEs."""

from __future__ import annotations

import base64
import hashlib
import re
import select
import socket
import time
from collections.abc import AsyncIterator, Iterator

import httpx
import pytest
from fastapi import FastAPI

from config.settings import Settings
from tests.conftest import serving
from tests.support.metrics import samples
from tests.support.process import ApiProcess, start_api
from tests.test_hostile_input import send_until_answered


@pytest.fixture
async def embedded(embedded_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    pair: tuple[FastAPI, httpx.AsyncClient]
    async with serving(embedded_settings) as pair:
        yield pair[1]


def _request_counts(text: str, route: str) -> dict[str, float]:
    """Requests counted on ``route``, by method label."""
    counts: dict[str, float] = {}
    pattern = re.compile(r'srstore_http_request_seconds_count\{method="([^"]*)",route="([^"]*)"')
    for name, value in samples(text).items():
        match = pattern.match(name)
        if match and match.group(2) == route:
            counts[match.group(1)] = counts.get(match.group(1), 0) + value
    return counts


async def test_invented_methods_are_counted_as_other_and_metrics_stay_small(
    embedded: httpx.AsyncClient,
) -> None:
    before = await embedded.get("/metrics")
    for i in range(200):
        answer = await embedded.request(f"X{i}QZ", "/healthz")
        assert answer.status_code == 405
    after = await embedded.get("/metrics")

    assert "QZ" not in after.text
    grew = _request_counts(after.text, "/healthz")
    was = _request_counts(before.text, "/healthz")
    assert grew["other"] - was.get("other", 0) == 200
    assert len(after.content) - len(before.content) < 4096  # one label set, not 200


@pytest.mark.parametrize("path", ["/", "/healthz", "/readyz", "/metrics", "/docs", "/redoc",
                                  "/v1/images", "/openapi.json"])  # fmt: skip
async def test_head_is_answered_wherever_get_is(embedded: httpx.AsyncClient, path: str) -> None:
    got = await embedded.get(path)
    head = await embedded.head(path)

    assert head.status_code == got.status_code
    assert got.status_code in (200, 307)
    assert head.content == b""
    for name in ("content-type", "location", "cache-control"):
        assert head.headers.get(name) == got.headers.get(name), name


async def test_head_operations_are_published_with_their_own_ids(
    embedded: httpx.AsyncClient,
) -> None:
    paths = (await embedded.get("/openapi.json")).json()["paths"]
    assert paths["/healthz"]["head"]["operationId"] == "head_healthz"
    assert paths["/v1/images"]["head"]["operationId"] == "head_list_images"
    ids = [op["operationId"] for ops in paths.values() for op in ops.values()]
    assert len(ids) == len(set(ids))


def _script_hash(body: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_docs_cannot_be_framed_and_run_only_their_own_scripts(
    embedded: httpx.AsyncClient, path: str
) -> None:
    page = await embedded.get(path)
    policy = page.headers["content-security-policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))

    assert directives["frame-ancestors"] == "'none'"
    assert page.headers["x-frame-options"] == "DENY"
    assert "unsafe-inline" not in directives["script-src"]
    assert directives["connect-src"] == "'self'"
    inline = re.findall(r"<script>(.*?)</script>", page.text, re.DOTALL)
    for body in inline:
        assert _script_hash(body) in directives["script-src"]
    assert int(page.headers["content-length"]) == len(page.content)


async def test_other_pages_keep_their_own_headers(embedded: httpx.AsyncClient) -> None:
    assert "content-security-policy" not in (await embedded.get("/healthz")).headers
    console = await embedded.get("/console/")
    assert "script-src 'self';" in console.headers["content-security-policy"]


@pytest.fixture(scope="module")
def small_limit_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = start_api(
        {
            "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("limit")),
            "SRSTORE_MAX_UPLOAD_BYTES": str(2**20),
        }
    )
    yield api
    api.stop()


def _bytes_accepted_after_reply(port: int, content_type: str, head: bytes, most: int) -> int:
    """Keep streaming after the 413: how much more the server takes before it hangs up."""
    frame = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            b"POST /v1/images HTTP/1.1\r\nHost: srstore\r\nTransfer-Encoding: chunked\r\n"
            + f"Content-Type: {content_type}\r\n\r\n{len(head):x}\r\n".encode()
            + head
            + b"\r\n"
        )
        sock.setblocking(False)
        reply, more = b"", 0
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and more < most:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            try:
                if readable:
                    chunk = sock.recv(65536)
                    if not chunk:
                        break  # the server closed the connection
                    reply += chunk
                elif writable:
                    sent = sock.send(frame)
                    more += sent if reply else 0
            except (BrokenPipeError, ConnectionResetError):
                break
        assert reply.startswith(b"HTTP/1.1 413 "), reply[:80]
        return more


@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
        ),
    ],
)
def test_a_refused_upload_closes_the_connection_instead_of_draining_the_body(
    small_limit_api: ApiProcess, content_type: str, head: bytes
) -> None:
    _, reply = send_until_answered(small_limit_api.port, content_type, head, 2**30)
    assert reply.startswith(b"HTTP/1.1 413 "), reply[:80]
    assert b"connection: close" in reply.lower()

    # 256 MiB offered after the answer: the server hangs up within socket buffers' worth.
    assert _bytes_accepted_after_reply(small_limit_api.port, content_type, head, 2**28) < 2**25
