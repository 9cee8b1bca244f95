"""What a quality receipt costs, before and after the scoring of issue #20 item 4, per policy.

    python -m bench.receipts [--images corpus/val] [--size 4000x3000,1024x1024]
                             [--floor ssim:0.9]

Each held-out photo (``srstore train corpus`` builds ``corpus/val``) is resized (LANCZOS) to
each ``--size`` and uploaded as JPEG q90; the first two also with lines of small text over
them (``captioned``: the x4 copy fails the floor, so ``guarded`` searches a full-size
quality). Side by side, in one process, with the shipped ESPCN: the CPU seconds of one cold
miss (the plain read's render: decode the x4 copy, the network, encode), and per policy the
CPU seconds of scoring and choosing as it was ("before": whole-image luma and SSIM per
candidate, a blind bisection of the codec quality) and as it is now (``policy.choose`` with
the sampled mosaic).

"now / miss" counts the receipt whole. When it keeps an x4 copy, the receipt's render of it
is cached (the first read is a hit), so "minus the cached render" is what the receipt costs
beyond the cold miss it saves: (now - miss) / miss. A full-size copy is read without the
network: nothing is saved, and the whole figure is the one to read.

Both choices are then scored on the whole image, untimed, so that the "now" choice is
compared with the "before" one on the same definition. ``smallest`` weighs candidates that
"before" did not have (issue 20 item 5); for it the table also compares "now" with an
exhaustive choice among today's candidates, each scored on the whole image ("same
candidates"): that difference is the search's, the other one the new candidates'.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import TypeVar

from PIL import Image

from bench.inference import describe_machine
from bench.ratedistortion import DEFAULT_IMAGES
from bench.upload import caption
from config.settings import Settings
from imaging import (
    PILLOW_MAX_PIXELS,
    FullCodecName,
    decode_upload,
    downscale,
    encode_full,
    encode_stored,
)
from imaging.quality import luma_psnr, luma_ssim
from models.engine import Upscaler
from models.weights import shipped_upscaler
from policy import Floor, Reconstruct, Representation, Score, StoragePolicy
from policy.choose import LOWEST_QUALITY, X4_OPTIONS, choose
from render.images import ImageMeta
from render.inference import read_back, rebuild, sample_read

T = TypeVar("T")
POLICIES: tuple[StoragePolicy, ...] = ("downscale", "guarded", "smallest")


@dataclass(frozen=True)
class Kept:
    representation: Representation
    quality: int | None
    data: bytes


def cpu(work: Callable[[], T]) -> tuple[float, T]:
    """Process CPU seconds (all threads: the network's too) of ``work``."""
    started = time.process_time()
    result = work()
    return time.process_time() - started, result


def before(
    image: Image.Image,
    original: bytes,
    x4: bytes,
    policy: StoragePolicy,
    floor: Floor,
    codec: FullCodecName,
    reconstruct: Reconstruct,
) -> Kept:
    """``policy.choose`` as it was before item 4 (commit d97d9a7): every candidate scored on
    the whole image, the reference's luma computed again each time, the codec quality
    bisected over 5..100, the original always scored. Kept here as the baseline."""

    def scored(served: Image.Image) -> Score:
        return Score(psnr=luma_psnr(served, image, 0), ssim=luma_ssim(served, image, 0))

    def measure(served: Image.Image) -> float:
        if floor.metric == "psnr":
            return luma_psnr(served, image, 0)
        return luma_ssim(served, image, 0)

    reduced = scored(reconstruct(x4, "x4"))
    if policy == "downscale" or (policy == "guarded" and floor.met_by(reduced)):
        return Kept("x4", None, x4)
    passing = [Kept("x4", None, x4)] if floor.met_by(reduced) else []
    low, high, best = LOWEST_QUALITY, 100, None
    while low <= high:
        quality = (low + high) // 2
        data = encode_full(image, codec, quality)
        served = reconstruct(data, codec)
        if measure(served) >= floor.value:
            best, high = (quality, data, served), quality - 1
        else:
            low = quality + 1
    if best is not None:
        scored(best[2])
        passing.append(Kept(codec, best[0], best[1]))
    scored(reconstruct(original, "original"))
    passing.append(Kept("original", None, original))
    return min(passing, key=lambda k: len(k.data))


def exhaustive_smallest(
    image: Image.Image, original: bytes, x4: bytes, floor: Floor, reconstruct: Reconstruct
) -> Kept:
    """``smallest`` among today's candidates, every one scored on the whole image: the x4
    copy and the lower-quality ones, full-size AVIF and WebP at the lowest quality that
    meets the floor (bisected), the original. What the sampled search approximates."""

    def passes(data: bytes, representation: Representation) -> bool:
        return floor.met_by(whole_image(image, reconstruct(data, representation)))

    low_res = downscale(image)
    passing = [Kept("original", None, original)]
    for data in [x4] + [encode_full(low_res, codec, level) for codec, level in X4_OPTIONS]:
        if len(data) < len(original) and passes(data, "x4"):
            passing.append(Kept("x4", None, data))
    for codec in ("avif", "webp"):
        low, high, best = LOWEST_QUALITY, 100, None
        while low <= high:
            quality = (low + high) // 2
            data = encode_full(image, codec, quality)
            if passes(data, codec):
                best, high = Kept(codec, quality, data), quality - 1
            else:
                low = quality + 1
        if best is not None:
            passing.append(best)
    return min(passing, key=lambda k: len(k.data))


def meta_of(data: bytes, image: Image.Image) -> ImageMeta:
    decoded = decode_upload(data, PILLOW_MAX_PIXELS)
    low_res = downscale(image)
    return ImageMeta(
        id="bench",
        width=image.width,
        height=image.height,
        stored_width=low_res.width,
        stored_height=low_res.height,
        content_type=decoded.content_type,
        original_bytes=len(data),
        stored_bytes=0,
        served_format=decoded.served_format,
        created_at=datetime.now(UTC),
        greyscale=decoded.greyscale,
    )


def whole_image(image: Image.Image, served: Image.Image) -> Score:
    return Score(psnr=luma_psnr(served, image, 0), ssim=luma_ssim(served, image, 0))


def describe(kept: Kept, score: Score) -> str:
    quality = f" q{kept.quality}" if kept.quality is not None else ""
    return (
        f"{kept.representation}{quality}, {len(kept.data):,} B, {score.psnr:.2f}/{score.ssim:.4f}"
    )


def report(uploads: list[tuple[str, bytes]], floor: Floor, espcn: Upscaler) -> list[str]:
    lines = [
        "| upload | cold miss CPU s | policy | before: kept, bytes, Y-PSNR/SSIM | before CPU s "
        "| now: kept, bytes, Y-PSNR/SSIM | now CPU s | now / miss "
        "| minus the cached render, / miss "
        "| Δ dB, Δ SSIM | same candidates: kept, Δ dB, Δ SSIM |",
        "|---|---:|---|---|---:|---|---:|---:|---:|---:|---|",
    ]
    for line in lines:
        print(line, flush=True)
    for name, data in uploads:
        for line in rows(name, data, floor, espcn, Settings()):
            lines.append(line)
            print(line, flush=True)
    return lines


def rows(name: str, data: bytes, floor: Floor, espcn: Upscaler, settings: Settings) -> list[str]:
    """One upload: a cold miss, then each policy before and now."""
    encoding = settings.output_encoding
    image = decode_upload(data, PILLOW_MAX_PIXELS).image
    x4 = encode_stored(downscale(image), settings.codec)
    meta = meta_of(data, image)
    fmt = meta.served_format
    miss, _ = cpu(partial(rebuild, x4, meta, espcn, fmt, encoding.quality_of(fmt, None), encoding))
    reconstruct = read_back(meta, espcn, encoding)
    lines = []
    for policy in POLICIES:
        old_cpu, old = cpu(
            partial(before, image, data, x4, policy, floor, settings.full_codec, reconstruct)
        )
        new_cpu, decision = cpu(
            partial(
                choose,
                image=image,
                original=data,
                x4=x4,
                policy=policy,
                floor=floor,
                codec=settings.full_codec,
                reconstruct=reconstruct,
                model=espcn.label,
                sample_read=sample_read(meta, espcn, encoding),
            )
        )
        new = Kept(decision.representation, decision.receipt.quality, decision.data)
        old_score = whole_image(image, reconstruct(old.data, old.representation))
        new_score = whole_image(image, reconstruct(new.data, new.representation))
        codec = decision.receipt.codec
        shown = describe(new, new_score) + (f" ({codec} x4)" if codec else "")
        marginal = f"{(new_cpu - miss) / miss:.2f}" if new.representation == "x4" else "—"
        same = "—"
        if policy == "smallest":
            best = exhaustive_smallest(image, data, x4, floor, reconstruct)
            best_score = whole_image(image, reconstruct(best.data, best.representation))
            same = f"{describe(best, best_score)}; {change_of(new_score, best_score)}"
        lines.append(
            f"| {name} | {miss:.2f} | {policy} | {describe(old, old_score)} | {old_cpu:.2f} "
            f"| {shown} | {new_cpu:.2f} | {new_cpu / miss:.2f} | {marginal} "
            f"| {change_of(new_score, old_score)} | {same} |"
        )
    return lines


def change_of(new: Score, old: Score) -> str:
    return f"{new.psnr - old.psnr:+.2f}, {new.ssim - old.ssim:+.4f}"


def load(folder: Path, size: tuple[int, int], captioned: int) -> list[tuple[str, bytes]]:
    uploads = []
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in {".jpg", ".png"})
    for index, path in enumerate(paths):
        photo = Image.open(path).convert("RGB").resize(size, Image.Resampling.LANCZOS)
        versions = [(path.stem[:24], photo)]
        if index < captioned:
            versions.append((f"{path.stem[:16]} captioned", caption(photo)))
        for name, image in versions:
            buffer = io.BytesIO()
            image.save(buffer, "JPEG", quality=90)
            uploads.append((name, buffer.getvalue()))
    return uploads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument(
        "--size", default="4000x3000,1024x1024", help="WIDTHxHEIGHT[,...] of the uploads"
    )
    parser.add_argument("--floor", default="ssim:0.9")
    parser.add_argument("--captioned", type=int, default=2, help="photos also captioned")
    parser.add_argument("--limit", type=int, help="at most this many uploads")
    args = parser.parse_args()
    print("\n".join(describe_machine()))
    espcn = shipped_upscaler("espcn")
    for size in args.size.split(","):
        width, height = (int(side) for side in size.split("x"))
        uploads = load(args.images, (width, height), args.captioned)[: args.limit]
        if not uploads:
            raise SystemExit(f"no .jpg or .png photos in {args.images}: run `srstore train corpus`")
        print(f"\n## Receipt CPU, {width}x{height} JPEG q90 uploads, floor {args.floor}\n")
        report(uploads, Floor.parse(args.floor), espcn)


if __name__ == "__main__":
    main()
