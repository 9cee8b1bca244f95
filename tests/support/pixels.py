"""What a model version must serve, rendered here from its weight file, and pixel comparisons.

Tests compare what the service returned with these renders, so a response is checked by its
pixels rather than by the label the service put on it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from imaging import crop_to, decode_stored
from models.engine import BICUBIC_LABEL, BicubicUpscaler, NeuralUpscaler, Upscaler
from models.weights import find_weights, load_model


def upscaler_for(label: str, weights_dir: Path) -> Upscaler:
    """The upscaler ``label`` (``name:version`` or ``bicubic``) names, from ``weights_dir``."""
    if label == BICUBIC_LABEL:
        return BicubicUpscaler()
    name, _, version = label.partition(":")
    found = find_weights(weights_dir, name, int(version))
    assert found is not None, f"{label} is not in {weights_dir}"
    return NeuralUpscaler(load_model(name, found.path), name, int(version), torch.device("cpu"))


def expected_render(stored: bytes, size: tuple[int, int], upscaler: Upscaler) -> Image.Image:
    """The full-size image ``upscaler`` makes of a stored copy, cut to the uploaded size."""
    return crop_to(upscaler.upscale(decode_stored(stored)), *size)


def decode(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data))


def max_difference(a: Image.Image, b: Image.Image) -> int:
    """The largest per-channel difference between two images of the same size and mode."""
    assert (a.size, a.mode) == (b.size, b.mode), ((a.size, a.mode), (b.size, b.mode))
    return int(np.abs(np.asarray(a, np.int16) - np.asarray(b, np.int16)).max())


def mean_difference(a: Image.Image, b: Image.Image) -> float:
    assert (a.size, a.mode) == (b.size, b.mode), ((a.size, a.mode), (b.size, b.mode))
    return float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).mean())
