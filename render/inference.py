"""Turning a stored low-resolution copy into the served image: the one inference engine.

The API's local mode and ``srstore worker`` both build an :class:`InferenceEngine` here; they
differ only in how a cache miss reaches it (a direct call, or a Redis stream). The engine
renders whichever model version a cache key names, loading it from the registry on first
use, so a request that started on a version finishes on it even across a swap.
"""

from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import cast

import torch
from PIL import Image

from cache import CacheKey, CacheUnavailable, HRCache, ImageDeleted
from config.settings import Settings
from imaging import (
    MEDIA_TYPES,
    PILLOW_MAX_PIXELS,
    SCALE,
    Geometry,
    OutputEncoding,
    OutputFormat,
    apply_geometry,
    crop_to,
    decode_stored,
    decode_upload,
    encode_output,
    media_type_of,
)
from imaging.costs import rendition_seconds
from models.batching import BatchingUpscaler
from models.compiling import COMPILE_PAYS
from models.engine import BICUBIC_LABEL, BicubicUpscaler, NeuralUpscaler, Upscaler, resolve_device
from models.heap import keep_freed_heap
from models.quantizing import INT8_BY_DEFAULT, INT8_PAYS, has_vnni
from models.registry import ModelRef, ModelRegistry
from models.validation import load_checked
from policy import Reconstruct, Representation, SampleRead
from render import costs, metrics
from render.admission import HEAVY, RenderSlots
from render.images import ImageMeta, ImageNotFound, object_key
from render.priority import HEAVY_NICENESS, niced_pool
from storage import ObjectNotFound, ObjectStore

log = logging.getLogger(__name__)


def keep_render_heap(settings: Settings) -> bool:
    """Keep freed memory for the next renders (:mod:`models.heap`); whether it took. A
    process calls this first, before it starts threads: a thread keeps the glibc arena it
    first allocated from."""
    kept = keep_freed_heap(settings.heap_keep_mb * 2**20)
    if kept:
        log.info("heap: one arena, up to %d MiB of freed memory kept", settings.heap_keep_mb)
    return kept


def build_upscaler(ref: ModelRef, weights: bytes, settings: Settings) -> BatchingUpscaler:
    """A registered version behind a tile batcher, warmed up, reporting batch metrics."""
    device = resolve_device(settings.device)
    lanes, threads = inference_lanes(settings, device)
    max_tiles = tiles_per_pass(settings, device, threads)
    torch.set_num_threads(threads)
    neural = NeuralUpscaler(
        load_checked(ref.name, weights),
        ref.name,
        ref.version,
        device,
        tile=settings.tile_size,
        cuda_dtype=getattr(torch, settings.cuda_dtype),
    )
    # CUDA picks kernels per batch shape on first use; the CPU only needs one pass.
    neural.warm_up(max_tiles if device.type == "cuda" else 1)
    log.info(
        "loaded %s on %s (%s), %d lane(s) of %d thread(s)",
        ref.label,
        device,
        neural.dtype,
        lanes,
        threads,
    )
    if settings.compile == "background" and device.type == "cpu":
        wanted = INT8_PAYS if settings.int8 == "all" else INT8_BY_DEFAULT
        int8 = settings.int8 != "off" and ref.name in wanted and has_vnni()
        if int8 or ref.name in COMPILE_PAYS:
            neural.start_compiling(max_tiles, int8)
    tiles = metrics.INFERENCE_TILES.labels(neural.label, str(device))
    seconds = metrics.INFERENCE_BATCH_SECONDS.labels(neural.label, str(device))

    def observe(count: int, elapsed: float) -> None:
        metrics.INFERENCE_BATCH_TILES.observe(count)
        tiles.inc(count)
        seconds.observe(elapsed)

    def spent(cpu: Mapping[str, float], busy: Mapping[str, float]) -> None:
        costs.record_forward_passes(cpu, busy, device.type)

    return BatchingUpscaler(
        neural, settings.batch_window_ms / 1000, max_tiles, observe, spent, lanes
    )


