"""The one image pipeline: decode, orient, pad, downscale, store-encode, output-encode.

The upload path and the trainer's degradation both call :func:`degrade`, so the
network is trained on exactly the low-resolution input production will feed it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageCms, ImageOps

from imaging.errors import ImageError, ImageTooLarge, InvalidImage, UnsupportedImage
from imaging.formats import PILLOW_MAX_PIXELS, FullCodecName, OutputFormat, StoredCodecName
from imaging.limits import MAX_JPEG_SCANS, encodable, jpeg_scans, jpeg_too_short

SCALE = 4
AVIF_SPEED = 8  # libavif's 0 (slowest) .. 10: 4x faster than its default 6 for ~20% more bytes

# Formats accepted on upload, by Pillow's format name, and the format each is served in.
ACCEPTED_FORMATS: dict[str, OutputFormat] = {
    "JPEG": "jpeg",
    "MPO": "jpeg",
    "PNG": "png",
    "WEBP": "webp",
    "AVIF": "avif",
    # Uncompressed at full size (a 226 KB deflate TIFF of 7000x7000 was served as 147 MB):
    # served as PNG, lossless and compressed.
    "BMP": "png",
    "TIFF": "png",
    "GIF": "png",  # a super-resolved frame has far more than 256 colours: served as PNG
}

MEDIA_TYPES: dict[str, str] = {
    "jpeg": "image/jpeg",
    "png": "image/png",
    "webp": "image/webp",
    "avif": "image/avif",
}


@dataclass(frozen=True)
class StoredCodec:
    """How the low-resolution copy is encoded at rest."""

    name: StoredCodecName = "webp"
    quality: int = 90


@dataclass(frozen=True)
class OutputEncoding:
    """Encoder settings for served images, chosen for speed (see README, 'Codecs')."""

    jpeg_quality: int = 90
    webp_quality: int = 85
    webp_method: int = 2
    png_compress_level: int = 1
    avif_quality: int = 60
    avif_speed: int = 8

    def quality_of(self, fmt: OutputFormat, requested: int | None) -> int | None:
        """The quality a lossy format is encoded at; ``None`` for the lossless ones."""
        defaults = {"jpeg": self.jpeg_quality, "webp": self.webp_quality, "avif": self.avif_quality}
        return requested or defaults[fmt] if fmt in defaults else None

    def settings_tag(self, fmt: OutputFormat) -> str:
        """The encoder settings besides quality that shape ``fmt``'s bytes, for cache keys."""
        return {
            "webp": f"m{self.webp_method}",
            "png": f"z{self.png_compress_level}",
            "avif": f"s{self.avif_speed}",
        }.get(fmt, "")


@dataclass(frozen=True)
class DecodedImage:
    image: Image.Image  # mode L, RGB or RGBA in sRGB, EXIF orientation applied
    served_format: OutputFormat
    content_type: str  # of the upload, from its own bytes

    @property
    def greyscale(self) -> bool:
        return self.image.mode == "L"


def decode_upload(data: bytes, max_pixels: int) -> DecodedImage:
    """Decode an uploaded file, refusing bombs from the header before any pixel is read."""
    if not data:
        raise InvalidImage("the upload is empty")
    try:
        # ``max_pixels`` is the limit, checked from the header below; Pillow's own warning
        # threshold (Image.MAX_IMAGE_PIXELS) would otherwise refuse images the setting allows.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            probe = Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(
            f"image declares more than {PILLOW_MAX_PIXELS} pixels; "
            f"the limit is {max_pixels} pixels in all"
        ) from exc
    except Exception as exc:  # Pillow raises many types for unrecognised bytes
        if _signature_of(data) is not None:
            raise InvalidImage("the image header is corrupt or truncated") from exc
        raise UnsupportedImage("the body is not an image in a supported format") from exc
    served = ACCEPTED_FORMATS.get(probe.format or "")
    if served is None:
        raise UnsupportedImage(f"image format {probe.format} is not supported")
    width, height = probe.size
    if width < 1 or height < 1 or width * height > max_pixels:
        raise ImageTooLarge(
            f"image is {width}x{height} pixels; the limit is {max_pixels} pixels in all"
        )
    if probe.format in ("JPEG", "MPO"):
        _refuse_costly_or_cut_jpeg(data, width, height)
    try:
        probe.seek(0)
        probe.load()
        oriented = ImageOps.exif_transpose(probe)
        image = _normalise_mode(to_srgb(oriented))
    except ImageError:
        raise
    except Exception as exc:
        raise InvalidImage(f"the {probe.format} image is corrupt or truncated: {exc}") from exc
    content_type = (
        Image.MIME.get(probe.format or "") or _signature_of(data) or "application/octet-stream"
    )
    return DecodedImage(image=image, served_format=served, content_type=content_type)


