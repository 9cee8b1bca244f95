"""Reading an upload body with a hard size limit, as multipart or as a raw image body.

Both paths count bytes as they arrive and stop reading at the limit, so an oversized body
is refused after at most ``limit`` bytes (plus the multipart allowance) have been read.
"""

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
    if multipart:
        data = await _file_field(request, limit + MULTIPART_OVERHEAD)
    else:
        data = await _read_limited(request, limit)
    if len(data) > limit:
        raise BodyTooLarge(f"the image exceeds the {limit}-byte upload limit")
    return data


def _refuse_declared_length(request: Request, limit: int) -> None:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body exceeds the {limit}-byte upload limit")


async def _read_limited(request: Request, limit: int) -> bytes:
    _refuse_declared_length(request, limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body exceeds the {limit}-byte upload limit")
    return bytes(body)


async def _file_field(request: Request, limit: int) -> bytes:
    """Parse the multipart body as it streams in, counting bytes in the receive channel."""
    _refuse_declared_length(request, limit)
    received = 0

    async def limited_receive() -> Message:
        nonlocal received
        message = await request.receive()
        if message["type"] == "http.request":
            received += len(message.get("body", b""))
            if received > limit:
                raise BodyTooLarge(f"the body exceeds the {limit}-byte upload limit")
        return message

    form = await Request(request.scope, limited_receive).form(max_files=1, max_fields=8)
    try:
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise BadRequest("the multipart body has no file field named 'file'")
        return await upload.read()
    finally:
        await form.close()
