"""What every request meets before a route runs, and what every response carries after it.

The gate refuses an oversized header (431), a caller the access layer refuses (401/403, with
``WWW-Authenticate`` on a 401), and a body past its route's limit (413), each before a byte
of the body reaches the route and with the connection closed; it hands a body under the limit
on whole. Every response says ``nosniff`` and carries the request id; an unhandled error is a
JSON 500, never a traceback; each request is counted under its route template.

The middlewares wrap a small FastAPI app here, with an access layer that answers from the
``Authorization`` header alone, so each rule is seen at its edge without models or stores
(fast enough for mutmut against every mutant of ``app.middleware``); the API tests check the
same rules through the real application.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from prometheus_client import REGISTRY

from app.access import Principal
from app.errors import Forbidden, KeysUnavailable, RateLimited, Unauthorized
from app.middleware import CONTROL_BODY_LIMIT, RequestGate, RequestId, ResponseHeadersAndMetrics
from config.logs import REQUEST_ID
from config.settings import Settings


class KeyedAccess:
    """``Bearer good`` may do anything, ``Bearer reader`` only read; without a header a caller
    may read and list."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.uploads_admitted: list[Principal] = []

    async def principal(
        self,
        needed: str,
        authorization: str | None,
        peer: str | None,
        forwarded_for: str | None,
        signed: bool = False,
    ) -> Principal:
        self.calls.append(
            {"needed": needed, "peer": peer, "forwarded_for": forwarded_for, "signed": signed}
        )
        if authorization == "Bearer good":
            return Principal("k1", None, frozenset({"admin"}))
        if authorization == "Bearer reader" and needed == "read":
            return Principal("k2", None, frozenset({"read"}))
        if authorization == "Bearer outage":
            raise KeysUnavailable("the key store is unavailable; retry later")
        if authorization == "Bearer spent":
            raise RateLimited("this key's quota is spent", 42)  # type: ignore[call-arg]
        if authorization is None and needed in ("read", "list"):
            return Principal(None, None, frozenset({"read"}))
        if authorization is None:
            raise Unauthorized("this route needs a key")
        raise Forbidden("this key may not do that")

    async def admit_upload(self, principal: Principal) -> None:
        self.uploads_admitted.append(principal)


def build(settings: Settings) -> tuple[FastAPI, KeyedAccess, list[dict[str, Any]]]:
    app = FastAPI()
    access = KeyedAccess()
    app.state.access = access
    seen: list[dict[str, Any]] = []

    async def echo(request: Request) -> dict[str, Any]:
        body = await request.body()
        principal = request.scope.get("state", {}).get("principal")
        seen.append({"body": body, "request_id": REQUEST_ID.get()})
        return {"bytes": len(body), "key": principal.key_id if principal else "no caller"}

    for path in ("/v1/images", "/v1/images/{image_id}", "/v1/admin/models", "/healthz"):
        app.add_api_route(path, echo, methods=["GET", "HEAD", "POST", "PUT", "DELETE"])

    @app.get("/v1/images/{image_id}/hit")
    async def hit() -> Any:
        from fastapi.responses import Response

        return Response(b"img", headers={"X-Cache": "HIT"})

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("a bug")

    app.add_middleware(RequestGate, settings=settings)
    app.add_middleware(ResponseHeadersAndMetrics)
    app.add_middleware(RequestId)
    return app, access, seen


@pytest.fixture
async def gated(
    tmp_path: Path,
) -> AsyncIterator[tuple[httpx.AsyncClient, KeyedAccess, list[dict[str, Any]]]]:
    settings = Settings(
        data_dir=tmp_path, max_header_bytes=1024, max_model_upload_bytes=100_000, public_read=False
    )
    app, access, seen = build(settings)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False, client=("10.0.0.7", 5))
    async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as client:
        yield client, access, seen


Gated = tuple[httpx.AsyncClient, KeyedAccess, list[dict[str, Any]]]


