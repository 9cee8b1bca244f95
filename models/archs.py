"""Super-resolution networks, built by name from a registry shared by the service and the trainer.

Both networks work on the luma (Y) channel alone and learn the residual over a bicubic
upscale: the papers' Y-channel choice makes inference three times cheaper than RGB, and
the residual makes a small CPU training budget converge to a real gain over bicubic.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

SCALE = 4


def _bicubic(x: torch.Tensor, scale: int) -> torch.Tensor:
    return F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)


class BicubicSkip(nn.Module):
    """:func:`_bicubic` as a convolution into the ``scale**2`` sub-pixel channels that a pixel
    shuffle lays out: each channel is one output phase, a 5x5 kernel of fixed bicubic taps over
    the edge-replicated input (what ``interpolate`` does at a border), so the result is
    ``_bicubic``'s to float rounding everywhere.

    On a 144x144 tile this convolution took 0.15-0.37 ms of CPU against ``interpolate``'s
    2.1-2.4 ms, and the skip joins the network's output before the one shuffle instead of
    after it (bench/RESULTS.md, issue 27). The taps are a non-persistent buffer: weight files
    do not carry them."""

    radius = 2  # input pixels on each side that an output phase reads
    taps: torch.Tensor

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.register_buffer("taps", _bicubic_taps(scale, self.radius), persistent=False)

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        padded = F.pad(low_res, (self.radius,) * 4, mode="replicate")
        return F.conv2d(padded, self.taps)


def _bicubic_taps(scale: int, radius: int) -> torch.Tensor:
    """(scale**2, 1, k, k) weights, read off :func:`_bicubic` of one impulse per tap."""
    size = 2 * radius + 1
    centre = size  # far enough from the borders that no tap is clamped
    taps = torch.empty(scale * scale, 1, size, size, dtype=torch.float64)
    for row in range(size):
        for col in range(size):
            impulse = torch.zeros(1, 1, 2 * size + 1, 2 * size + 1, dtype=torch.float64)
            impulse[0, 0, centre + row - radius, centre + col - radius] = 1.0
            phases = _bicubic(impulse, scale)[0, 0, centre * scale :, centre * scale :]
            taps[:, 0, row, col] = phases[:scale, :scale].reshape(-1)
    return taps.float()


class ESPCN(nn.Module):
    """Shi et al. 2016: feature extraction at low resolution, then a sub-pixel shuffle.

    Version 1 used the paper's tanh. With it the network settles within a few thousand steps
    at about a third of the gain the same layers reach with PReLU (FSRCNN's choice), so
    newer weights use PReLU; a weight file says which by carrying PReLU slopes or not.
    """

    # Low-resolution pixels that influence an output pixel on each side (convs 5, 3, 3; bicubic).
    receptive_radius = 4

    def __init__(
        self,
        scale: int = SCALE,
        features: tuple[int, int] = (64, 32),
        activation: Literal["prelu", "tanh"] = "prelu",
    ) -> None:
        super().__init__()
        self.scale = scale
        self.activation = activation
        wide, narrow = features
        self.body = nn.Sequential(
            nn.Conv2d(1, wide, 5, padding=2),
            _activation(activation, wide),
            nn.Conv2d(wide, narrow, 3, padding=1),
            _activation(activation, narrow),
            nn.Conv2d(narrow, scale * scale, 3, padding=1),
            nn.PixelShuffle(scale),
        )
        self.skip = BicubicSkip(scale)

    @classmethod
    def for_weights(cls, state: Mapping[str, torch.Tensor]) -> ESPCN:
        return cls(activation="prelu" if "body.1.weight" in state else "tanh")

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        """Bicubic plus the learned residual, added in sub-pixel channels before the shuffle."""
        *layers, shuffle = self.body
        residual = low_res
        for layer in layers:
            residual = layer(residual)
        return shuffle(residual + self.skip(low_res))


def _activation(kind: str, channels: int) -> nn.Module:
    return nn.PReLU(channels) if kind == "prelu" else nn.Tanh()


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

    @classmethod
    def for_weights(cls, state: Mapping[str, torch.Tensor]) -> SRCNN:
        return cls()

    def forward(self, low_res: torch.Tensor) -> torch.Tensor:
        upscaled = _bicubic(low_res, self.scale)
        return upscaled + self.body(upscaled)


ARCHITECTURES: dict[str, type[ESPCN] | type[SRCNN]] = {"espcn": ESPCN, "srcnn": SRCNN}


def build_model(name: str, state: Mapping[str, torch.Tensor] | None = None) -> nn.Module:
    """Build a network by its registry name: the variant ``state`` was trained as, if given,
    else the one the trainer trains now."""
    try:
        architecture = ARCHITECTURES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(ARCHITECTURES)}") from None
    return architecture() if state is None else architecture.for_weights(state)
