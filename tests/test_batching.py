"""The tile batcher: tiles of many images share forward passes, and nobody notices."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import pytest
import torch
from PIL import Image

from models.archs import build_model
from models.batching import BatchingUpscaler
from models.engine import NeuralUpscaler, luma_to_tensor

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
