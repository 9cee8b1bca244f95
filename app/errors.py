"""Map what can go wrong to JSON error responses: ``{"error": {"code", "message"}}``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

from apikeys import KeyStoreUnavailable
from app.services.decoding import DecodeBusy
from app.services.images import InvalidCursor
from app.services.models import InvalidCard, NothingToRollBack, WorseThanActive
from app.services.queue import RenderFailed
from app.services.renditions import InvalidSignature, RenditionLimit, SizeNotAllowed
from app.services.work import ClientBusy, CpuBusy
from cache import CacheUnavailable
from imaging import ImageTooLarge, InvalidImage, InvalidSize, UnencodableFormat, UnsupportedImage
from models.control import ControlUnavailable, PointerMoved
from models.registry import ModelVersionExists, UnknownModelVersion
from models.validation import InvalidWeights
from policy import InvalidFloor
from render.admission import CompactionBacklogFull, QueueFull, RenderTimeout, Saturated
from render.images import ImageNotFound, InvalidImageId
from storage import StorageUnavailable

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    """The request is malformed in a way the route itself detects."""

    status = 400
    code = "bad_request"


class BodyTooLarge(BadRequest):
    status = 413
    code = "body_too_large"


class HeaderTooLarge(BadRequest):
    status = 431
    code = "header_too_large"


class UnsupportedMediaType(BadRequest):
    status = 415
    code = "unsupported_media_type"


class Unauthorized(BadRequest):
    status = 401
    code = "unauthorized"


class AdminDisabled(BadRequest):
    status = 403
    code = "admin_disabled"


class Forbidden(BadRequest):
    """The caller is known, and its key does not allow this."""

    status = 403
    code = "forbidden"


class NotFound(BadRequest):
    status = 404
    code = "not_found"


class Unprocessable(BadRequest):
    status = 422
    code = "invalid_request"


class KeysUnavailable(BadRequest):
    """The key store did not answer: nobody can be told apart, so nobody is let in."""

    status = 503
    code = "keys_unavailable"


class RateLimited(BadRequest):
    """A key's quota is spent; ``retry_after`` says when the window that holds it ends."""

    status = 429
    code = "rate_limited"

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


_DOMAIN_ERRORS: dict[type[Exception], tuple[int, str]] = {
    ImageTooLarge: (413, "image_too_large"),
    UnsupportedImage: (415, "unsupported_media_type"),
    InvalidImage: (422, "invalid_image"),
    UnencodableFormat: (422, "unencodable_format"),
    InvalidImageId: (400, "invalid_id"),
    InvalidSize: (422, "invalid_size"),
    SizeNotAllowed: (400, "size_not_allowed"),
    InvalidSignature: (403, "invalid_signature"),
    InvalidCursor: (400, "invalid_cursor"),
    InvalidFloor: (422, "invalid_floor"),
    ImageNotFound: (404, "not_found"),
    InvalidCard: (422, "invalid_card"),
    InvalidWeights: (422, "invalid_weights"),
    UnknownModelVersion: (404, "unknown_model_version"),
    ModelVersionExists: (409, "model_version_exists"),
    WorseThanActive: (409, "worse_than_active"),
    NothingToRollBack: (409, "nothing_to_roll_back"),
    PointerMoved: (409, "active_model_changed"),
    ControlUnavailable: (503, "control_unavailable"),
    StorageUnavailable: (503, "storage_unavailable"),
    CacheUnavailable: (503, "cache_unavailable"),
    KeyStoreUnavailable: (503, "keys_unavailable"),
    QueueFull: (503, "queue_full"),
    CompactionBacklogFull: (503, "compaction_backlog_full"),
    DecodeBusy: (503, "decode_busy"),
    RenderTimeout: (503, "render_timeout"),
    RenderFailed: (503, "render_failed"),
    CpuBusy: (503, "cpu_busy"),
    ClientBusy: (429, "client_busy"),
    RenditionLimit: (429, "rendition_limit"),
}


# What a client is told when a dependency is down: the cause (endpoint URLs, hosts, ports)
# goes to the log only.
_UNAVAILABLE_MESSAGES = {
    "storage_unavailable": "the object store is unavailable; retry later",
    "cache_unavailable": "the cache is unavailable; retry later",
    "keys_unavailable": "the key store is unavailable; retry later",
    "control_unavailable": "the model registry is unavailable; retry later",
    "queue_full": "too many images are waiting to be rendered; retry later",
    "decode_busy": "too many uploads are being decoded; retry later",
    "compaction_backlog_full": "too many uploads are waiting for compaction; retry later",
    "render_timeout": "the image could not be rendered in time; retry later",
    "render_failed": "the image could not be rendered; retry later",
    "cpu_busy": "too much image work is under way; retry later",
}


