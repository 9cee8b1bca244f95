"""What every route gets after the app is assembled: ``HEAD`` wherever ``GET`` is answered,
and a Content-Security-Policy on the API's documentation pages.

FastAPI answers only the methods a route names, so ``HEAD /healthz`` (a load balancer's
probe) or ``HEAD /docs`` was a 405 (RFC 9110 §9.3.2 asks for HEAD wherever GET is). The
documentation pages come from ``fastapi_offline`` without any CSP or ``frame-ancestors``, so
they could be framed by any site; their inline scripts are allowed by hash only.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

DOCS_PATHS = frozenset({"/docs", "/redoc", "/docs/oauth2-redirect"})

# Our own HTML (Swagger UI's and ReDoc's templates), never a client's: a lazy match is fine.
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def answer_head_wherever_get(router: FastAPI | APIRouter) -> None:
    """``HEAD`` on every ``GET`` route; the server sends the headers without the body.

    Run on each router before it is included (FastAPI copies included routes lazily).
    """
    for route in router.routes:
        if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
            route.methods.add("HEAD")


def protect_docs(app: FastAPI) -> None:
    """Wrap only the documentation routes: no other request pays for the check."""
    for route in app.routes:
        if isinstance(route, APIRoute) and route.path in DOCS_PATHS:
            route.app = DocsPolicy(route.app)


def docs_policy(html: bytes) -> str:
    """Same origin only, nothing framing the page, and only these exact inline scripts."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'self'; script-src 'self' {hashes}; "
        # Swagger UI and ReDoc (styled-components) insert <style> elements as they render.
        "style-src 'self' 'unsafe-inline'; img-src 'self' data:; worker-src 'self' blob:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        "frame-ancestors 'none'"
    )


class DocsPolicy:
    """Buffers the page (a few KB of HTML) to hash its inline scripts into the policy."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        start: Message | None = None
        body = bytearray()

        async def collect(message: Message) -> None:
            nonlocal start
            if message["type"] == "http.response.start":
                start = message
                return
            body.extend(message.get("body", b""))
            if message.get("more_body", False) or start is None:
                return
            start["headers"] = [
                *(h for h in start.get("headers", []) if h[0].lower() != b"content-length"),
                (b"content-length", str(len(body)).encode()),
                (b"content-security-policy", docs_policy(bytes(body)).encode()),
                (b"x-frame-options", b"DENY"),
                (b"referrer-policy", b"no-referrer"),
            ]
            await send(start)
            await send({"type": "http.response.body", "body": bytes(body)})

        await self.app(scope, receive, collect)
