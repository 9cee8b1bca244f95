"""Inference: from a stored low-resolution image to its 4x super-resolved version.

Luma goes through the network in fixed-size tiles; chroma and alpha take a bicubic upscale,
as in the ESPCN and SRCNN papers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
from PIL import Image
from torch import nn

from models.archs import SCALE
from models.tiling import split_tiles, stitch_tiles

BICUBIC_LABEL = "bicubic"


class Upscaler(Protocol):
    """Anything that turns a low-resolution image into one four times larger."""

    @property
    def label(self) -> str:
        """``name:version`` of the model, or ``bicubic`` when no model serves."""
        ...

    def upscale(self, low_res: Image.Image) -> Image.Image: ...


class LumaFn(Protocol):
    def __call__(self, luma: Image.Image) -> Image.Image: ...


def resolve_device(requested: str) -> torch.device:
    """``auto`` takes CUDA when present; an explicit ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("SRSTORE_DEVICE=cuda but no CUDA device is available")
    return torch.device(requested)


def luma_to_tensor(luma: Image.Image) -> torch.Tensor:
    """An L-mode image as a (1, 1, H, W) float tensor in [0, 1]."""
    array = np.asarray(luma, dtype=np.float32) / 255.0
    return torch.from_numpy(array)[None, None]


def tensor_to_luma(plane: torch.Tensor) -> Image.Image:
    array = plane[0, 0].clamp(0.0, 1.0).mul(255.0).round().to(torch.uint8).cpu().numpy()
    return Image.fromarray(array, mode="L")


def upscale_with_luma(low_res: Image.Image, upscale_luma: LumaFn) -> Image.Image:
    """Send luma through ``upscale_luma``; chroma and alpha take bicubic."""
    size = (low_res.width * SCALE, low_res.height * SCALE)
    if low_res.mode == "L":
        return upscale_luma(low_res)
    y, cb, cr = low_res.convert("RGB").convert("YCbCr").split()
    chroma = [band.resize(size, Image.Resampling.BICUBIC) for band in (cb, cr)]
    result = Image.merge("YCbCr", [upscale_luma(y), *chroma]).convert("RGB")
    if low_res.mode == "RGBA":
        result.putalpha(low_res.getchannel("A").resize(size, Image.Resampling.BICUBIC))
    return result


class BicubicUpscaler:
    """The honest fallback when no weights are available: labelled ``bicubic``, never a model."""

    label = BICUBIC_LABEL

    def upscale(self, low_res: Image.Image) -> Image.Image:
        size = (low_res.width * SCALE, low_res.height * SCALE)
        return low_res.resize(size, Image.Resampling.BICUBIC)


@dataclass
class NeuralUpscaler:
    """A trained network on one device, run tile by tile."""

    model: nn.Module
    name: str
    version: int
    device: torch.device
    tile: int = 128

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        self.margin = 2 * int(getattr(self.model, "receptive_radius", 4))

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @torch.inference_mode()
    def run_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """One forward pass over a batch of equally sized tiles."""
        return self.model(tiles.to(self.device)).float().cpu()

    def upscale_luma(self, luma: Image.Image) -> Image.Image:
        tiles, layout = split_tiles(luma_to_tensor(luma), self.tile, self.margin)
        return tensor_to_luma(stitch_tiles(self.run_tiles(tiles), layout, SCALE))

    def upscale(self, low_res: Image.Image) -> Image.Image:
        return upscale_with_luma(low_res, self.upscale_luma)