def refused(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["connection"] == "close"
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-content-type-options"] == "nosniff"
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code
    return error


# Headers --------------------------------------------------------------------------------


async def test_a_header_over_the_limit_is_431_naming_it_before_the_route_runs(gated: Gated) -> None:
    client, access, seen = gated
    at_limit = await client.get("/healthz", headers={"x-note": "a" * 1024})
    over = await client.post(
        "/v1/images/x", headers={"x-note": "a" * 1025, "authorization": "Bearer good"}, content=b"1"
    )

    assert at_limit.status_code == 200
    error = refused(over, 431, "header_too_large")
    assert error["message"] == (
        "the x-note header is 1025 bytes; at most 1024 are read (SRSTORE_MAX_HEADER_BYTES)"
    )
    assert len(seen) == 1
    assert access.calls == []


async def test_an_oversized_header_name_is_shown_cut_to_64_characters(gated: Gated) -> None:
    client, _, _ = gated
    name = "x-" + "n" * 100
    over = await client.get("/healthz", headers={name: "a" * 2000})

    message = refused(over, 431, "header_too_large")["message"]
    assert message.startswith(f"the {name[:64]} header is 2000 bytes")


# Who may call ----------------------------------------------------------------------------


async def test_a_refused_caller_gets_401_with_a_bearer_challenge_and_the_body_unread(
    gated: Gated,
) -> None:
    client, access, seen = gated
    response = await client.request("DELETE", "/v1/images/x", content=b"x" * 10)

    error = refused(response, 401, "unauthorized")
    assert error["message"] == "this route needs a key"
    assert response.headers["www-authenticate"] == "Bearer"
    assert access.calls[-1]["needed"] == "delete"
    assert seen == []


async def test_a_forbidden_key_gets_403_without_a_challenge(gated: Gated) -> None:
    client, _, seen = gated
    response = await client.post(
        "/v1/admin/models", headers={"authorization": "Bearer reader"}, content=b"{}"
    )

    refused(response, 403, "forbidden")
    assert "www-authenticate" not in response.headers
    assert seen == []


async def test_a_spent_quota_is_429_with_its_own_retry_after(gated: Gated) -> None:
    client, _, _ = gated
    response = await client.get("/v1/images/x", headers={"authorization": "Bearer spent"})

    refused(response, 429, "rate_limited")
    assert response.headers["retry-after"] == "42"


async def test_a_key_store_outage_is_503_with_the_documented_retry_after(gated: Gated) -> None:
    client, _, seen = gated
    response = await client.delete("/v1/images/x", headers={"authorization": "Bearer outage"})

    refused(response, 503, "keys_unavailable")
    assert response.headers["retry-after"] == "5"
    assert seen == []


async def test_the_caller_is_handed_to_the_route_with_its_address_and_signature(
    gated: Gated,
) -> None:
    client, access, _ = gated
    signed = await client.get("/v1/images/x?w=10&sig=abc", headers={"x-forwarded-for": "192.0.2.1"})
    keyed = await client.get("/v1/images/x", headers={"authorization": "Bearer reader"})
    forwarded = await client.get("/v1/images/x", headers={"forwarded": "for=192.0.2.2"})

    assert signed.json() == {"bytes": 0, "key": None}  # anonymous
    assert keyed.json() == {"bytes": 0, "key": "k2"}
    assert forwarded.status_code == 200
    assert access.calls[0] == {
        "needed": "read",
        "peer": "10.0.0.7",
        "forwarded_for": "192.0.2.1",
        "signed": True,
    }
    assert access.calls[1]["signed"] is False
    assert access.calls[2]["forwarded_for"] == "for=192.0.2.2"


async def test_a_public_read_without_credentials_asks_nobody(tmp_path: Path) -> None:
    for public in (True, False):
        app, access, _ = build(Settings(data_dir=tmp_path, public_read=public))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as client:
            read = await client.get("/v1/images/x")
            listed = await client.get("/v1/images")
            probe = await client.get("/healthz")
        assert read.status_code == listed.status_code == probe.status_code == 200
        assert [call["needed"] for call in access.calls] == (
            ["list"] if public else ["read", "list"]
        )


async def test_only_an_image_upload_is_admitted_against_its_quota(gated: Gated) -> None:
    client, access, _ = gated
    auth = {"authorization": "Bearer good"}
    await client.put("/v1/images/x", headers=auth, content=b"{}")
    after_a_control_call = list(access.uploads_admitted)
    await client.post("/v1/images", headers=auth, content=b"img")

    assert after_a_control_call == []
    assert [p.key_id for p in access.uploads_admitted] == ["k1"]


# Bodies ----------------------------------------------------------------------------------


async def test_a_control_body_up_to_64_kib_is_handed_on_whole(gated: Gated) -> None:
    client, _, seen = gated
    body = bytes(range(256)) * (CONTROL_BODY_LIMIT // 256)
    response = await client.put(
        "/v1/images/x", headers={"authorization": "Bearer good"}, content=body
    )

    assert CONTROL_BODY_LIMIT == 64 * 1024
    assert response.json()["bytes"] == CONTROL_BODY_LIMIT
    assert seen[-1]["body"] == body


async def test_a_control_body_one_byte_over_is_413_from_its_length_or_its_count(
    gated: Gated,
) -> None:
    client, _, seen = gated
    auth = {"authorization": "Bearer good"}
    body = b"x" * (CONTROL_BODY_LIMIT + 1)

    declared = await client.put("/v1/images/x", headers=auth, content=body)

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(CONTROL_BODY_LIMIT // 1024):
            yield b"x" * 1024
        yield b"x"

    counted = await client.put("/v1/images/x", headers=auth, content=chunks())

    for response in (declared, counted):
        error = refused(response, 413, "body_too_large")
        assert error["message"] == "the body exceeds this route's 65536-byte limit"
    assert seen == []


async def test_a_chunked_body_is_not_read_past_the_limit(gated: Gated) -> None:
    client, _, _ = gated
    sent = 0

    async def endless() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < 100 * CONTROL_BODY_LIMIT:
            sent += 4096
            yield b"x" * 4096

    response = await client.request(
        "DELETE", "/v1/images/x", headers={"authorization": "Bearer good"}, content=endless()
    )

    refused(response, 413, "body_too_large")
    assert sent <= CONTROL_BODY_LIMIT + 2 * 4096


async def test_a_model_upload_has_its_own_limit(gated: Gated) -> None:
    client, _, _ = gated
    auth = {"authorization": "Bearer good"}
    within = await client.post("/v1/admin/models", headers=auth, content=b"w" * 100_000)
    over = await client.post("/v1/admin/models", headers=auth, content=b"w" * 100_001)
    elsewhere = await client.put("/v1/admin/models", headers=auth, content=b"w" * 100_000)

    assert within.json()["bytes"] == 100_000
    refused(over, 413, "body_too_large")
    assert refused(elsewhere, 413, "body_too_large")["message"].endswith("65536-byte limit")


async def test_an_image_upload_streams_past_the_gate_unlimited_by_it(gated: Gated) -> None:
    client, _, _ = gated
    big = b"i" * (CONTROL_BODY_LIMIT * 3)
    response = await client.post(
        "/v1/images", headers={"authorization": "Bearer good"}, content=big
    )

    assert response.json()["bytes"] == len(big)


async def test_a_get_with_a_body_is_bounded_like_any_other(gated: Gated) -> None:
    client, _, _ = gated
    declared = await client.request("GET", "/healthz", content=b"x" * (CONTROL_BODY_LIMIT + 1))

    async def chunks() -> AsyncIterator[bytes]:
        yield b"x" * (CONTROL_BODY_LIMIT + 1)

    chunked = await client.request("GET", "/healthz", content=chunks())
    small = await client.request("GET", "/healthz", content=b"abc")

    refused(declared, 413, "body_too_large")
    refused(chunked, 413, "body_too_large")
    assert small.json()["bytes"] == 3


async def test_a_client_gone_mid_body_hands_the_route_what_came_before(tmp_path: Path) -> None:
    app, _, seen = build(Settings(data_dir=tmp_path))
    messages = iter(
        [
            {"type": "http.request", "body": b"abc", "more_body": True},
            {"type": "http.disconnect"},
            {"type": "http.disconnect"},
        ]
    )
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"srstore"), (b"transfer-encoding", b"chunked")],
        "client": ("127.0.0.1", 5),
        "server": ("srstore", 80),
    }
    await app(scope, receive, send)

    assert seen[-1]["body"] == b"abc"
    body = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    assert json.loads(body) == {"bytes": 3, "key": "no caller"}


