"""Inference: from a stored low-resolution image to its 4x super-resolved version.

Luma goes through the network in fixed-size tiles; chroma and alpha take a bicubic upscale,
as in the ESPCN and SRCNN papers.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from functools import partial
from typing import Protocol

import cv2
import nanoarrow
import numpy as np
import torch
from PIL import Image
from torch import nn

from imaging import StoredCodec, degrade
from models import CANARY_DIR
from models.archs import SCALE
from models.compiling import Forward, compile_forward, compile_in_background
from models.quantizing import INT8_PAYS, quantize_forward
from models.tiling import BandDone, split_tiles, stitch_luma

log = logging.getLogger(__name__)

# On the caller's thread only, as in ``imaging.quality``: OpenCV's pool would compete with the
# network's threads.
cv2.setNumThreads(0)

BICUBIC_LABEL = "bicubic"


class Upscaler(Protocol):
    """Anything that turns a low-resolution image into one four times larger."""

    @property
    def label(self) -> str:
        """``name:version`` of the model, or ``bicubic`` when no model serves."""
        ...

    def upscale(self, low_res: Image.Image) -> Image.Image: ...


class WaitLuma(Protocol):
    """Waits for a started luma's 8-bit plane, telling ``on_band`` each band as it lands."""

    def __call__(self, on_band: BandDone | None = None) -> np.ndarray: ...


class StartLuma(Protocol):
    """Starts a luma plane's upscale and returns what waits for its result."""

    def __call__(self, luma: Image.Image) -> WaitLuma: ...


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


def upscale_with_luma(low_res: Image.Image, start_luma: StartLuma) -> Image.Image:
    """Send luma through the network; chroma and alpha take bicubic.

    The luma is started first, so that where the network runs on another thread (the tile
    batcher) the colour work here overlaps it instead of adding to it: the chroma's upscale
    while the first batch runs, and each band's conversion to RGB as soon as its row of
    tiles is back, while the network runs the next rows.
    """
    if low_res.mode == "L":
        return Image.fromarray(start_luma(low_res)())
    rgb = low_res if low_res.mode == "RGB" else low_res.convert("RGB")
    ycbcr = rgb.convert("YCbCr")
    wait_luma = start_luma(ycbcr.getchannel("Y"))
    # Y, Cr, Cb upscaled in one interleaved pass, then the network's luma written over the
    # bicubic Y: cheaper than upscaling the chroma alone and merging.
    planes = upscale_planes(ycrcb_planes(ycbcr))
    pixels = np.empty((*planes.shape[:2], 4), dtype=np.uint8)

    def to_rgb(rows: slice, luma: np.ndarray) -> None:
        cv2.insertChannel(luma, planes[rows], 0)
        ycrcb_to_pixels(planes[rows], pixels[rows])

    wait_luma(to_rgb)
    alpha = upscale_planes(np.asarray(low_res.getchannel("A"))) if low_res.mode == "RGBA" else None
    return pixels_to_image(pixels, alpha)


def ycrcb_planes(ycbcr: Image.Image) -> np.ndarray:
    """A YCbCr image's planes as one (H, W, 3) array in OpenCV's order: Y, Cr, Cb."""
    return np.asarray(ycbcr)[..., [0, 2, 1]]


def upscale_planes(planes: np.ndarray) -> np.ndarray:
    """Bicubic x4 of 8-bit planes, (H, W) or (H, W, C), each channel filtered on its own.

    OpenCV's bicubic (a = -0.75, the edge replicated) in vectorized fixed point. On the
    held-out photos' chroma it lands closer to the originals than Pillow's a = -0.5 did (Cb/Cr
    PSNR +0.07 dB on average, -0.002 dB on the worst photo) in about a third of the CPU of
    torch's uint8 bicubic (bench/RESULTS.md, issue 27)."""
    height, width = planes.shape[:2]
    return cv2.resize(planes, (width * SCALE, height * SCALE), interpolation=cv2.INTER_CUBIC)


