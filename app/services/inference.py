"""Turning a stored low-resolution copy into the served image, in this process."""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

from app import metrics
from imaging import OutputEncoding, OutputFormat, crop_to, decode_stored, encode_output
from models.engine import NeuralUpscaler, Upscaler


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

    def __init__(self, encoding: OutputEncoding, workers: int = 1) -> None:
        self.encoding = encoding
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="render")

    async def render(
        self,
        upscaler: Upscaler,
        stored: bytes,
        width: int,
        height: int,
        fmt: OutputFormat,
        quality: int | None,
    ) -> bytes:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, render, stored, width, height, upscaler, fmt, quality, self.encoding
        )

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
