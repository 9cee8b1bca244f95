"""Rate against distortion: the x4 copy + super-resolution against full-size codecs, and the
storage policies at two quality floors.

    python -m bench.ratedistortion [--images DIR] [--max-side 1024] [--floors ssim:0.9,psnr:35]
                                   [--plot PATH]

Each photo of the folder (the held-out photos in ``corpus/val`` by default) is made a typical
upload: at most ``--max-side`` pixels, JPEG q90. Scores are those of a quality receipt: Y-PSNR
(BT.601 studio luma) and SSIM over the whole image against the decoded upload.

1. Bytes per image against quality for the 4x-reduced copy stored as WebP at several qualities
   and rebuilt by bicubic, ESPCN or SRCNN, and for the full-size image as WebP, AVIF (speed
   8, as the service encodes it) and JPEG at several qualities (decoded pixels, before any
   output encoding).
2. At equal bytes: the highest quality of each full-size codec whose bytes do not exceed the
   service's stored copy (WebP q90 x4), against what the service serves.
3. Per policy and floor, run through the service's own read path (``render.render_stages``,
   default output format) and ``policy.choose``: mean savings against the uploads, the
   representations kept, and the worst and mean receipt.

The plot goes to a run folder under ``runs/ratedistortion/`` unless ``--plot`` names a path.
"""

from __future__ import annotations

import argparse
import io
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
from PIL import Image

from config.settings import Settings
from imaging import (
    PILLOW_MAX_PIXELS,
    StoredCodec,
    crop_to,
    decode_stored,
    decode_upload,
    downscale,
    encode_full,
    encode_stored,
)
from models.engine import BicubicUpscaler, Upscaler
from models.weights import shipped_upscaler
from policy import STORAGE_POLICIES, Floor, Reconstruct, Score, score
from policy.choose import choose
from render.images import ImageMeta
from render.inference import read_back

STORED_QUALITIES = (70, 80, 90, 95)
FULL_QUALITIES = (20, 35, 50, 65, 80, 90)
DEFAULT_FLOORS = "ssim:0.9,psnr:35"
DEFAULT_IMAGES = Path("corpus/val")


@dataclass(frozen=True)
class Point:
    method: str
    quality: int
    bytes: float  # mean over the photos
    bpp: float  # bits per pixel of the uploads, mean
    psnr: float
    ssim: float


def load_uploads(folder: Path, max_side: int) -> list[bytes]:
    uploads = []
    for path in sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"}):
        image = Image.open(path).convert("RGB")
        image.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        image.save(buffer, "JPEG", quality=90)
        uploads.append(buffer.getvalue())
    return uploads


FullCodec = Literal["avif", "webp", "jpeg"]
FULL_CODECS: tuple[FullCodec, ...] = ("webp", "avif", "jpeg")


def encode_codec(image: Image.Image, codec: FullCodec, quality: int) -> bytes:
    """A full-size encode: AVIF and WebP as the service writes them, JPEG (4:2:0) for scale."""
    if codec != "jpeg":
        return encode_full(image, codec, quality)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, optimize=True)
    return buffer.getvalue()


def rebuilt(original: Image.Image, stored: bytes, upscaler: Upscaler) -> Image.Image:
    return crop_to(upscaler.upscale(decode_stored(stored)), *original.size)


def curve_point(
    method: str,
    quality: int,
    originals: list[Image.Image],
    make: Callable[[Image.Image], tuple[bytes, Image.Image]],
) -> Point:
    sizes, bpps, scores = [], [], []
    for original in originals:
        data, decoded = make(original)
        sizes.append(len(data))
        bpps.append(8 * len(data) / (original.width * original.height))
        scores.append(score(original, decoded))
    return Point(
        method,
        quality,
        statistics.mean(sizes),
        statistics.mean(bpps),
        statistics.mean(s.psnr for s in scores),
        statistics.mean(s.ssim for s in scores),
    )


