"""Training pairs made exactly as production makes its inputs.

Each whole photo goes through ``imaging.degrade`` once (pad, 4x antialiased bicubic, the
stored codec's round trip), so codec blocks sit where they sit in production; aligned patches
are then cut from the luma of the photo and of its degraded copy.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imaging import SCALE, StoredCodec, degrade, pad_to_scale

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff"}


def luma(image: Image.Image) -> np.ndarray:
    """PIL's BT.601 full-range Y, the plane the service feeds the network."""
    return np.asarray(image.convert("RGB").convert("YCbCr"), np.uint8)[..., 0]


@dataclass(frozen=True)
class Pair:
    high: np.ndarray  # (4h, 4w) uint8 luma of the photo, edge-padded to a multiple of 4
    low: np.ndarray  # (h, w) uint8 luma of what the service stores


def image_paths(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)


def load_pairs(folder: Path, codec: StoredCodec) -> list[Pair]:
    pairs = []
    for path in image_paths(folder):
        photo = Image.open(path).convert("RGB")
        pairs.append(Pair(luma(pad_to_scale(photo)), luma(degrade(photo, codec))))
    if not pairs:
        raise FileNotFoundError(f"no images under {folder}")
    return pairs


class PatchSampler:
    """Random aligned patches with flips and 90-degree turns, from a seeded generator."""

    def __init__(self, pairs: list[Pair], patch: int, seed: int) -> None:
        if patch % SCALE:
            raise ValueError(f"the patch size must be a multiple of {SCALE}")
        self.pairs = [p for p in pairs if min(p.low.shape) * SCALE >= patch]
        self.patch = patch
        self.rng = np.random.default_rng(seed)

    def batch(self, size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(low, high) float tensors in [0, 1], shapes (N, 1, p/4, p/4) and (N, 1, p, p)."""
        lows, highs = [], []
        low_patch = self.patch // SCALE
        for _ in range(size):
            pair = self.pairs[self.rng.integers(len(self.pairs))]
            y = self.rng.integers(pair.low.shape[0] - low_patch + 1)
            x = self.rng.integers(pair.low.shape[1] - low_patch + 1)
            low = pair.low[y : y + low_patch, x : x + low_patch]
            high = pair.high[
                SCALE * y : SCALE * (y + low_patch), SCALE * x : SCALE * (x + low_patch)
            ]
            turns, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
            lows.append(_augment(low, turns, flip))
            highs.append(_augment(high, turns, flip))
        return _stack(lows), _stack(highs)


def _augment(plane: np.ndarray, turns: int, flip: bool) -> np.ndarray:
    plane = np.rot90(plane, turns)
    return np.fliplr(plane) if flip else plane


def _stack(planes: list[np.ndarray]) -> torch.Tensor:
    array = np.stack([np.ascontiguousarray(p) for p in planes]).astype(np.float32) / 255.0
    return torch.from_numpy(array)[:, None]
