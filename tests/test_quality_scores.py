"""The scores a receipt reports, on images small enough to work out by hand: studio-swing
luma, Y-PSNR, SSIM below and above the 11-pixel window, a sampled reference scoring exactly
the pixels of its tiles, and the mosaic that puts those tiles side by side.

``tests/test_quality.py`` holds the same definitions to photographs (and a 12 MP sample to
the whole image); these run in about a second, fast enough for mutmut against
``imaging.quality``.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from imaging.quality import (
    TILE,
    TILE_MARGIN,
    Box,
    Reference,
    luma_psnr,
    luma_ssim,
    mosaic_boxes,
    plane_ssim,
    sample_boxes,
    studio_luma,
    tile_mosaic,
)


def grey(level: int, size: tuple[int, int] = (20, 12)) -> Image.Image:
    return Image.new("RGB", size, (level, level, level))


def noise(size: tuple[int, int], seed: int, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = len(mode)
    pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(pixels if channels > 1 else pixels[..., 0], mode)


def blurred(image: Image.Image) -> Image.Image:
    """A served image near the reference: what a lossy read gives back."""
    from PIL import ImageFilter

    return image.filter(ImageFilter.GaussianBlur(1))


def test_studio_luma_spans_16_to_235_with_bt601_weights_and_a_shaved_border() -> None:
    assert studio_luma(grey(0), 0) == pytest.approx(np.full((12, 20), 16.0))
    assert studio_luma(grey(255), 0) == pytest.approx(np.full((12, 20), 235.0))
    red = Image.new("RGB", (20, 12), (255, 0, 0))
    green = Image.new("RGB", (20, 12), (0, 255, 0))
    assert studio_luma(red, 0)[0, 0] == pytest.approx(16 + 65.481)
    assert studio_luma(green, 0)[0, 0] == pytest.approx(16 + 128.553)
    assert studio_luma(grey(0)).shape == (4, 12)  # 4 pixels shaved from every side
    assert studio_luma(grey(0), 2).shape == (8, 16)
    with_alpha = Image.new("RGBA", (20, 12), (255, 255, 255, 0))
    assert studio_luma(with_alpha, 0)[0, 0] == pytest.approx(235.0)


@pytest.mark.parametrize("mode", ["L", "P", "LA"])
def test_a_grey_or_palette_image_has_the_luma_of_its_rgb_pixels(mode: str) -> None:
    image = noise((20, 12), 12, "RGB").convert(mode)

    assert studio_luma(image, 0) == pytest.approx(studio_luma(image.convert("RGB"), 0))


def test_psnr_is_infinite_for_identical_lumas_and_follows_the_mean_squared_error() -> None:
    image = noise((40, 30), 1)

    assert luma_psnr(image, image) == math.inf
    # black against white: every luma differs by 219, whatever the border
    assert luma_psnr(grey(0), grey(255)) == pytest.approx(10 * math.log10(255**2 / 219**2))
    # a difference only in the shaved border does not count
    framed = grey(0).copy()
    framed.paste((255, 255, 255), (0, 0, 20, 2))
    assert luma_psnr(framed, grey(0)) == math.inf
    assert luma_psnr(framed, grey(0), 0) < math.inf


def test_ssim_is_one_for_identical_planes_and_falls_with_the_difference() -> None:
    image, near = noise((64, 48), 2), blurred(noise((64, 48), 2))

    assert luma_ssim(image, image) == pytest.approx(1.0)
    assert 0.2 < luma_ssim(near, image) < 0.9
    assert luma_ssim(noise((64, 48), 3), image) < 0.1


def test_a_plane_under_the_window_is_scored_by_the_same_formula_over_the_whole_plane() -> None:
    rng = np.random.default_rng(4)
    a = rng.uniform(16, 235, (10, 30))
    b = a + rng.normal(0, 8, a.shape)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = a.mean(), b.mean()
    cov = ((a - mx) * (b - my)).mean()
    expected = ((2 * mx * my + c1) * (2 * cov + c2)) / (
        (mx**2 + my**2 + c1) * (a.var() + b.var() + c2)
    )

    assert plane_ssim(a, b) == pytest.approx(expected, rel=1e-9)
    assert plane_ssim(a, a) == pytest.approx(1.0)
    assert plane_ssim(a * 2, b * 2, peak=510.0) == pytest.approx(expected, rel=1e-9)


def test_a_plane_of_11_pixels_or_more_is_scored_with_gaussian_windows() -> None:
    """Wang et al.'s 11x11 window with sigma 1.5, population covariances: a blurred copy
    scores as their formula says, checked against a direct computation."""
    from scipy import ndimage

    rng = np.random.default_rng(5)
    a = rng.uniform(16, 235, (24, 26))
    b = ndimage.uniform_filter(a, 3)
    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2

    def window(plane: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(plane, 1.5, truncate=3.5)

    mx, my = window(a), window(b)
    vx, vy, cov = window(a * a) - mx**2, window(b * b) - my**2, window(a * b) - mx * my
    ssim = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    expected = ssim[5:-5, 5:-5].mean()  # the valid region: every window inside the plane

    assert plane_ssim(a, b) == pytest.approx(expected, abs=1e-5)


@pytest.mark.parametrize("size", [(64, 48), (11, 30), (9, 40), (8, 8)])
def test_a_reference_scores_a_whole_image_as_the_definitions_do(size: tuple[int, int]) -> None:
    image = noise(size, 6)
    served = blurred(image)
    reference = Reference(image)

    psnr, ssim = reference.score(served)
    assert reference.whole
    assert reference.boxes == (Box(0, 0, *size),)
    assert psnr == pytest.approx(luma_psnr(served, image, 0), abs=1e-9)
    assert ssim == pytest.approx(luma_ssim(served, image, 0), abs=1e-5)
    assert reference.score(image) == (math.inf, pytest.approx(1.0))


def test_a_dark_image_served_brighter_is_scored_with_the_definitions_constants() -> None:
    """Where the local means are low and differ, SSIM's luminance term rests on its
    constant ``c1 = (0.01 x 255)^2``: the score still matches the definition's."""
    image = Image.eval(noise((64, 48), 8), lambda v: v // 16)  # levels 0-15
    served = Image.eval(blurred(image), lambda v: v + 12)

    psnr, ssim = Reference(image).score(served)
    assert ssim < 0.9
    assert psnr == pytest.approx(luma_psnr(served, image, 0), abs=1e-9)
    assert ssim == pytest.approx(luma_ssim(served, image, 0), abs=1e-5)


def test_a_reference_refuses_an_image_of_another_size() -> None:
    reference = Reference(grey(0, (30, 20)))

    with pytest.raises(ValueError) as refused:
        reference.score(grey(0, (30, 21)))
    assert str(refused.value) == "a (30, 21) image scored against a (30, 20) reference"


def test_a_reference_on_chosen_boxes_scores_exactly_the_pixels_of_those_boxes() -> None:
    """SSIM over the boxes is the whole image's SSIM map at those pixels (its windows read
    the pixels around them); PSNR, as on any sampled image, counts every third row."""
    from scipy import ndimage

    image = noise((120, 90), 7)
    served = blurred(image)
    boxes = (Box(0, 0, 40, 30), Box(60, 40, 100, 90))
    psnr, ssim = Reference(image, boxes).score(served)

    x, y = studio_luma(image, 0), studio_luma(served, 0)
    inside = np.zeros(x.shape, bool)
    for box in boxes:
        inside[box.top : box.bottom, box.left : box.right] = True
    error = (x - y)[::3]
    assert psnr == pytest.approx(10 * math.log10(255**2 / np.mean(error**2)), abs=1e-9)

    def window(plane: np.ndarray) -> np.ndarray:
        return ndimage.gaussian_filter(plane, 1.5, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2
    mx, my = window(x), window(y)
    vx, vy, cov = window(x * x) - mx**2, window(y * y) - my**2, window(x * y) - mx * my
    ssim_map = ((2 * mx * my + c1) * (2 * cov + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    valid = np.zeros(x.shape, bool)
    valid[5:-5, 5:-5] = True
    assert ssim == pytest.approx(ssim_map[inside & valid].mean(), abs=1e-4)


def test_a_large_image_is_scored_on_its_sample_and_psnr_on_every_third_row() -> None:
    size = (1700, 1500)  # 2.55 MP: just over the whole-image limit
    image = noise(size, 8, "L").convert("RGB")
    served = image.point(lambda v: min(255, v + 3))
    reference = Reference(image)

    assert not reference.whole
    assert reference.boxes == sample_boxes(*size)
    assert len(reference.boxes) >= 16
    psnr, ssim = reference.score(served)
    x, y = studio_luma(image, 0)[::3], studio_luma(served, 0)[::3]
    assert psnr == pytest.approx(10 * math.log10(255**2 / np.mean((x - y) ** 2)), abs=1e-9)
    assert 0.9 < ssim < 1.0


def test_up_to_2_5_mp_or_under_a_tile_and_margins_an_image_is_scored_whole() -> None:
    assert sample_boxes(2500, 1000) == (Box(0, 0, 2500, 1000),)
    assert sample_boxes(2501, 1000) != (Box(0, 0, 2501, 1000),)
    narrow = TILE + 2 * TILE_MARGIN - 1  # under one tile and margins: whole at any length
    assert sample_boxes(100_000, narrow) == (Box(0, 0, 100_000, narrow),)
    assert sample_boxes(narrow, 100_000) == (Box(0, 0, narrow, 100_000),)


@pytest.mark.parametrize("size", [(4000, 3000), (3000, 4000), (12_000, 400), (2600, 1000)])
def test_every_sampled_tile_lies_in_the_image_with_its_margin(size: tuple[int, int]) -> None:
    width, height = size
    boxes = sample_boxes(width, height)

    assert len(boxes) > 1
    for box in boxes:
        assert box.right - box.left == box.bottom - box.top == TILE
        assert box.pixels == TILE * TILE
        assert box.left >= TILE_MARGIN and box.top >= TILE_MARGIN
        assert box.right + TILE_MARGIN <= width and box.bottom + TILE_MARGIN <= height


def test_the_mosaic_holds_each_tile_with_its_margin_where_mosaic_boxes_say() -> None:
    image = noise((1500, 1200), 9)
    boxes = (Box(64, 64, 320, 320), Box(640, 384, 896, 640), Box(1152, 832, 1408, 1088))
    mosaic = tile_mosaic(image, boxes)
    placed = mosaic_boxes(boxes)
    span = TILE + 2 * TILE_MARGIN

    assert mosaic.size == (2 * span, 2 * span)  # three tiles: a 2 x 2 grid
    for box, where in zip(boxes, placed, strict=True):
        assert where.right - where.left == where.bottom - where.top == TILE
        original = image.crop(
            (
                box.left - TILE_MARGIN,
                box.top - TILE_MARGIN,
                box.right + TILE_MARGIN,
                box.bottom + TILE_MARGIN,
            )
        )
        copied = mosaic.crop(
            (
                where.left - TILE_MARGIN,
                where.top - TILE_MARGIN,
                where.right + TILE_MARGIN,
                where.bottom + TILE_MARGIN,
            )
        )
        assert np.array_equal(np.asarray(original), np.asarray(copied))
    assert placed[1].left == span + TILE_MARGIN and placed[2].top == span + TILE_MARGIN


def test_the_mosaic_of_a_4x_reduced_copy_cuts_the_same_tiles_at_a_quarter() -> None:
    image = noise((1600, 1280), 10)
    small = image.resize((400, 320), Image.Resampling.NEAREST)
    boxes = (Box(64, 64, 320, 320), Box(640, 640, 896, 896))
    mosaic = tile_mosaic(small, boxes, scale=4)
    span = TILE + 2 * TILE_MARGIN

    assert mosaic.size == (2 * span // 4, span // 4)
    tile = small.crop(
        (
            (640 - TILE_MARGIN) // 4,
            (640 - TILE_MARGIN) // 4,
            (896 + TILE_MARGIN) // 4,
            (896 + TILE_MARGIN) // 4,
        )
    )
    assert np.array_equal(
        np.asarray(mosaic.crop((span // 4, 0, 2 * span // 4, span // 4))), np.asarray(tile)
    )


@pytest.mark.parametrize("size", [(64, 48), (1700, 1500)])
def test_a_transparent_upload_is_scored_on_its_colour_alone(size: tuple[int, int]) -> None:
    """Whole or sampled, an RGBA upload scores as its RGB pixels: alpha is not luma."""
    rgba = noise(size, 11, "RGBA")
    served = rgba.point(lambda v: min(255, v + 3))
    rgb, served_rgb = rgba.convert("RGB"), served.convert("RGB")

    psnr, ssim = Reference(rgba).score(served)
    expected_psnr, expected_ssim = Reference(rgb).score(served_rgb)
    assert psnr == pytest.approx(expected_psnr, abs=1e-9)
    assert ssim == pytest.approx(expected_ssim, abs=1e-6)


@pytest.mark.parametrize("side", [320, 351])
def test_an_image_too_narrow_for_an_aligned_tile_and_its_margins_is_scored_whole(
    side: int,
) -> None:
    """A tile starts on a 64-px block at least 32 px in (so at 64) and keeps 32 px below it:
    under 352 px across there is no such place, and the whole image is scored instead."""
    assert sample_boxes(20_000, side) == (Box(0, 0, 20_000, side),)
    assert sample_boxes(side, 20_000) == (Box(0, 0, side, 20_000),)


def test_an_image_just_wide_enough_is_sampled_with_margins_on_every_side() -> None:
    boxes = sample_boxes(20_000, 352)

    assert len(boxes) > 1
    assert all(box.top == 64 and box.bottom + TILE_MARGIN == 352 for box in boxes)


def first_place(start: int) -> int:
    """The first 64-px block at or after ``start`` that leaves a tile its margin."""
    return max(-(-start // 64) * 64, 64)


@pytest.mark.parametrize(
    ("size", "grid"),
    [
        ((4000, 3000), (5, 4)),
        ((3000, 4000), (3, 6)),
        ((4001, 3001), (5, 4)),
        ((2600, 1000), (6, 3)),
    ],
)
def test_the_sample_is_one_aligned_jittered_tile_in_each_cell_of_a_grid_shaped_like_the_image(
    size: tuple[int, int], grid: tuple[int, int]
) -> None:
    """16 tiles (the grid rounds up to at most 20), each on the codecs' 64-px blocks, inside
    its own cell, at a seeded position that differs from cell to cell: an unbiased estimate."""
    width, height = size
    columns, rows = grid
    boxes = sample_boxes(width, height)

    assert len(boxes) == columns * rows and 16 <= len(boxes) <= 20
    moved = [0, 0]  # tiles off their cell's first place, across and down
    for i, box in enumerate(boxes):
        row, column = divmod(i, columns)
        assert all(isinstance(side, int) for side in (box.left, box.top, box.right, box.bottom))
        assert box.left % 64 == 0 and box.top % 64 == 0
        assert column * width // columns <= box.left
        assert box.right <= (column + 1) * width // columns
        assert row * height // rows <= box.top
        assert box.bottom <= (row + 1) * height // rows
        moved[0] += box.left != first_place(column * width // columns)
        moved[1] += box.top != first_place(row * height // rows)
    # a seeded place in each cell, not always its first (where the cell leaves room: 2600 x
    # 1000's cells are 333 px high, one place down)
    assert moved[0] >= len(boxes) // 3
    assert moved[1] >= len(boxes) // 3 or height // rows < TILE + 2 * 64


@pytest.mark.parametrize(
    "size",
    [
        (400, 12_000),
        (12_000, 400),
        (4001, 3001),
        (700, 20_000),
        (463, 5599),
        (5599, 463),
        (630, 4400),
    ],
)
def test_sampled_tiles_are_aligned_and_no_pixel_is_in_two(size: tuple[int, int]) -> None:
    boxes = sample_boxes(*size)

    assert len(boxes) > 1
    assert all(box.left % 64 == 0 and box.top % 64 == 0 for box in boxes)
    assert all(isinstance(side, int) for box in boxes for side in (box.left, box.right))
    for i, a in enumerate(boxes):
        for b in boxes[i + 1 :]:
            apart = a.right <= b.left or b.right <= a.left or a.bottom <= b.top or b.bottom <= a.top
            assert apart, (a, b)