def curves(originals: list[Image.Image], upscalers: dict[str, Upscaler]) -> list[Point]:
    points = []
    for name, upscaler in upscalers.items():
        for quality in STORED_QUALITIES:

            def x4(original: Image.Image, q: int = quality, up: Upscaler = upscaler) -> tuple:
                stored = encode_stored(downscale(original), StoredCodec("webp", q))
                return stored, rebuilt(original, stored, up)

            points.append(curve_point(f"x4 WebP + {name}", quality, originals, x4))
    for codec in FULL_CODECS:
        for quality in FULL_QUALITIES:

            def full(original: Image.Image, q: int = quality, c: FullCodec = codec) -> tuple:
                data = encode_codec(original, c, q)
                return data, decode_stored(data)

            points.append(curve_point(f"full-size {codec.upper()}", quality, originals, full))
    return points


def curve_table(points: list[Point]) -> str:
    lines = [
        "| method | quality | mean bytes | bits/pixel | Y-PSNR dB | SSIM |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for p in points:
        lines.append(
            f"| {p.method} | {p.quality} | {p.bytes:,.0f} | {p.bpp:.3f} | {p.psnr:.2f} | "
            f"{p.ssim:.4f} |"
        )
    return "\n".join(lines)


def highest_quality_within(
    original: Image.Image, codec: FullCodec, budget: int
) -> tuple[int, bytes] | None:
    """The highest quality whose bytes do not exceed ``budget`` (bytes grow with quality)."""
    low, high, best = 1, 100, None
    while low <= high:
        quality = (low + high) // 2
        data = encode_codec(original, codec, quality)
        if len(data) <= budget:
            best, low = (quality, data), quality + 1
        else:
            high = quality - 1
    return best


def equal_bytes_table(originals: list[Image.Image], names: list[str], espcn: Upscaler) -> str:
    lines = [
        "| photo | x4 bytes | x4+ESPCN Y-PSNR / SSIM | AVIF at <= bytes | WebP at <= bytes "
        "| JPEG at <= bytes |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, original in zip(names, originals, strict=True):
        stored = encode_stored(downscale(original), StoredCodec())
        served = score(original, rebuilt(original, stored, espcn))
        cells = []
        codecs: tuple[FullCodec, ...] = ("avif", "webp", "jpeg")
        for codec in codecs:
            found = highest_quality_within(original, codec, len(stored))
            if found is None:
                cells.append("cannot get that small")
                continue
            quality, data = found
            full = score(original, decode_stored(data))
            cells.append(
                f"q{quality}: {full.psnr - served.psnr:+.2f} dB, {full.ssim - served.ssim:+.4f}"
            )
        lines.append(
            f"| {name} | {len(stored):,} | {served.psnr:.2f} / {served.ssim:.4f} | "
            + " | ".join(cells)
            + " |"
        )
    return "\n".join(lines)


def service_read(
    original: bytes, image: Image.Image, espcn: Upscaler, settings: Settings
) -> Reconstruct:
    """The service's own read path for this upload (``render.inference.read_back``)."""
    decoded = decode_upload(original, PILLOW_MAX_PIXELS)
    low_res = downscale(image)
    meta = ImageMeta(
        id="bench",
        width=image.width,
        height=image.height,
        stored_width=low_res.width,
        stored_height=low_res.height,
        content_type=decoded.content_type,
        original_bytes=len(original),
        stored_bytes=0,
        served_format=decoded.served_format,
        created_at=datetime.now(UTC),
        greyscale=decoded.greyscale,
    )
    return read_back(meta, espcn, settings.output_encoding)


def policy_table(
    uploads: list[bytes], floors: list[Floor], espcn: Upscaler, settings: Settings
) -> str:
    lines = [
        "| floor | policy | savings vs uploads | kept | worst Y-PSNR | mean Y-PSNR | worst SSIM "
        "| mean SSIM | s/upload |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|",
    ]
    originals = [decode_upload(data, PILLOW_MAX_PIXELS).image for data in uploads]
    for floor in floors:
        for policy in STORAGE_POLICIES:
            stored, kept, receipts, seconds = 0, [], [], []
            for data, original in zip(uploads, originals, strict=True):
                started = time.perf_counter()
                decision = choose(
                    image=original,
                    original=data,
                    x4=encode_stored(downscale(original), settings.codec),
                    policy=policy,
                    floor=floor,
                    codec=settings.full_codec,
                    reconstruct=service_read(data, original, espcn, settings),
                    model=espcn.label,
                )
                seconds.append(time.perf_counter() - started)
                stored += len(decision.data)
                kept.append(decision.representation)
                receipt = decision.receipt
                assert receipt.psnr is not None and receipt.ssim is not None
                receipts.append(Score(psnr=receipt.psnr, ssim=receipt.ssim))
            counts = ", ".join(f"{kept.count(r)} {r}" for r in dict.fromkeys(kept))
            psnrs, ssims = [r.psnr for r in receipts], [r.ssim for r in receipts]
            lines.append(
                f"| {floor} | {policy} | {sum(uploads_bytes(uploads)) / stored:.1f}x "
                f"({1 - stored / sum(uploads_bytes(uploads)):.1%}) | {counts} | "
                f"{min(psnrs):.2f} | {_mean_db(psnrs)} | {min(ssims):.4f} | "
                f"{statistics.mean(ssims):.4f} | {statistics.mean(seconds):.2f} |"
            )
    return "\n".join(lines)


def uploads_bytes(uploads: list[bytes]) -> list[int]:
    return [len(data) for data in uploads]


def _mean_db(values: list[float]) -> str:
    finite = [v for v in values if v != float("inf")]
    identical = len(values) - len(finite)
    mean = f"{statistics.mean(finite):.2f}" if finite else "-"
    return mean + (f" (+{identical} identical)" if identical else "")


def plot(points: list[Point], path: Path, title: str) -> None:
    figure, axes = plt.subplots(1, 2, figsize=(13, 5.2))
    for metric, ax in zip(("psnr", "ssim"), axes, strict=True):
        for method in dict.fromkeys(p.method for p in points):
            series = [p for p in points if p.method == method]
            style = "-o" if method.startswith("x4") else "--s"
            ax.plot(
                [p.bpp for p in series],
                [getattr(p, metric) for p in series],
                style,
                label=method,
                markersize=4,
            )
        ax.set_xscale("log")
        ax.set_xlabel("stored bits per pixel of the upload (log)")
        ax.set_ylabel("Y-PSNR (dB)" if metric == "psnr" else "SSIM")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--max-side", type=int, default=1024)
    parser.add_argument("--floors", default=DEFAULT_FLOORS)
    parser.add_argument("--plot", type=Path, help="PNG path (default: a run folder)")
    args = parser.parse_args()
    settings = Settings()
    uploads = load_uploads(args.images, args.max_side)
    if not uploads:
        raise SystemExit(f"no .jpg or .png photos in {args.images}")
    originals = [decode_upload(data, PILLOW_MAX_PIXELS).image for data in uploads]
    names = sorted(p.stem for p in args.images.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    espcn, srcnn = shipped_upscaler("espcn"), shipped_upscaler("srcnn")
    upscalers: dict[str, Upscaler] = {"bicubic": BicubicUpscaler(), espcn.label: espcn}
    upscalers[srcnn.label] = srcnn
    floors = [Floor.parse(text) for text in args.floors.split(",")]
    print(
        f"# Rate-distortion: {len(uploads)} photos from {args.images} as JPEG q90 uploads "
        f"(at most {args.max_side} px), mean {statistics.mean(uploads_bytes(uploads)):,.0f} B\n"
    )
    points = curves(originals, upscalers)
    print("## Bytes against quality\n")
    print(curve_table(points))
    print("\n## At equal bytes: full-size codecs against the service's x4 copy (WebP q90)\n")
    print(equal_bytes_table(originals, names, espcn))
    print("\n## Storage policies (receipts of the default read; full-size codec AVIF)\n")
    print(policy_table(uploads, floors, espcn, settings))
    path = (
        args.plot
        or Path("runs/ratedistortion")
        / datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        / "ratedistortion.png"
    )
    plot(
        points,
        path,
        f"{len(uploads)} photos as JPEG q90 uploads, at most {args.max_side} px",
    )
    print(f"\nPlot: {path}")


if __name__ == "__main__":
    main()