def gate_scope(method: str, headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": "/healthz",
        "raw_path": b"/healthz",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"srstore"), *headers],
        "client": ("127.0.0.1", 5),
        "server": ("srstore", 80),
    }


async def through_the_gate(
    tmp_path: Path, method: str, headers: list[tuple[bytes, bytes]], messages: list[Any]
) -> tuple[Any, list[Any], list[Any]]:
    """Runs ``RequestGate`` alone: what the route's ``receive`` is and what it returns
    (read until the server's own disconnect)."""
    pending = iter(messages)
    handed: list[Any] = []
    read: list[Any] = []

    async def receive() -> Any:
        return next(pending)

    async def route(scope: Any, route_receive: Any, send: Any) -> None:
        handed.append(route_receive)
        while True:
            message = await route_receive()
            read.append(message)
            if message["type"] == "http.disconnect":
                return

    async def send(message: Any) -> None:
        raise AssertionError(f"the gate answered: {message}")

    gate = RequestGate(route, Settings(data_dir=tmp_path))
    await gate(gate_scope(method, headers), receive, send)
    return receive, handed, read


@pytest.mark.parametrize("method", ["GET", "HEAD"])
async def test_a_read_without_a_body_reaches_the_route_on_the_servers_own_receive(
    tmp_path: Path, method: str
) -> None:
    """The cache-hit path: no body read and replayed, no extra turn per request."""
    server_receive, handed, read = await through_the_gate(
        tmp_path,
        method,
        [],
        [{"type": "http.request", "body": b"", "more_body": False}, {"type": "http.disconnect"}],
    )

    assert handed == [server_receive]
    assert [m["type"] for m in read] == ["http.request", "http.disconnect"]


