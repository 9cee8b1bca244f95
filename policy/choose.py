"""Choosing what to keep of an upload, by policy and floor, from scored candidates.

Every candidate is scored as a read would serve it: ``reconstruct`` is the service's own read
path (the active model, its tiles and chroma path, the default output encoding), so a receipt
is the quality of what ``GET`` returns, not of an approximation of it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from PIL import Image

from imaging import FullCodecName, encode_full
from imaging.quality import luma_psnr, luma_ssim
from policy.receipts import (
    Floor,
    Metric,
    Receipt,
    Representation,
    Score,
    StoragePolicy,
)

Reconstruct = Callable[[bytes, Representation], Image.Image]
"""The default read of bytes stored as a representation, decoded as a client decodes it."""

LOWEST_QUALITY = 5  # the codec quality search runs over LOWEST_QUALITY..100


@dataclass(frozen=True)
class Candidate:
    representation: Representation
    data: bytes
    score: Score
    quality: int | None = None


@dataclass(frozen=True)
class Decision:
    representation: Representation
    data: bytes
    receipt: Receipt


def score(reference: Image.Image, served: Image.Image) -> Score:
    """Y-PSNR and SSIM over the whole served image: a floor promises every pixel, so unlike
    the trainer's protocol no border is shaved."""
    return Score(psnr=luma_psnr(served, reference, 0), ssim=luma_ssim(served, reference, 0))


def _measure(metric: Metric, reference: Image.Image, served: Image.Image) -> float:
    if metric == "psnr":
        return luma_psnr(served, reference, 0)
    return luma_ssim(served, reference, 0)


def choose(
    *,
    image: Image.Image,
    original: bytes,
    x4: bytes,
    policy: StoragePolicy,
    floor: Floor,
    codec: FullCodecName,
    reconstruct: Reconstruct,
    model: str,
) -> Decision:
    """``downscale`` keeps the x4 copy; ``guarded`` keeps it unless it fails the floor, then
    the fewest bytes that meet it; ``smallest`` the fewest bytes that meet the floor, the x4
    copy included. The original always qualifies, so neither stores more than the upload, and
    ``smallest`` never stores more than ``guarded``: it picks from a superset. ``full`` keeps
    the full-size copy in ``codec`` at the lowest quality that meets the floor (the original
    when none does); ``original`` keeps the upload as it came, unscored: a plain read serves
    its very bytes, so there is nothing to score."""
    if policy == "original":
        return _as_uploaded(original, policy, floor, model)
    if policy == "full":
        full = _lowest_passing_quality(image, codec, floor, reconstruct)
        if full is None:
            return _as_uploaded(original, policy, floor, model)
        return _decision(full, None, policy, floor, model)
    reduced = Candidate("x4", x4, score(image, reconstruct(x4, "x4")))
    if policy == "downscale" or (policy == "guarded" and floor.met_by(reduced.score)):
        return _decision(reduced, reduced, policy, floor, model)
    passing = [reduced] if floor.met_by(reduced.score) else []
    full = _lowest_passing_quality(image, codec, floor, reconstruct)
    if full is not None:
        passing.append(full)
    kept = Candidate("original", original, score(image, reconstruct(original, "original")))
    passing.append(kept)
    return _decision(min(passing, key=lambda c: len(c.data)), reduced, policy, floor, model)


def _lowest_passing_quality(
    image: Image.Image, codec: FullCodecName, floor: Floor, reconstruct: Reconstruct
) -> Candidate | None:
    """Binary search of the codec quality: the lowest one found whose read meets the floor
    (quality is close to, not strictly, monotonic in it; every kept value was measured)."""
    low, high = LOWEST_QUALITY, 100
    best: tuple[int, bytes, Image.Image] | None = None
    while low <= high:
        quality = (low + high) // 2
        data = encode_full(image, codec, quality)
        served = reconstruct(data, codec)
        if _measure(floor.metric, image, served) >= floor.value:
            best, high = (quality, data, served), quality - 1
        else:
            low = quality + 1
    if best is None:
        return None
    quality, data, served = best
    return Candidate(codec, data, score(image, served), quality)


def _as_uploaded(original: bytes, policy: StoragePolicy, floor: Floor, model: str) -> Decision:
    receipt = Receipt(
        policy=policy,
        floor=str(floor),
        representation="original",
        stored_bytes=len(original),
        model=model,
        meets_floor=True,
    )
    return Decision("original", original, receipt)


def _decision(
    kept: Candidate, reduced: Candidate | None, policy: StoragePolicy, floor: Floor, model: str
) -> Decision:
    receipt = Receipt(
        policy=policy,
        floor=str(floor),
        representation=kept.representation,
        quality=kept.quality,
        stored_bytes=len(kept.data),
        model=model,
        psnr=kept.score.psnr,
        ssim=kept.score.ssim,
        meets_floor=floor.met_by(kept.score),
        x4=None if reduced is None or kept is reduced else reduced.score,
    )
    return Decision(kept.representation, kept.data, receipt)
