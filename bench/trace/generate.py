"""The access trace: a synthetic one (Zipf popularity, interest that decays), or a real log.

A trace is a list of reads, each ``(seconds from the start, image name, size)``, where size
is ``full`` (a plain ``GET`` at the upload's size) or a width in pixels (``?w=``). An image
is uploaded when the trace first names it (synthetic traces spread the uploads over their
first ``upload_days``); its bytes are a JPEG q90 photo of the size mix below.
"""

from __future__ import annotations

import csv
import io
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

PHOTOS = [
    Path(__file__).resolve().parents[2] / "tests" / "data" / name
    for name in ("flower.jpg", "storm.jpg")
]
DAY = 86_400.0

# The size mix of the uploads: (width, height, share). Phone photos are larger; these keep a
# replay of four configurations under ten minutes on two cores (each 1 MP miss costs about
# 0.1-0.3 CPU seconds here), and every figure scales with pixels.
SIZE_MIX = ((612, 408, 0.5), (864, 576, 0.35), (1224, 816, 0.15))


@dataclass(frozen=True)
class Read:
    at: float  # seconds from the start of the trace
    image: str
    size: str  # "full", or a width in pixels


@dataclass(frozen=True)
class TraceShape:
    """The synthetic trace's parameters (each one a command-line option)."""

    images: int = 30
    reads: int = 1500
    days: float = 45.0  # long enough for the cold tail, where a compacted copy saves
    upload_days: float = 5.0
    zipf: float = 1.0  # popularity of the k-th image is proportional to 1 / k**zipf
    half_life_days: float = 1.5  # interest in an image halves every this many days
    thumbnail_share: float = 0.3  # reads asking for a 320-px-wide rendition
    seed: int = 1


def synthetic(shape: TraceShape) -> tuple[list[Read], dict[str, float]]:
    """Reads in time order, and each image's upload time.

    Image k (by popularity rank) is uploaded at a uniform time in the first ``upload_days``
    and draws a share ``k**-zipf / sum`` of the reads; each read comes an exponentially
    distributed time after the upload (mean ``half_life / ln 2``), so interest decays. Reads
    that would fall after the end are dropped, as a trace of that length would not see them.
    """
    rng = random.Random(shape.seed)
    names = [f"img{k:04d}" for k in range(shape.images)]
    uploads = {name: rng.uniform(0, shape.upload_days * DAY) for name in names}
    weights = [1 / (k + 1) ** shape.zipf for k in range(shape.images)]
    mean_interest = shape.half_life_days * DAY / math.log(2)
    reads = []
    for name in rng.choices(names, weights, k=shape.reads):
        at = uploads[name] + rng.expovariate(1 / mean_interest)
        if at < shape.days * DAY:
            size = "320" if rng.random() < shape.thumbnail_share else "full"
            reads.append(Read(at, name, size))
    return sorted(reads, key=lambda read: read.at), uploads


def from_log(path: Path) -> tuple[list[Read], dict[str, float]]:
    """A CSV of ``timestamp,image,size`` (a header row is optional): timestamps in seconds
    or ISO 8601, taken relative to the first; size ``full`` or a width. Each image is
    uploaded just before the first read of it."""
    rows: list[tuple[float, str, str]] = []
    with path.open(newline="") as log:
        for row in csv.reader(log):
            if not row or row[0].strip().lower() == "timestamp":
                continue
            stamp, image, size = (cell.strip() for cell in row[:3])
            rows.append((_seconds(stamp), image, size or "full"))
    if not rows:
        raise SystemExit(f"{path}: no reads")
    start = min(at for at, _, _ in rows)
    reads = sorted((Read(at - start, image, size) for at, image, size in rows), key=lambda r: r.at)
    uploads: dict[str, float] = {}
    for read in reads:
        uploads.setdefault(read.image, max(0.0, read.at - 1))
    return reads, uploads


def write_log(reads: list[Read], path: Path) -> None:
    with path.open("w", newline="") as log:
        writer = csv.writer(log)
        writer.writerow(["timestamp", "image", "size"])
        for read in reads:
            writer.writerow([f"{read.at:.3f}", read.image, read.size])


def _seconds(stamp: str) -> float:
    try:
        return float(stamp)
    except ValueError:
        return datetime.fromisoformat(stamp).timestamp()


GRAIN = 2.0  # luma noise (standard deviation, levels): see photographs()


def photographs(names: list[str], seed: int) -> dict[str, bytes]:
    """One JPEG q90 upload per image: a random crop of a test photo, mirrored at random,
    resized to a size drawn from ``SIZE_MIX``, with a film grain of ``GRAIN`` levels. The two
    test photos are small, so resized up they are smoother than a camera's (0.6 bits per
    pixel at q90); the grain brings them to 1.0 (phone photos are 1.5-3), where the x4 copy
    still meets the default floor (SSIM 0.96-0.97; 0.92-0.94 at 3 levels, 0.84 at 4).
    Deterministic for a seed."""
    rng = random.Random(seed)
    noise = np.random.default_rng(seed)
    sources = [Image.open(photo).convert("RGB") for photo in PHOTOS]
    sizes = [(w, h) for w, h, _ in SIZE_MIX]
    shares = [share for _, _, share in SIZE_MIX]
    uploads = {}
    for name in names:
        source = rng.choice(sources)
        width, height = rng.choices(sizes, shares)[0]
        crop_w = int(source.width * rng.uniform(0.6, 1.0))
        crop_h = min(source.height, round(crop_w * height / width))
        left = rng.randint(0, source.width - crop_w)
        top = rng.randint(0, source.height - crop_h)
        image = source.crop((left, top, left + crop_w, top + crop_h))
        if rng.random() < 0.5:
            image = ImageOps.mirror(image)
        pixels = np.asarray(image.resize((width, height), Image.Resampling.LANCZOS), np.float32)
        pixels += noise.normal(0, GRAIN, (height, width, 1))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, "JPEG", quality=90)
        uploads[name] = buffer.getvalue()
    return uploads