_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def to_srgb(image: Image.Image) -> Image.Image:
    """Convert an image with an embedded ICC profile to sRGB, the only space output assumes.

    Wide-gamut (Display P3, Adobe RGB) photos would otherwise come back washed out; CMYK goes
    through its own profile. Greyscale stays greyscale. A profile that cannot be parsed is
    ignored, as browsers do, and the pixels are taken as sRGB.
    """
    icc = image.info.get("icc_profile")
    if not icc:
        return image
    if image.mode not in ("RGB", "RGBA", "CMYK", "L", "LA"):
        image = _normalise_mode(image)
    try:
        source = ImageCms.ImageCmsProfile(io.BytesIO(icc))
    except (OSError, ImageCms.PyCMSError):
        return _without_profile(image)
    alpha = image.getchannel("A") if image.mode in ("RGBA", "LA") else None
    colour = image.convert({"RGBA": "RGB", "LA": "L"}.get(image.mode, image.mode))
    try:
        converted = ImageCms.profileToProfile(colour, source, _SRGB, outputMode="RGB")
    except ImageCms.PyCMSError:
        return _without_profile(image)
    assert converted is not None
    if colour.mode == "L":
        converted = converted.convert("L")
    if alpha is not None:
        converted.putalpha(alpha)
    return _without_profile(converted)


def _without_profile(image: Image.Image) -> Image.Image:
    image.info.pop("icc_profile", None)
    return image


def _refuse_costly_or_cut_jpeg(data: bytes, width: int, height: int) -> None:
    scans = jpeg_scans(data)
    if scans > MAX_JPEG_SCANS:
        raise ImageTooLarge(
            f"the JPEG has {scans} scans; at most {MAX_JPEG_SCANS} are decoded (each costs "
            "a full decode)"
        )
    if jpeg_too_short(data, width, height):
        raise InvalidImage(
            f"the JPEG is too short for the {width}x{height} pixels it declares: truncated"
        )


def _normalise_mode(image: Image.Image) -> Image.Image:
    """Bring every input to L, RGB or RGBA at 8 bits per channel."""
    mode = image.mode
    if mode in ("L", "RGB") and "transparency" in image.info:
        return image.convert("RGBA")  # a tRNS colour key: that colour is transparent
    if mode in ("L", "RGB", "RGBA"):
        return image.copy()
    if mode in ("I;16", "I;16B", "I;16L", "I", "I;16N"):
        array = np.asarray(image, dtype=np.float64)
        peak = 65535.0 if array.max(initial=0) > 255 else 255.0
        scaled = np.clip(np.round(array * (255.0 / peak)), 0, 255).astype(np.uint8)
        return Image.fromarray(scaled, mode="L")
    if mode == "F":
        array = np.clip(np.round(np.asarray(image, dtype=np.float64)), 0, 255)
        return Image.fromarray(array.astype(np.uint8), mode="L")
    if mode == "1":
        return image.convert("L")
    has_alpha = "A" in mode or "transparency" in image.info
    return image.convert("RGBA" if has_alpha else "RGB")


def padded_size(width: int, height: int) -> tuple[int, int]:
    """Dimensions rounded up to a multiple of the scale."""
    return SCALE * math.ceil(width / SCALE), SCALE * math.ceil(height / SCALE)


def pad_to_scale(image: Image.Image) -> Image.Image:
    """Replicate the right and bottom edges so both sides divide by the scale."""
    width, height = image.size
    target_w, target_h = padded_size(width, height)
    if (target_w, target_h) == (width, height):
        return image
    array = np.asarray(image)
    pad = [(0, target_h - height), (0, target_w - width)] + [(0, 0)] * (array.ndim - 2)
    return Image.fromarray(np.pad(array, pad, mode="edge"), mode=image.mode)


