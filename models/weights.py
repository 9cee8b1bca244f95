"""Weight files shipped with the service: ``{name}-x4-v{version}.pt`` beside a JSON model card."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from models import SHIPPED_WEIGHTS_DIR
from models.archs import build_model
from models.engine import NeuralUpscaler

_FILE_NAME = re.compile(r"^(?P<name>[a-z0-9]+)-x4-v(?P<version>\d+)\.pt$")


@dataclass(frozen=True)
class WeightsFile:
    name: str
    version: int
    path: Path

    @property
    def card_path(self) -> Path:
        return self.path.with_suffix(".json")

    def card(self) -> dict[str, Any]:
        if not self.card_path.exists():
            return {}
        return json.loads(self.card_path.read_text())


def weights_path(directory: Path, name: str, version: int) -> Path:
    return directory / f"{name}-x4-v{version}.pt"


def list_weights(directory: Path) -> list[WeightsFile]:
    """Every weight file in a directory, by name then version."""
    found = []
    for path in directory.glob("*.pt") if directory.is_dir() else []:
        match = _FILE_NAME.match(path.name)
        if match:
            found.append(WeightsFile(match["name"], int(match["version"]), path))
    return sorted(found, key=lambda w: (w.name, w.version))


def find_weights(directory: Path, name: str, version: int | None = None) -> WeightsFile | None:
    """The requested version of a model, or its newest when no version is given."""
    candidates = [w for w in list_weights(directory) if w.name == name]
    if version is not None:
        candidates = [w for w in candidates if w.version == version]
    return candidates[-1] if candidates else None


def load_model(name: str, path: Path) -> nn.Module:
    """Load weights safely (tensors only) into the network variant they were trained as."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    model = build_model(name, state)
    model.load_state_dict(state)
    return model.eval()


def shipped_upscaler(name: str, device: str = "cpu") -> NeuralUpscaler:
    """The newest shipped version of a model, ready to run (for benchmarks and tools)."""
    weights = find_weights(SHIPPED_WEIGHTS_DIR, name)
    if weights is None:
        raise FileNotFoundError(f"no shipped {name} weights in {SHIPPED_WEIGHTS_DIR}")
    model = load_model(name, weights.path)
    return NeuralUpscaler(model, name, weights.version, torch.device(device))
