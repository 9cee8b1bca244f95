"""Cut a low-resolution plane into fixed-size overlapping tiles and stitch the results.

Fixed tile shapes let one batch hold tiles from many requests and bound memory for huge
images. Each tile carries a margin wider than the network's receptive field, and the plane
is edge-padded by the same margin, so tiled output equals whole-image output.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
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


BandDone = Callable[[slice, np.ndarray], None]
"""Told each band of output rows that is final (its rows, its 8-bit luma), top to bottom."""


@torch.inference_mode()
def stitch_luma(
    outputs: torch.Tensor | Iterable[torch.Tensor],
    layout: TileLayout,
    scale: int,
    on_band: BandDone | None = None,
) -> np.ndarray:
    """The network's (N, 1, sT, sT) output tiles, values in [0, 1], as one 8-bit plane (a
    view, cropped to the image, of the tiles' plane).

    ``outputs`` is every tile in one tensor, or the tiles in order in batches: each batch is
    written as it comes (while the network runs the next one), so the batches are never
    concatenated. Each tile's core is scaled, rounded, clamped and written straight into the
    8-bit plane in one pass: no float plane is stitched first. ``on_band`` is told each row of
    tiles as soon as its last tile is in, so the caller's colour work on that band overlaps
    the network's later batches."""
    core, edge = layout.tile * scale, layout.margin * scale
    plane = np.empty((layout.rows, core, layout.cols, core), dtype=np.uint8)
    by_tile = plane.transpose(0, 2, 1, 3)  # (rows, cols, core, core) views into the plane
    whole = plane.reshape(layout.rows * core, layout.cols * core)
    cropped = whole[: layout.height * scale, : layout.width * scale]
    done = 0
    for batch in (outputs,) if isinstance(outputs, torch.Tensor) else outputs:
        for tile in batch[:, 0, edge : edge + core, edge : edge + core]:
            # x 255, rounded half to even and saturated to 0..255, as torch's round and clamp
            cv2.multiply(
                tile.numpy(), 255.0, dst=by_tile[divmod(done, layout.cols)], dtype=cv2.CV_8U
            )
            done += 1
            if on_band is not None and done % layout.cols == 0:
                top = (done // layout.cols - 1) * core
                rows = slice(top, min(top + core, len(cropped)))
                on_band(rows, cropped[rows])
    if done != layout.count:
        raise ValueError(f"{done} output tiles for a layout of {layout.count}")
    return cropped
