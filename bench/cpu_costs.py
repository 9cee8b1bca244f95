"""CPU seconds per megapixel of each step a request can start: what ``imaging.costs`` uses to
admit CPU work (issue 23), measured against the figures it holds.

    python -m bench.cpu_costs            # 1 MP photo, 3 repeats
    python -m bench.cpu_costs --megapixels 4 --repeats 5

Thread CPU time (``time.thread_time``) of each step on one photo, per megapixel of the pixels
the step handles: decode per source pixel, resize and encode per output pixel. The
network's figure (``costs.MODEL``) comes from ``python -m bench.inference``. The admission
only needs the order of magnitude, and the estimate errs high: a step measured above its
figure here should raise the figure.
"""

from __future__ import annotations

import argparse
import io
import os
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

from PIL import Image
from tabulate import tabulate

from config.settings import Settings
from imaging import OutputFormat, costs, decode_stored, encode_output, encode_stored

PHOTO = Path(__file__).resolve().parent.parent / "tests" / "data" / "flower.jpg"


def _cpu(step: Callable[[], object], repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        started = time.thread_time()
        step()
        best = min(best, time.thread_time() - started)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    settings = Settings()
    encoding = settings.output_encoding
    photo = Image.open(PHOTO).convert("RGB")
    scale = (args.megapixels * 1e6 / (photo.width * photo.height)) ** 0.5
    image = photo.resize((round(photo.width * scale), round(photo.height * scale)))
    pixels = image.width * image.height
    stored = encode_stored(image, settings.codec)
    rows: list[list[object]] = []

    def row(step: str, seconds: float, figure: float) -> None:
        per_mp = seconds / pixels * 1e6
        ratio = per_mp / (figure * 1e6)
        rows.append([step, f"{per_mp:.4f}", f"{figure * 1e6:.4f}", f"{ratio:.2f}"])

    decode = _cpu(lambda: decode_stored(stored), args.repeats)
    half = (image.width // 2, image.height // 2)
    resample = _cpu(lambda: image.resize(half, Image.Resampling.LANCZOS), args.repeats)
    row("decode WebP + Lanczos to half, per source pixel", decode + resample, costs.SOURCE)
    double = (image.width * 2, image.height * 2)
    enlarge = _cpu(lambda: image.resize(double, Image.Resampling.LANCZOS), args.repeats)
    row("Lanczos to double, per output pixel", enlarge / 4, costs.RESIZE)
    formats: tuple[OutputFormat, ...] = ("jpeg", "png", "webp", "avif")
    for fmt in formats:
        seconds = _cpu(partial(encode_output, image, fmt, None, encoding), args.repeats)
        row(f"encode {fmt} (default quality)", seconds, costs.ENCODE[fmt])
    buffer = io.StringIO()
    print(
        f"{image.width}x{image.height} photo, best of {args.repeats}; "
        f"load average {os.getloadavg()[0]:.2f}",
        file=buffer,
    )
    print(
        tabulate(
            rows,
            headers=["step", "CPU s per MP, measured", "figure used", "measured / figure"],
            tablefmt="github",
        ),
        file=buffer,
    )
    print(buffer.getvalue(), end="")


if __name__ == "__main__":
    main()
