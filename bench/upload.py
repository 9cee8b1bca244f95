"""What a quality receipt costs an upload: latency at 1 MP and 12 MP, per storage policy.

    python -m bench.upload [--photo PATH] [--repeat 3]

In one process, side by side, on the embedded store with the shipped ESPCN: "before" is the
upload as it was before receipts (decode, 4x reduction, WebP encode, store write); each policy
column is the whole of ``ImageService.upload`` (the same plus scoring and the choice). The
photo is resized to 1024x1024 and 4000x3000 (LANCZOS) and uploaded as JPEG q90; "captioned"
is the same photo with lines of 11-pixel text drawn over it, the kind of image whose x4 copy
fails the floor (so guarded searches a full-size AVIF quality). Median of ``--repeat``
(default 1: a 12 MP smallest upload takes seconds).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import TypeVar

from PIL import Image, ImageDraw, ImageFont

from app.main import create_app
from app.services.images import ImageService, new_image_id
from bench.inference import PHOTO, describe_machine
from config.settings import Settings
from imaging import decode_upload, downscale, encode_stored
from policy import STORAGE_POLICIES, Floor
from render.images import object_key

T = TypeVar("T")
SIZES = {"1 MP": (1024, 1024), "12 MP": (4000, 3000)}
FLOOR = Floor.parse("ssim:0.9")


def caption(image: Image.Image) -> Image.Image:
    captioned = image.copy()
    draw = ImageDraw.Draw(captioned)
    font = ImageFont.load_default(size=11)
    for line in range(captioned.height // 14):
        draw.text(
            (4, 4 + 14 * line), "The quick brown fox jumps over 0123456789 " * 20, "black", font
        )
    return captioned


def as_jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


async def median_ms(upload: Callable[[], Awaitable[T]], repeat: int) -> tuple[float, T]:
    """Milliseconds of the median call, and what the last call returned."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = await upload()
        times.append(time.perf_counter() - started)
    return 1000 * statistics.median(times), result


async def before_receipts(service: ImageService, data: bytes) -> None:
    """The upload path as it was: no scoring, the x4 copy always."""
    decoded = await asyncio.to_thread(decode_upload, data, service.settings.max_pixels)
    stored = await asyncio.to_thread(
        lambda: encode_stored(downscale(decoded.image), service.settings.codec)
    )
    await service.store.put(object_key(new_image_id()), stored, {})


async def report(photo: Path, repeat: int) -> str:
    source = Image.open(photo).convert("RGB")
    lines = [
        f"## Upload latency with quality receipts (ms, median of {repeat}; floor {FLOOR})",
        "",
        "| upload | bytes | before receipts | " + " | ".join(STORAGE_POLICIES) + " | kept |",
        "|---|---:|---:|" + "---:|" * len(STORAGE_POLICIES) + "---|",
    ]
    with tempfile.TemporaryDirectory() as scratch:
        app = create_app(Settings(data_dir=Path(scratch)))
        async with app.router.lifespan_context(app):
            service: ImageService = app.state.image_service
            await service.upload(as_jpeg(source), "smallest", FLOOR)  # load the model, AVIF
            for size_name, size in SIZES.items():
                resized = source.resize(size, Image.Resampling.LANCZOS)
                for kind, image in (("photo", resized), ("captioned", caption(resized))):
                    data = as_jpeg(image)
                    before, _ = await median_ms(partial(before_receipts, service, data), repeat)
                    cells, kept = [], []
                    for policy in STORAGE_POLICIES:
                        ms, meta = await median_ms(
                            partial(service.upload, data, policy, FLOOR), repeat
                        )
                        cells.append(ms)
                        kept.append(meta.representation)
                    lines.append(
                        f"| {size_name} {kind} | {len(data)} | {before:.0f} | "
                        + " | ".join(f"{ms:.0f} ({ms / before:.1f}x)" for ms in cells)
                        + f" | {', '.join(kept)} |"
                    )
            lines.append("")
            lines.append(f"Model {service.models.label}; 'kept': the representation per policy.")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photo", type=Path, default=PHOTO)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print("\n".join(describe_machine()))
    print()
    print(asyncio.run(report(args.photo, args.repeat)))


if __name__ == "__main__":
    main()
