"""Sizes on read: where a requested box puts the image, and the antialiased resize that does it.

The vocabulary is sharp's: ``inside`` keeps the aspect ratio within the box, ``contain`` does
the same and pads to the box, ``cover`` fills the box and crops the overflow, ``fill``
stretches to the box. A :class:`Geometry` is the outcome in pixels, so two requests that
produce the same picture have the same geometry (and the service gives them one cache key).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

from PIL import Image

Fit = Literal["contain", "cover", "fill", "inside"]
RESAMPLING = Image.Resampling.LANCZOS  # antialiased when reducing: the support widens with it

_TOKEN = re.compile(r"^(\d+)x(\d+)(?::(\d+)x(\d+):(-?\d+):(-?\d+))?$")


class InvalidSize(ValueError):
    """The requested size cannot be served (HTTP 422)."""


@dataclass(frozen=True)
class Geometry:
    """Scale the image to ``scaled``, then cut or pad it to ``canvas`` at ``offset``.

    A negative offset crops (``cover``), a positive one pads (``contain``).
    """

    scaled: tuple[int, int]
    canvas: tuple[int, int]
    offset: tuple[int, int] = (0, 0)

    @classmethod
    def identity(cls, width: int, height: int) -> Geometry:
        return cls((width, height), (width, height))

    @property
    def token(self) -> str:
        """A compact, canonical spelling, part of cache keys and render jobs."""
        (sw, sh), (cw, ch), (ox, oy) = self.scaled, self.canvas, self.offset
        if self.canvas == self.scaled:
            return f"{sw}x{sh}"
        return f"{sw}x{sh}:{cw}x{ch}:{ox}:{oy}"

    @classmethod
    def parse(cls, token: str) -> Geometry:
        match = _TOKEN.match(token)
        if match is None:
            raise InvalidSize(f"not a geometry token: {token!r}")
        numbers = [int(group) for group in match.groups() if group is not None]
        scaled = (numbers[0], numbers[1])
        if len(numbers) == 2:  # the regex matches two numbers or six
            return cls(scaled, scaled)
        return cls(scaled, (numbers[2], numbers[3]), (numbers[4], numbers[5]))

    @property
    def pixels(self) -> int:
        """The most pixels it holds at once: the scaled image or the canvas, whichever is larger."""
        (sw, sh), (cw, ch) = self.scaled, self.canvas
        return max(sw * sh, cw * ch)

    def fits_inside(self, width: float, height: float) -> bool:
        """Whether the scaled image is no larger than ``width`` x ``height`` on either side."""
        return self.scaled[0] <= width and self.scaled[1] <= height


def plan_geometry(
    width: int,
    height: int,
    box_width: float | None,
    box_height: float | None,
    fit: Fit,
    enlarge: bool,
    max_pixels: int,
) -> Geometry:
    """Where a ``width`` x ``height`` image goes for the requested box.

    Without ``enlarge`` the box shrinks, keeping its aspect ratio, until the image is not
    scaled up on either axis; with it, the result is bounded by ``max_pixels`` instead.
    """
    if box_width is None and box_height is None:
        return Geometry.identity(width, height)
    if box_width is None or box_height is None:
        scale = box_width / width if box_width is not None else box_height / height  # type: ignore[operator]
        scale = scale if enlarge else min(scale, 1.0)
        scaled = (_side(width * scale), _side(height * scale))
        return _bounded(Geometry(scaled, scaled), max_pixels)
    sx, sy = box_width / width, box_height / height
    growth = {"inside": min(sx, sy), "contain": min(sx, sy)}.get(fit, max(sx, sy))
    if growth > 1 and not enlarge:
        box_width, box_height, sx, sy = (v / growth for v in (box_width, box_height, sx, sy))
    canvas = (_side(box_width), _side(box_height))
    if fit == "fill":
        return _bounded(Geometry(canvas, canvas), max_pixels)
    scale = min(sx, sy) if fit in ("inside", "contain") else max(sx, sy)
    scaled = (_side(width * scale), _side(height * scale))
    if fit == "inside":
        return _bounded(Geometry(scaled, scaled), max_pixels)
    if fit == "cover":
        canvas = (min(canvas[0], scaled[0]), min(canvas[1], scaled[1]))
    offset = ((canvas[0] - scaled[0]) // 2, (canvas[1] - scaled[1]) // 2)
    return _bounded(Geometry(scaled, canvas, offset), max_pixels)


def _side(length: float) -> int:
    return max(1, round(length))


def _bounded(geometry: Geometry, max_pixels: int) -> Geometry:
    """Refuse a geometry whose scaled image or canvas, whichever is larger, is over the limit."""
    width, height = max(geometry.scaled, geometry.canvas, key=math.prod)
    if width * height > max_pixels:
        raise InvalidSize(
            f"the result would be {width}x{height} pixels; the limit is {max_pixels} pixels in all"
        )
    return geometry


def apply_geometry(
    image: Image.Image,
    geometry: Geometry,
    source: tuple[float, float, float, float] | None = None,
) -> Image.Image:
    """Resize (antialiased) the ``source`` region of ``image``, then crop or pad to the canvas.

    Padding is transparent on an image with alpha and white otherwise, like JPEG's flattening.
    """
    box = source or (0.0, 0.0, float(image.width), float(image.height))
    if image.size != geometry.scaled or box != (0.0, 0.0, image.width, image.height):
        image = image.resize(geometry.scaled, RESAMPLING, box=box)
    if geometry.canvas == geometry.scaled:
        return image
    (cw, ch), (ox, oy) = geometry.canvas, geometry.offset
    if ox <= 0 and oy <= 0:
        return image.crop((-ox, -oy, cw - ox, ch - oy))
    fill = {"RGBA": (0, 0, 0, 0), "L": (255,)}.get(image.mode, (255, 255, 255))
    canvas = Image.new(image.mode, (cw, ch), fill)
    canvas.paste(image, (ox, oy))
    return canvas
