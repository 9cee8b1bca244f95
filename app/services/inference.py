"""Turning a stored low-resolution copy into the served image: the one inference engine.

The API's local mode and ``srstore worker`` both build an :class:`InferenceEngine` here;
they differ only in how a cache miss reaches it (a direct call, or a Redis stream).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import torch

from app import metrics
from app.services.images import AUTO_FORMAT, ImageMeta, ImageNotFound, object_key
from app.settings import Settings
from cache import CacheKey, CacheUnavailable, HRCache
from imaging import OutputEncoding, OutputFormat, crop_to, decode_stored, encode_output
from models.batching import BatchingUpscaler
from models.engine import BICUBIC_LABEL, BicubicUpscaler, NeuralUpscaler, Upscaler, resolve_device
from models.weights import find_weights, load_model
from storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def model_label(settings: Settings) -> str:
    """The label the configured model serves under, without loading it."""
    weights = find_weights(settings.weights_dir, settings.model, settings.model_version)
    return BICUBIC_LABEL if weights is None else f"{weights.name}:{weights.version}"


def load_upscaler(settings: Settings) -> Upscaler:
    """The configured model behind a tile batcher, warmed up; bicubic when no weights exist."""
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
    neural = NeuralUpscaler(
        model,
        weights.name,
        weights.version,
        device,
        tile=settings.tile_size,
        cuda_dtype=getattr(torch, settings.cuda_dtype),
    )
    neural.warm_up(settings.max_tiles_per_batch)
    log.info("loaded %s v%d on %s (%s)", weights.name, weights.version, device, neural.dtype)
    tiles = metrics.INFERENCE_TILES.labels(neural.label, str(device))
    seconds = metrics.INFERENCE_BATCH_SECONDS.labels(neural.label, str(device))

    def observe(count: int, elapsed: float) -> None:
        metrics.INFERENCE_BATCH_TILES.observe(count)
        tiles.inc(count)
        seconds.observe(elapsed)

    return BatchingUpscaler(
        neural, settings.batch_window_ms / 1000, settings.max_tiles_per_batch, observe
    )


def device_of(upscaler: Upscaler) -> str:
    return str(getattr(upscaler, "device", "cpu"))


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


class InferenceEngine:
    """Renders on a small dedicated pool; the pool's threads share the batcher's batches."""

    def __init__(self, upscaler: Upscaler, encoding: OutputEncoding, threads: int = 1) -> None:
        self.upscaler = upscaler
        self.encoding = encoding
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")

    @classmethod
    def from_settings(cls, settings: Settings) -> InferenceEngine:
        return cls(load_upscaler(settings), settings.output_encoding, settings.render_threads)

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

    async def render_object(self, store: ObjectStore, key: CacheKey) -> bytes:
        """Fetch the stored copy named by ``key`` and render the rendition it names."""
        try:
            stored = await store.get(object_key(key.image_id))
        except ObjectNotFound:
            raise ImageNotFound(key.image_id) from None
        meta = ImageMeta.from_metadata(dict(stored.metadata))
        fmt = meta.served_format if key.fmt == AUTO_FORMAT else cast(OutputFormat, key.fmt)
        return await self.render(stored.data, meta.width, meta.height, fmt, key.quality)

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        close = getattr(self.upscaler, "close", None)
        if close is not None:
            close()


class LocalRenderer:
    """The embedded transport: a miss is rendered in this process and cached on the way out."""

    def __init__(self, engine: InferenceEngine, store: ObjectStore, cache: HRCache) -> None:
        self.engine = engine
        self.store = store
        self.cache = cache

    @property
    def model_label(self) -> str:
        return self.engine.model_label

    async def render(self, key: CacheKey) -> bytes:
        data = await self.engine.render_object(self.store, key)
        with contextlib.suppress(CacheUnavailable):
            await self.cache.put(key, data)
        return data

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
