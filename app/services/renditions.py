"""Rendition options: what a client may ask for, and the one cache key and ETag it maps to.

Requests that produce the same bytes map to one :class:`~cache.CacheKey`, so one render and
one ETag serve them all: the upload's own format asked for explicitly, the default quality
asked for explicitly, and sizes that come out at the same pixels are the same rendition.
The key (and so the ETag) names everything that shapes the bytes: image, model version,
size and fit, format, quality and the encoder settings.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlencode

from cache import CacheKey
from config.settings import Settings
from imaging import (
    SCALE,
    Fit,
    Geometry,
    OutputEncoding,
    OutputFormat,
    UnencodableFormat,
    encodable,
    plan_geometry,
)
from models.engine import BICUBIC_LABEL
from render.admission import RETRY_AFTER_BOUNDS, Saturated

# Query parameters that name a rendition; with a signing key set, a URL using any needs `sig`.
OPTION_PARAMS = frozenset({"w", "h", "fit", "dpr", "enlarge", "format", "quality"})
SIGNATURE_PARAM = "sig"
STORED_COPY_LABEL = "none"  # the model of a rendition made from the stored copy alone
DEFAULT_FIT: Fit = "inside"


class InvalidSignature(ValueError):
    """A URL with rendition options is unsigned or badly signed (HTTP 403)."""


class SizeNotAllowed(ValueError):
    """An unsigned URL asks for a size outside ``SRSTORE_ALLOWED_WIDTHS`` (HTTP 400)."""


class RenditionLimit(Saturated):
    """This image already has its quota of distinct renditions for now (HTTP 429)."""


@dataclass(frozen=True)
class RenditionRequest:
    """The options of one read, validated by the route; ``None`` means not given."""

    width: int | None = None
    height: int | None = None
    fit: Fit | None = None
    dpr: float | None = None
    enlarge: bool | None = None
    fmt: OutputFormat | None = None
    quality: int | None = None
    accept: str = ""
    signature: str | None = None
    query: tuple[tuple[str, str], ...] = ()  # the raw query, for the signature

    @property
    def sized(self) -> bool:
        return self.width is not None or self.height is not None

    @property
    def has_options(self) -> bool:
        return any(name in OPTION_PARAMS for name, _ in self.query)

    def signed(self, settings: Settings) -> bool:
        """Whether the URL carries a signature (``check_access`` has verified it by then)."""
        return settings.url_signing_key is not None and self.signature is not None

    def box(self) -> tuple[float | None, float | None]:
        """The requested box in pixels: CSS pixels times the device pixel ratio."""
        dpr = self.dpr or 1.0
        return (
            None if self.width is None else self.width * dpr,
            None if self.height is None else self.height * dpr,
        )


@dataclass(frozen=True)
class RenditionPlan:
    """What to serve: the cache key, its ETag, and whether the model is needed at all."""

    key: CacheKey
    etag: str
    fmt: OutputFormat
    geometry: Geometry
    from_stored_copy: bool  # at or below the stored copy's size: no model runs
    negotiated: bool  # the format came from Accept, so the response varies on it
    degraded: bool  # bicubic serves because no model does


def sign(key: str, image_id: str, query: Iterable[tuple[str, str]]) -> str:
    """``sig`` for a URL: base64url HMAC-SHA256 of ``{id}?{query sorted, sig left out}``."""
    pairs = sorted((name, value) for name, value in query if name != SIGNATURE_PARAM)
    message = f"{image_id}?{urlencode(pairs)}".encode()
    digest = hmac.new(key.encode(), message, hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def verify_signature(settings: Settings, image_id: str, query: Iterable[tuple[str, str]]) -> None:
    """The URL's ``sig`` was made with the signing key for this image and these options."""
    pairs = tuple(query)
    given = next((value for name, value in pairs if name == SIGNATURE_PARAM), "")
    if settings.url_signing_key is None or not given:
        raise InvalidSignature("this URL must be signed (sig=)")
    expected = sign(settings.url_signing_key.get_secret_value(), image_id, pairs)
    if not hmac.compare_digest(expected.encode(), given.encode()):
        raise InvalidSignature("the URL's signature does not match its options")


def check_access(image_id: str, request: RenditionRequest, settings: Settings) -> None:
    """With a signing key, option URLs need a valid ``sig``; unsigned sizes obey the allow-list.

    A validly signed URL was made by the operator's own application, so the allow-list does
    not apply to it.
    """
    if settings.url_signing_key is not None and request.has_options:
        if not request.signature:
            raise InvalidSignature("this URL has rendition options and must be signed (sig=)")
        verify_signature(settings, image_id, request.query)
        return
    if settings.allowed_widths and request.sized:
        allowed = ", ".join(str(w) for w in sorted(settings.allowed_widths))
        width, _ = request.box()
        if request.height is not None or width is None or width not in settings.allowed_widths:
            raise SizeNotAllowed(f"ask for w= (times dpr) one of {allowed}, without h=")


def negotiate(accept: str, own: OutputFormat, avif_enabled: bool) -> OutputFormat:
    """AVIF when accepted (and enabled), else WebP when accepted, else the upload's format.

    Only explicit media types count: ``*/*`` or ``image/*`` get the upload's own format.
    """
    accepted = _accepted_types(accept)
    if avif_enabled and accepted.get("image/avif", 0.0) > 0:
        return "avif"
    if accepted.get("image/webp", 0.0) > 0:
        return "webp"
    return own


