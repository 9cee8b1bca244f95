"""Cross-request batching: tiles from many concurrent images share one forward pass.

Every caller cuts its luma into tiles of one fixed shape (:mod:`models.tiling`), so tiles
from different images stack into one batch. Inference threads (``lanes``) own the network: a
lane takes the first waiting job, keeps collecting jobs for ``window_s`` or until
``max_tiles`` tiles are in hand, runs them as one batch, and hands each caller its own slice
of the output. A batch never exceeds ``max_tiles``, which bounds memory however large an
image is.

Several lanes suit a CPU: passes of one thread each never wait for each other at a
convolution's barriers, so a core taken by colour work costs only its own time. An image's
tiles are cut into at least one chunk a lane, so a lone image still uses every core. A lane
never waits out the window: its core would idle meanwhile, and a pass on one thread gains
nothing from a larger batch. It takes the jobs already waiting, and none while another lane
is idle.

Renders first. Work done in the background (a compaction scoring an upload: the stages in
``BACKGROUND_STAGES``) waits while any other job waits: the lanes take jobs in priority
order, so a render queued behind a compaction's thousands of tiles waits for at most the
batches already running (``max_tiles`` tiles a lane), never for the rest of that compaction.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from concurrent.futures import Future
from contextvars import ContextVar
from dataclasses import dataclass, field
from functools import partial

import torch
from PIL import Image

from models.archs import SCALE
from models.engine import NeuralUpscaler, WaitLuma, luma_to_tensor, upscale_with_luma
from models.tiling import split_tiles, stitch_luma

log = logging.getLogger(__name__)

BatchObserver = Callable[[int, float], None]
"""Called after every batch with its tile count and its forward-pass seconds."""

COMPUTE_STAGE: ContextVar[str] = ContextVar("compute_stage", default="render")
"""What the caller's work is for (``render``, ``compaction``): the cost ledger's stage."""

BACKGROUND_STAGES = frozenset({"compaction"})
"""Stages whose tiles wait while any other stage's tiles wait."""

_FIRST, _LATER, _CLOSE = 0, 1, 2  # priorities: lower goes first; closing after all queued

ComputeObserver = Callable[[Mapping[str, float], Mapping[str, float]], None]
"""Called after every batch with its process CPU seconds and its forward-pass seconds, each
split among the stages of its jobs in proportion to their tiles."""


@dataclass
class _Job:
    tiles: torch.Tensor
    result: Future[torch.Tensor] = field(default_factory=Future)
    stage: str = field(default_factory=COMPUTE_STAGE.get)

    @property
    def priority(self) -> int:
        return _LATER if self.stage in BACKGROUND_STAGES else _FIRST


_Entry = tuple[int, int, _Job | None]  # priority, arrival order, the job (None: close)


