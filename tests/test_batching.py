"""The tile batcher: tiles of many images share forward passes, and nobody notices."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from config.settings import Settings
from models import SHIPPED_WEIGHTS_DIR
from models.archs import build_model
from models.batching import COMPUTE_STAGE, BatchingUpscaler
from models.engine import NeuralUpscaler, luma_to_tensor
from models.registry import ModelRef
from models.weights import find_weights
from render.inference import build_upscaler, inference_lanes, tiles_per_pass

TILE = 16


@pytest.fixture
def network() -> NeuralUpscaler:
    torch.manual_seed(0)
    return NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), tile=TILE)


@pytest.fixture
def lumas() -> list[Image.Image]:
    """Three images of different sizes: 4, 6 and 2 tiles of 16x16."""
    generator = torch.Generator().manual_seed(1)
    sizes = [(32, 29), (45, 20), (17, 9)]
    return [
        Image.fromarray(torch.randint(0, 256, (h, w), generator=generator).byte().numpy(), "L")
        for w, h in sizes
    ]


@contextmanager
def batching(
    network: NeuralUpscaler, max_tiles: int, window_s: float
) -> Iterator[tuple[BatchingUpscaler, list[int]]]:
    batches: list[int] = []
    upscaler = BatchingUpscaler(network, window_s, max_tiles, lambda n, _: batches.append(n))
    yield upscaler, batches
    upscaler.close()


def whole_image(network: NeuralUpscaler, luma: Image.Image) -> torch.Tensor:
    """The network on the whole edge-padded plane, margins cut: the untiled reference."""
    m = network.margin
    padded = torch.nn.functional.pad(luma_to_tensor(luma), (m,) * 4, mode="replicate")
    with torch.no_grad():
        out = network.model(padded)[:, :, 4 * m : -4 * m, 4 * m : -4 * m]
    return out.clamp(0, 1).mul(255).round()


def grey_levels(image: Image.Image) -> torch.Tensor:
    return luma_to_tensor(image).mul(255).round()


def test_tiles_of_several_images_in_one_batch_equal_whole_image_output(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    # The batch closes when all 12 tiles are in; the long window makes it wait for all three.
    with batching(network, max_tiles=12, window_s=60) as (upscaler, batches):
        with ThreadPoolExecutor(3) as pool:
            outputs = list(pool.map(upscaler.upscale_luma, lumas))

        assert batches == [12]
        for luma, output in zip(lumas, outputs, strict=True):
            assert output.size == (luma.width * 4, luma.height * 4)
            difference = (grey_levels(output) - whole_image(network, luma)).abs().max()
            assert difference <= 1


def test_no_batch_exceeds_the_tile_bound_however_large_the_image(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    large = lumas[1].resize((100, 70))  # 7 x 5 = 35 tiles

    with batching(network, max_tiles=8, window_s=0) as (upscaler, batches):
        output = upscaler.upscale_luma(large)

        assert sum(batches) == 35
        assert max(batches) <= 8
        assert (grey_levels(output) - whole_image(network, large)).abs().max() <= 1


def test_colour_images_keep_their_mode_and_size(network: NeuralUpscaler) -> None:
    with batching(network, max_tiles=16, window_s=0.001) as (upscaler, _):
        out = upscaler.upscale(Image.new("RGBA", (21, 13)))

        assert (out.mode, out.size) == ("RGBA", (84, 52))
        assert upscaler.label == "espcn:0"


def test_a_colour_image_through_the_batcher_equals_the_direct_network(
    network: NeuralUpscaler,
) -> None:
    """The batcher starts the luma before it upscales the chroma: the pixels are the same."""
    generator = torch.Generator().manual_seed(2)
    pixels = torch.randint(0, 256, (23, 37, 4), generator=generator).byte().numpy()
    for image in (Image.fromarray(pixels, "RGBA"), Image.fromarray(pixels[..., :3], "RGB")):
        with batching(network, max_tiles=2, window_s=0.0) as (upscaler, _):
            batched = upscaler.upscale(image)

        assert batched.tobytes() == network.upscale(image).tobytes()


def test_a_failing_forward_pass_fails_every_image_in_the_batch(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    def broken(tiles: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("out of memory")

    network.run_tiles = broken  # type: ignore[method-assign]
    with (
        batching(network, max_tiles=12, window_s=60) as (upscaler, _),
        ThreadPoolExecutor(3) as pool,
    ):
        futures = [pool.submit(upscaler.upscale_luma, luma) for luma in lumas]

        for future in futures:
            with pytest.raises(RuntimeError, match="out of memory"):
                future.result()


def test_a_render_goes_before_the_compaction_tiles_queued_ahead_of_it(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    """A compaction's 16 tiles go in batches of 4; a render queued while the first batch runs
    is the next batch, not the fifth."""
    running, release = threading.Event(), threading.Event()
    forward = network.run_tiles

    def first_batch_held(tiles: torch.Tensor) -> torch.Tensor:
        if not running.is_set():
            running.set()
            release.wait(30)
        return forward(tiles)

    network.run_tiles = first_batch_held  # type: ignore[method-assign]
    stages: list[list[str]] = []

    def observed(_: Mapping[str, float], elapsed: Mapping[str, float]) -> None:
        stages.append(sorted(elapsed))

    def compaction(luma: Image.Image) -> Image.Image:
        COMPUTE_STAGE.set("compaction")  # this pool thread's own context
        return upscaler.upscale_luma(luma)

    upscaler = BatchingUpscaler(network, 0.0, 4, on_compute=observed)
    try:
        with ThreadPoolExecutor(2) as pool:
            scored = pool.submit(compaction, lumas[0].resize((64, 64)))  # 16 tiles
            assert running.wait(30)
            rendered = pool.submit(upscaler.upscale_luma, lumas[0])  # 4 tiles: one batch
            deadline = time.monotonic() + 30
            while upscaler._jobs.qsize() < 4:  # the compaction's 3 batches left, the render
                assert time.monotonic() < deadline
                time.sleep(0.01)
            release.set()
            scored.result(30), rendered.result(30)
    finally:
        release.set()
        upscaler.close()

    assert stages == [["compaction"], ["render"], ["compaction"], ["compaction"], ["compaction"]]


@contextmanager
def one_thread_each() -> Iterator[None]:
    """Inference threads that start and first run meanwhile take one thread each (a thread
    reads torch's setting at its first parallel work)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def test_a_lone_image_is_split_among_the_lanes_and_they_run_at_once(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    """Its 4 tiles go as two passes of 2 that run together: neither pass can end until the
    other has started."""
    both_running = threading.Barrier(2, timeout=30)
    forward = network.run_tiles

    def meets_the_other_lane(tiles: torch.Tensor) -> torch.Tensor:
        both_running.wait()
        return forward(tiles)

    network.run_tiles = meets_the_other_lane  # type: ignore[method-assign]
    batches: list[int] = []
    upscaler = BatchingUpscaler(network, 60, 4, lambda n, _: batches.append(n), lanes=2)
    try:
        output = upscaler.upscale_luma(lumas[0])
    finally:
        upscaler.close()

    assert batches == [2, 2]
    assert (grey_levels(output) - whole_image(network, lumas[0])).abs().max() <= 1


def test_images_through_several_lanes_equal_those_through_one(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    def through(lanes: int) -> list[bytes]:
        upscaler = BatchingUpscaler(network, 0.001, 4, lanes=lanes)
        try:
            with ThreadPoolExecutor(3) as pool:
                return [image.tobytes() for image in pool.map(upscaler.upscale_luma, lumas)]
        finally:
            upscaler.close()

    assert through(3) == through(1)


def test_several_lanes_never_wait_out_the_window(
    network: NeuralUpscaler, lumas: list[Image.Image]
) -> None:
    """A window of a minute would hold a one-lane batcher's first pass; lanes take the tiles
    already waiting and go, each image as soon as its own tiles are in."""
    upscaler = BatchingUpscaler(network, 60, 4, lanes=2)
    try:
        with ThreadPoolExecutor(3) as pool:
            outputs = [pool.submit(upscaler.upscale_luma, luma) for luma in lumas]
            sizes = [output.result(timeout=30).size for output in outputs]
    finally:
        upscaler.close()

    assert sizes == [(luma.width * 4, luma.height * 4) for luma in lumas]


def test_closing_stops_every_lane(network: NeuralUpscaler) -> None:
    upscaler = BatchingUpscaler(network, 0.0, 4, lanes=3)
    upscaler.close()

    assert not any(thread.is_alive() for thread in upscaler._threads)


def test_a_one_thread_lane_counts_only_its_own_pass_cpu(network: NeuralUpscaler) -> None:
    """Two one-tile images run at once, one pass on each lane. The render's pass waits while
    the compaction's burns half a CPU-second: the render is charged next to nothing, not the
    process's CPU meanwhile."""
    forward = network.run_tiles
    both_running = threading.Barrier(2, timeout=30)
    burnt_out = threading.Event()

    def burns_on_white(tiles: torch.Tensor) -> torch.Tensor:
        both_running.wait()
        if tiles.mean() > 0.5:
            ends = time.thread_time() + 0.5  # CPU, not wall: holds on a loaded machine
            while time.thread_time() < ends:
                pass
            burnt_out.set()
        else:
            burnt_out.wait(30)
        return forward(tiles)

    network.run_tiles = burns_on_white  # type: ignore[method-assign]
    cpu_by_stage: dict[str, float] = {}

    def observed(cpu: Mapping[str, float], _: Mapping[str, float]) -> None:
        cpu_by_stage.update(cpu)

    def compaction(luma: Image.Image) -> Image.Image:
        COMPUTE_STAGE.set("compaction")  # this pool thread's own context
        return upscaler.upscale_luma(luma)

    with one_thread_each(), ThreadPoolExecutor(2) as pool:
        upscaler = BatchingUpscaler(network, 0.0, 4, on_compute=observed, lanes=2)
        try:
            burnt = pool.submit(compaction, Image.new("L", (TILE, TILE), 255))
            pool.submit(upscaler.upscale_luma, Image.new("L", (TILE, TILE), 0)).result(30)
            burnt.result(30)
        finally:
            upscaler.close()

    assert cpu_by_stage["compaction"] >= 0.5
    assert cpu_by_stage["render"] < 0.2


CORES = len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("threads", "lanes", "expected"),
    [
        (None, None, (CORES, 1)),  # one lane a core
        (4, None, (4, 1)),
        (4, 2, (2, 2)),  # two passes at once, each on two threads
        (4, 3, (3, 1)),  # threads a lane round down
        (2, 8, (2, 1)),  # never more lanes than threads
    ],
)
def test_the_cpu_inference_threads_are_split_into_lanes(
    threads: int | None, lanes: int | None, expected: tuple[int, int]
) -> None:
    settings = Settings(torch_threads=threads, inference_lanes=lanes)

    assert inference_lanes(settings, torch.device("cpu")) == expected