def ycrcb_to_rgb(planes: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """An RGB (or, with ``alpha``, RGBA) image from (H, W, 3) Y, Cr, Cb planes."""
    return pixels_to_image(ycrcb_to_pixels(planes), alpha)


def ycrcb_to_pixels(planes: np.ndarray, dst: np.ndarray | None = None) -> np.ndarray:
    """(H, W, 3) Y, Cr, Cb planes as (H, W, 4) RGBX pixels (into ``dst`` if given), by the
    JFIF equations that Pillow's ``convert("YCbCr")`` inverts.

    OpenCV's conversion rounds each sample once from 14-bit fixed point: within 0.6 of the
    exact equations, where Pillow's 6-bit tables are off by up to 0.998. It writes four bytes
    a pixel, the layout Pillow keeps RGB in (bench/RESULTS.md, issue 27)."""
    return cv2.cvtColor(planes, cv2.COLOR_YCrCb2RGB, dst=dst, dstCn=4)


def pixels_to_image(pixels: np.ndarray, alpha: np.ndarray | None = None) -> Image.Image:
    """(H, W, 4) 8-bit RGBX pixels as an RGB image, or with ``alpha`` written into their
    fourth byte an RGBA one, that takes them as its own, over Arrow without a copy."""
    mode = "RGB" if alpha is None else "RGBA"
    if alpha is not None:
        cv2.insertChannel(alpha, pixels, 3)
    height, width = pixels.shape[:2]
    return Image.fromarrow(nanoarrow.c_array(pixels.reshape(-1)), mode, (width, height))


class BicubicUpscaler:
    """The honest fallback when no weights are available: labelled ``bicubic``, never a model."""

    label = BICUBIC_LABEL

    def upscale(self, low_res: Image.Image) -> Image.Image:
        size = (low_res.width * SCALE, low_res.height * SCALE)
        return low_res.resize(size, Image.Resampling.BICUBIC)


@dataclass
class NeuralUpscaler:
    """A trained network on one device, run tile by tile.

    The network runs channels-last (NHWC) everywhere: oneDNN's CPU convolutions take that
    layout without reordering, which measured 5-13% faster for ESPCN and 40% for SRCNN than
    NCHW on one core (see bench/RESULTS.md). Where compiling pays (:mod:`models.compiling`),
    ``start_compiling`` swaps in the compiled network once it is warm. On CUDA it runs in
    ``cuda_dtype`` (half precision by default); on the CPU it stays float32, where half
    precision has no fast convolution kernels.
    """

    model: nn.Module
    name: str
    version: int
    device: torch.device
    tile: int = 128
    cuda_dtype: torch.dtype = torch.float16

    def __post_init__(self) -> None:
        self.dtype = self.cuda_dtype if self.device.type == "cuda" else torch.float32
        self.memory_format = torch.channels_last
        self.model = self.model.to(self.device, self.dtype).eval()
        self.model.to(memory_format=self.memory_format)  # type: ignore[call-overload]
        self.margin = 2 * int(getattr(self.model, "receptive_radius", 4))
        self._forward: Forward = self.model
        self._eager_precision = str(self.dtype).removeprefix("torch.")
        self.precision = self._eager_precision

    @property
    def compiled(self) -> bool:
        """Whether tiles now go through the compiled network rather than eager."""
        return self._forward is not self.model

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def tile_span(self) -> int:
        """Side of one input tile, margins included."""
        return self.tile + 2 * self.margin

    @torch.inference_mode()
    def run_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """One forward pass over a batch of equally sized tiles."""
        batch = self.prepare(tiles)
        if self.compiled:
            try:
                return self._forward(batch).float().cpu()
            except Exception:
                log.exception("%s: the compiled network failed; eager from now on", self.label)
                self._forward, self.precision = self.model, self._eager_precision
        return self.model(batch).float().cpu()

    def prepare(self, tiles: torch.Tensor) -> torch.Tensor:
        """Tiles on the network's device, in its precision and memory layout."""
        return tiles.to(self.device, self.dtype, memory_format=self.memory_format)

    def compile_now(self, max_tiles: int, int8: bool = False) -> None:
        """Compile (in int8 if asked and this network has an int8 form) and warm up for
        batches of up to ``max_tiles``; serve the result from then on."""
        self._use(self._compile(max_tiles, int8))

    def start_compiling(self, max_tiles: int, int8: bool = False) -> threading.Thread:
        """:meth:`compile_now` on a daemon thread while this upscaler goes on serving eagerly."""
        return compile_in_background(self.label, partial(self._compile, max_tiles, int8), self._use)

    def _compile(self, max_tiles: int, int8: bool) -> Forward:
        if int8 and self.name in INT8_PAYS:
            try:
                forward = quantize_forward(self.model, self.name, self.prepare, self._calibration())
            except Exception as exc:
                log.warning(
                    "%s stays float32: int8 failed (%s: %s)", self.label, type(exc).__name__, exc
                )
            else:
                self.precision = "int8"
                log.info("%s quantized to int8 (VNNI)", self.label)
                return forward
        return compile_forward(self.model, self.prepare, self.tile_span, max_tiles)

    def _calibration(self) -> list[torch.Tensor]:
        """Every tile of the canary crops' lumas as the network sees them in production."""
        tiles = []
        for path in sorted(CANARY_DIR.glob("*.jpg")):
            low = degrade(Image.open(path).convert("RGB"), StoredCodec())
            luma = luma_to_tensor(low.convert("YCbCr").getchannel("Y"))
            tiles += list(split_tiles(luma, self.tile, self.margin)[0].split(1))
        return tiles

    def _use(self, forward: Forward) -> None:
        self._forward = forward

    def warm_up(self, batch: int) -> None:
        """Run one full batch so kernel selection and allocation happen before traffic."""
        self.run_tiles(torch.zeros(batch, 1, self.tile_span, self.tile_span))

    def upscale_luma(self, luma: Image.Image) -> Image.Image:
        return Image.fromarray(self.start_luma(luma)())

    def start_luma(self, luma: Image.Image) -> WaitLuma:
        """Runs every tile now (here, nothing runs beside the network to overlap it)."""
        tiles, layout = split_tiles(luma_to_tensor(luma), self.tile, self.margin)
        return partial(stitch_luma, self.run_tiles(tiles), layout, SCALE)

    def upscale(self, low_res: Image.Image) -> Image.Image:
        return upscale_with_luma(low_res, self.start_luma)
