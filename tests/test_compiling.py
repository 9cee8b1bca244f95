"""torch.compile in the engine: same pixels as eager, never on the serving path, eager on failure.

The compiling test runs inductor for real (about 20 CPU-seconds the first time on a machine,
a few seconds from inductor's cache after that); it needs the C++ compiler inductor uses.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable

import pytest
import torch

from config.settings import Settings
from models import SHIPPED_WEIGHTS_DIR
from models.compiling import TOLERANCE
from models.engine import NeuralUpscaler
from models.registry import ModelRef
from models.weights import find_weights, load_model
from render.inference import build_upscaler

TILE = 16
MAX_TILES = 3


def shipped_espcn() -> NeuralUpscaler:
    found = find_weights(SHIPPED_WEIGHTS_DIR, "espcn")
    assert found is not None
    model = load_model("espcn", found.path)
    return NeuralUpscaler(model, "espcn", found.version, torch.device("cpu"), TILE)


def tiles(count: int) -> torch.Tensor:
    return torch.rand(
        count, 1, TILE + 16, TILE + 16, generator=torch.Generator().manual_seed(count)
    )


@pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="inductor compiles C++ with g++ (or $CXX), which this machine lacks",
)
def test_the_compiled_network_serves_what_eager_serves_once_warm() -> None:
    upscaler = shipped_espcn()
    eager = {count: upscaler.run_tiles(tiles(count)) for count in (1, 2, MAX_TILES)}

    compiling = upscaler.start_compiling(MAX_TILES)
    assert torch.equal(upscaler.run_tiles(tiles(1)), eager[1])  # eager serves meanwhile
    compiling.join(timeout=600)

    assert upscaler.compiled
    for count, expected in eager.items():
        assert (upscaler.run_tiles(tiles(count)) - expected).abs().max().item() <= TOLERANCE


def failing_compile(*_: object, **__: object) -> Callable[[torch.Tensor], torch.Tensor]:
    raise RuntimeError("no C++ compiler")


def disagreeing_compile(
    model: torch.nn.Module, **_: object
) -> Callable[[torch.Tensor], torch.Tensor]:
    return lambda batch: model(batch) + 10 * TOLERANCE


@pytest.mark.parametrize(
    ("compile_", "reason"),
    [(failing_compile, "no C++ compiler"), (disagreeing_compile, "differs from eager")],
)
def test_a_network_that_cannot_be_compiled_faithfully_stays_eager(
    compile_: Callable[..., object],
    reason: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setattr(torch, "compile", compile_)
    upscaler = shipped_espcn()
    expected = upscaler.run_tiles(tiles(2))

    with caplog.at_level(logging.WARNING, logger="models.compiling"):
        upscaler.start_compiling(MAX_TILES).join(timeout=60)

    assert not upscaler.compiled
    assert torch.equal(upscaler.run_tiles(tiles(2)), expected)
    assert f"{upscaler.label} stays eager" in caplog.text and reason in caplog.text


@pytest.mark.parametrize(
    ("model", "setting", "compiles"),
    [("espcn", "background", True), ("espcn", "off", False), ("srcnn", "background", False)],
)
def test_the_engine_compiles_only_where_it_pays_and_only_when_asked(
    model: str, setting: str, compiles: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    started: list[str] = []
    monkeypatch.setattr(
        NeuralUpscaler, "start_compiling", lambda self, _: started.append(self.label)
    )
    found = find_weights(SHIPPED_WEIGHTS_DIR, model)
    assert found is not None
    settings = Settings(compile=setting, device="cpu", tile_size=TILE)

    batcher = build_upscaler(ModelRef(model, found.version), found.path.read_bytes(), settings)
    batcher.close()

    assert started == ([f"{model}:{found.version}"] if compiles else [])
