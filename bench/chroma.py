"""The chroma filter: how close each candidate brings a stored copy's chroma back to the
original's, and what it costs.

    python -m bench.chroma [--images DIR]

For each photo of the folder (the held-out photos in ``corpus/val`` by default), the Cr and Cb
planes of the copy the service stores (``imaging.degrade``: x4 down, WebP q90) are upscaled x4
by each filter and scored by PSNR against the original's planes (Pillow's
``convert("YCbCr")``, as the service splits colour). The CPU per output megapixel is taken on
one thread, on the stored copy of a 12 MP photo (1000x750), the filters taking turns.

- torch's antialiased uint8 bicubic: Pillow's filter (a = -0.5), the service's until issue 27;
- OpenCV's bicubic (a = -0.75): the service's now (``models.engine.upscale_planes``);
- OpenCV's bilinear, the cheapest.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import torch
from PIL import Image
from skimage.metrics import peak_signal_noise_ratio
from torch.nn import functional as F

from bench.inference import table
from imaging import StoredCodec, degrade
from models.archs import SCALE
from models.engine import upscale_planes, ycrcb_planes

DEFAULT_IMAGES = Path("corpus/val")
Filter = Callable[[np.ndarray], np.ndarray]


def torch_bicubic(planes: np.ndarray) -> np.ndarray:
    channels_first = torch.from_numpy(planes).permute(2, 0, 1)[None]
    upscaled = F.interpolate(channels_first, scale_factor=SCALE, mode="bicubic", antialias=True)
    return upscaled[0].permute(1, 2, 0).numpy()


def opencv_bilinear(planes: np.ndarray) -> np.ndarray:
    height, width = planes.shape[:2]
    return cv2.resize(planes, (width * SCALE, height * SCALE), interpolation=cv2.INTER_LINEAR)


FILTERS: dict[str, Filter] = {
    "torch uint8 bicubic, a = -0.5 (before)": torch_bicubic,
    "OpenCV bicubic, a = -0.75 (served)": upscale_planes,
    "OpenCV bilinear": opencv_bilinear,
}


def chroma(image: Image.Image) -> np.ndarray:
    """The (H, W, 2) Cr and Cb planes, as the service splits colour."""
    return np.ascontiguousarray(ycrcb_planes(image.convert("YCbCr"))[..., 1:])


def quality_rows(images: Path) -> list[list[str]]:
    """Per photo, each filter's chroma PSNR and its difference from the first filter's."""
    rows: list[list[str]] = []
    scores: dict[str, list[float]] = {name: [] for name in FILTERS}
    for path in sorted(images.glob("*.png")):
        original = Image.open(path).convert("RGB")
        stored = chroma(degrade(original, StoredCodec()))
        reference = chroma(original)
        height, width = reference.shape[:2]
        for name, upscale in FILTERS.items():
            ours = upscale(stored)[:height, :width]
            scores[name].append(peak_signal_noise_ratio(reference, ours, data_range=255))
        rows.append([path.name, *(f"{score[-1]:.3f}" for score in scores.values())])
    first = scores[next(iter(FILTERS))]
    means = [f"{statistics.fmean(score):.3f}" for score in scores.values()]
    rows.append([f"**mean of {len(first)}**", *means])
    for label, pick in (("mean difference", statistics.fmean), ("worst difference", min)):
        differences = [pick(a - b for a, b in zip(s, first, strict=True)) for s in scores.values()]
        rows.append([label, *(f"{d:+.3f}" for d in differences)])
    return rows


def cost_row(images: Path, rounds: int = 5, repeats: int = 5) -> list[str]:
    """CPU ms per output MP of each filter, the best of ``rounds`` turns, on one thread."""
    photo = Image.open(sorted(images.glob("*.png"))[0]).convert("RGB")
    planes = chroma(degrade(photo.resize((4000, 3000), Image.Resampling.LANCZOS), StoredCodec()))
    output_mp = planes.shape[0] * planes.shape[1] * SCALE**2 / 1e6
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    best = dict.fromkeys(FILTERS, float("inf"))
    try:
        for _ in range(rounds):
            for name, upscale in FILTERS.items():
                started = time.thread_time()
                for _ in range(repeats):
                    upscale(planes)
                best[name] = min(best[name], (time.thread_time() - started) / repeats)
    finally:
        torch.set_num_threads(default_threads)
    return ["CPU ms per output MP", *(f"{1000 * cpu / output_mp:.2f}" for cpu in best.values())]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    args = parser.parse_args()
    cv2.setNumThreads(0)
    header = ["Cr and Cb PSNR (dB)", *FILTERS]
    print(table(header, [*quality_rows(args.images), cost_row(args.images)]))


if __name__ == "__main__":
    main()