def downscale(image: Image.Image) -> Image.Image:
    """Antialiased bicubic 4x reduction of an image padded to a multiple of 4."""
    padded = pad_to_scale(image)
    width, height = padded.size
    return padded.resize((width // SCALE, height // SCALE), Image.Resampling.BICUBIC)


def encode_stored(image: Image.Image, codec: StoredCodec) -> bytes:
    """Encode the low-resolution copy for storage; alpha always goes lossless or WebP."""
    buffer = io.BytesIO()
    name = codec.name
    if name == "jpeg" and image.mode == "RGBA":
        name = "webp"
    if not encodable(name.removesuffix("-lossless"), *image.size):
        name = "png"  # a side beyond WebP's 16383 or JPEG's 65535 pixels
    if name == "jpeg":
        image.save(buffer, "JPEG", quality=codec.quality, subsampling=0, optimize=True)
    elif name == "webp":
        image.save(buffer, "WEBP", quality=codec.quality, method=4, exact=True)
    elif name == "webp-lossless":
        image.save(buffer, "WEBP", lossless=True, quality=100, method=4, exact=True)
    else:
        image.save(buffer, "PNG", optimize=True)
    return buffer.getvalue()


def encode_full(image: Image.Image, codec: FullCodecName, quality: int) -> bytes:
    """Encode the full-size image with a modern lossy codec, for images the 4x copy fails."""
    buffer = io.BytesIO()
    if codec == "avif":
        image.save(buffer, "AVIF", quality=quality, speed=AVIF_SPEED)
    else:
        image.save(buffer, "WEBP", quality=quality, method=4, exact=True)
    return buffer.getvalue()


def decode_stored(data: bytes) -> Image.Image:
    """Decode bytes written by :func:`encode_stored`."""
    with Image.open(io.BytesIO(data)) as stored:
        stored.load()
        return stored.copy() if stored.mode in ("L", "RGB", "RGBA") else stored.convert("RGB")


def degrade(image: Image.Image, codec: StoredCodec) -> Image.Image:
    """What production feeds the network: pad, downscale, then the storage round trip."""
    return decode_stored(encode_stored(downscale(image), codec))


def bicubic_upscale(image: Image.Image) -> Image.Image:
    """The baseline every model is measured against."""
    width, height = image.size
    return image.resize((width * SCALE, height * SCALE), Image.Resampling.BICUBIC)


def crop_to(image: Image.Image, width: int, height: int) -> Image.Image:
    """Cut the super-resolved image back to the uploaded dimensions."""
    if image.size == (width, height):
        return image
    return image.crop((0, 0, width, height))


def encode_output(
    image: Image.Image, fmt: OutputFormat, quality: int | None, settings: OutputEncoding
) -> bytes:
    """Encode a served image. JPEG output of an image with alpha is flattened onto white."""
    buffer = io.BytesIO()
    if fmt == "jpeg":
        if image.mode == "RGBA":
            image = _flatten_on_white(image)
        image.save(buffer, "JPEG", quality=quality or settings.jpeg_quality)
    elif fmt == "webp":
        image.save(
            buffer, "WEBP", quality=quality or settings.webp_quality, method=settings.webp_method
        )
    elif fmt == "avif":
        # One thread: the CPU pool's concurrency bounds what renders use only if each encode
        # stays on its own thread (Pillow's default takes every core for one request).
        image.save(
            buffer,
            "AVIF",
            quality=quality or settings.avif_quality,
            speed=settings.avif_speed,
            max_threads=1,
        )
    else:
        image.save(buffer, "PNG", compress_level=settings.png_compress_level)
    return buffer.getvalue()


def _flatten_on_white(image: Image.Image) -> Image.Image:
    background = Image.new("RGB", image.size, (255, 255, 255))
    background.paste(image, mask=image.getchannel("A"))
    return background


_SIGNATURES: tuple[tuple[bytes, int, str], ...] = (
    (b"\xff\xd8\xff", 0, "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", 0, "image/png"),
    (b"WEBP", 8, "image/webp"),
    (b"BM", 0, "image/bmp"),
    (b"II*\x00", 0, "image/tiff"),
    (b"MM\x00*", 0, "image/tiff"),
    (b"GIF87a", 0, "image/gif"),  # accepted on upload, never produced by encode_output
    (b"GIF89a", 0, "image/gif"),
)


_AVIF_BRANDS = (b"avif", b"avis")


def _signature_of(data: bytes) -> str | None:
    if data[4:8] == b"ftyp" and _names_avif(data):
        return "image/avif"
    for signature, offset, media_type in _SIGNATURES:
        if data[offset : offset + len(signature)] == signature:
            return media_type
    return None


def _names_avif(data: bytes) -> bool:
    """An ISO-BMFF ``ftyp`` box naming AVIF as its major or a compatible brand."""
    size = int.from_bytes(data[0:4], "big")
    brands = data[8 : min(max(size, 16), 64)]
    return any(brands[i : i + 4] in _AVIF_BRANDS for i in range(0, len(brands) - 3, 4))


def media_type_of(data: bytes) -> str:
    """The media type of bytes this module encoded, read from their signature."""
    return _signature_of(data) or "application/octet-stream"
