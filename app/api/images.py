"""``/v1/images``: upload, list, fetch at full resolution, stored copy, metadata, delete."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response, status

from app import metrics
from app.access import Principal, costly_options_allowed
from app.api.uploads import read_upload
from app.audit import audit
from app.deps import AccessDep, ClientDep, ImageServiceDep, PrincipalDep, SettingsDep
from app.errors import Forbidden, error_response, error_responses
from app.services.conditional import (
    Preconditions,
    RangeNotSatisfiable,
    byte_range,
    http_date,
    not_modified,
)
from app.services.images import ImagePage, meta_etag
from app.services.renditions import RenditionRequest, verify_signature
from config.settings import Settings
from imaging import Fit, OutputFormat
from policy import Floor, StoragePolicy
from render import costs
from render.images import ImageMeta

router = APIRouter(prefix="/v1/images", tags=["images"])
MAX_PAGE = 100

MAX_SIDE = 16_384  # the largest w or h accepted at all; the pixel limit bounds w x h
MAX_DPR = 4.0

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
    responses=error_responses(400, 413, 415, 422, 429, 503),
    summary="Upload an image (multipart field 'file', or a raw image/* body)",
    description="The image belongs to the tenant of the key that uploads it. `policy` and "
    "`floor` cost CPU: a key needs `costly_options` to ask for them, a caller without a key "
    "SRSTORE_ANONYMOUS_COSTLY_OPTIONS.",
)
async def upload_image(
    request: Request,
    response: Response,
    images: ImageServiceDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    access: AccessDep,
    policy: Annotated[
        StoragePolicy | None,
        Query(description="Storage policy for this upload; SRSTORE_STORAGE_POLICY if omitted."),
    ] = None,
    floor: Annotated[
        str | None,
        Query(
            description="Quality floor, psnr:<dB> or ssim:<0..1>; SRSTORE_QUALITY_FLOOR if omitted."
        ),
    ] = None,
) -> ImageMeta:
    quality_floor = Floor.parse(floor) if floor is not None else None
    if (policy is not None or floor is not None) and not costly_options_allowed(
        principal, settings
    ):
        raise Forbidden(
            "uploads without an API key may not ask for policy= or floor= "
            "(SRSTORE_ANONYMOUS_COSTLY_OPTIONS)"
            if principal.key_id is None
            else "this key may not ask for policy= or floor= (costly_options)"
        )
    data = await read_upload(request, settings.max_upload_bytes)
    await access.spend_bytes(principal, len(data))
    with costs.account("ingest") as ingest:
        meta = await images.upload(data, policy, quality_floor, tenant=principal.owner)
    await access.spent_cpu(principal, ingest.seconds)
    if principal.record is not None:
        metrics.KEY_UPLOADS.labels(principal.record.id).inc()
        metrics.KEY_UPLOAD_BYTES.labels(principal.record.id).inc(len(data))
    response.headers["Location"] = f"/v1/images/{meta.id}"
    return meta


def _header(description: str) -> dict[str, object]:
    return {"description": description, "schema": {"type": "string"}}


_IMAGE_HEADERS = {
    "ETag": _header("Strong tag of the rendition: image, model, size, format, quality, encoder."),
    "Last-Modified": _header("The upload time (If-Modified-Since compares with it)."),
    "Cache-Control": _header(
        "public, max-age=SRSTORE_HTTP_MAX_AGE_SECONDS; SRSTORE_HTTP_DEGRADED_MAX_AGE_SECONDS "
        "when bicubic served (X-Model-Version: bicubic)."
    ),
    "Vary": _header("Accept, whenever the format was negotiated (no format= given)."),
    "Accept-Ranges": _header("bytes"),
    "X-Cache": _header("HIT, MISS or BYPASS (cache down)."),
    "X-Model-Version": _header("The model that rendered it; none for a stored-copy thumbnail."),
}
_RANGE_ERRORS = {416: "The range lies outside the image's bytes"}
_IMAGE_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _IMAGE_CONTENT, "headers": _IMAGE_HEADERS},
    206: {"description": "One byte range of the image (`Range: bytes=first-last`)"},
    304: {"description": "Not modified: `If-None-Match` or `If-Modified-Since` matched"},
    **error_responses(
        400,
        404,
        422,
        429,
        503,
        described={
            403: "A signing key is configured and `sig` is missing or wrong",
            **_RANGE_ERRORS,
        },
    ),
}
_STORED_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": _IMAGE_CONTENT},
    206: {"description": "One byte range of the stored copy"},
    304: {"description": "Not modified"},
    **error_responses(400, 404, 503, described=_RANGE_ERRORS),
}


@router.get(
    "",
    response_model=ImagePage,
    responses=error_responses(400, 422, 503),
    summary="A page of stored images, in id order",
    description="The caller's tenant's images; an admin key sees every tenant's.",
)
async def list_images(
    images: ImageServiceDep,
    principal: PrincipalDep,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE, description="Images on this page.")] = 24,
    cursor: Annotated[
        str | None, Query(description="The previous page's next_cursor; omit for the first.")
    ] = None,
) -> ImagePage:
    return await images.list_images(limit, cursor, principal.only_tenant)


@router.api_route(
    "/{image_id}",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses=_IMAGE_RESPONSES,
    summary="The image at any permitted size and format, rebuilt by super-resolution",
    description=(
        "Without options: the upload's size and format. `w`/`h` ask for a size (times `dpr`): "
        "sizes at or below the stored copy are downscaled from it with no model run; larger "
        "ones are super-resolved, then resized, never beyond the upload's size unless "
        "`enlarge`. Without `format`, the format follows `Accept` (AVIF, else WebP, else the "
        "upload's own) and the response carries `Vary: Accept`."
    ),
)
async def get_image(
    request: Request,
    image_id: str,
    images: ImageServiceDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    client: ClientDep,
    w: Annotated[
        int | None, Query(ge=1, le=MAX_SIDE, description="Width in CSS pixels (times dpr).")
    ] = None,
    h: Annotated[
        int | None, Query(ge=1, le=MAX_SIDE, description="Height in CSS pixels (times dpr).")
    ] = None,
    fit: Annotated[
        Fit | None,
        Query(
            description="How the image fills a w x h box: inside (default; keeps the aspect "
            "ratio within the box), contain (the same, padded to the box), cover (fills the "
            "box, cropping the overflow), fill (stretched to the box)."
        ),
    ] = None,
    dpr: Annotated[
        float | None, Query(gt=0, le=MAX_DPR, description="Device pixel ratio, 1 by default.")
    ] = None,
    enlarge: Annotated[
        bool | None, Query(description="Allow a size beyond the upload's (pixel limit applies).")
    ] = None,
    format: Annotated[
        OutputFormat | None,
        Query(description="Output format; negotiated from Accept when omitted."),
    ] = None,
    quality: Annotated[
        int | None, Query(ge=1, le=100, description="JPEG/WebP/AVIF quality.")
    ] = None,
    sig: Annotated[
        str | None,
        Query(max_length=128, description="HMAC signature, when SRSTORE_URL_SIGNING_KEY is set."),
    ] = None,
    accept: Annotated[str, Header()] = "",
    if_none_match: Annotated[str | None, Header()] = None,
    if_modified_since: Annotated[str | None, Header()] = None,
    range: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    query = tuple(request.query_params.multi_items())
    owner = read_owner(principal, settings, image_id, query)
    options = RenditionRequest(w, h, fit, dpr, enlarge, format, quality, accept, sig, query)
    preconditions = Preconditions(if_none_match, if_modified_since)
    head = request.method == "HEAD"
    rendition = await images.fetch(
        image_id, options, preconditions, client, render=not head, owner=owner
    )
    max_age = (
        settings.http_degraded_max_age_seconds
        if rendition.degraded
        else settings.http_max_age_seconds
    )
    headers = {
        "ETag": rendition.etag,
        "Last-Modified": http_date(rendition.last_modified),
        "Cache-Control": f"public, max-age={max_age}",
        "Accept-Ranges": "bytes",
        "X-Cache": rendition.cache,
        "X-Model-Version": rendition.model,
    }
    if rendition.negotiated:
        headers["Vary"] = "Accept"
    if rendition.not_modified:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    if rendition.data is None:
        # A HEAD of a rendition not made yet: its type and validators from the plan, and no
        # Content-Length, since the bytes do not exist (RFC 9110 §9.3.2 allows that).
        response = Response(media_type=rendition.media_type, headers=headers)
        del response.headers["content-length"]
        return response
    # Last-Modified is the upload time, which a model swap leaves as it is while the bytes
    # change: a weak validator, so only the ETag can make If-Range serve a part (issue 26).
    return ranged(rendition.data, rendition.media_type, headers, range, if_range, None)


def read_owner(
    principal: Principal, settings: Settings, image_id: str, query: tuple[tuple[str, str], ...]
) -> str | None:
    """Whose images this caller may read: anyone's while reads are public, else its own
    tenant's (an admin: anyone's). A caller let in by a URL signature has it checked here."""
    if principal.signed_only:
        verify_signature(settings, image_id, query)
        return None
    return None if settings.public_read else principal.only_tenant


def ranged(
    data: bytes,
    media_type: str,
    headers: dict[str, str],
    range_header: str | None,
    if_range: str | None,
    last_modified: datetime | None,
) -> Response:
    """The whole body, or the one byte range asked for (``206``; ``416`` when outside).

    ``last_modified`` only where it is strong (see ``byte_range``)."""
    try:
        span = byte_range(range_header, if_range, len(data), headers["ETag"], last_modified)
    except RangeNotSatisfiable as exc:
        response = error_response(416, "range_not_satisfiable", str(exc))
        response.headers["Content-Range"] = f"bytes */{exc.length}"
        return response
    if span is None:
        return Response(data, media_type=media_type, headers=headers)
    first, last = span
    headers = {**headers, "Content-Range": f"bytes {first}-{last}/{len(data)}"}
    return Response(
        data[first : last + 1],
        status_code=status.HTTP_206_PARTIAL_CONTENT,
        media_type=media_type,
        headers=headers,
    )


def _validators(etag: str, last_modified: datetime, max_age: int) -> dict[str, str]:
    return {
        "ETag": etag,
        "Last-Modified": http_date(last_modified),
        "Cache-Control": f"public, max-age={max_age}",
    }


@router.api_route(
    "/{image_id}/stored",
    methods=["GET", "HEAD"],
    response_class=Response,
    responses=_STORED_RESPONSES,
    summary="The stored low-resolution copy, byte for byte",
)
async def get_stored(
    request: Request,
    image_id: str,
    images: ImageServiceDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    if_none_match: Annotated[str | None, Header()] = None,
    if_modified_since: Annotated[str | None, Header()] = None,
    range: Annotated[str | None, Header()] = None,
    if_range: Annotated[str | None, Header()] = None,
) -> Response:
    owner = read_owner(principal, settings, image_id, tuple(request.query_params.multi_items()))
    preconditions = Preconditions(if_none_match, if_modified_since)
    stored = await images.stored(image_id, preconditions, owner)
    headers = _validators(stored.etag, stored.last_modified, settings.http_max_age_seconds)
    headers["Accept-Ranges"] = "bytes"
    if stored.not_modified:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return ranged(stored.data, stored.media_type, headers, range, if_range, stored.last_modified)


@router.api_route(
    "/{image_id}/meta",
    methods=["GET", "HEAD"],
    response_model=ImageMeta,
    responses={304: {"description": "Not modified"}, **error_responses(400, 404, 503)},
    summary="What srstore knows of an image",
)
async def get_meta(
    request: Request,
    image_id: str,
    images: ImageServiceDep,
    settings: SettingsDep,
    principal: PrincipalDep,
    if_none_match: Annotated[str | None, Header()] = None,
    if_modified_since: Annotated[str | None, Header()] = None,
) -> Response:
    owner = read_owner(principal, settings, image_id, tuple(request.query_params.multi_items()))
    meta = await images.cached_meta(image_id, owner)
    etag = meta_etag(meta)
    headers = _validators(etag, meta.created_at, settings.http_max_age_seconds)
    if not_modified(Preconditions(if_none_match, if_modified_since), etag, meta.created_at):
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers=headers)
    return Response(meta.model_dump_json(), media_type="application/json", headers=headers)


@router.delete(
    "/{image_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    responses=error_responses(400, 404, 503),
    summary="Delete the stored copy and every cached rendition",
    description="Another tenant's image is not found (404): its id does not exist for you.",
)
async def delete_image(image_id: str, images: ImageServiceDep, principal: PrincipalDep) -> Response:
    await images.delete(image_id, principal.only_tenant)
    audit("image.delete", principal, image_id=image_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
