"""Honest evaluation through the service's own path: photo -> stored copy -> served image.

Each photo is cropped to a multiple of 4, degraded exactly as an upload is, then rebuilt by
the model and by bicubic from the same stored copy; both are compared with the photo on the
studio-swing Y channel with 4 border pixels shaved (the SR literature's protocol).
"""

from __future__ import annotations

import json
import statistics
from dataclasses import asdict, dataclass
from pathlib import Path

from PIL import Image

from imaging import SCALE, StoredCodec, bicubic_upscale, degrade
from models.engine import Upscaler
from trainer.data import image_paths
from trainer.metrics import luma_psnr, luma_ssim


@dataclass(frozen=True)
class ImageScore:
    image: str
    width: int
    height: int
    bicubic_psnr: float
    model_psnr: float
    bicubic_ssim: float
    model_ssim: float

    @property
    def gain_db(self) -> float:
        return self.model_psnr - self.bicubic_psnr


@dataclass(frozen=True)
class Evaluation:
    model: str
    codec: str
    images: list[ImageScore]

    def mean(self, field: str) -> float:
        return statistics.fmean(getattr(score, field) for score in self.images)

    def summary(self) -> dict[str, float]:
        fields = ("bicubic_psnr", "model_psnr", "bicubic_ssim", "model_ssim", "gain_db")
        return {field: round(self.mean(field), 4) for field in fields}

    def to_json(self) -> dict[str, object]:
        rows = [{**asdict(s), "gain_db": round(s.gain_db, 4)} for s in self.images]
        return {"model": self.model, "codec": self.codec, "mean": self.summary(), "images": rows}

    def table(self) -> str:
        lines = [
            f"| image ({self.model}, stored as {self.codec}) | bicubic PSNR | model PSNR | gain "
            "| bicubic SSIM | model SSIM |",
            "|---|---:|---:|---:|---:|---:|",
        ]
        for s in self.images:
            lines.append(
                f"| {s.image} | {s.bicubic_psnr:.2f} | {s.model_psnr:.2f} | {s.gain_db:+.2f} "
                f"| {s.bicubic_ssim:.4f} | {s.model_ssim:.4f} |"
            )
        m = self.summary()
        lines.append(
            f"| **mean of {len(self.images)}** | {m['bicubic_psnr']:.2f} | {m['model_psnr']:.2f} "
            f"| **{m['gain_db']:+.2f}** | {m['bicubic_ssim']:.4f} | {m['model_ssim']:.4f} |"
        )
        return "\n".join(lines)


def crop_to_scale(image: Image.Image) -> Image.Image:
    width, height = image.width - image.width % SCALE, image.height - image.height % SCALE
    return image.crop((0, 0, width, height))


def score_image(
    photo: Image.Image, name: str, upscaler: Upscaler, codec: StoredCodec
) -> ImageScore:
    photo = crop_to_scale(photo.convert("RGB"))
    stored = degrade(photo, codec)
    model, bicubic = upscaler.upscale(stored), bicubic_upscale(stored)
    return ImageScore(
        name,
        photo.width,
        photo.height,
        luma_psnr(bicubic, photo),
        luma_psnr(model, photo),
        luma_ssim(bicubic, photo),
        luma_ssim(model, photo),
    )


def evaluate(upscaler: Upscaler, folder: Path, codec: StoredCodec) -> Evaluation:
    scores = [
        score_image(Image.open(path), path.name, upscaler, codec) for path in image_paths(folder)
    ]
    return Evaluation(upscaler.label, f"{codec.name} q{codec.quality}", scores)


def write_json(evaluation: Evaluation, path: Path) -> None:
    path.write_text(json.dumps(evaluation.to_json(), indent=2) + "\n")
