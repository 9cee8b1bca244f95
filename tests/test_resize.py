"""Where a requested box puts an image, in pixels, and the resize that does it."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from imaging import Geometry, InvalidSize, apply_geometry, plan_geometry

LIMIT = 50_000_000


@pytest.mark.parametrize(
    ("fit", "scaled", "canvas", "offset"),
    [
        ("inside", (40, 26), (40, 26), (0, 0)),
        ("contain", (40, 26), (40, 40), (0, 7)),
        ("cover", (62, 40), (40, 40), (-11, 0)),
        ("fill", (40, 40), (40, 40), (0, 0)),
    ],
)
def test_each_fit_of_an_odd_sized_image_in_a_square_box(
    fit: str, scaled: tuple[int, int], canvas: tuple[int, int], offset: tuple[int, int]
) -> None:
    geometry = plan_geometry(203, 131, 40, 40, fit, False, LIMIT)  # type: ignore[arg-type]

    assert geometry == Geometry(scaled, canvas, offset)


def test_one_side_keeps_the_aspect_ratio_whatever_the_fit() -> None:
    assert plan_geometry(203, 131, 101, None, "fill", False, LIMIT).scaled == (101, 65)
    assert plan_geometry(203, 131, None, 65, "cover", False, LIMIT).scaled == (101, 65)


def test_without_enlarge_the_box_shrinks_until_nothing_grows() -> None:
    assert plan_geometry(602, 402, 1200, None, "inside", False, LIMIT) == Geometry.identity(
        602, 402
    )
    # A wide cover box keeps its aspect ratio: the crop is 10:1 at the upload's own scale.
    assert plan_geometry(602, 402, 3000, 300, "cover", False, LIMIT) == Geometry(
        (602, 402), (602, 60), (0, -171)
    )


def test_enlarge_grows_up_to_the_pixel_limit_and_no_further() -> None:
    assert plan_geometry(602, 402, 1204, None, "inside", True, LIMIT).scaled == (1204, 804)
    with pytest.raises(InvalidSize):
        plan_geometry(602, 402, 1204, None, "inside", True, 900_000)


@given(
    width=st.integers(1, 5000),
    height=st.integers(1, 5000),
    box_width=st.integers(1, 20000),
    box_height=st.integers(1, 20000),
    fit=st.sampled_from(["inside", "contain", "cover", "fill"]),
)
def test_no_plan_enlarges_or_leaves_the_box_without_enlarge(
    width: int, height: int, box_width: int, box_height: int, fit: str
) -> None:
    geometry = plan_geometry(width, height, box_width, box_height, fit, False, 2**62)  # type: ignore[arg-type]

    assert geometry.scaled[0] <= width + 1 and geometry.scaled[1] <= height + 1
    assert geometry.canvas[0] <= box_width and geometry.canvas[1] <= box_height
    assert Geometry.parse(geometry.token) == geometry


def test_contain_pads_alpha_images_with_transparency_and_others_with_white() -> None:
    geometry = plan_geometry(203, 131, 40, 40, "contain", False, LIMIT)
    red = Image.new("RGB", (203, 131), (255, 0, 0))
    clear = Image.new("RGBA", (203, 131), (255, 0, 0, 255))

    opaque = np.asarray(apply_geometry(red, geometry))
    transparent = np.asarray(apply_geometry(clear, geometry))

    assert opaque.shape == (40, 40, 3) and transparent.shape == (40, 40, 4)
    assert (opaque[:7] == 255).all() and (opaque[20, 20] == (255, 0, 0)).all()
    assert (transparent[:7, :, 3] == 0).all() and transparent[20, 20, 3] == 255


def test_cover_crops_the_centre() -> None:
    stripes = np.zeros((131, 203, 3), np.uint8)
    stripes[:, :30] = stripes[:, -30:] = 255  # white bands the centred crop (36 px) cuts away
    geometry = plan_geometry(203, 131, 131, 131, "cover", False, LIMIT)

    cropped = np.asarray(apply_geometry(Image.fromarray(stripes), geometry))

    assert cropped.shape == (131, 131, 3)
    assert cropped.max() == 0


def test_a_region_of_the_source_is_resized_antialiased() -> None:
    """A fine checkerboard reduced 4x comes out as flat grey, not as aliasing patterns."""
    board = (np.indices((128, 128)).sum(axis=0) % 2 * 255).astype(np.uint8)
    geometry = Geometry.identity(30, 30)

    reduced = np.asarray(apply_geometry(Image.fromarray(board), geometry, (0, 0, 120, 120)))

    assert reduced.shape == (30, 30)
    assert abs(reduced.mean() - 127.5) < 3 and reduced.std() < 4
