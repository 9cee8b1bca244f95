"""What a rendition costs in CPU-seconds, estimated from its pixels before any work is done.

The figures are CPU seconds per pixel on the development VM (one core), measured by
``python -m bench.cpu_costs`` (codecs, resize) and ``python -m bench.inference`` (the
network), rounded up: admission (``app.services.work``) only needs to tell a thumbnail from
a 50-megapixel AVIF enlargement, and an estimate that errs high refuses early rather than
late. Memory follows the same pixels: work is bounded by the CPU pool's threads.
"""

from __future__ import annotations

SOURCE = 40e-9  # decoding the source and resampling it down, per source pixel
RESIZE = 20e-9  # resampling, per output pixel (what an enlargement pays)
MODEL = 80e-9  # ESPCN on the CPU, per output pixel (about 62 ms per megapixel measured)
ENCODE = {
    "jpeg": 5e-9,
    "png": 50e-9,
    "webp": 30e-9,
    "avif": 100e-9,
    "bmp": 5e-9,
    "tiff": 5e-9,
}


def rendition_seconds(
    source_pixels: int, output_pixels: int, fmt: str, model: bool = False
) -> float:
    """Decode the source, resize (or super-resolve) to the output, encode it."""
    work = RESIZE + (MODEL if model else 0.0) + ENCODE.get(fmt, max(ENCODE.values()))
    return source_pixels * SOURCE + output_pixels * work
