"""Hostile and odd input: a clear JSON 4xx or a correct result, never a 5xx, memory bounded.

The corpus is generated here; test_bad_input.py holds the first, simpler cases.
"""

from __future__ import annotations

import io
import random
import select
import socket
import struct
import time
import zlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from config.settings import Settings
from tests.conftest import encode
from tests.support.process import ApiProcess, start_api
from tests.test_bad_input import assert_error


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    crc = zlib.crc32(kind + payload)
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)


def png_declaring(width: int, height: int) -> bytes:
    """A valid PNG header that declares a size, with no pixel data: a few dozen bytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")


def small_png() -> bytes:
    pixels = np.random.default_rng(3).integers(0, 255, (24, 24, 3), dtype=np.uint8)
    return encode(Image.fromarray(pixels, "RGB"), "PNG")


def flip_byte(data: bytes, index: int) -> bytes:
    corrupt = bytearray(data)
    corrupt[index] ^= 0xFF
    return bytes(corrupt)


def idat_offset(png: bytes) -> int:
    return png.index(b"IDAT") + 4


async def post_raw(client: httpx.AsyncClient, body: bytes, content_type: str) -> httpx.Response:
    return await client.post("/v1/images", content=body, headers={"content-type": content_type})


BROKEN_BODIES = [
    ("random bytes", random.Random(7).randbytes(4096), "image/png", 415, "unsupported_media_type"),
    ("octet-stream", b"\x00\x01", "application/octet-stream", 415, "unsupported_media_type"),
    ("no content type", b"abc", "", 415, "unsupported_media_type"),
    ("pdf", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n", "image/png", 415, "unsupported_media_type"),
    ("html", b"<html><script>alert(1)</script>", "image/jpeg", 415, "unsupported_media_type"),
    ("png signature only", b"\x89PNG\r\n\x1a\n", "image/png", 422, "invalid_image"),
    ("png cut in its header", small_png()[:20], "image/png", 422, "invalid_image"),
    ("png cut in its pixels", small_png()[: idat_offset(small_png()) + 40], "image/png", 422,
     "invalid_image"),
    ("png with a bad IHDR CRC", flip_byte(small_png(), 29), "image/png", 422, "invalid_image"),
    ("png with corrupt pixel data", flip_byte(small_png(), idat_offset(small_png()) + 2),
     "image/png", 422, "invalid_image"),
    ("jpeg signature only", b"\xff\xd8\xff", "image/jpeg", 422, "invalid_image"),
    ("gif signature only", b"GIF89a", "image/gif", 422, "invalid_image"),
    ("zero-size png", png_declaring(0, 0), "image/png", 422, "invalid_image"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "body", "content_type", "status", "code"),
    BROKEN_BODIES,
    ids=[row[0] for row in BROKEN_BODIES],
)
async def test_broken_bodies_get_a_json_4xx(
    client: httpx.AsyncClient, name: str, body: bytes, content_type: str, status: int, code: str
) -> None:
    response = await post_raw(client, body, content_type)

    assert_error(response, status, code)


async def test_a_truncated_png_is_refused(client: httpx.AsyncClient) -> None:
    png = encode(Image.new("RGB", (300, 300), (9, 9, 9)), "PNG")

    response = await post_raw(client, png[: len(png) // 2], "image/png")

    assert_error(response, 422, "invalid_image")


@pytest.mark.parametrize("side", [50_000, 2**31 - 1])
async def test_a_tiny_file_declaring_a_huge_image_is_refused_from_its_header(
    client: httpx.AsyncClient, settings: Settings, side: int
) -> None:
    bomb = png_declaring(side, side)
    assert len(bomb) < 100

    response = await post_raw(client, bomb, "image/png")

    assert_error(response, 413, "image_too_large")
    assert str(settings.max_pixels) in response.json()["error"]["message"]


async def test_the_configured_pixel_limit_rules_not_pillows_warning_threshold(
    embedded_settings: Settings,
) -> None:
    """Pillow warns above Image.MAX_IMAGE_PIXELS (~89 MP); SRSTORE_MAX_PIXELS decides."""
    from imaging import InvalidImage, decode_upload

    declared = png_declaring(10_000, 9_500)  # 95 MP, header only: gets past the size check

    with pytest.raises(InvalidImage):
        decode_upload(declared, max_pixels=100_000_000)


def test_a_pixel_limit_pillow_would_never_open_is_refused_at_start(tmp_path) -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="max_pixels"):
        Settings(data_dir=tmp_path, max_pixels=10**12)


def animated_gif() -> bytes:
    frames = [Image.new("RGB", (20, 12), colour) for colour in ((255, 0, 0), (0, 0, 255))]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:], duration=50, loop=0)
    return buffer.getvalue()


def exif_rotated_jpeg() -> bytes:
    exif = Image.Exif()
    exif[0x0112] = 6  # displayed rotated 90 degrees clockwise
    return encode(Image.new("RGB", (40, 20), (200, 10, 10)), "JPEG", exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    image = Image.new("P", (13, 9), 0)
    image.putpalette([255, 0, 0, 0, 255, 0])
    image.putpixel((3, 3), 1)
    return encode(image, "PNG", transparency=0)


ODD_IMAGES = [
    ("1x1", encode(Image.new("RGB", (1, 1), (5, 6, 7)), "PNG"), (1, 1), "image/png", "RGB"),
    ("3x2 grey", encode(Image.new("L", (3, 2), 90), "PNG"), (3, 2), "image/png", "L"),
    ("1x1 jpeg", encode(Image.new("RGB", (1, 1)), "JPEG"), (1, 1), "image/jpeg", "RGB"),
    ("animated gif", animated_gif(), (20, 12), "image/png", "RGB"),
    ("cmyk jpeg", encode(Image.new("CMYK", (17, 9), (0, 255, 0, 0)), "JPEG"), (17, 9),
     "image/jpeg", "RGB"),
    ("16-bit png", encode(Image.new("I;16", (10, 7), 40_000), "PNG"), (10, 7), "image/png", "L"),
    ("palette with transparency", palette_with_transparency(), (13, 9), "image/png", "RGBA"),
    ("exif-rotated jpeg", exif_rotated_jpeg(), (20, 40), "image/jpeg", "RGB"),
    ("tiff", encode(Image.new("RGB", (6, 5)), "TIFF"), (6, 5), "image/png", "RGB"),
    ("bmp", encode(Image.new("RGB", (6, 5)), "BMP"), (6, 5), "image/png", "RGB"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("name", "data", "size", "media_type", "bands"), ODD_IMAGES, ids=[r[0] for r in ODD_IMAGES]
)
async def test_odd_but_valid_images_come_back_at_their_size(
    client: httpx.AsyncClient,
    name: str,
    data: bytes,
    size: tuple[int, int],
    media_type: str,
    bands: str,
) -> None:
    created = await client.post("/v1/images", files={"file": ("x", data, "image/png")})
    assert created.status_code == 201, created.text

    served = await client.get(f"/v1/images/{created.json()['id']}")

    assert served.status_code == 200
    assert served.headers["content-type"] == media_type
    image = Image.open(io.BytesIO(served.content))
    assert image.size == size
    assert "".join(image.getbands()) == bands


async def test_an_animated_gif_serves_its_first_frame(client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/v1/images", content=animated_gif(), headers={"content-type": "image/gif"}
    )

    served = await client.get(f"/v1/images/{created.json()['id']}")

    red, _, blue = Image.open(io.BytesIO(served.content)).convert("RGB").getpixel((10, 6))
    assert red > 200 and blue < 60


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<svg xmlns='http://www.w3.org/2000/svg'><script/></svg>", "image/svg+xml"),
        (encode(Image.new("RGB", (16, 16)), "ICO"), "image/x-icon"),
        (encode(Image.new("RGB", (16, 16)), "PPM"), "image/x-portable-pixmap"),
        (encode(Image.new("RGB", (16, 16)), "TGA"), "image/x-tga"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00heicmif1", "image/heic"),
    ],
)  # fmt: skip
async def test_unsupported_image_types_are_415(
    client: httpx.AsyncClient, body: bytes, content_type: str
) -> None:
    as_multipart = await client.post("/v1/images", files={"file": ("f", body, content_type)})
    as_raw = await post_raw(client, body, content_type)

    assert_error(as_multipart, 415, "unsupported_media_type")
    assert_error(as_raw, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    "filename", ["../../etc/passwd", "..\\..\\windows\\win.ini", "a\x00b.png", "é/😀.png"]
)
async def test_a_hostile_filename_is_ignored(client: httpx.AsyncClient, filename: str) -> None:
    png = encode(Image.new("RGB", (8, 8)), "PNG")

    response = await client.post("/v1/images", files={"file": (filename, png, "image/png")})

    assert response.status_code == 201, response.text
    image_id = response.json()["id"]
    assert len(image_id) == 22
    assert (await client.get(f"/v1/images/{image_id}/meta")).status_code == 200


@pytest.mark.parametrize("filename", ["x" * 5000, ""])
async def test_a_huge_or_empty_filename_is_a_clear_400(
    client: httpx.AsyncClient, filename: str
) -> None:
    """python-multipart refuses oversized part headers; an empty filename makes a plain field."""
    png = encode(Image.new("RGB", (8, 8)), "PNG")

    response = await client.post("/v1/images", files={"file": (filename, png, "image/png")})

    assert response.status_code == 400
    assert response.json()["error"]["message"]


@pytest.mark.parametrize(
    "content_type",
    [
        "multipart/form-data",  # no boundary
        "multipart/form-data; boundary=",
        "multipart/form-data; boundary=zzz",  # boundary that never occurs
    ],
)
async def test_a_malformed_multipart_body_is_a_4xx(
    client: httpx.AsyncClient, content_type: str
) -> None:
    response = await post_raw(client, b"--abc\r\nnot really\r\n--abc--\r\n", content_type)

    assert 400 <= response.status_code < 500, response.text
    assert response.headers["content-type"] == "application/json"


async def test_two_files_in_one_multipart_body_are_refused(client: httpx.AsyncClient) -> None:
    png = encode(Image.new("RGB", (8, 8)), "PNG")

    response = await client.post(
        "/v1/images", files=[("file", ("a", png, "image/png")), ("file", ("b", png, "image/png"))]
    )

    assert_error(response, 400, "http_error")


@pytest.mark.parametrize(
    "path",
    [
        "/v1/images/" + "A" * 10_000,
        "/v1/images/AAAAAAAAAAAAAAAAAAAA%00A",
        "/v1/images/AAAAAAAAAAAAAAAAAAAAA%2F",
        "/v1/images/%2E%2E",
        "/v1/images/..%5C..%5Cwin.ini",
        "/v1/images/AAAAAAAAAAAAAAAAAAAAÄ",
        "/v1/images/AAAAAAAAAAAAAAAAAAAAAA%0A",
        "/v1/images/" + "A" * 10_000 + "/stored",
        "/v1/images/..%2F..%2Fetc%2Fpasswd/meta",
    ],
)
async def test_malformed_huge_and_traversing_ids_are_4xx(
    client: httpx.AsyncClient, path: str
) -> None:
    for method in ("GET", "DELETE"):
        response = await client.request(method, path)
        # 307: a trailing slash is redirected to the same path without it (Starlette's rule)
        assert response.status_code in (307, 400, 404, 405), response.text
        if response.status_code != 307:
            assert response.headers["content-type"] == "application/json"


async def test_unknown_query_parameters_are_ignored(client: httpx.AsyncClient) -> None:
    created = await post_raw(client, encode(Image.new("RGB", (8, 8)), "PNG"), "image/png")

    response = await client.get(
        f"/v1/images/{created.json()['id']}", params={"width": "99999", "x": "\x00", "crop": "y"}
    )

    assert response.status_code == 200
    assert Image.open(io.BytesIO(response.content)).size == (8, 8)


async def endless(chunk: bytes, pulled: list[int], most: int) -> AsyncIterator[bytes]:
    """A body that would be ``most`` bytes long; records how much the server pulled."""
    sent = 0
    while sent < most:
        pulled.append(len(chunk))
        sent += len(chunk)
        yield chunk


@pytest.mark.parametrize("multipart", [False, True])
async def test_an_oversized_body_is_refused_while_streaming(
    embedded_settings: Settings, multipart: bool
) -> None:
    """Chunked, no Content-Length: the server stops reading once past the limit."""
    from app.main import create_app

    limit = 256 * 1024
    app = create_app(embedded_settings.model_copy(update={"max_upload_bytes": limit}))
    pulled: list[int] = []
    chunk = b"\x89PNG" + b"\0" * (64 * 1024 - 4)
    huge = 4 * 2**30  # 4 GiB if it were read to the end
    content_type = "multipart/form-data; boundary=xyz" if multipart else "image/png"
    head = b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n'

    async def body() -> AsyncIterator[bytes]:
        if multipart:
            yield head
        async for part in endless(chunk, pulled, huge):
            yield part

    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://srstore") as http:
            response = await http.post(
                "/v1/images", content=body(), headers={"content-type": content_type}
            )

    assert_error(response, 413, "body_too_large")
    assert sum(pulled) <= limit + 64 * 1024 + 2 * len(chunk)


async def test_a_declared_oversized_length_is_refused_before_reading(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    pulled: list[int] = []
    response = await client.post(
        "/v1/images",
        content=endless(b"\0" * 1024, pulled, 10 * 2**20),
        headers={
            "content-type": "image/png",
            "content-length": str(settings.max_upload_bytes + 1),
        },
    )

    assert_error(response, 413, "body_too_large")
    assert pulled == []


def peak_rss_mib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) // 1024
    raise LookupError("no VmHWM")


def send_until_answered(
    port: int, content_type: str, head: bytes, most: int, target: str = "POST /v1/images"
) -> tuple[int, bytes]:
    """Stream a chunked body of up to ``most`` bytes; stop as soon as the server answers."""
    frame = b"10000\r\n" + b"\0" * 0x10000 + b"\r\n"
    sent = 0
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(
            f"{target} HTTP/1.1\r\nHost: srstore\r\nTransfer-Encoding: chunked\r\n".encode()
            + f"Content-Type: {content_type}\r\n\r\n".encode()
            + f"{len(head):x}\r\n".encode()
            + head
            + b"\r\n"
        )
        sock.setblocking(False)
        deadline = time.monotonic() + 60
        while sent < most and time.monotonic() < deadline:
            readable, writable, _ = select.select([sock], [sock], [], 1)
            if readable:
                return sent, sock.recv(4096)
            if writable:
                try:
                    sent += sock.send(frame)
                except (BrokenPipeError, ConnectionResetError):
                    break
        sock.setblocking(True)
        return sent, sock.recv(4096)


@pytest.fixture(scope="module")
def small_limit_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiProcess]:
    api = start_api(
        {
            "SRSTORE_DATA_DIR": str(tmp_path_factory.mktemp("limit")),
            "SRSTORE_MAX_UPLOAD_BYTES": str(2**20),
        }
    )
    yield api
    api.stop()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("content_type", "head"),
    [
        ("image/png", b"\x89PNG\r\n\x1a\n"),
        (
            "multipart/form-data; boundary=xyz",
            b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="a"\r\n\r\n',
        ),
    ],
)
def test_the_real_server_stops_reading_an_endless_body_and_memory_stays_flat(
    small_limit_api: ApiProcess, content_type: str, head: bytes
) -> None:
    """A 1 GiB chunked body against a 1 MiB limit: refused after a few MiB (socket buffers)."""
    before = peak_rss_mib(small_limit_api.process.pid)

    sent, reply = send_until_answered(small_limit_api.port, content_type, head, 2**30)

    assert reply.startswith(b"HTTP/1.1 413 "), reply[:80]
    assert sent < 64 * 2**20
    assert peak_rss_mib(small_limit_api.process.pid) - before < 64
