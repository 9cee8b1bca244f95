"""Weight files with known behaviour, for admin and hot-swap tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from models.archs import SCALE, build_model
from models.engine import upscale_planes, ycrcb_to_rgb
from models.weights import weights_path


def zero_residual(name: str) -> dict[str, torch.Tensor]:
    """A network that adds nothing to its own bicubic upscale of luma.

    That is torch's bicubic (a = -0.75) on Y, not Pillow's (a = -0.5) on RGB, so on the canary
    set it scores a little below the bicubic baseline rather than exactly on it.
    """
    return brightened(name, 0)


def brightened(name: str, levels: int) -> dict[str, torch.Tensor]:
    """:func:`zero_residual` plus ``levels`` on every luma value (0..255): a model whose
    output anyone can tell apart, and which scores below it."""
    model = build_model(name)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.constant_(last.bias, levels / 255)
    return model.state_dict()


def noisy(name: str, seed: int = 0) -> dict[str, torch.Tensor]:
    """A randomly initialised network: it runs, and scores below bicubic."""
    torch.manual_seed(seed)
    return build_model(name).state_dict()


def to_bytes(state: dict[str, torch.Tensor]) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def write_shipped(directory: Path, name: str, version: int, state: dict[str, torch.Tensor]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    path = weights_path(directory, name, version)
    torch.save(state, path)
    path.with_suffix(".json").write_text(json.dumps({"name": name, "version": version}))


def rendered_by_brightened(low_res: Image.Image, levels: int) -> Image.Image:
    """What :func:`brightened` (``levels`` 0: :func:`zero_residual`) must make of an RGB image,
    computed here in one piece: torch's bicubic on luma plus ``levels``, the engine's
    bicubic on chroma and its conversion back to RGB."""
    y, cb, cr = low_res.convert("RGB").convert("YCbCr").split()
    plane = torch.from_numpy(np.asarray(y, np.float32) / 255)[None, None]
    upscaled = F.interpolate(plane, scale_factor=SCALE, mode="bicubic", align_corners=False)
    luma = (upscaled + levels / 255)[0, 0].clamp(0, 1).mul(255).round().to(torch.uint8)
    chroma = upscale_planes(np.dstack([np.asarray(cr), np.asarray(cb)]))
    return ycrcb_to_rgb(np.dstack([luma.numpy(), chroma]))
