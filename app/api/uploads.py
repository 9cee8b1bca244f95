"""Reading an upload body with a hard size limit, as multipart or as a raw image body."""

from __future__ import annotations

from fastapi import Request
from starlette.datastructures import UploadFile
from starlette.types import Message

from app.errors import BadRequest, BodyTooLarge, UnsupportedMediaType

MULTIPART_OVERHEAD = 64 * 1024


async def read_upload(request: Request, limit: int) -> bytes:
    """The uploaded image's bytes; refuses an oversized body while it streams in."""
    content_type = request.headers.get("content-type", "").lower()
    multipart = content_type.startswith("multipart/form-data")
    if not multipart and not content_type.startswith("image/"):
        raise UnsupportedMediaType(
            "send the image as multipart field 'file' or as a body with an image/* content type"
        )
    body = await _read_limited(request, limit + (MULTIPART_OVERHEAD if multipart else 0))
    data = await _file_field(request, body) if multipart else body
    if len(data) > limit:
        raise BodyTooLarge(f"the image exceeds the {limit}-byte upload limit")
    return data


async def _read_limited(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body exceeds the {limit}-byte upload limit")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body exceeds the {limit}-byte upload limit")
    return bytes(body)


async def _file_field(request: Request, body: bytes) -> bytes:
    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    form = await Request(request.scope, replay).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("the multipart body has no file field named 'file'")
        return await upload.read()
    finally:
        await form.close()
