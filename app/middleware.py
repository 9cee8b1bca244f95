"""A pure ASGI middleware (no per-request task) for security headers and request metrics."""

from __future__ import annotations

import logging
import time

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app import metrics

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