def inference_lanes(settings: Settings, device: torch.device) -> tuple[int, int]:
    """How many forward passes run at once, and on how many threads each.

    On the CPU, all the inference threads (``SRSTORE_TORCH_THREADS``, else every core this
    process may use) are split among ``SRSTORE_INFERENCE_LANES``, one a thread by default. A
    CUDA device runs one pass at a time on the default stream."""
    if device.type == "cuda":
        return 1, settings.torch_threads or torch.get_num_threads()
    threads = settings.torch_threads or len(os.sched_getaffinity(0))
    lanes = min(settings.inference_lanes or threads, threads)
    return lanes, threads // lanes


def tiles_per_pass(settings: Settings, device: torch.device, threads_per_lane: int) -> int:
    """The most tiles in one forward pass: ``SRSTORE_MAX_TILES_PER_BATCH``, else one for a CPU
    lane of one thread, else 4.

    On one thread a single tile's activations stay in the core's caches: compiled ESPCN
    reaches 76% of the matmul peak at one tile and 67% at four, and two lanes render 12 MP
    images 2-10% faster in passes of one tile, 1 MP images -3% to +17% (bench/RESULTS.md).
    Threads that share a pass want more work between their barriers, and a GPU far more."""
    if settings.max_tiles_per_batch is not None:
        return settings.max_tiles_per_batch
    return 1 if device.type == "cpu" and threads_per_lane == 1 else 4


class UpscalerPool:
    """Loaded model versions by label, built from the registry on first use.

    It keeps the few most recently used, so a swap and its rollback stay warm.
    """

    def __init__(self, registry: ModelRegistry, settings: Settings, keep: int = 3) -> None:
        self.registry = registry
        self.settings = settings
        self.keep = keep
        self._loaded: OrderedDict[str, Upscaler] = OrderedDict({BICUBIC_LABEL: BicubicUpscaler()})
        self._loading = asyncio.Lock()

    async def get(self, label: str) -> Upscaler:
        if label in self._loaded:
            self._loaded.move_to_end(label)
            return self._loaded[label]
        async with self._loading:
            if label not in self._loaded:
                ref = ModelRef.parse(label)
                weights = await self.registry.weights(ref)
                self._loaded[label] = await asyncio.to_thread(
                    build_upscaler, ref, weights, self.settings
                )
                self._evict()
        return self._loaded[label]

    def _evict(self) -> None:
        while len(self._loaded) > self.keep + 1:  # bicubic does not count
            label = next(label for label in self._loaded if label != BICUBIC_LABEL)
            _close(self._loaded.pop(label))

    def close(self) -> None:
        for upscaler in self._loaded.values():
            _close(upscaler)
        self._loaded.clear()


def _close(upscaler: Upscaler) -> None:
    close = getattr(upscaler, "close", None)
    if close is not None:
        close()


def device_of(upscaler: Upscaler) -> str:
    return str(getattr(upscaler, "device", "cpu"))


def rebuild(
    stored: bytes,
    meta: ImageMeta,
    upscaler: Upscaler,
    fmt: OutputFormat,
    quality: int | None,
    encoding: OutputEncoding,
    geometry: Geometry | None = None,
) -> tuple[bytes, dict[str, float]]:
    """Decode, super-resolve, crop to the uploaded size, resize, encode; seconds by stage.

    Its CPU counts in the cost ledger as ``render`` then ``encode`` (or all of it as the
    caller's stage, e.g. ``compaction`` when an upload is scored)."""
    started, cpu_started = time.perf_counter(), time.thread_time()
    low_res = decode_stored(stored)
    decoded = time.perf_counter()
    high_res = crop_to(upscaler.upscale(low_res), meta.width, meta.height)
    upscaled = time.perf_counter()
    if geometry is not None:
        high_res = apply_geometry(high_res, geometry)
    if meta.greyscale:
        high_res = high_res.convert("L")
    resized, cpu_resized = time.perf_counter(), time.thread_time()
    data = encode_output(high_res, fmt, quality, encoding)
    encoded = time.perf_counter()
    _count_render(cpu_resized - cpu_started, time.thread_time() - cpu_resized)
    return data, {
        "decode": decoded - started,
        "superres": upscaled - decoded,
        "resize": resized - upscaled,
        "encode": encoded - resized,
    }