@pytest.mark.parametrize(
    ("method", "headers"),
    [
        ("DELETE", []),
        ("GET", [(b"content-length", b"3")]),
        ("GET", [(b"transfer-encoding", b"chunked")]),
    ],
)
async def test_a_body_is_read_once_and_then_the_route_hears_the_servers_disconnect(
    tmp_path: Path, method: str, headers: list[tuple[bytes, bytes]]
) -> None:
    server_receive, handed, read = await through_the_gate(
        tmp_path,
        method,
        headers,
        [{"type": "http.request", "body": b"abc", "more_body": False}, {"type": "http.disconnect"}],
    )

    assert handed != [server_receive]
    assert read == [
        {"type": "http.request", "body": b"abc", "more_body": False},
        {"type": "http.disconnect"},
    ]


async def test_asgi_messages_without_body_or_more_body_read_as_empty_and_final(
    tmp_path: Path,
) -> None:
    """ASGI makes both keys optional: ``body`` defaults to empty, ``more_body`` to false."""
    _, _, read = await through_the_gate(
        tmp_path,
        "POST",
        [(b"transfer-encoding", b"chunked")],
        [
            {"type": "http.request", "more_body": True},
            {"type": "http.request", "body": b"abc"},
            {"type": "http.disconnect"},
        ],
    )

    assert read[0]["body"] == b"abc"
    assert read[1] == {"type": "http.disconnect"}


# What every response carries -------------------------------------------------------------


async def test_every_response_says_nosniff_and_an_unhandled_error_is_a_json_500(
    gated: Gated, caplog: pytest.LogCaptureFixture
) -> None:
    client, _, _ = gated
    ok = await client.get("/healthz")
    with caplog.at_level(logging.ERROR, logger="app.middleware"):
        broken = await client.get("/boom")

    assert ok.headers["x-content-type-options"] == "nosniff"
    assert broken.status_code == 500
    assert broken.json() == {
        "error": {"code": "internal_error", "message": "internal server error"}
    }
    assert broken.headers["cache-control"] == "no-store"
    assert broken.headers["x-content-type-options"] == "nosniff"
    assert "a bug" not in broken.text
    assert [r.getMessage() for r in caplog.records if r.name == "app.middleware"] == [
        "unhandled error in GET /boom"
    ]


