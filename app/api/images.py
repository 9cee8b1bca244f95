"""``/v1/images``: upload, list, fetch at full resolution, stored copy, metadata, delete."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response, status

from app.api.uploads import read_upload
from app.deps import ImageServiceDep, SettingsDep
from app.errors import error_responses
from app.services.images import ImagePage
from render.images import ImageMeta

router = APIRouter(prefix="/v1/images", tags=["images"])
MAX_PAGE = 100

_IMAGE_CONTENT = {"image/*": {"schema": {"type": "string", "format": "binary"}}}
_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "properties": {"file": {"type": "string", "format": "binary"}},
                    "required": ["file"],
                }
            },
            **_IMAGE_CONTENT,
        },
    }
}


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=ImageMeta,
    openapi_extra=_UPLOAD_BODY,
    responses=error_responses(400, 413, 415, 422, 503),
    summary="Upload an image (multipart field 'file', or a raw image/* body)",
)
async def upload_image(
    request: Request, response: Response, images: ImageServiceDep, settings: SettingsDep
) -> ImageMeta:
    data = await read_upload(request, settings.max_upload_bytes)
    meta = await images.upload(data)
    response.headers["Location"] = f"/v1/images/{meta.id}"
    return meta


@router.get(
    "",
    response_model=ImagePage,
    responses=error_responses(400, 422, 503),
    summary="A page of stored images, in id order",
)
async def list_images(
    images: ImageServiceDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Images on this page.")] = 24,
    cursor: Annotated[
        str | None, Query(description="The previous page's next_cursor; omit for the first.")
    ] = None,
) -> ImagePage:
    return await images.list_images(limit, cursor)


_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _IMAGE_CONTENT},
    304: {"description": "Not modified"},
    **error_responses(400, 404, 422, 503),
}
_IDENTIFIED = error_responses(400, 404, 503)


@router.get(
    "/{image_id}",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
    summary="The image at its original size, rebuilt by super-resolution",
)
async def get_image(
    image_id: str,
    images: ImageServiceDep,
    settings: SettingsDep,
    format: Annotated[
        Literal["jpeg", "png", "webp"] | None,
        Query(description="Output format; the upload's own format when omitted."),
    ] = None,
    quality: Annotated[int | None, Query(ge=1, le=100, description="JPEG/WebP quality.")] = None,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    rendition = await images.fetch(image_id, format, quality, if_none_match)
    headers = {
        "ETag": rendition.etag,
        "Cache-Control": f"public, max-age={settings.http_max_age_seconds}",
        "X-Cache": rendition.cache,
        "X-Model-Version": rendition.model,
    }
    if rendition.not_modified:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(rendition.data, media_type=rendition.media_type, headers=headers)


router.add_api_route(
    "/{image_id}",
    get_image,
    methods=["HEAD"],
    name="head_image",
    response_class=Response,
    responses=_IMAGE_RESPONSES,
    summary="The headers GET would send, without the body",
)


@router.get(
    "/{image_id}/stored",
    response_class=Response,
    responses={200: {"content": _IMAGE_CONTENT}, **_IDENTIFIED},
    summary="The stored low-resolution copy, byte for byte",
)
async def get_stored(image_id: str, images: ImageServiceDep) -> Response:
    data, media_type = await images.stored(image_id)
    return Response(data, media_type=media_type)


@router.get(
    "/{image_id}/meta",
    response_model=ImageMeta,
    responses=_IDENTIFIED,
    summary="What srstore knows of an image",
)
async def get_meta(image_id: str, images: ImageServiceDep) -> ImageMeta:
    return await images.meta(image_id)


@router.delete(
    "/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=_IDENTIFIED,
    summary="Delete the stored copy and every cached rendition",
)
async def delete_image(image_id: str, images: ImageServiceDep) -> Response:
    await images.delete(image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
