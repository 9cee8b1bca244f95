"""Networks, tiling and the inference engine, on tiny CPU inputs."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image

from models.archs import ARCHITECTURES, ESPCN, BicubicSkip, build_model
from models.batching import BatchingUpscaler
from models.engine import (
    BicubicUpscaler,
    NeuralUpscaler,
    resolve_device,
    upscale_planes,
    ycrcb_to_rgb,
)
from models.tiling import split_tiles, stitch_luma
from models.validation import load_checked
from models.weights import (
    SHIPPED_WEIGHTS_DIR,
    find_weights,
    list_weights,
    load_model,
    weights_path,
)


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_networks_upscale_16x16_to_64x64(name: str) -> None:
    model = build_model(name).eval()

    with torch.no_grad():
        out = model(torch.rand(2, 1, 16, 16))

    assert out.shape == (2, 1, 64, 64)


def test_an_unknown_architecture_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown model"):
        build_model("edsr")


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("tile", [16, 48])
def test_tiled_output_equals_whole_image_output(name: str, tile: int) -> None:
    torch.manual_seed(0)
    model = build_model(name).eval()
    plane = torch.rand(1, 1, 53, 71)
    margin = 8

    with torch.inference_mode():
        padded = torch.nn.functional.pad(plane, (margin,) * 4, mode="replicate")
        whole = model(padded)[0, 0, 4 * margin : -4 * margin, 4 * margin : -4 * margin]
        tiles, layout = split_tiles(plane, tile, margin)
        tiled = stitch_luma(model(tiles), layout, 4)

    grey = torch.from_numpy(np.array(tiled)).float()
    assert tiled.dtype == np.uint8 and grey.shape == whole.shape == (212, 284)
    # one grey level: a value on a rounding boundary may fall either way in another tile
    assert (grey - whole.mul(255).round().clamp(0, 255)).abs().max() <= 1


@pytest.mark.parametrize("sizes", [[6], [4, 2], [1, 1, 1, 3], [5, 1]])
def test_tiles_stitched_batch_by_batch_equal_the_tiles_stitched_at_once(sizes: list[int]) -> None:
    """Batches that end mid-row land where their tiles belong; the float outputs of the
    network are never concatenated."""
    tiles, layout = split_tiles(torch.rand(1, 1, 21, 40), 16, 4)  # 2 rows of 3 tiles
    outputs = torch.rand(len(tiles), 1, 4 * 24, 4 * 24)

    at_once = stitch_luma(outputs.clone(), layout, 4)
    in_batches = stitch_luma(iter(outputs.clone().split(sizes)), layout, 4)

    assert (layout.rows, layout.cols, sum(sizes)) == (2, 3, 6)
    assert in_batches.shape == at_once.shape == (84, 160)
    assert np.array_equal(in_batches, at_once)


def test_each_row_of_tiles_is_told_as_a_final_band_as_soon_as_it_is_in() -> None:
    """Top to bottom, once each, the last band cropped to the image; a band is told with the
    values it ends with, while later batches are still to come."""
    tiles, layout = split_tiles(torch.rand(1, 1, 37, 40), 16, 4)  # 3 rows of 3 tiles
    outputs = torch.rand(len(tiles), 1, 4 * 24, 4 * 24)
    batches_in, told = [], []

    def batches() -> Iterator[torch.Tensor]:
        for batch in outputs.clone().split([2, 2, 5]):
            batches_in.append(len(batch))
            yield batch

    def on_band(rows: slice, band: np.ndarray) -> None:
        told.append((rows, band.copy(), sum(batches_in)))

    plane = stitch_luma(batches(), layout, 4, on_band)

    assert [(rows.start, rows.stop, tiles_in) for rows, _, tiles_in in told] == [
        (0, 64, 4),
        (64, 128, 9),
        (128, 148, 9),
    ]
    assert all(np.array_equal(band, plane[rows]) for rows, band, _ in told)
    assert plane.shape == (148, 160)


def test_stitching_fewer_tiles_than_the_layout_is_an_error() -> None:
    _, layout = split_tiles(torch.rand(1, 1, 21, 40), 16, 4)

    with pytest.raises(ValueError, match="5 output tiles for a layout of 6"):
        stitch_luma(torch.rand(5, 1, 96, 96), layout, 4)


@pytest.mark.parametrize("shape", [(1, 1, 1, 1), (2, 1, 2, 5), (1, 1, 37, 53), (4, 1, 144, 144)])
def test_espcns_bicubic_skip_is_torchs_bicubic_to_float_rounding(
    shape: tuple[int, int, int, int],
) -> None:
    """The convolution that stands for ``interpolate`` (borders and one-pixel images
    included), once its sub-pixel channels are shuffled into place."""
    plane = torch.rand(shape, generator=torch.Generator().manual_seed(1))

    with torch.inference_mode():
        skip = torch.nn.functional.pixel_shuffle(BicubicSkip(4)(plane), 4)
        reference = torch.nn.functional.interpolate(
            plane, scale_factor=4, mode="bicubic", align_corners=False
        )

    assert skip.shape == reference.shape
    assert (skip - reference).abs().max() <= 1e-6


def test_shipped_espcn_weights_compute_bicubic_plus_their_residual_as_trained() -> None:
    """Folding the skip into the shuffle changes no output of the weights trained without
    it, and the weight files carry no taps."""
    model = load_model("espcn", weights_path(SHIPPED_WEIGHTS_DIR, "espcn", 2))
    plane = torch.rand(2, 1, 40, 56, generator=torch.Generator().manual_seed(2))

    with torch.inference_mode():
        trained = torch.nn.functional.interpolate(
            plane, scale_factor=4, mode="bicubic", align_corners=False
        ) + model.body(plane)
        served = model(plane)

    assert (served - trained).abs().max() <= 1e-5
    assert not any(key.startswith("skip") for key in model.state_dict())


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_the_engine_runs_channels_last_with_the_reference_output(name: str) -> None:
    """The served layout (NHWC) changes the kernels, not the result: the plain NCHW model
    on the same tiles is the reference."""
    torch.manual_seed(0)
    reference = build_model(name).eval()
    engine = NeuralUpscaler(build_model(name), name, 0, torch.device("cpu"), tile=24)
    engine.model.load_state_dict(reference.state_dict())
    tiles = torch.rand(3, 1, engine.tile_span, engine.tile_span)

    with torch.no_grad():
        expected = reference(tiles)
    served = engine.run_tiles(tiles)

    last = engine.model.body[4].weight  # 32 input channels, 3x3 or 5x5, in both networks
    assert last.is_contiguous(memory_format=torch.channels_last) and not last.is_contiguous()
    assert torch.allclose(served, expected, atol=1e-5)


@pytest.mark.parametrize("mode", ["L", "RGB", "RGBA"])
def test_neural_upscaler_keeps_the_mode_and_multiplies_the_size(mode: str) -> None:
    upscaler = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), tile=16)

    out = upscaler.upscale(Image.new(mode, (21, 13)))

    assert (out.mode, out.size) == (mode, (84, 52))
    assert upscaler.label == "espcn:0"


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
@pytest.mark.parametrize("max_tiles", [None, 1, 3], ids=["unbatched", "by-tile", "mid-row"])
def test_colour_is_the_network_luma_with_the_other_bands_upscaled_by_upscale_planes(
    mode: str, max_tiles: int | None
) -> None:
    """Also where the tiles come back in batches and each band of rows turns RGB as soon as
    its row of tiles is in (batches of one tile, and batches that end mid-row)."""
    torch.manual_seed(0)
    neural = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), tile=16)
    generator = np.random.default_rng(4)
    image = Image.fromarray(generator.integers(0, 256, (45, 27, 4), dtype=np.uint8), "RGBA")
    image = image if mode == "RGBA" else image.convert("RGB")

    y, cb, cr = (np.asarray(band) for band in image.convert("RGB").convert("YCbCr").split())
    luma = np.asarray(neural.upscale_luma(Image.fromarray(y)))
    chroma = upscale_planes(np.dstack([cr, cb]))
    alpha = upscale_planes(np.asarray(image.getchannel("A"))) if mode == "RGBA" else None
    expected = ycrcb_to_rgb(np.dstack([luma, chroma]), alpha)

    if max_tiles is None:
        served = neural.upscale(image)
    else:
        batcher = BatchingUpscaler(neural, 0.0, max_tiles)
        served = batcher.upscale(image)
        batcher.close()

    assert served.mode == expected.mode == mode
    assert served.tobytes() == expected.tobytes()


def test_colour_is_rounded_from_the_jfif_equations_for_every_sample() -> None:
    """Every (Y, Cb, Cr) triple comes back within 0.6 of the exact JFIF equations that
    Pillow's ``convert("YCbCr")`` uses (Pillow's own 6-bit tables are off by up to 0.998), so
    a grey (Cb = Cr = 128) stays exactly grey."""
    cb, cr = np.meshgrid(np.arange(256, dtype=np.uint8), np.arange(256, dtype=np.uint8))
    chroma_b, chroma_r = cb - 128.0, cr - 128.0
    worst = 0.0
    for level in range(256):
        planes = np.dstack([np.full(cb.shape, level, np.uint8), cr, cb])
        ours = np.asarray(ycrcb_to_rgb(planes))
        exact = np.stack(
            [
                level + 1.402 * chroma_r,
                level - 0.344136 * chroma_b - 0.714136 * chroma_r,
                level + 1.772 * chroma_b,
            ],
            axis=-1,
        ).clip(0, 255)
        worst = max(worst, float(np.abs(ours - exact).max()))

    assert worst <= 0.6


def test_the_image_shares_the_conversions_pixels_and_alpha_rides_along() -> None:
    """Pillow takes the converted array as its pixels (no copy), as RGB or, with an alpha
    plane, RGBA; the image stays valid after every other reference to the array is gone."""
    planes = np.dstack([np.full((3, 5), level, np.uint8) for level in (90, 128, 128)])
    alpha = np.arange(15, dtype=np.uint8).reshape(3, 5)

    rgb, rgba = ycrcb_to_rgb(planes), ycrcb_to_rgb(planes, alpha)
    del planes, alpha
    copied = rgba.copy()
    copied.putalpha(7)

    assert (rgb.mode, rgb.size, rgb.getpixel((4, 2))) == ("RGB", (5, 3), (90, 90, 90))
    assert (rgba.mode, rgba.getpixel((4, 2)), rgba.getpixel((0, 0))) == (
        "RGBA",
        (90, 90, 90, 14),
        (90, 90, 90, 0),
    )
    assert copied.getpixel((4, 2)) == (90, 90, 90, 7) and rgba.getpixel((4, 2))[3] == 14


def _keys_bicubic(plane: np.ndarray, a: float = -0.75) -> np.ndarray:
    """The exact x4 bicubic (Keys' kernel with parameter ``a``, pixel centres aligned, the
    edge replicated), separable, in float64."""

    def weights(size: int) -> np.ndarray:
        matrix = np.zeros((4 * size, size))
        for out in range(4 * size):
            centre = (out + 0.5) / 4 - 0.5
            first = int(np.floor(centre))
            for tap in range(first - 1, first + 3):
                x = abs(centre - tap)
                w = (
                    ((a + 2) * x - (a + 3)) * x * x + 1
                    if x <= 1
                    else ((x - 5) * x + 8) * x * a - 4 * a
                )
                matrix[out, min(max(tap, 0), size - 1)] += w
        return matrix

    height, width = plane.shape
    return weights(height) @ plane.astype(np.float64) @ weights(width).T


@pytest.mark.parametrize("channels", [1, 2, 3])
@pytest.mark.parametrize("size", [(1, 1), (27, 19), (130, 97)])
def test_each_plane_takes_the_a_075_bicubic_on_its_own_within_one_level(
    channels: int, size: tuple[int, int]
) -> None:
    """Chroma and alpha take the a = -0.75 bicubic, each channel filtered on its own (alpha
    never premultiplied, no channel bleeding into another), in fixed point: within one level
    of the exact filter. Noise and black/white extremes are the worst case."""
    generator = np.random.default_rng(channels)
    width, height = size
    noise = [generator.integers(0, 256, (height, width), dtype=np.uint8) for _ in range(2)]
    extremes = (generator.integers(0, 2, (height, width)) * 255).astype(np.uint8)
    planes = [*noise, extremes][:channels]

    upscaled = upscale_planes(np.dstack(planes) if channels > 1 else planes[0])

    assert upscaled.shape[:2] == (height * 4, width * 4) and upscaled.dtype == np.uint8
    for index, plane in enumerate(planes):
        ours = upscaled[..., index] if channels > 1 else upscaled
        exact = _keys_bicubic(plane).clip(0, 255)
        assert np.abs(ours - exact).max() <= 1.0


def test_a_flat_plane_stays_flat_and_alpha_does_not_leak_into_colour() -> None:
    """An opaque alpha stays 255 everywhere, a transparent one 0, whatever the colour."""
    colour = np.random.default_rng(1).integers(0, 256, (9, 11), dtype=np.uint8)
    opaque, clear = np.full((9, 11), 255, np.uint8), np.zeros((9, 11), np.uint8)

    upscaled = upscale_planes(np.dstack([colour, clear, opaque]))

    assert upscaled[..., 2].min() == 255 and upscaled[..., 1].max() == 0
    assert np.array_equal(upscaled[..., 0], upscale_planes(colour))


def test_bicubic_upscaler_says_it_is_bicubic() -> None:
    out = BicubicUpscaler().upscale(Image.new("RGB", (5, 3)))

    assert out.size == (20, 12)
    assert BicubicUpscaler().label == "bicubic"


def test_weights_are_found_by_name_and_newest_version(tmp_path) -> None:
    for version in (1, 3, 2):
        torch.save(build_model("srcnn").state_dict(), weights_path(tmp_path, "srcnn", version))

    assert [w.version for w in list_weights(tmp_path)] == [1, 2, 3]
    assert find_weights(tmp_path, "srcnn").version == 3
    assert find_weights(tmp_path, "srcnn", 2).version == 2
    assert find_weights(tmp_path, "espcn") is None
    assert isinstance(load_model("srcnn", weights_path(tmp_path, "srcnn", 1)), torch.nn.Module)


@pytest.mark.parametrize("activation", ["tanh", "prelu"])
def test_an_espcn_weight_file_loads_as_the_variant_it_was_trained_as(
    tmp_path, activation: str
) -> None:
    torch.manual_seed(0)
    trained = ESPCN(activation=activation).eval()
    torch.save(trained.state_dict(), weights_path(tmp_path, "espcn", 1))
    plane = torch.rand(1, 1, 12, 12)

    loaded = load_model("espcn", weights_path(tmp_path, "espcn", 1))
    uploaded = load_checked("espcn", weights_path(tmp_path, "espcn", 1).read_bytes())

    assert loaded.activation == uploaded.activation == activation
    with torch.no_grad():
        # Not bit for bit: oneDNN may block the convolution differently from one call to
        # the next (seen once, under xdist). Another activation is off by far more.
        assert torch.allclose(loaded(plane), trained(plane), rtol=0, atol=1e-5)


def test_every_shipped_weight_file_loads() -> None:
    shipped = list_weights(SHIPPED_WEIGHTS_DIR)

    assert {w.name for w in shipped} == set(ARCHITECTURES)
    for weights in shipped:
        assert isinstance(load_model(weights.name, weights.path), torch.nn.Module)


def test_auto_device_on_a_cpu_machine_is_the_cpu() -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"

    assert resolve_device("auto").type == expected


# Reports the OpenMP wait policy in force at the moment torch is first imported.
_POLICY_AT_TORCH_IMPORT = """
import os, sys
seen = []
class Probe:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" and not seen:
            seen.append(os.environ.get("OMP_WAIT_POLICY", "unset"))
sys.meta_path.insert(0, Probe())
import {module}
import torch
print(seen[0])
"""


@pytest.mark.parametrize(
    ("module", "given", "policy"),
    [
        ("app.main", None, "PASSIVE"),
        ("worker.main", None, "PASSIVE"),
        ("trainer.cli", None, "PASSIVE"),
        ("models", "ACTIVE", "ACTIVE"),
    ],
)
def test_openmp_threads_sleep_while_waiting_in_every_process_unless_the_operator_chose(
    module: str, given: str | None, policy: str
) -> None:
    """torch's OpenMP runtime reads the policy once, when torch loads: it must be set by then."""
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    if given is not None:
        env["OMP_WAIT_POLICY"] = given
    probe = _POLICY_AT_TORCH_IMPORT.format(module=module)

    result = subprocess.run(
        [sys.executable, "-c", probe], env=env, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [policy]
