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


def test_a_box_larger_on_one_side_only_is_kept_for_inside_and_contain() -> None:
    """Without ``enlarge`` the box shrinks only when the image would grow to fit it: a box
    twice as wide but half as tall already reduces the image, so it stays as asked."""
    assert plan_geometry(100, 100, 200, 50, "inside", False, LIMIT) == Geometry.identity(50, 50)
    assert plan_geometry(100, 100, 200, 50, "contain", False, LIMIT) == Geometry(
        (50, 50), (200, 50), (75, 0)
    )


def test_a_cover_box_that_rounds_past_the_scaled_image_is_cut_to_it() -> None:
    """1857.5 (743 at dpr 2.5) rounds to 1858, while the image scaled to that height rounds to
    1857: the canvas keeps to the image, so the crop never reaches past its edge."""
    geometry = plan_geometry(3378, 2761, 1252.0, 1857.5, "cover", False, LIMIT)

    assert geometry == Geometry((2273, 1857), (1252, 1857), (-511, 0))


@given(
    width=st.integers(1, 8000),
    height=st.integers(1, 8000),
    box_width=st.integers(1, 4000),
    box_height=st.integers(1, 4000),
    dpr=st.sampled_from([1.0, 1.25, 1.5, 2.5, 2.625, 3.0]),
    enlarge=st.booleans(),
)
def test_a_cover_canvas_never_exceeds_the_scaled_image(
    width: int, height: int, box_width: int, box_height: int, dpr: float, enlarge: bool
) -> None:
    geometry = plan_geometry(
        width, height, box_width * dpr, box_height * dpr, "cover", enlarge, 2**62
    )

    assert geometry.canvas[0] <= geometry.scaled[0] and geometry.canvas[1] <= geometry.scaled[1]
    assert geometry.offset[0] <= 0 and geometry.offset[1] <= 0


def test_the_pixel_limit_holds_at_the_limit_and_names_the_larger_of_image_and_canvas() -> None:
    assert plan_geometry(100, 100, 200, None, "inside", True, 40_000).scaled == (200, 200)
    with pytest.raises(InvalidSize) as over:
        plan_geometry(100, 100, 201, None, "inside", True, 40_000)
    with pytest.raises(InvalidSize) as padded:  # the canvas, 300x100, is what is over
        plan_geometry(100, 100, 300, 100, "contain", False, 29_999)

    assert str(over.value) == "the result would be 201x201 pixels; the limit is 40000 pixels in all"
    assert str(padded.value) == (
        "the result would be 300x100 pixels; the limit is 29999 pixels in all"
    )


@pytest.mark.parametrize(
    ("scaled", "width", "height", "fits"),
    [
        ((300, 200), 300, 200, True),
        ((300, 200), 299.5, 200, False),
        ((300, 200), 300, 199.75, False),
        ((300, 200), 200, 300, False),
        ((200, 300), 300, 200, False),
    ],
)
def test_a_geometry_fits_inside_a_size_only_when_both_sides_do(
    scaled: tuple[int, int], width: float, height: float, fits: bool
) -> None:
    assert Geometry.identity(*scaled).fits_inside(width, height) is fits


@pytest.mark.parametrize(
    ("token", "geometry"),
    [
        ("40x26", Geometry.identity(40, 26)),
        ("62x40:40x40:-11:0", Geometry((62, 40), (40, 40), (-11, 0))),
        ("40x26:40x40:0:7", Geometry((40, 26), (40, 40), (0, 7))),
    ],
)
def test_a_geometry_token_reads_back_as_its_geometry(token: str, geometry: Geometry) -> None:
    assert Geometry.parse(token) == geometry
    assert geometry.token == token


@pytest.mark.parametrize("token", ["", "40", "40x", "40x26:40x40", "40x26:40x40:0", "4x2 "])
def test_a_token_that_is_not_a_geometry_is_refused_by_name(token: str) -> None:
    with pytest.raises(InvalidSize) as refused:
        Geometry.parse(token)

    assert str(refused.value) == f"not a geometry token: {token!r}"


def noise(width: int, height: int, mode: str = "RGB") -> Image.Image:
    channels = len(mode)
    pixels = np.random.default_rng(7).integers(0, 256, (height, width, channels), np.uint8)
    return Image.fromarray(pixels.squeeze(), mode)


@pytest.mark.parametrize(
    ("geometry", "source"),
    [
        (Geometry.identity(32, 24), None),
        (Geometry.identity(16, 16), (8.0, 4.0, 40.0, 36.0)),
        (Geometry.identity(64, 48), (16.0, 12.0, 48.0, 36.0)),  # a zoom: same size, other pixels
    ],
)
def test_the_resize_is_lanczos_of_the_whole_image_or_of_the_source_region(
    geometry: Geometry, source: tuple[float, float, float, float] | None
) -> None:
    image = noise(64, 48)
    expected = image.resize(geometry.scaled, Image.Resampling.LANCZOS, box=source)

    resized = apply_geometry(image, geometry, source)

    assert np.array_equal(np.asarray(resized), np.asarray(expected))


def test_cover_crops_the_middle_of_a_tall_image() -> None:
    image = noise(40, 100)
    geometry = plan_geometry(40, 100, 40, 40, "cover", False, LIMIT)

    cropped = apply_geometry(image, geometry)

    assert geometry == Geometry((40, 100), (40, 40), (0, -30))
    assert np.array_equal(np.asarray(cropped), np.asarray(image)[30:70])


@pytest.mark.parametrize(("width", "height"), [(98, 100), (100, 98)])
@pytest.mark.parametrize(("mode", "padding"), [("RGB", (255, 255, 255)), ("RGBA", (0, 0, 0, 0))])
def test_contain_pads_a_single_pixel_each_side_with_its_fill(
    width: int, height: int, mode: str, padding: tuple[int, ...]
) -> None:
    """White behind an opaque image, transparent black behind one with alpha, even where
    the padding is one pixel on one axis and none on the other."""
    image = noise(width, height, mode)
    geometry = plan_geometry(width, height, 100, 100, "contain", False, LIMIT)

    padded = np.asarray(apply_geometry(image, geometry))

    assert geometry.offset == ((100 - width) // 2, (100 - height) // 2)
    inner = padded[1:-1] if height < 100 else padded[:, 1:-1]
    edges = [padded[0], padded[-1]] if height < 100 else [padded[:, 0], padded[:, -1]]
    assert np.array_equal(inner, np.asarray(image))
    assert all((edge == padding).all() for edge in edges)
