"""A pure ASGI middleware (no per-request task) for security headers and request metrics."""

from __future__ import annotations

import logging
import re
import time
import uuid

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics
from config.logs import REQUEST_ID

log = logging.getLogger(__name__)


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
                cache = dict(message.get("headers", [])).get(b"x-cache", b"")
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-content-type-options", b"nosniff"),
                ]
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
            metrics.REQUEST_SECONDS.labels(route, scope["method"], str(status)).observe(elapsed)
            if cache:
                metrics.FETCH_SECONDS.labels(cache.decode().lower()).observe(elapsed)


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
        given = dict(scope["headers"]).get(b"x-request-id", b"")
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
