"""What an upload's stored copy costs in quality: floors, representations and receipts."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

from imaging import FullCodecName

Representation = Literal["x4", "avif", "webp", "original"]
"""How an image is kept: the 4x-reduced copy rebuilt by the network on read (``x4``), the
full-size image re-encoded with a lossy codec (``avif``, ``webp``), or the uploaded bytes."""
REPRESENTATIONS: tuple[Representation, ...] = ("x4", "avif", "webp", "original")

StoragePolicy = Literal["downscale", "guarded", "smallest", "full", "original"]
# The policies that choose by score (``full`` and ``original`` choose one representation).
STORAGE_POLICIES: tuple[StoragePolicy, ...] = ("downscale", "guarded", "smallest")

ReceiptState = Literal["pending", "done", "failed"]
"""``pending`` from the upload's ``201`` until compaction has scored and chosen; ``done`` then
(the image keeps what the receipt names); ``failed`` when scoring failed (``error`` says why)."""

Metric = Literal["psnr", "ssim"]
NO_MODEL = "none"  # the model label of a representation served without the network


class InvalidFloor(ValueError):
    """A floor not written ``psnr:<dB>`` or ``ssim:<0..1>``."""


@dataclass(frozen=True)
class Floor:
    """The least quality a served image may have against its original, in one metric."""

    metric: Metric
    value: float

    @classmethod
    def parse(cls, text: str) -> Floor:
        metric, _, value = text.strip().partition(":")
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if metric not in ("psnr", "ssim") or not math.isfinite(number):
            raise InvalidFloor(f"a floor is psnr:<dB> or ssim:<0..1>, not {text!r}")
        if metric == "ssim" and not 0 < number <= 1:
            raise InvalidFloor(f"an SSIM floor lies in (0, 1], not {number:g}")
        return cls("psnr" if metric == "psnr" else "ssim", number)

    def met_by(self, score: Score) -> bool:
        return getattr(score, self.metric) >= self.value

    def __str__(self) -> str:
        return f"{self.metric}:{self.value:g}"


class Score(BaseModel):
    """Y-PSNR (dB, BT.601 studio luma, ``inf`` when identical) and SSIM of a served image
    against the decoded upload, over the whole image."""

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    psnr: float
    ssim: float


class Receipt(BaseModel):
    """Kept with every image: what a read returns, scored against the upload at upload time.

    ``psnr``/``ssim`` score the default read (``GET /v1/images/{id}`` without a query) of the
    stored representation, decoded; ``x4`` scores the 4x copy when another representation
    was kept instead. ``error`` says why scoring failed (the x4 copy is then kept, unscored).
    """

    model_config = ConfigDict(frozen=True, ser_json_inf_nan="strings")

    state: ReceiptState = "done"
    policy: StoragePolicy
    floor: str
    representation: Representation
    quality: int | None = None  # the codec quality of a copy scoring encoded (full-size or x4)
    codec: FullCodecName | None = None  # the codec of an x4 copy scoring encoded (``smallest``)
    stored_bytes: int
    model: str  # the version that rebuilt the x4 copy for scoring (its score: psnr/ssim or x4)
    psnr: float | None = None
    ssim: float | None = None
    meets_floor: bool | None = None
    x4: Score | None = None
    error: str | None = None
