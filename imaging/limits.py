"""What decoding an upload will cost, read from its bytes before any pixel is decoded, and the
largest image each output codec can encode.

A progressive JPEG is decoded once per scan: ~1000 scans of a 7000x7000 image cost ~39 s of
CPU from a 267 KB file, so the scan count is bounded. A Huffman-coded JPEG spends at least one
bit per 8x8 block of its full-resolution component in its first scan, so a file smaller than
that cannot hold the image its header declares: it was cut, and libjpeg would fill the rest
with grey without an error.
"""

from __future__ import annotations

import io
import math
import warnings

from PIL import Image

MAX_JPEG_SCANS = 64  # encoders write 1 (baseline) to ~20 (mozjpeg, jpegtran -progressive)
# Peak bytes per pixel of decoding, orienting, padding and downscaling an upload (RGBA, a few
# copies alive at once); measured ~11.4 for a 7000x7000 PNG.
DECODE_BYTES_PER_PIXEL = 12
# Largest side each codec can write; PNG's (2^31 - 1) is beyond any accepted image.
MAX_SIDE = {"webp": 16383, "jpeg": 65535}

_HUFFMAN_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7}
_OTHER_SOF = {0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}  # arithmetic coding: no such lower bound
_STANDALONE = {0x01, *range(0xD0, 0xD8)}


def decode_memory_bytes(width: int, height: int) -> int:
    """What decoding an image of this size will hold in memory at its peak, about."""
    return width * height * DECODE_BYTES_PER_PIXEL


def jpeg_scans(data: bytes) -> int:
    """How many scans a JPEG holds. Entropy-coded data escapes 0xFF as 0xFF00, so every
    0xFFDA is a start-of-scan marker (or one inside an embedded thumbnail: an overcount)."""
    return data.count(b"\xff\xda")


def jpeg_too_short(data: bytes, width: int, height: int) -> bool:
    """Whether the file is smaller than the least a Huffman-coded JPEG of that size needs."""
    if _frame_marker(data) not in _HUFFMAN_SOF:
        return False
    blocks = math.ceil(width / 8) * math.ceil(height / 8)
    return len(data) < blocks // 8


def encodable(fmt: str, width: int, height: int) -> bool:
    """Whether the codec can write an image of this size."""
    return max(width, height) <= MAX_SIDE.get(fmt, 2**31 - 1)


def _frame_marker(data: bytes) -> int | None:
    """The SOFn marker of a JPEG, found by walking its header segments."""
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:
            position += 1  # fill byte
            continue
        if marker in _STANDALONE:
            position += 2
            continue
        if marker in _HUFFMAN_SOF or marker in _OTHER_SOF or marker == 0xDA:
            return marker if marker != 0xDA else None
        position += 2 + int.from_bytes(data[position + 2 : position + 4], "big")
    return None


def declared_size(data: bytes) -> tuple[int, int] | None:
    """The width and height a header declares, or ``None`` when it cannot be read (decoding
    then fails from the header too, at no cost)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                return probe.size
    except Exception:  # Pillow raises many types for bytes it cannot read
        return None
