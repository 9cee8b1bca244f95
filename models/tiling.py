"""Cut a low-resolution plane into fixed-size overlapping tiles and stitch the results.

Fixed tile shapes let one batch hold tiles from many requests and bound memory for huge
images. Each tile carries a margin wider than the network's receptive field, and the plane
is edge-padded by the same margin, so tiled output equals whole-image output.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import cv2
import numpy as np
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


@torch.inference_mode()
def stitch_luma(
    outputs: torch.Tensor | Iterable[torch.Tensor], layout: TileLayout, scale: int
) -> np.ndarray:
    """The network's (N, 1, sT, sT) output tiles, values in [0, 1], as one 8-bit plane (a
    view, cropped to the image, of the tiles' plane).

    ``outputs`` is every tile in one tensor, or the tiles in order in batches: each batch is
    written as it comes (while the network runs the next one), so the batches are never
    concatenated. Each tile's core is clamped in place, then scaled, rounded and written
    straight into the 8-bit plane in one pass: no float plane is stitched first. It consumes
    the outputs."""
    core, edge = layout.tile * scale, layout.margin * scale
    plane = np.empty((layout.rows, core, layout.cols, core), dtype=np.uint8)
    by_tile = plane.transpose(0, 2, 1, 3)  # (rows, cols, core, core) views into the plane
    done = 0
    for batch in (outputs,) if isinstance(outputs, torch.Tensor) else outputs:
        cores = batch[:, 0, edge : edge + core, edge : edge + core].clamp_(0.0, 1.0)
        for index, tile in enumerate(cores, start=done):
            # Scaled, rounded (half to even, as torch.round), made 8-bit and written into the
            # plane in one pass.
            cv2.convertScaleAbs(tile.numpy(), dst=by_tile[divmod(index, layout.cols)], alpha=255.0)
        done += len(cores)
    if done != layout.count:
        raise ValueError(f"{done} output tiles for a layout of {layout.count}")
    whole = plane.reshape(layout.rows * core, layout.cols * core)
    return whole[: layout.height * scale, : layout.width * scale]