def render(
    stored: bytes,
    meta: ImageMeta,
    upscaler: Upscaler,
    fmt: OutputFormat,
    quality: int | None,
    encoding: OutputEncoding,
    geometry: Geometry | None = None,
) -> bytes:
    """A model cache miss, timed by stage."""
    data, seconds = rebuild(stored, meta, upscaler, fmt, quality, encoding, geometry)
    metrics.RENDITIONS.labels("model").inc()
    for stage, elapsed in seconds.items():
        metrics.RENDER_SECONDS.labels(stage).observe(elapsed)
    metrics.SUPERRES_SECONDS.labels(upscaler.label, device_of(upscaler)).observe(
        seconds["superres"]
    )
    return data


def _count_render(render_cpu: float, encode_cpu: float) -> None:
    stage = costs.current_stage()
    costs.record_thread(stage, render_cpu)
    costs.record_thread("encode" if stage == "render" else stage, encode_cpu)


def stored_media_type(meta: ImageMeta) -> str:
    """What the stored object is: the x4 copy's codec is a setting, so only full-size ones."""
    if meta.representation == "original":
        return meta.content_type
    return MEDIA_TYPES.get(cast(OutputFormat, meta.representation), "")


def served_as_stored(
    meta: ImageMeta,
    fmt: OutputFormat,
    quality: int | None,
    encoding: OutputEncoding,
    geometry: Geometry | None,
) -> bool:
    """A read a full-size stored copy answers with its own bytes: the uploaded size, the
    stored format, the default quality. Nothing is decoded, resized or encoded for it."""
    return (
        meta.representation != "x4"
        and (geometry is None or geometry == Geometry.identity(meta.width, meta.height))
        and stored_media_type(meta) == MEDIA_TYPES[fmt]
        and quality == encoding.quality_of(fmt, None)
    )


def render_stored_copy(
    stored: bytes,
    meta: ImageMeta,
    fmt: OutputFormat,
    quality: int | None,
    encoding: OutputEncoding,
    geometry: Geometry,
) -> bytes:
    """A rendition made without the network: a thumbnail of an x4 copy, or any size of a
    full-size copy, which is served as stored when it already is what was asked for."""
    started = time.thread_time()
    if meta.representation == "x4":
        image = decode_stored(stored)
        source: tuple[float, float, float, float] | None = (
            0.0,
            0.0,
            meta.width / SCALE,
            meta.height / SCALE,
        )
    else:
        if served_as_stored(meta, fmt, quality, encoding, geometry) and media_type_of(
            stored
        ) == stored_media_type(meta):
            return stored
        if meta.representation == "original":
            image = decode_upload(stored, PILLOW_MAX_PIXELS).image
        else:
            image = decode_stored(stored)
        source = None
    image = apply_geometry(image, geometry, source)
    if meta.greyscale:
        image = image.convert("L")
    resized = time.thread_time()
    data = encode_output(image, fmt, quality, encoding)
    _count_render(resized - started, time.thread_time() - resized)
    return data


def read_back(
    meta: ImageMeta,
    upscaler: Upscaler,
    encoding: OutputEncoding,
    rebuilt: Callable[[bytes, bytes], None] | None = None,
) -> Reconstruct:
    """What a plain ``GET`` of ``meta``'s image returns for bytes kept as each representation,
    decoded as a client decodes it: the quality receipt scores this. ``rebuilt`` is handed
    each x4 copy read and its encoded read (``smallest`` may read several), which compaction
    caches for the copy it keeps, so the first read is a hit."""
    fmt = meta.served_format  # what a read without options or Accept gets
    quality = encoding.quality_of(fmt, None)
    full_size = Geometry.identity(meta.width, meta.height)

    def read(stored: bytes, representation: Representation) -> Image.Image:
        if representation == "x4":
            data, _ = rebuild(stored, meta, upscaler, fmt, quality, encoding)
            if rebuilt is not None:
                rebuilt(stored, data)
        else:
            kept = meta.model_copy(update={"representation": representation})
            data = render_stored_copy(stored, kept, fmt, quality, encoding, full_size)
        return decode_upload(data, PILLOW_MAX_PIXELS).image

    return read


def sample_read(meta: ImageMeta, upscaler: Upscaler, encoding: OutputEncoding) -> SampleRead:
    """``read_back`` for an image of another size with ``meta``'s served format and colour:
    scoring tries a large upload's candidates on a mosaic of its sampled tiles through it."""

    def sized(width: int, height: int) -> Reconstruct:
        update = {"width": width, "height": height}
        return read_back(meta.model_copy(update=update), upscaler, encoding)

    return sized