def _accepted_types(accept: str) -> dict[str, float]:
    types: dict[str, float] = {}
    for item in accept.split(","):
        media_type, *params = (part.strip() for part in item.split(";"))
        quality = 1.0
        for param in params:
            name, _, value = param.partition("=")
            if name.strip().lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        if media_type:
            types[media_type.lower()] = quality
    return types


def plan_rendition(
    image_id: str,
    width: int,
    height: int,
    own_format: OutputFormat,
    request: RenditionRequest,
    model_label: str,
    settings: Settings,
    source: str = "",
) -> RenditionPlan:
    """Canonicalise ``request`` against the image's size and format into one key and ETag;
    ``source`` names the stored copy it is made from (``ImageMeta.source``)."""
    encoding: OutputEncoding = settings.output_encoding
    fmt = request.fmt or negotiate(request.accept, own_format, settings.output_avif)
    box_width, box_height = request.box()
    enlarge = bool(request.enlarge)
    geometry = plan_geometry(
        width,
        height,
        box_width,
        box_height,
        request.fit or DEFAULT_FIT,
        enlarge,
        _output_bound(width * height, enlarge, settings),
    )
    fmt = _encodable_format(fmt, geometry.canvas, explicit=request.fmt is not None)
    full_size = geometry == Geometry.identity(width, height)
    from_stored = not full_size and geometry.fits_inside(width / SCALE, height / SCALE)
    key = CacheKey(
        image_id,
        STORED_COPY_LABEL if from_stored else model_label,
        fmt,
        encoding.quality_of(fmt, _quality(request, settings)),
        "" if full_size else geometry.token,
        encoding.settings_tag(fmt),
        source,
    )
    return RenditionPlan(
        key=key,
        etag=etag_of(str(key)),
        fmt=fmt,
        geometry=geometry,
        from_stored_copy=from_stored,
        negotiated=request.fmt is None,
        degraded=key.model == BICUBIC_LABEL,
    )


def _output_bound(image_pixels: int, enlarge: bool, settings: Settings) -> int:
    """Enlargements stop at ``SRSTORE_MAX_OUTPUT_PIXELS`` (or the image's own size, if larger):
    a 50-megapixel AVIF enlargement of a small upload cost 8.3 CPU-s and 1.7 GB."""
    if not enlarge:
        return settings.max_pixels
    return min(settings.max_pixels, max(settings.max_output_pixels, image_pixels))


def snap_quality(requested: int, steps: frozenset[int]) -> int:
    """The step nearest ``requested`` (the higher one on a tie)."""
    return min(steps, key=lambda step: (abs(step - requested), -step))


def _quality(request: RenditionRequest, settings: Settings) -> int | None:
    """Unsigned URLs get one of ``SRSTORE_QUALITY_STEPS``: 100 qualities are not 100 renders."""
    if request.quality is None or not settings.quality_steps or request.signed(settings):
        return request.quality
    return snap_quality(request.quality, settings.quality_steps)


class RenditionBudget:
    """Distinct renditions each image may get from unsigned URLs, per window, in this process.

    Every ``w``, ``h``, ``fit``, format and quality is a new render and a new cache entry:
    19,200 renditions of one image were all rendered and cached. Past the quota a new one is
    refused (429 with the time left in the window); the renditions already made are still
    served, and signed URLs (the operator's own) are not counted.
    """

    def __init__(
        self,
        per_image: int,
        window_seconds: float = 3600.0,
        images: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_image = per_image
        self.window_seconds = window_seconds
        self.images = images
        self.clock = clock
        self._made: OrderedDict[str, tuple[float, set[str]]] = OrderedDict()

    def admit(self, image_id: str, rendition: str) -> None:
        now = self.clock()
        entry = self._made.get(image_id)
        if entry is None or now - entry[0] >= self.window_seconds:
            entry = (now, set())
            self._made[image_id] = entry
        self._made.move_to_end(image_id)
        while len(self._made) > self.images:
            self._made.popitem(last=False)
        started, made = entry
        if rendition in made:
            return
        if len(made) >= self.per_image:
            low, high = RETRY_AFTER_BOUNDS
            wait = math.ceil(started + self.window_seconds - now)
            raise RenditionLimit(
                f"this image already has {len(made)} renditions made by unsigned URLs "
                "(SRSTORE_MAX_RENDITIONS_PER_IMAGE); ask for one of those, or sign the URL",
                max(low, min(high, wait)),
            )
        made.add(rendition)


def _encodable_format(fmt: OutputFormat, size: tuple[int, int], explicit: bool) -> OutputFormat:
    """The format, if its codec can encode the output (WebP: 16383 px a side); else PNG when
    the format was not asked for by name, or a 422 from the plan, before any render."""
    if encodable(fmt, *size):
        return fmt
    if not explicit:
        return "png"
    raise UnencodableFormat(f"{fmt} cannot encode a {size[0]}x{size[1]} image; ask for png")


def etag_of(name: str) -> str:
    """A strong entity tag: the bytes under one name never change."""
    return '"' + hashlib.sha256(name.encode()).hexdigest()[:32] + '"'
