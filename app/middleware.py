"""Pure ASGI middlewares (no per-request task): security headers and request metrics; who
may call a route and body limits, checked before the application reads a byte of the body;
the request id."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.datastructures import Headers
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from app.access import Access, required_scope
from app.errors import (
    OUTAGE_RETRY_AFTER,
    BadRequest,
    BodyTooLarge,
    HeaderTooLarge,
    error_response,
)
from config.logs import REQUEST_ID
from config.settings import Settings

log = logging.getLogger(__name__)


# Methods a client may name freely; any other token is counted as "other", so a client that
# invents methods cannot grow /metrics (10,000 invented methods once made it 17.9 MB).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


def method_label(method: str) -> str:
    return method if method in KNOWN_METHODS else "other"


class ResponseHeadersAndMetrics:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500
        cache = b""
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, cache, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                headers = message.get("headers", [])
                cache = next((value for name, value in headers if name == b"x-cache"), b"")
                message["headers"] = [*headers, (b"x-content-type-options", b"nosniff")]
            await send(message)

        try:
            await self.app(scope, receive, send_with_headers)
        except Exception:
            # The last resort is still a JSON error with the security headers, never a
            # traceback or Starlette's plain-text 500 (which this middleware would not see).
            if response_started:
                raise
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            error = {"error": {"code": "internal_error", "message": "internal server error"}}
            response = JSONResponse(error, 500, headers={"Cache-Control": "no-store"})
            await response(scope, receive, send_with_headers)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            elapsed = time.perf_counter() - started
            method = method_label(scope["method"])
            metrics.REQUEST_SECONDS.labels(route, method, str(status)).observe(elapsed)
            if cache:
                metrics.FETCH_SECONDS.labels(cache.decode().lower()).observe(elapsed)


UPLOAD_PATH = "/v1/images"
MODEL_UPLOAD_PATH = "/v1/admin/models"
CONTROL_BODY_LIMIT = 64 * 1024  # every other route takes a small JSON body or none


class RequestGate:
    """What is refused from the request line and headers alone, before any body is read.

    First a header longer than ``SRSTORE_MAX_HEADER_BYTES`` (431), before any route parses it.
    Who may call the route is decided here (``app.access``), not in a route dependency:
    FastAPI reads and parses a route's body (spooling a multipart file to disk) before it
    runs the dependencies. The caller is left in the request's state as ``principal``. Then a
    body limit per route: the image upload streams under its own limit (``app.api.uploads``);
    a model upload may carry ``SRSTORE_MAX_MODEL_UPLOAD_BYTES``; every other route 64 KiB.
    Those bodies are read here, counted, and handed on whole.
    """

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        oversized = _oversized_header(scope["headers"], self.settings.max_header_bytes)
        if oversized is not None:
            await _refuse(oversized, scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        headers = Headers(scope=scope)
        needed = required_scope(method, path)
        if needed is not None:
            authorization = headers.get("authorization")
            # A public read without credentials: no lookup at all (the cache-hit path).
            if authorization is not None or needed != "read" or not self.settings.public_read:
                access: Access = scope["app"].state.access
                client = scope.get("client")
                try:
                    principal = await access.principal(
                        needed,
                        authorization,
                        client[0] if client else None,
                        headers.get("x-forwarded-for") or headers.get("forwarded"),
                        signed=b"sig=" in scope.get("query_string", b""),
                    )
                    if needed == "upload":
                        await access.admit_upload(principal)
                except BadRequest as refusal:
                    await _refuse(refusal, scope, receive, send)
                    return
                scope.setdefault("state", {})["principal"] = principal
        if (method == "POST" and path == UPLOAD_PATH) or _bodiless_read(method, headers):
            # The upload streams under its own limit; a read without a body has nothing to
            # count, so a cache hit passes untouched (no body read, no replayed receive).
            await self.app(scope, receive, send)
            return
        limit = self._limit(method, path)
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            await _refuse(_too_large(limit), scope, receive, send)
            return
        body = await _read_body(receive, limit)
        if body is None:
            await _refuse(_too_large(limit), scope, receive, send)
            return
        await self.app(scope, _replay(body, receive), send)

    def _limit(self, method: str, path: str) -> int:
        if method == "POST" and path == MODEL_UPLOAD_PATH:
            return self.settings.max_model_upload_bytes
        return CONTROL_BODY_LIMIT


def _oversized_header(raw: list[tuple[bytes, bytes]], limit: int) -> HeaderTooLarge | None:
    """One length comparison per header: cheap enough for every request, cache hits included."""
    for name, value in raw:
        if len(value) > limit:
            return HeaderTooLarge(
                f"the {name[:64].decode('latin-1')} header is {len(value)} bytes; at most {limit} "
                "are read (SRSTORE_MAX_HEADER_BYTES)"
            )
    return None


def _bodiless_read(method: str, headers: Headers) -> bool:
    """A GET or HEAD framed without a body (RFC 9112 §6.3: no length, no transfer coding)."""
    return (
        method in ("GET", "HEAD")
        and "content-length" not in headers
        and "transfer-encoding" not in headers
    )


def _too_large(limit: int) -> BodyTooLarge:
    return BodyTooLarge(f"the body exceeds this route's {limit}-byte limit")


async def _refuse(error: BadRequest, scope: Scope, receive: Receive, send: Send) -> None:
    retry_after = getattr(error, "retry_after", OUTAGE_RETRY_AFTER)
    response = error_response(error.status, error.code, str(error), retry_after)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = "Bearer"
    # The unread body cannot be skipped: close the connection instead of reading it.
    response.headers["Connection"] = "close"
    await response(scope, receive, send)


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or ``None`` as soon as it passes ``limit`` (the rest is never read)."""
    body = bytearray()
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return bytes(body)  # the client went away: the app sees an empty body
        body += message.get("body", b"")
        if len(body) > limit:
            return None
        if not message.get("more_body", False):
            return bytes(body)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if sent:
            return await receive()  # waits for the disconnect, as the server's would
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    return replay


_CLIENT_REQUEST_ID = re.compile(rb"^[A-Za-z0-9._:/+=@-]{1,128}$")


class RequestId:
    """Each request's id: the client's ``X-Request-ID`` when sane, else a new one.

    It is echoed in the response, written on every log line of the request, and handed to
    the worker that renders the request's miss.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"")
        request_id = given.decode() if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex
        token = REQUEST_ID.set(request_id)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode()),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            REQUEST_ID.reset(token)
