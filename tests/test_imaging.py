"""The shared pipeline: what upload stores, and what the trainer trains on."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, JpegImagePlugin

from imaging import (
    ImageTooLarge,
    InvalidImage,
    StoredCodec,
    UnsupportedImage,
    decode_stored,
    decode_upload,
    degrade,
    downscale,
    encode_stored,
    media_type_of,
)
from tests.conftest import encode

LIMIT = 10_000_000
CODEC_MEDIA_TYPES = {
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "webp-lossless": "image/webp",
    "png": "image/png",
}


@pytest.mark.parametrize(
    ("size", "stored"),
    [((602, 402), (151, 101)), ((8, 4), (2, 1)), ((1, 1), (1, 1)), ((3, 2), (1, 1))],
)
def test_downscale_is_a_quarter_of_the_padded_size(size, stored) -> None:
    assert downscale(Image.new("RGB", size)).size == stored


def test_downscale_of_a_flat_image_keeps_its_colour() -> None:
    low = downscale(Image.new("RGB", (37, 21), (10, 200, 30)))

    assert low.getcolors() == [(low.width * low.height, (10, 200, 30))]


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (40, 20))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encode(image, "JPEG", exif=exif.tobytes())

    assert decode_upload(data, LIMIT).image.size == (20, 40)


@pytest.mark.parametrize(
    ("image", "fmt", "mode", "served"),
    [
        (Image.new("I;16", (9, 9), 65535), "PNG", "L", "png"),
        (Image.new("CMYK", (9, 9), (0, 255, 0, 0)), "JPEG", "RGB", "jpeg"),
        (Image.new("LA", (9, 9)), "PNG", "RGBA", "png"),
        (Image.new("1", (9, 9), 1), "BMP", "L", "png"),
        (Image.new("RGB", (9, 9)), "TIFF", "RGB", "png"),
        (Image.new("RGB", (9, 9)), "WEBP", "RGB", "webp"),
        (Image.new("RGB", (9, 9)), "GIF", "RGB", "png"),
    ],
)
def test_inputs_are_normalised_to_8_bit_l_rgb_or_rgba(image, fmt, mode, served) -> None:
    decoded = decode_upload(encode(image, fmt), LIMIT)

    assert decoded.image.mode == mode
    assert decoded.served_format == served


def test_sixteen_bit_white_stays_white() -> None:
    decoded = decode_upload(encode(Image.new("I;16", (4, 4), 65535), "PNG"), LIMIT)

    assert decoded.image.getextrema() == (255, 255)


def test_palette_transparency_becomes_alpha() -> None:
    image = Image.new("P", (8, 8), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    data = encode(image, "PNG", transparency=0)

    assert decode_upload(data, LIMIT).image.mode == "RGBA"


def test_an_animated_gif_gives_its_first_frame() -> None:
    frames = [Image.new("RGB", (8, 8), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])

    decoded = decode_upload(buffer.getvalue(), LIMIT)

    assert decoded.image.getpixel((0, 0))[0] > 200


def test_pixels_over_the_limit_are_refused_before_decoding() -> None:
    with pytest.raises(ImageTooLarge):
        decode_upload(encode(Image.new("L", (200, 200)), "PNG"), max_pixels=100 * 100)


@pytest.mark.parametrize("data", [b"", b"GIF89a"])
def test_empty_or_truncated_data_is_invalid(data: bytes) -> None:
    with pytest.raises((InvalidImage, UnsupportedImage)):
        decode_upload(data, LIMIT)


def test_an_icon_is_an_unsupported_format() -> None:
    with pytest.raises(UnsupportedImage, match="ICO"):
        decode_upload(encode(Image.new("RGB", (16, 16)), "ICO"), LIMIT)


@pytest.mark.parametrize("codec", ["jpeg", "webp", "webp-lossless", "png"])
def test_every_stored_codec_round_trips_and_lossless_ones_exactly(codec: str) -> None:
    pixels = np.random.default_rng(1).integers(0, 255, (20, 30, 3), dtype=np.uint8)
    image = Image.fromarray(pixels, "RGB")

    data = encode_stored(image, StoredCodec(codec, 90))
    back = decode_stored(data)

    assert media_type_of(data) == CODEC_MEDIA_TYPES[codec]
    assert back.size == (30, 20)
    if codec in ("webp-lossless", "png"):
        assert np.array_equal(np.asarray(back), pixels)


def transparent_gradient(width: int = 40, height: int = 24) -> Image.Image:
    """Colour noise under an alpha ramp from fully transparent to opaque, left to right."""
    rng = np.random.default_rng(2)
    pixels = rng.integers(0, 255, (height, width, 4), dtype=np.uint8)
    pixels[..., 3] = np.linspace(0, 255, width).round().astype(np.uint8)[None, :]
    return Image.fromarray(pixels, "RGBA")


@pytest.mark.parametrize("codec", ["jpeg", "webp", "webp-lossless", "png"])
def test_every_stored_codec_keeps_the_alpha_values(codec: str) -> None:
    image = transparent_gradient()

    data = encode_stored(image, StoredCodec(codec, 90))
    back = decode_stored(data)

    # JPEG has no alpha channel: such an image is stored as WebP instead.
    expected = "image/webp" if codec == "jpeg" else CODEC_MEDIA_TYPES[codec]
    assert media_type_of(data) == expected
    assert back.mode == "RGBA"
    assert np.array_equal(np.asarray(back.getchannel("A")), np.asarray(image.getchannel("A")))


@pytest.mark.parametrize("codec", ["webp-lossless", "png"])
def test_lossless_codecs_keep_even_the_colour_under_zero_alpha(codec: str) -> None:
    """Bicubic enlargement mixes the colour of transparent pixels into their neighbours."""
    image = transparent_gradient()

    back = decode_stored(encode_stored(image, StoredCodec(codec, 90)))

    assert np.array_equal(np.asarray(back), np.asarray(image))


@pytest.mark.parametrize(("codec", "min_psnr"), [("jpeg", 40), ("webp", 38)])
def test_lossy_stored_codecs_stay_close_to_the_photo(
    photo: Image.Image, codec: str, min_psnr: float
) -> None:
    low = downscale(photo)

    back = decode_stored(encode_stored(low, StoredCodec(codec, 90)))

    error = np.asarray(back, np.float64) - np.asarray(low, np.float64)
    assert 10 * np.log10(255**2 / np.mean(error**2)) > min_psnr


@pytest.mark.parametrize("codec", ["jpeg", "webp"])
def test_the_stored_quality_setting_is_honoured(photo: Image.Image, codec: str) -> None:
    low = downscale(photo)

    def stored_at(quality: int) -> tuple[int, float]:
        data = encode_stored(low, StoredCodec(codec, quality))
        error = np.asarray(decode_stored(data), np.float64) - np.asarray(low, np.float64)
        return len(data), 10 * np.log10(255**2 / np.mean(error**2))

    (small, worse), (large, better) = stored_at(50), stored_at(95)
    assert large > 1.5 * small
    assert better > worse + 3


def test_a_jpeg_stored_copy_keeps_every_chroma_sample(photo: Image.Image) -> None:
    data = encode_stored(downscale(photo), StoredCodec("jpeg", 90))

    assert JpegImagePlugin.get_sampling(Image.open(io.BytesIO(data))) == 0  # 4:4:4


@pytest.mark.parametrize("codec", ["jpeg", "png"])
def test_a_grey_stored_copy_stays_one_channel(codec: str) -> None:
    pixels = np.random.default_rng(4).integers(0, 255, (10, 12), dtype=np.uint8)

    back = decode_stored(encode_stored(Image.fromarray(pixels, "L"), StoredCodec(codec, 90)))

    assert back.mode == "L"
    if codec == "png":
        assert np.array_equal(np.asarray(back), pixels)


def test_degrade_is_downscale_then_the_storage_round_trip(photo: Image.Image) -> None:
    codec = StoredCodec()
    expected = decode_stored(encode_stored(downscale(photo), codec))

    assert np.array_equal(np.asarray(degrade(photo, codec)), np.asarray(expected))


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "WEBP", "BMP", "TIFF"])
def test_media_type_is_read_from_the_bytes(fmt: str) -> None:
    data = encode(Image.new("RGB", (4, 4)), fmt)

    assert media_type_of(data) == Image.MIME[fmt]
