"""Super-resolution networks, built by name from a registry shared by the service and the trainer.

Both networks work on the luma (Y) channel alone and learn the residual over a bicubic
upscale: the papers' Y-channel choice makes inference three times cheaper than RGB, and
the residual makes a small CPU training budget converge to a real gain over bicubic.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn
from torch.nn import functional as F

SCALE = 4


def _bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class ESPCN(nn.Module):
    """Shi et al. 2016: feature extraction at low resolution, then a sub-pixel shuffle."""

    # Low-resolution pixels that influence an output pixel on each side (convs 5, 3, 3; bicubic).
    receptive_radius = 4

    def __init__(self, scale: int = SCALE, features: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        self.scale = scale
        wide, narrow = features
        self.body = nn.Sequential(
            nn.Conv2d(1, wide, 5, padding=2),
            nn.Tanh(),
            nn.Conv2d(wide, narrow, 3, padding=1),
            nn.Tanh(),
            nn.Conv2d(narrow, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        return _bicubic(low_res, self.scale) + self.body(low_res)


class SRCNN(nn.Module):
    """Dong et al. 2014, the 9-1-5 variant, run on the bicubic-upscaled input."""

    # Convs 9, 1, 5 at high resolution span 6 output pixels; bicubic adds 2 input pixels.
    receptive_radius = 4

    def __init__(self, scale: int = SCALE, features: tuple[int, int] = (64, 32)) -> None:
        super().__init__()
        self.scale = scale
        wide, narrow = features
        self.body = nn.Sequential(
            nn.Conv2d(1, wide, 9, padding=4),
            nn.ReLU(inplace=True),
            nn.Conv2d(wide, narrow, 1),
            nn.ReLU(inplace=True),
            nn.Conv2d(narrow, 1, 5, padding=2),
        )

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        upscaled = _bicubic(low_res, self.scale)
        return upscaled + self.body(upscaled)


ARCHITECTURES: dict[str, Callable[[], nn.Module]] = {"espcn": ESPCN, "srcnn": SRCNN}


def build_model(name: str) -> nn.Module:
    """Build an untrained network by its registry name."""
    try:
        return ARCHITECTURES[name]()
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
