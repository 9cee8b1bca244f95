"""Cut a low-resolution plane into fixed-size overlapping tiles and stitch the results.

Fixed tile shapes let one batch hold tiles from many requests and bound memory for huge
images. Each tile carries a margin wider than the network's receptive field, and the plane
is edge-padded by the same margin, so tiled output equals whole-image output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.nn import functional as F


@dataclass(frozen=True)
class TileLayout:
    height: int
    width: int
    rows: int
    cols: int
    tile: int
    margin: int

    @property
    def count(self) -> int:
        return self.rows * self.cols


def split_tiles(plane: torch.Tensor, tile: int, margin: int) -> tuple[torch.Tensor, TileLayout]:
    """Split a (1, C, H, W) plane into (N, C, tile + 2*margin, tile + 2*margin) tiles."""
    _, _, height, width = plane.shape
    rows, cols = math.ceil(height / tile), math.ceil(width / tile)
    pad_bottom, pad_right = rows * tile - height, cols * tile - width
    padded = F.pad(
        plane, (margin, margin + pad_right, margin, margin + pad_bottom), mode="replicate"
    )
    span = tile + 2 * margin
    tiles = [
        padded[:, :, r * tile : r * tile + span, c * tile : c * tile + span]
        for r in range(rows)
        for c in range(cols)
    ]
    layout = TileLayout(height, width, rows, cols, tile, margin)
    return torch.cat(tiles), layout


def stitch_tiles(outputs: torch.Tensor, layout: TileLayout, scale: int) -> torch.Tensor:
    """Drop each output tile's margin and lay the cores back into a (1, C, sH, sW) plane."""
    core, edge = layout.tile * scale, layout.margin * scale
    channels = outputs.shape[1]
    plane = outputs.new_empty((1, channels, layout.rows * core, layout.cols * core))
    for index in range(layout.count):
        r, c = divmod(index, layout.cols)
        plane[0, :, r * core : (r + 1) * core, c * core : (c + 1) * core] = outputs[
            index, :, edge : edge + core, edge : edge + core
        ]
    return plane[:, :, : layout.height * scale, : layout.width * scale]
