"""Turning a stored low-resolution copy into the served image, in this process."""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

import torch

from app import metrics
from app.settings import Settings
from imaging import OutputEncoding, OutputFormat, crop_to, decode_stored, encode_output
from models.engine import BicubicUpscaler, NeuralUpscaler, Upscaler, resolve_device
from models.weights import find_weights, load_model

log = logging.getLogger(__name__)


def load_upscaler(settings: Settings) -> Upscaler:
    """The configured model, or bicubic (and says so) when no weights exist for it."""
    weights = find_weights(settings.weights_dir, settings.model, settings.model_version)
    if weights is None:
        if settings.model_version is not None:
            raise FileNotFoundError(
                f"no weights for {settings.model} v{settings.model_version} "
                f"in {settings.weights_dir}"
            )
        log.warning("no %s weights in %s: serving bicubic", settings.model, settings.weights_dir)
        return BicubicUpscaler()
    if settings.torch_threads:
        torch.set_num_threads(settings.torch_threads)
    device = resolve_device(settings.device)
    model = load_model(weights.name, weights.path)
    log.info("loaded %s v%d on %s", weights.name, weights.version, device)
    return NeuralUpscaler(model, weights.name, weights.version, device, tile=settings.tile_size)


def device_of(upscaler: Upscaler) -> str:
    return str(upscaler.device) if isinstance(upscaler, NeuralUpscaler) else "cpu"


def render(
    stored: bytes,
    width: int,
    height: int,
    upscaler: Upscaler,
    fmt: OutputFormat,
    quality: int | None,
    encoding: OutputEncoding,
) -> bytes:
    """Decode, super-resolve, crop to the uploaded size, encode: the whole of a cache miss."""
    started = time.perf_counter()
    low_res = decode_stored(stored)
    decoded = time.perf_counter()
    high_res = crop_to(upscaler.upscale(low_res), width, height)
    upscaled = time.perf_counter()
    data = encode_output(high_res, fmt, quality, encoding)
    encoded = time.perf_counter()
    metrics.RENDER_SECONDS.labels("decode").observe(decoded - started)
    metrics.RENDER_SECONDS.labels("superres").observe(upscaled - decoded)
    metrics.RENDER_SECONDS.labels("encode").observe(encoded - upscaled)
    metrics.SUPERRES_SECONDS.labels(upscaler.label, device_of(upscaler)).observe(upscaled - decoded)
    return data


class LocalRenderer:
    """Runs renders on a small dedicated pool so inference never oversubscribes the CPU."""

    def __init__(self, upscaler: Upscaler, encoding: OutputEncoding, workers: int = 1) -> None:
        self.upscaler = upscaler
        self.encoding = encoding
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")

    @property
    def model_label(self) -> str:
        return self.upscaler.label

    async def render(
        self, stored: bytes, width: int, height: int, fmt: OutputFormat, quality: int | None
    ) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, render, stored, width, height, self.upscaler, fmt, quality, self.encoding
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
