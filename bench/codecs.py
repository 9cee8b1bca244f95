"""Which stored codec, and which output encoder settings: bytes saved against final quality.

    python -m bench.codecs [--images DIR] [--max-side 1600]

Table 1: for each stored codec, the storage ratio against the uploaded JPEGs and the Y-PSNR of
the served image (model and bicubic) against the upload. Table 2: where a 1-megapixel miss
spends its time, and what each output encoder setting costs.
"""

from __future__ import annotations

import argparse
import io
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image

from imaging import (
    StoredCodec,
    bicubic_upscale,
    crop_to,
    decode_stored,
    decode_upload,
    downscale,
    encode_stored,
)
from imaging.quality import luma_psnr
from models.engine import Upscaler
from models.weights import shipped_upscaler

CODECS = [
    StoredCodec("jpeg", 85),
    StoredCodec("jpeg", 92),
    StoredCodec("jpeg", 95),
    StoredCodec("webp", 80),
    StoredCodec("webp", 90),
    StoredCodec("webp", 95),
    StoredCodec("webp-lossless", 100),
    StoredCodec("png", 100),
]
DEFAULT_IMAGES = [Path("corpus/val"), Path("tests/data")]


def load_uploads(folder: Path, max_side: int) -> list[bytes]:
    """Each photo as a typical upload: at most max_side pixels, JPEG quality 90."""
    uploads = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"}):
        image = Image.open(path).convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        uploads.append(buffer.getvalue())
    return uploads


def codec_table(uploads: list[bytes], upscaler: Upscaler) -> None:
    print(f"\n## Stored codec ({len(uploads)} photos, model {upscaler.label})\n")
    print("| stored codec | storage ratio vs upload | model Y-PSNR | bicubic Y-PSNR | gain |")
    print("|---|---:|---:|---:|---:|")
    originals = [decode_upload(data, 10**9).image for data in uploads]
    total = sum(len(d) for d in uploads)
    for codec in CODECS:
        stored_total, model_psnr, bicubic_psnr = 0, [], []
        for original in originals:
            stored = encode_stored(downscale(original), codec)
            stored_total += len(stored)
            low = decode_stored(stored)
            served = crop_to(upscaler.upscale(low), *original.size)
            baseline = crop_to(bicubic_upscale(low), *original.size)
            model_psnr.append(luma_psnr(served, original))
            bicubic_psnr.append(luma_psnr(baseline, original))
        model, bicubic = statistics.mean(model_psnr), statistics.mean(bicubic_psnr)
        name = (
            codec.name
            if codec.name in ("png", "webp-lossless")
            else f"{codec.name} q{codec.quality}"
        )
        print(
            f"| {name} | {total / stored_total:.1f}x | {model:.2f} | {bicubic:.2f} | "
            f"{model - bicubic:+.2f} |"
        )


def median_ms(work: Callable[[], object], repeat: int = 7) -> float:
    work()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        work()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times)


def miss_table(upscaler: Upscaler) -> None:
    original = Image.open(Path("tests/data/flower.jpg")).convert("RGB").resize((1024, 1024))
    stored = encode_stored(downscale(original), StoredCodec())
    low = decode_stored(stored)
    served = upscaler.upscale(low)
    print("\n## Where a 1-megapixel miss spends its time (median of 7)\n")
    print("| stage | ms |")
    print("|---|---:|")
    decode_ms = median_ms(lambda: decode_stored(stored))
    print(f"| decode stored WebP q90 ({len(stored)} B) | {decode_ms:.1f} |")
    print(f"| super-resolve ({upscaler.label}) | {median_ms(lambda: upscaler.upscale(low)):.1f} |")
    encoders: dict[str, tuple[str, dict[str, int]]] = {
        "JPEG q90 (served default)": ("JPEG", {"quality": 90}),
        "PNG compress_level=1 (served default)": ("PNG", {"compress_level": 1}),
        "PNG Pillow default (level 6)": ("PNG", {}),
        "WebP q85 method=2 (served default)": ("WEBP", {"quality": 85, "method": 2}),
        "WebP Pillow default (q80, method 4)": ("WEBP", {}),
    }
    for label, (fmt, options) in encoders.items():

        def encode(fmt: str = fmt, options: dict[str, int] = options) -> int:
            return encoded_size(served, fmt, options)

        print(f"| encode {label}, {encode()} B | {median_ms(encode):.1f} |")


def encoded_size(image: Image.Image, fmt: str, options: dict[str, int]) -> int:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **options)
    return buffer.tell()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, help="folder of photos (default corpus/val)")
    parser.add_argument("--max-side", type=int, default=1600)
    parser.add_argument("--model", default="espcn", choices=["espcn", "srcnn"])
    args = parser.parse_args()
    folder = args.images or next(p for p in DEFAULT_IMAGES if p.is_dir())
    print(
        f"# srstore codec bench: {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, images from {folder}"
    )
    upscaler = shipped_upscaler(args.model)
    codec_table(load_uploads(folder, args.max_side), upscaler)
    miss_table(upscaler)


if __name__ == "__main__":
    main()