def count(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def test_requests_are_counted_by_route_template_method_status_and_cache(
    gated: Gated,
) -> None:
    client, _, _ = gated
    route = {"route": "/v1/images/{image_id}", "method": "GET", "status": "200"}
    invented = {"route": "/healthz", "method": "other", "status": "405"}
    before = {
        "route": count("srstore_http_request_seconds_count", **route),
        "invented": count("srstore_http_request_seconds_count", **invented),
        "missing": count(
            "srstore_http_request_seconds_count", route="unmatched", method="GET", status="404"
        ),
        "hit": count("srstore_fetch_seconds_count", cache="hit"),
        "broken": count(
            "srstore_http_request_seconds_count", route="/boom", method="GET", status="500"
        ),
    }

    await client.get("/v1/images/a")
    await client.get("/v1/images/b")
    await client.request("BREW", "/healthz")
    await client.get("/nowhere")
    await client.get("/v1/images/a/hit")
    await client.get("/boom")

    assert count("srstore_http_request_seconds_count", **route) == before["route"] + 2
    assert count("srstore_http_request_seconds_count", **invented) == before["invented"] + 1
    assert (
        count("srstore_http_request_seconds_count", route="unmatched", method="GET", status="404")
        == before["missing"] + 1
    )
    assert count("srstore_fetch_seconds_count", cache="hit") == before["hit"] + 1
    assert (
        count("srstore_http_request_seconds_count", route="/boom", method="GET", status="500")
        == before["broken"] + 1
    )


async def test_a_sane_request_id_is_echoed_and_any_other_replaced(gated: Gated) -> None:
    client, _, seen = gated
    given = "req-1.a:b/c+d=e@f_g"
    echoed = await client.get("/healthz", headers={"x-request-id": given})
    longest = await client.get("/healthz", headers={"x-request-id": "r" * 128})
    replaced = [
        await client.get("/healthz", headers={"x-request-id": bad})
        for bad in ("r" * 129, "has space", "semi;colon", "")
    ]
    fresh = await client.get("/healthz")

    assert echoed.headers["x-request-id"] == given
    assert seen[0]["request_id"] == given  # what the logs of the request carry
    assert longest.headers["x-request-id"] == "r" * 128
    for response in [*replaced, fresh]:
        new = response.headers["x-request-id"]
        assert len(new) == 32 and int(new, 16) >= 0
    assert len({r.headers["x-request-id"] for r in [*replaced, fresh]}) == 5
    assert REQUEST_ID.get() is None  # nothing leaks past the request


async def test_a_refusal_carries_the_request_id_too(gated: Gated) -> None:
    client, _, _ = gated
    response = await client.delete("/v1/images/x", headers={"x-request-id": "abc"})

    assert response.status_code == 401
    assert response.headers["x-request-id"] == "abc"


@pytest.mark.parametrize("kind", ["lifespan", "websocket"])
@pytest.mark.parametrize("middleware", ["gate", "headers", "request_id"])
async def test_a_lifespan_or_websocket_scope_is_handed_on_untouched(
    tmp_path: Path, kind: str, middleware: str
) -> None:
    """Start-up and shut-down (and any websocket) reach the application as the server sent
    them: none of these middlewares is for them."""
    handed: list[tuple[Any, Any, Any]] = []

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        handed.append((scope, receive, send))

    async def receive() -> Any:
        return {"type": f"{kind}.startup" if kind == "lifespan" else "websocket.connect"}

    async def send(message: Any) -> None:
        raise AssertionError(f"the middleware answered: {message}")

    wrapped = {
        "gate": lambda: RequestGate(inner, Settings(data_dir=tmp_path)),
        "headers": lambda: ResponseHeadersAndMetrics(inner),
        "request_id": lambda: RequestId(inner),
    }[middleware]()
    scope = {"type": kind, "asgi": {"version": "3.0"}, "path": "/ws", "headers": []}
    await wrapped(scope, receive, send)

    assert handed == [(scope, receive, send)]


def fetches_counted() -> float:
    """Every ``srstore_fetch_seconds`` observation, whatever its ``cache`` label."""
    return sum(
        sample.value
        for metric in REGISTRY.collect()
        if metric.name == "srstore_fetch_seconds"
        for sample in metric.samples
        if sample.name == "srstore_fetch_seconds_count"
    )


async def drive(
    app: Any, sent: list[Any], headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """One HTTP GET straight through the middleware ``app``, what it sends collected in
    ``sent``."""

    async def receive() -> Any:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/raw", "query_string": b""}
    await app({**scope, "headers": headers or []}, receive, send)


async def test_a_response_start_without_headers_still_gets_nosniff_and_no_fetch_count() -> None:
    """ASGI makes ``headers`` optional; a response without ``X-Cache`` is no image fetch."""

    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204})
        await send({"type": "http.response.body", "body": b""})

    fetches = fetches_counted()
    sent: list[Any] = []
    await drive(ResponseHeadersAndMetrics(bare), sent)

    assert sent[0]["headers"] == [(b"x-content-type-options", b"nosniff")]
    assert fetches_counted() == fetches