def render_seconds(meta: ImageMeta, geometry: Geometry | None, fmt: str) -> float:
    """A rendition's estimated CPU-seconds (:mod:`imaging.costs`): the model's from an x4
    copy, a resize's from a full-size one. Admission and the heavy lane both go by it."""
    output = (geometry or Geometry.identity(meta.width, meta.height)).pixels
    if meta.representation == "x4":
        return rendition_seconds(meta.stored_width * meta.stored_height, output, fmt, model=True)
    return rendition_seconds(meta.width * meta.height, output, fmt)


class InferenceEngine:
    """Renders on a small dedicated pool; the pool's threads share the batcher's batches.

    A rendition estimated over ``heavy_seconds`` runs on a one-thread lane of its own at a
    lower OS priority (:mod:`render.priority`): a 40-megapixel AVIF enlargement takes only
    the CPU that thumbnails and ordinary misses leave."""

    def __init__(
        self,
        models: UpscalerPool,
        encoding: OutputEncoding,
        threads: int = 1,
        heavy_seconds: float = math.inf,
    ) -> None:
        self.models = models
        self.encoding = encoding
        self.heavy_seconds = heavy_seconds
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="render")
        self._heavy_pool = niced_pool(1, "render-heavy", HEAVY_NICENESS)

    @classmethod
    def from_settings(cls, registry: ModelRegistry, settings: Settings) -> InferenceEngine:
        pool = UpscalerPool(registry, settings)
        return cls(
            pool, settings.output_encoding, settings.render_threads, settings.heavy_work_seconds
        )

    async def render_object(self, store: ObjectStore, key: CacheKey) -> bytes:
        """Fetch the stored copy named by ``key`` and render the rendition it names."""
        try:
            stored = await store.get(object_key(key.image_id))
        except ObjectNotFound:
            raise ImageNotFound(key.image_id) from None
        meta = ImageMeta.from_metadata(dict(stored.metadata))
        fmt = cast(OutputFormat, key.fmt)
        geometry = Geometry.parse(key.variant) if key.variant else None
        loop = asyncio.get_running_loop()
        heavy = render_seconds(meta, geometry, fmt) > self.heavy_seconds
        pool = self._heavy_pool if heavy else self._pool
        if meta.representation != "x4":  # the API serves these itself; a worker can too
            full = geometry or Geometry.identity(meta.width, meta.height)
            return await loop.run_in_executor(
                pool,
                render_stored_copy,
                stored.data,
                meta,
                fmt,
                key.quality,
                self.encoding,
                full,
            )
        upscaler = await self.models.get(key.model)
        return await loop.run_in_executor(
            pool,
            render,
            stored.data,
            meta,
            upscaler,
            fmt,
            key.quality,
            self.encoding,
            geometry,
        )

    def close(self) -> None:
        for pool in (self._pool, self._heavy_pool):
            pool.shutdown(wait=True, cancel_futures=True)
        self.models.close()


class LocalRenderer:
    """The embedded transport: a miss is rendered in this process and cached on the way out."""

    def __init__(
        self,
        engine: InferenceEngine,
        store: ObjectStore,
        cache: HRCache,
        slots: RenderSlots,
        heavy_slots: RenderSlots,
    ) -> None:
        self.engine = engine
        self.store = store
        self.cache = cache
        self.slots = slots  # admission control, as queue mode has its bounded queue
        self.heavy_slots = heavy_slots  # the heavy lane's, so heavy renders never hold slots

    async def render(self, key: CacheKey) -> bytes:
        """A render that a delete overtook answers 404, like every request after the delete."""
        async with (self.heavy_slots if HEAVY.get() else self.slots).slot():
            data = await self.engine.render_object(self.store, key)
        try:
            await self.cache.put(key, data)
        except CacheUnavailable:
            return data
        except ImageDeleted:
            raise ImageNotFound(key.image_id) from None
        metrics.CACHE_ENTRY_BYTES.observe(len(data))
        return data

    async def preload(self, label: str) -> None:
        """Load a version before the process switches to it, so no request waits on a load."""
        await self.engine.models.get(label)

    async def close(self) -> None:
        await asyncio.to_thread(self.engine.close)