def test_a_cuda_device_runs_one_pass_at_a_time() -> None:
    settings = Settings(torch_threads=3, inference_lanes=4)

    assert inference_lanes(settings, torch.device("cuda")) == (1, 3)


@pytest.mark.parametrize(
    ("device", "threads_per_lane", "setting", "expected"),
    [
        ("cpu", 1, None, 1),  # one tile's activations stay in the core's caches
        ("cpu", 2, None, 4),  # threads that share a pass want more work between barriers
        ("cuda", 1, None, 4),
        ("cpu", 1, 3, 3),  # SRSTORE_MAX_TILES_PER_BATCH wins
        ("cuda", 1, 16, 16),
    ],
)
def test_a_one_thread_lane_runs_a_tile_a_pass_and_other_passes_take_four(
    device: str, threads_per_lane: int, setting: int | None, expected: int
) -> None:
    settings = Settings(max_tiles_per_batch=setting)

    assert tiles_per_pass(settings, torch.device(device), threads_per_lane) == expected


def test_the_served_batcher_has_its_lanes_and_each_pass_its_threads_and_tiles() -> None:
    found = find_weights(SHIPPED_WEIGHTS_DIR, "espcn")
    assert found is not None
    settings = Settings(
        device="cpu", compile="off", torch_threads=2, inference_lanes=2, tile_size=TILE
    )
    threads = torch.get_num_threads()
    try:
        batcher = build_upscaler(
            ModelRef("espcn", found.version), found.path.read_bytes(), settings
        )
        served = (batcher.lanes, torch.get_num_threads(), batcher.max_tiles)
        batcher.close()
    finally:
        torch.set_num_threads(threads)

    assert served == (2, 1, 1)
