"""How close an image is to a reference: the one definition of Y-PSNR and SSIM.

The SR literature's protocol, used alike by the trainer's evaluation, the canary score of a
weight file and the service's quality receipts: BT.601 studio-swing luma (16..235, as
MATLAB's ``rgb2ycbcr``) with a 4-pixel border shaved; SSIM as Wang et al. 2004 (11x11
Gaussian window, sigma 1.5, valid region), computed by scikit-image.

A receipt scores several candidates against one upload: ``Reference`` keeps the upload's luma
and its half of the SSIM windows, computed once, and scores a large image on a deterministic
sample of tiles (``sample_boxes``). Its Gaussian windows are OpenCV's separable filter: 1.1 ms
a pass over 1 MP against SciPy's 18 ms (which scikit-image calls; torch's depthwise
convolution was slower still), the same values within float32 rounding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image
from skimage.metrics import structural_similarity

BORDER = 4


def studio_luma(image: Image.Image, border: int = BORDER) -> np.ndarray:
    """BT.601 studio-swing Y of an image (alpha ignored), with ``border`` pixels shaved."""
    rgb = np.asarray(image.convert("RGB"), np.float64) / 255.0
    y = 16 + 65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]
    return y[border:-border, border:-border] if border else y


def luma_psnr(a: Image.Image, b: Image.Image, border: int = BORDER) -> float:
    """PSNR in dB on studio-swing Y; infinite for identical lumas."""
    error = float(np.mean((studio_luma(a, border) - studio_luma(b, border)) ** 2))
    return math.inf if error == 0 else 10 * math.log10(255.0**2 / error)


def luma_ssim(a: Image.Image, b: Image.Image, border: int = BORDER) -> float:
    """SSIM on studio-swing Y. Float32 planes: 3.5x faster than float64 on a 12 MP image,
    within 1e-6 of it."""
    return plane_ssim(studio_luma(a, border), studio_luma(b, border))


def plane_ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Wang et al. 2004 SSIM of two planes: 1.0 for identical planes, 0 for unrelated ones."""
    if min(a.shape) < 11:
        return _global_ssim(a, b, peak)
    return float(
        structural_similarity(
            a.astype(np.float32),
            b.astype(np.float32),
            data_range=peak,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


def _global_ssim(a: np.ndarray, b: np.ndarray, peak: float) -> float:
    """SSIM of a plane smaller than one window: the same formula over the whole plane."""
    x, y = a.astype(np.float64), b.astype(np.float64)
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = x.mean(), y.mean()
    covariance = ((x - mu_x) * (y - mu_y)).mean()
    numerator = (2 * mu_x * mu_y + c1) * (2 * covariance + c2)
    return float(numerator / ((mu_x**2 + mu_y**2 + c1) * (x.var() + y.var() + c2)))


# --- Scoring an upload's candidates --------------------------------------------------------

SSIM_SIGMA, SSIM_TRUNCATE = 1.5, 3.5  # Wang's 11-tap Gaussian window, as scikit-image builds it
SSIM_RADIUS = int(SSIM_TRUNCATE * SSIM_SIGMA + 0.5)
WHOLE_IMAGE_PIXELS = 2_500_000  # scored whole up to this size; larger on a sample of tiles
TILE = 256  # the side of a sampled tile, in pixels
TILES = 16  # tiles in the sample of a larger image (the grid may round up to 20): ~1 MP
TILE_ALIGN = 64  # tile origins: on the blocks of JPEG (16), the x4 copy's WebP (4 x 16), AVIF (64)
TILE_MARGIN = 32  # context kept around a tile where it is rendered apart (see ``sample_mosaic``)
SAMPLE_SEED = 20  # the jitter of tile positions: the same sample for every image of one size
PSNR_ROW_STRIDE = 3  # a sampled image's PSNR: every third row (coprime with 8-, 16-, 64-px blocks)
LUMA_CENTRE = 125.5  # the middle of studio-swing luma (16..235)
_LUMA = np.array([65.481, 128.553, 24.966]) / 255.0


@dataclass(frozen=True)
class Box:
    """A scored region: ``left <= x < right``, ``top <= y < bottom``."""

    left: int
    top: int
    right: int
    bottom: int

    @property
    def pixels(self) -> int:
        return (self.right - self.left) * (self.bottom - self.top)


def sample_boxes(width: int, height: int) -> tuple[Box, ...]:
    """The regions an image of this size is scored on: the whole image up to
    ``WHOLE_IMAGE_PIXELS``; above it a stratified, jittered and deterministic sample of
    ``TILES`` or a few more tiles of ``TILE`` pixels (whole rows of a grid shaped like the
    image: 20 on a 4:3 photo; fewer only where the cells would not hold a tile and its
    margins), one per cell, each at a seeded random ``TILE_ALIGN``-aligned position in its
    cell and at least ``TILE_MARGIN`` from the image's edges. A tile's SSIM values are the
    whole image's at those pixels (the window reads the pixels around it), so the sample
    estimates the whole-image mean without bias; ``tests/test_quality.py`` holds it to 0.005
    SSIM and 0.2 dB on the held-out photos.
    """
    span = TILE + 2 * TILE_MARGIN
    # An aligned tile with its margin on both sides needs this much (352 px): a narrower image
    # put its tiles at the edge, without the margin above them (the mosaic read past the edge).
    fits = -(-TILE_MARGIN // TILE_ALIGN) * TILE_ALIGN + TILE + TILE_MARGIN
    if width * height <= WHOLE_IMAGE_PIXELS or min(width, height) < fits:
        return (Box(0, 0, width, height),)
    columns = max(1, min(round(math.sqrt(TILES * width / height)), width // span))
    rows = max(1, min(math.ceil(TILES / columns), height // span))
    rng = np.random.default_rng(SAMPLE_SEED)
    boxes = []
    for row in range(rows):
        for column in range(columns):
            left = _aligned_origin(
                rng, column * width // columns, (column + 1) * width // columns, width
            )
            top = _aligned_origin(rng, row * height // rows, (row + 1) * height // rows, height)
            boxes.append(Box(left, top, left + TILE, top + TILE))
    return tuple(boxes)


def _aligned_origin(rng: np.random.Generator, start: int, stop: int, side: int) -> int:
    """An aligned tile origin whose tile (and its margin) lies in the image, in the cell when
    it fits, as near the cell as it can otherwise."""
    lowest = -(-TILE_MARGIN // TILE_ALIGN) * TILE_ALIGN
    highest = (side - TILE - TILE_MARGIN) // TILE_ALIGN * TILE_ALIGN
    first = min(max(-(-start // TILE_ALIGN) * TILE_ALIGN, lowest), highest)
    last = max(min((stop - TILE) // TILE_ALIGN * TILE_ALIGN, highest), first)
    return first + TILE_ALIGN * int(rng.integers(0, (last - first) // TILE_ALIGN + 1))


def _luma(image: Image.Image, box: Box) -> np.ndarray:
    """Studio-swing Y (as ``studio_luma``) of one region, in float64."""
    region = (
        image
        if image.size == (box.right - box.left, box.bottom - box.top)
        and (
            box.left,
            box.top,
        )
        == (0, 0)
        else image.crop((box.left, box.top, box.right, box.bottom))
    )
    rgb = np.asarray(region if region.mode == "RGB" else region.convert("RGB"), np.float64)
    return 16 + rgb @ _LUMA


def _rows_luma(image: Image.Image) -> np.ndarray:
    """Studio-swing Y of every ``PSNR_ROW_STRIDE``-th row, in float64 (float32 saved 15 ms of
    a 12 MP image's score, and its PSNR then differs from the reference formula's)."""
    rgb = np.asarray(image if image.mode == "RGB" else image.convert("RGB"))[::PSNR_ROW_STRIDE]
    return 16 + rgb.astype(np.float64) @ _LUMA


def _gaussian_taps() -> np.ndarray:
    """SciPy's ``gaussian_filter`` kernel for ``SSIM_SIGMA`` and ``SSIM_TRUNCATE``, as a column."""
    offsets = np.arange(-SSIM_RADIUS, SSIM_RADIUS + 1, dtype=np.float64)
    taps = np.exp(-0.5 * (offsets / SSIM_SIGMA) ** 2)
    return (taps / taps.sum()).astype(np.float32).reshape(-1, 1)


_TAPS = _gaussian_taps()
# On the caller's thread only: a compaction scores at its own lower priority (see
# ``render.priority``), which threads of OpenCV's pool would not share.
cv2.setNumThreads(0)


def _centred(luma: np.ndarray) -> np.ndarray:
    """Luma less ``LUMA_CENTRE``, in float32: the windowed variances subtract squares of
    means, and centred values keep that difference within float32's precision."""
    return (luma - LUMA_CENTRE).astype(np.float32)


def _window(plane: np.ndarray) -> np.ndarray:
    """The Gaussian-weighted mean around every pixel (float32); only the pixels whose whole
    window lies in the plane are read, so the border rule does not matter (reflect, as SciPy)."""
    return cv2.sepFilter2D(plane, cv2.CV_32F, _TAPS, _TAPS, borderType=cv2.BORDER_REFLECT)


@dataclass(frozen=True)
class _Region:
    """One scored region of the reference: its luma, and its SSIM moments where kept."""

    box: Box  # what PSNR counts
    read: Box  # the box and the pixels its SSIM windows reach, within the image
    inner: tuple[slice, slice]  # the pixels of ``read`` whose SSIM values count
    luma: np.ndarray  # float64 over ``read``
    luma32: np.ndarray  # the same less ``LUMA_CENTRE``, in float32, as the windows read it
    mean: np.ndarray  # float32 windowed moments of ``luma32``, over ``inner``
    square: np.ndarray


class Reference:
    """An upload's luma and SSIM moments, computed once and held against every candidate.

    Scores are Y-PSNR and SSIM as ``luma_psnr``/``luma_ssim`` with no border shaved, over the
    regions of ``sample_boxes`` (the whole image for most uploads, where they equal those
    functions' values); the reference's half of the SSIM windows is computed here, once,
    instead of once per candidate. On a sampled image PSNR counts every ``PSNR_ROW_STRIDE``-th
    row: the squared error varies too much between tiles (a sky against foliage) for the
    tiles to estimate it within 0.2 dB, while rows spread over the whole image do.
    """

    def __init__(self, image: Image.Image, boxes: tuple[Box, ...] | None = None) -> None:
        self.size = image.size
        self.boxes = boxes if boxes is not None else sample_boxes(*image.size)
        self._regions = [self._region(image, box) for box in self.boxes]
        self._rows = None if self.whole else _rows_luma(image)

    @property
    def whole(self) -> bool:
        return self.boxes == (Box(0, 0, *self.size),)

    def _region(self, image: Image.Image, box: Box) -> _Region:
        width, height = self.size
        r = SSIM_RADIUS
        read = Box(
            max(box.left - r, 0),
            max(box.top - r, 0),
            min(box.right + r, width),
            min(box.bottom + r, height),
        )
        # SSIM counts the pixels whose whole window lies in the image (scikit-image's valid
        # region), and of those the ones in the box.
        inner = (
            slice(max(box.top, r) - read.top, min(box.bottom, height - r) - read.top),
            slice(max(box.left, r) - read.left, min(box.right, width - r) - read.left),
        )
        luma = _luma(image, read)
        x = _centred(luma)
        return _Region(box, read, inner, luma, x, _window(x)[inner], _window(x * x)[inner])

    def score(self, served: Image.Image) -> tuple[float, float]:
        """(Y-PSNR in dB, ``inf`` when identical; SSIM) of ``served`` against the reference."""
        if served.size != self.size:
            raise ValueError(f"a {served.size} image scored against a {self.size} reference")
        squared, counted, ssim_sum, ssim_count = 0.0, 0, 0.0, 0
        c1, c2 = (0.01 * 255.0) ** 2, (0.03 * 255.0) ** 2
        for region in self._regions:
            luma = _luma(served, region.read)
            box, read = region.box, region.read
            error = (luma - region.luma)[
                box.top - read.top : box.bottom - read.top,
                box.left - read.left : box.right - read.left,
            ]
            squared += float(np.sum(error * error))
            counted += error.size
            if min(self.size) <= 2 * SSIM_RADIUS:
                continue
            x, y = region.luma32, _centred(luma)
            mean_y, square_y = _window(y)[region.inner], _window(y * y)[region.inner]
            cross = _window(x * y)[region.inner]
            mean_x, square_x = region.mean, region.square
            variance_x, variance_y = square_x - mean_x * mean_x, square_y - mean_y * mean_y
            covariance = cross - mean_x * mean_y
            mean_x, mean_y = mean_x + LUMA_CENTRE, mean_y + LUMA_CENTRE
            numerator = (2 * mean_x * mean_y + c1) * (2 * covariance + c2)
            denominator = (mean_x**2 + mean_y**2 + c1) * (variance_x + variance_y + c2)
            ssim_sum += float(np.sum(numerator / denominator, dtype=np.float64))
            ssim_count += numerator.size
        if self._rows is not None:
            error = _rows_luma(served) - self._rows
            squared, counted = float(np.sum(error * error)), error.size
        psnr = math.inf if squared == 0 else 10 * math.log10(255.0**2 * counted / squared)
        if ssim_count == 0:  # smaller than one window: the formula over the whole plane
            return psnr, _global_ssim(
                self._regions[0].luma, _luma(served, self._regions[0].read), 255.0
            )
        return psnr, ssim_sum / ssim_count


def mosaic_boxes(boxes: tuple[Box, ...]) -> tuple[Box, ...]:
    """Where ``tile_mosaic`` puts each box's pixels."""
    span, columns = TILE + 2 * TILE_MARGIN, _mosaic_columns(len(boxes))
    return tuple(
        Box(
            span * (i % columns) + TILE_MARGIN,
            span * (i // columns) + TILE_MARGIN,
            span * (i % columns) + TILE_MARGIN + box.right - box.left,
            span * (i // columns) + TILE_MARGIN + box.bottom - box.top,
        )
        for i, box in enumerate(boxes)
    )


def tile_mosaic(image: Image.Image, boxes: tuple[Box, ...], scale: int = 1) -> Image.Image:
    """The sampled tiles of ``image``, each with ``TILE_MARGIN`` pixels of its surroundings,
    side by side on a grid aligned as in the image: a small image that a codec or the network
    treats, inside each tile, as it treats the whole. ``scale`` 4 cuts the same tiles out of
    the 4x-reduced copy."""
    span, columns = TILE + 2 * TILE_MARGIN, _mosaic_columns(len(boxes))
    rows = -(-len(boxes) // columns)
    mosaic = Image.new(image.mode, (columns * span // scale, rows * span // scale))
    for i, box in enumerate(boxes):
        crop = (
            (box.left - TILE_MARGIN) // scale,
            (box.top - TILE_MARGIN) // scale,
            (box.right + TILE_MARGIN) // scale,
            (box.bottom + TILE_MARGIN) // scale,
        )
        mosaic.paste(
            image.crop(crop), (span * (i % columns) // scale, span * (i // columns) // scale)
        )
    return mosaic


def _mosaic_columns(count: int) -> int:
    return math.ceil(math.sqrt(count))
