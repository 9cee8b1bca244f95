"""Cross-request batching: tiles from many concurrent images share one forward pass.

Every caller cuts its luma into tiles of one fixed shape (:mod:`models.tiling`), so tiles
from different images stack into one batch. One inference thread owns the network: it takes
the first waiting job, keeps collecting jobs for ``window_s`` or until ``max_tiles`` tiles are
in hand, runs them as one batch, and hands each caller its own slice of the output. A batch
never exceeds ``max_tiles``, which bounds memory however large an image is.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field

import torch
from PIL import Image

from models.archs import SCALE
from models.engine import NeuralUpscaler, luma_to_tensor, tensor_to_luma, upscale_with_luma
from models.tiling import split_tiles, stitch_tiles

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float], None]
"""Called after every batch with its tile count and its forward-pass seconds."""

COMPUTE_STAGE: ContextVar[str] = ContextVar("compute_stage", default="render")
"""What the caller's work is for (``render``, ``compaction``): the cost ledger's stage."""

ComputeObserver = Callable[[Mapping[str, float], Mapping[str, float]], None]
"""Called after every batch with its process CPU seconds and its forward-pass seconds, each
split among the stages of its jobs in proportion to their tiles."""


@dataclass
class _Job:
    tiles: torch.Tensor
    result: Future[torch.Tensor] = field(default_factory=Future)
    stage: str = field(default_factory=COMPUTE_STAGE.get)


class BatchingUpscaler:
    """An :class:`~models.engine.Upscaler` whose network calls are shared across threads."""

    def __init__(
        self,
        upscaler: NeuralUpscaler,
        window_s: float,
        max_tiles: int,
        on_batch: BatchObserver | None = None,
        on_compute: ComputeObserver | None = None,
    ) -> None:
        if max_tiles < 1:
            raise ValueError("max_tiles must be at least 1")
        self.upscaler = upscaler
        self.window_s = window_s
        self.max_tiles = max_tiles
        self.on_batch = on_batch
        self.on_compute = on_compute
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name="tile-batcher", daemon=True)
        self._thread.start()

    @property
    def label(self) -> str:
        return self.upscaler.label

    @property
    def device(self) -> torch.device:
        return self.upscaler.device

    def upscale(self, low_res: Image.Image) -> Image.Image:
        return upscale_with_luma(low_res, self.upscale_luma)

    def upscale_luma(self, luma: Image.Image) -> Image.Image:
        tiles, layout = split_tiles(luma_to_tensor(luma), self.upscaler.tile, self.upscaler.margin)
        return tensor_to_luma(stitch_tiles(self.run_tiles(tiles), layout, SCALE))

    def run_tiles(self, tiles: torch.Tensor) -> torch.Tensor:
        """Queue the tiles (in chunks of at most ``max_tiles``) and wait for their outputs."""
        jobs = [_Job(chunk) for chunk in tiles.split(self.max_tiles)]
        for job in jobs:
            self._jobs.put(job)
        return torch.cat([job.result.result() for job in jobs])

    def close(self) -> None:
        """Finish the jobs already queued, then stop the inference thread."""
        self._jobs.put(None)
        self._thread.join()

    def _serve(self) -> None:
        held: _Job | None = None
        while True:
            first = held or self._jobs.get()
            if first is None:
                return
            batch, held, stop = self._collect(first)
            self._run(batch)
            if stop:
                return

    def _collect(self, first: _Job) -> tuple[list[_Job], _Job | None, bool]:
        """Jobs arriving within the window, up to ``max_tiles`` tiles; the next one held over."""
        batch, count = [first], len(first.tiles)
        closes_at = time.monotonic() + self.window_s
        while count < self.max_tiles:
            try:
                job = self._jobs.get(timeout=max(0.0, closes_at - time.monotonic()))
            except queue.Empty:
                break
            if job is None:
                return batch, None, True
            if count + len(job.tiles) > self.max_tiles:
                return batch, job, False
            batch.append(job)
            count += len(job.tiles)
        return batch, None, False

    def _run(self, batch: list[_Job]) -> None:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            outputs = self.upscaler.run_tiles(torch.cat([job.tiles for job in batch]))
        except Exception as exc:
            log.exception("inference failed for a batch of %d jobs", len(batch))
            for job in batch:
                job.result.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(outputs), elapsed)
        if self.on_compute is not None:
            self.on_compute(*_by_stage(batch, time.process_time() - cpu_started, elapsed))
        for job, output in zip(batch, outputs.split([len(j.tiles) for j in batch]), strict=True):
            job.result.set_result(output)


def _by_stage(
    batch: list[_Job], cpu: float, elapsed: float
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU and forward-pass seconds shared among the batch's stages by their tiles.

    The CPU is the process's during the pass: the network's own threads, and anything else
    the process did meanwhile (so an upper bound when other work overlaps the pass)."""
    tiles = sum(len(job.tiles) for job in batch)
    cpu_by, elapsed_by = defaultdict[str, float](float), defaultdict[str, float](float)
    for job in batch:
        share = len(job.tiles) / tiles
        cpu_by[job.stage] += cpu * share
        elapsed_by[job.stage] += elapsed * share
    return dict(cpu_by), dict(elapsed_by)
