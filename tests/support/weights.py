"""Weight files with known behaviour, for admin and hot-swap tests."""

from __future__ import annotations

import io
import json
from pathlib import Path

import torch

from models.archs import build_model
from models.weights import weights_path


def bicubic_equivalent(name: str) -> dict[str, torch.Tensor]:
    """A network whose residual is zero: it reproduces the bicubic baseline exactly."""
    model = build_model(name)
    last = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    torch.nn.init.zeros_(last.weight)
    torch.nn.init.zeros_(last.bias)
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
