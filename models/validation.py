"""Checking an uploaded weight file before it may serve: it loads, runs, and is scored.

The score is the mean Y-PSNR gain over bicubic on a small canary set, measured through the
same degradation the service applies on upload, so versions compare on what users get.
"""

from __future__ import annotations

import functools
import io
import math
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from imaging import StoredCodec, bicubic_upscale, degrade
from imaging.quality import luma_psnr
from models import CANARY_DIR
from models.archs import build_model
from models.engine import NeuralUpscaler


class InvalidWeights(ValueError):
    """The file does not load into the named architecture, or does not produce an image."""


@dataclass(frozen=True)
class CanaryScore:
    model_psnr: float
    bicubic_psnr: float

    @property
    def gain(self) -> float:
        return self.model_psnr - self.bicubic_psnr


def load_checked(name: str, weights: bytes) -> torch.nn.Module:
    """Build ``name`` and load ``weights`` into it strictly, refusing anything else."""
    try:
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise InvalidWeights(f"not a PyTorch state dict: {type(exc).__name__}") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InvalidWeights("the file must hold a state dict of tensors")
    model = build_model(name, state)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first_line = str(exc).splitlines()[0]
        raise InvalidWeights(f"does not fit the {name} architecture: {first_line}") from exc
    if not all(torch.isfinite(t).all() for t in state.values()):
        raise InvalidWeights("the weights hold NaN or infinite values")
    return model.eval()


@functools.lru_cache(maxsize=16)
def score_weights(name: str, weights: bytes, codec: StoredCodec) -> CanaryScore:
    """Load and score a weight file; remembered, since every process start scores the
    shipped versions again."""
    return score(load_checked(name, weights), name, codec)


def canary_images() -> list[Image.Image]:
    return [Image.open(path).convert("RGB") for path in sorted(CANARY_DIR.glob("*.jpg"))]


def score(model: torch.nn.Module, name: str, codec: StoredCodec) -> CanaryScore:
    """Mean Y-PSNR of the model and of bicubic on the canary set."""
    upscaler = NeuralUpscaler(model, name, 0, torch.device("cpu"))
    model_psnr, bicubic_psnr = [], []
    for original in canary_images():
        low = degrade(original, codec)
        served = upscaler.upscale(low)
        if served.size != original.size:
            raise InvalidWeights(f"produced {served.size}, expected {original.size}")
        model_psnr.append(luma_psnr(served, original))
        bicubic_psnr.append(luma_psnr(bicubic_upscale(low), original))
    if not all(math.isfinite(p) for p in model_psnr):
        raise InvalidWeights("the model's output is not a finite image")
    return CanaryScore(float(np.mean(model_psnr)), float(np.mean(bicubic_psnr)))