async def test_an_app_that_answers_nothing_is_counted_as_a_500_and_no_fetch() -> None:
    async def silent(scope: Any, receive: Any, send: Any) -> None:
        return None

    labels = {"route": "unmatched", "method": "GET", "status": "500"}
    before, fetches = count("srstore_http_request_seconds_count", **labels), fetches_counted()
    await drive(ResponseHeadersAndMetrics(silent), [])

    assert count("srstore_http_request_seconds_count", **labels) == before + 1
    assert fetches_counted() == fetches


async def test_an_error_after_the_response_started_is_raised_not_answered_twice() -> None:
    """The status line is gone: a second response would corrupt the stream. The server
    closes the connection; the request is counted under the status it had."""

    async def fails_mid_body(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("a bug mid-body")

    labels = {"route": "unmatched", "method": "GET", "status": "200"}
    before = count("srstore_http_request_seconds_count", **labels)
    sent: list[Any] = []
    with pytest.raises(RuntimeError, match="a bug mid-body"):
        await drive(ResponseHeadersAndMetrics(fails_mid_body), sent)

    assert [message["type"] for message in sent] == ["http.response.start"]
    assert count("srstore_http_request_seconds_count", **labels) == before + 1


async def test_a_request_is_timed_from_its_own_start() -> None:
    """Microseconds here; 10 s leaves room for a loaded machine and none for a clock's
    absolute reading (seconds since boot) counted as a duration."""

    async def quick(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    labels = {"route": "unmatched", "method": "GET", "status": "204"}
    before = count("srstore_http_request_seconds_sum", **labels)
    await drive(ResponseHeadersAndMetrics(quick), [])

    assert 0 < count("srstore_http_request_seconds_sum", **labels) - before < 10


async def raw(
    app: Any, method: str, path: str, headers: list[tuple[bytes, bytes]], **scope: Any
) -> tuple[int, int]:
    """One request as a server hands it over, with ``scope`` keys added or (None) left out:
    the status answered, and how many times the body was read."""
    reads = 0

    async def receive() -> Any:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"{}", "more_body": False}

    statuses: list[int] = []

    async def send(message: Any) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    full = gate_scope(method, headers) | {"path": path, "raw_path": path.encode()} | scope
    await app({k: v for k, v in full.items() if v is not None}, receive, send)
    return statuses[0], reads


async def test_a_declared_length_over_the_limit_is_413_before_a_byte_is_read(
    tmp_path: Path,
) -> None:
    app, _, seen = build(Settings(data_dir=tmp_path))
    too_long = str(CONTROL_BODY_LIMIT + 1).encode()
    status, reads = await raw(app, "PUT", "/healthz", [(b"content-length", too_long)])

    assert (status, reads, seen) == (413, 0, [])


async def test_a_caller_without_a_client_address_is_looked_up_without_one(
    tmp_path: Path,
) -> None:
    """ASGI leaves ``client`` optional (a Unix socket has none)."""
    app, access, _ = build(Settings(data_dir=tmp_path))
    status, _ = await raw(
        app, "DELETE", "/v1/images/x", [(b"authorization", b"Bearer good")], client=None
    )

    assert status == 200
    assert access.calls[-1]["peer"] is None


async def test_the_request_id_is_added_to_a_response_start_without_headers() -> None:
    async def bare(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 204})

    sent: list[Any] = []
    await drive(RequestId(bare), sent, [(b"x-request-id", b"abc-123")])

    assert sent[0]["headers"] == [(b"x-request-id", b"abc-123")]  # ASGI: names lower-case
