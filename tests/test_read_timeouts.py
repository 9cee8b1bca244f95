"""Slowloris: a real ``srstore serve`` closes connections whose request never finishes."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.support.process import ApiProcess, start_api


@pytest.fixture(scope="module")
def impatient_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = start_api(
        {
            "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("slow")),
            "SRSTORE_HTTP_HEADER_TIMEOUT_SECONDS": "1",
            "SRSTORE_HTTP_BODY_TIMEOUT_SECONDS": "1",
        }
    )
    yield api
    api.stop()


def closed_by_server(sock: socket.socket) -> bool:
    sock.settimeout(0.2)
    try:
        return sock.recv(1024) == b""
    except TimeoutError:
        return False
    except ConnectionResetError:
        return True


PARTIAL_HEAD = b"GET /healthz HTTP/1.1\r\nHost: srstore\r\nX-Slow: "
PARTIAL_BODY = (
    b"DELETE /v1/images/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: srstore\r\n"
    b"Content-Length: 1000\r\n\r\nten bytes."
)


@pytest.mark.parametrize("opening", [b"", PARTIAL_HEAD, PARTIAL_BODY], ids=["idle", "head", "body"])
def test_a_request_that_never_arrives_is_cut_off(
    impatient_api: ApiProcess, opening: bytes, tmp_path: Path
) -> None:
    sockets = [socket.create_connection(("127.0.0.1", impatient_api.port)) for _ in range(20)]
    try:
        for sock in sockets:
            sock.sendall(opening)
        time.sleep(3)  # three header/body timeouts

        assert all(closed_by_server(sock) for sock in sockets)
        assert httpx.get(f"{impatient_api.url}/healthz", timeout=5).status_code == 200
    finally:
        for sock in sockets:
            sock.close()


def test_a_slow_but_steady_body_is_read(impatient_api: ApiProcess) -> None:
    """Chunks half a timeout apart keep the body alive: only a stall is cut."""
    with socket.create_connection(("127.0.0.1", impatient_api.port), timeout=10) as sock:
        body = b"x" * 40
        sock.sendall(
            b"DELETE /v1/images/AAAAAAAAAAAAAAAAAAAAAA HTTP/1.1\r\nHost: srstore\r\n"
            + f"Content-Length: {len(body)}\r\n\r\n".encode()
        )
        for start in range(0, len(body), 10):
            time.sleep(0.5)
            sock.sendall(body[start : start + 10])
        reply = sock.recv(4096)

    assert reply.startswith(b"HTTP/1.1 404 "), reply[:80]