class BatchingUpscaler:
    """An :class:`~models.engine.Upscaler` whose network calls are shared across threads."""

    def __init__(
        self,
        upscaler: NeuralUpscaler,
        window_s: float,
        max_tiles: int,
        on_batch: BatchObserver | None = None,
        on_compute: ComputeObserver | None = None,
        lanes: int = 1,
    ) -> None:
        if max_tiles < 1 or lanes < 1:
            raise ValueError("max_tiles and lanes must be at least 1")
        self.upscaler = upscaler
        self.window_s = window_s
        self.max_tiles = max_tiles
        self.on_batch = on_batch
        self.on_compute = on_compute
        self.lanes = lanes
        self._jobs: queue.PriorityQueue[_Entry] = queue.PriorityQueue()
        self._arrivals = itertools.count()
        self._idle_lanes = 0
        self._idle_lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._serve, name=f"tile-batcher-{lane}", daemon=True)
            for lane in range(lanes)
        ]
        for thread in self._threads:
            thread.start()

    @property
    def label(self) -> str:
        return self.upscaler.label

    @property
    def device(self) -> torch.device:
        return self.upscaler.device

    def upscale(self, low_res: Image.Image) -> Image.Image:
        return upscale_with_luma(low_res, self.start_luma)

    def upscale_luma(self, luma: Image.Image) -> Image.Image:
        return Image.fromarray(self.start_luma(luma)())

    def start_luma(self, luma: Image.Image) -> WaitLuma:
        """Queue the luma's tiles now; the returned function waits for them and stitches."""
        tiles, layout = split_tiles(luma_to_tensor(luma), self.upscaler.tile, self.upscaler.margin)
        jobs = self._submit(tiles)
        # Each batch's tiles go into the 8-bit plane as soon as they are back.
        return partial(stitch_luma, (job.result.result() for job in jobs), layout, SCALE)

    def run_batches(self, tiles: torch.Tensor) -> list[torch.Tensor]:
        """Queue the tiles (in chunks of at most ``max_tiles``) and wait for their outputs,
        chunk by chunk: the network alone as served, the baseline of ``bench.inference``."""
        return [job.result.result() for job in self._submit(tiles)]

    def _submit(self, tiles: torch.Tensor) -> list[_Job]:
        """Chunks of at most ``max_tiles``, and at least one for each lane where there are
        enough tiles."""
        chunk = min(self.max_tiles, -(-len(tiles) // self.lanes))
        jobs = [_Job(part) for part in tiles.split(chunk)]
        for job in jobs:
            self._jobs.put((job.priority, next(self._arrivals), job))
        return jobs

    def close(self) -> None:
        """Finish the jobs already queued, then stop the inference threads."""
        for _ in self._threads:
            self._jobs.put((_CLOSE, next(self._arrivals), None))
        for thread in self._threads:
            thread.join()

    def _serve(self) -> None:
        while True:
            with self._idle_lock:
                self._idle_lanes += 1
            _, _, first = self._jobs.get()
            with self._idle_lock:
                self._idle_lanes -= 1
            if first is None:
                return
            self._run(self._collect(first))

    def _collect(self, first: _Job) -> list[_Job]:
        """Jobs arriving within the window (one lane) or already waiting (several), up to
        ``max_tiles`` tiles, first in priority, while no other lane is idle.

        A job that does not fit (or the close) goes back in its place, so a render that
        arrives meanwhile still goes before it."""
        batch, count = [first], len(first.tiles)
        closes_at = time.monotonic() + (self.window_s if self.lanes == 1 else 0.0)
        while count < self.max_tiles and not self._idle_lanes:
            try:
                entry = self._jobs.get(timeout=max(0.0, closes_at - time.monotonic()))
            except queue.Empty:
                break
            job = entry[2]
            if job is None or count + len(job.tiles) > self.max_tiles:
                self._jobs.put(entry)
                break
            batch.append(job)
            count += len(job.tiles)
        return batch

    def _run(self, batch: list[_Job]) -> None:
        cpu_clock = _pass_clock()
        started, cpu_started = time.perf_counter(), cpu_clock()
        try:
            tiles = batch[0].tiles if len(batch) == 1 else torch.cat([j.tiles for j in batch])
            outputs = self.upscaler.run_tiles(tiles)
        except Exception as exc:
            log.exception("inference failed for a batch of %d jobs", len(batch))
            for job in batch:
                job.result.set_exception(exc)
            return
        elapsed = time.perf_counter() - started
        if self.on_batch is not None:
            self.on_batch(len(outputs), elapsed)
        if self.on_compute is not None:
            self.on_compute(*_by_stage(batch, cpu_clock() - cpu_started, elapsed))
        for job, output in zip(batch, outputs.split([len(j.tiles) for j in batch]), strict=True):
            job.result.set_result(output)


def _pass_clock() -> Callable[[], float]:
    """The CPU clock that times a forward pass on this lane.

    A pass on one thread runs wholly on the lane's own thread, so that thread's clock is
    exact, whatever other lanes and threads do meanwhile. A pass on several threads counts
    the process's CPU during it."""
    return time.thread_time if torch.get_num_threads() == 1 else time.process_time


def _by_stage(
    batch: list[_Job], cpu: float, elapsed: float
) -> tuple[dict[str, float], dict[str, float]]:
    """CPU and forward-pass seconds shared among the batch's stages by their tiles.

    On several threads the CPU is the process's during the pass: the network's own threads,
    and anything else the process did meanwhile (an upper bound when other work overlaps)."""
    tiles = sum(len(job.tiles) for job in batch)
    cpu_by, elapsed_by = defaultdict[str, float](float), defaultdict[str, float](float)
    for job in batch:
        share = len(job.tiles) / tiles
        cpu_by[job.stage] += cpu * share
        elapsed_by[job.stage] += elapsed * share
    return dict(cpu_by), dict(elapsed_by)