class ErrorDetail(BaseModel):
    code: str = Field(description="Stable machine-readable reason, e.g. not_found, queue_full.")
    message: str = Field(description="What went wrong, for a person.")


class ErrorEnvelope(BaseModel):
    """The body of every error answer."""

    error: ErrorDetail


_STATUS_MEANINGS = {
    400: "Malformed request or image id",
    401: "No API key where one is needed, or an unknown or revoked one (see README, Keys and"
    " access)",
    403: "The key lacks the scope this route needs, or the admin API is off",
    404: "No such image or model version",
    409: "Conflicts with the registry's state (version exists, scores worse, nothing to undo)",
    413: "Body or image too large",
    415: "Not a supported image type",
    431: "A request header is longer than SRSTORE_MAX_HEADER_BYTES",
    422: "Corrupt image, or an invalid query, body, card or weight file",
    429: "This client holds its share of the CPU work, the image its quota of renditions, or"
    " the key its quota (rate_limited); retry after Retry-After seconds",
    500: "Unexpected failure (internal_error); the answer names no internals",
    503: "A dependency is down or renders are saturated; retry after Retry-After seconds",
}
_RETRY_AFTER = {
    "Retry-After": {
        "description": "Seconds to wait before retrying",
        "schema": {"type": "integer", "minimum": 1},
    }
}
_HEADERS: dict[int, dict[str, Any]] = {
    401: {"WWW-Authenticate": {"description": "Bearer", "schema": {"type": "string"}}},
    429: _RETRY_AFTER,
    503: _RETRY_AFTER,
}


def error_responses(
    *statuses: int, described: dict[int, str] | None = None
) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, each with the real error envelope.

    ``described`` adds statuses whose meaning is the route's own.
    """
    meanings = {**{s: _STATUS_MEANINGS[s] for s in statuses}, **(described or {})}
    return {
        status: {
            "model": ErrorEnvelope,
            "description": meaning,
            **({"headers": _HEADERS[status]} if status in _HEADERS else {}),
        }
        for status, meaning in sorted(meanings.items())
    }


OUTAGE_RETRY_AFTER = 5  # seconds a client waits out a dependency outage


def error_response(
    status: int, code: str, message: str, retry_after: int = OUTAGE_RETRY_AFTER
) -> JSONResponse:
    """An error is never stored by a cache: the next request may well succeed."""
    headers = {"Cache-Control": "no-store"}
    if status in (429, 503):
        headers["Retry-After"] = str(retry_after)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


def install_error_handlers(app: FastAPI) -> None:
    async def domain_error(_: Request, exc: Exception) -> JSONResponse:
        status, code = _DOMAIN_ERRORS[type(exc)]
        message = "no image with this id" if isinstance(exc, ImageNotFound) else str(exc)
        if status == 503:
            log.warning("dependency unavailable: %s", exc)
            message = _UNAVAILABLE_MESSAGES.get(code, "a dependency is unavailable; retry later")
        if isinstance(exc, Saturated):
            return error_response(status, code, message, exc.retry_after)
        return error_response(status, code, message)

    async def bad_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, BadRequest)
        retry_after = getattr(exc, "retry_after", OUTAGE_RETRY_AFTER)
        response = error_response(exc.status, exc.code, str(exc), retry_after)
        if exc.status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        if isinstance(exc, BodyTooLarge):
            # The rest of the body was never read: close instead of draining it (a refused
            # upload used to read a 256 MiB chunked body to its end).
            response.headers["Connection"] = "close"
        return response

    async def invalid_request(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        return error_response(422, "invalid_request", problems)

    async def http_error(_: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, HTTPException)
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        response = error_response(exc.status_code, code, str(exc.detail))
        response.headers.update(exc.headers or {})
        return response

    for error_type in _DOMAIN_ERRORS:
        app.add_exception_handler(error_type, domain_error)
    app.add_exception_handler(BadRequest, bad_request)
    app.add_exception_handler(RequestValidationError, invalid_request)
    app.add_exception_handler(HTTPException, http_error)
