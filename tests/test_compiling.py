"""torch.compile and int8 in the engine: what eager serves, within tolerance, never compiled on
the serving path, eager on failure.

Two tests run inductor for real (each about 20 CPU-seconds the first time on a machine, a few
seconds from inductor's cache after that); they need the C++ compiler inductor uses.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
from PIL import Image
from torch._dynamo.utils import counters

from config.settings import Settings
from imaging import StoredCodec, crop_to, degrade
from imaging.quality import luma_psnr
from models import SHIPPED_WEIGHTS_DIR
from models.batching import BatchingUpscaler
from models.compiling import TOLERANCE
from models.engine import NeuralUpscaler
from models.quantizing import has_vnni
from models.registry import ModelRef
from models.weights import find_weights, load_model
from render import inference

TILE = 16
MAX_TILES = 3
PHOTO = Path(__file__).parent / "data" / "flower.jpg"

needs_compiler = pytest.mark.skipif(
    shutil.which(os.environ.get("CXX", "g++")) is None,
    reason="inductor compiles C++ with g++ (or $CXX), which this machine lacks",
)


def shipped(name: str = "espcn") -> NeuralUpscaler:
    found = find_weights(SHIPPED_WEIGHTS_DIR, name)
    assert found is not None
    model = load_model(name, found.path)
    return NeuralUpscaler(model, name, found.version, torch.device("cpu"), TILE)


def tiles(count: int) -> torch.Tensor:
    return torch.rand(
        count, 1, TILE + 16, TILE + 16, generator=torch.Generator().manual_seed(count)
    )


@needs_compiler
def test_the_compiled_network_serves_what_eager_serves_once_warm() -> None:
    upscaler = shipped()
    eager = {count: upscaler.run_tiles(tiles(count)) for count in (1, 2, MAX_TILES)}

    compiling = upscaler.start_compiling(MAX_TILES)
    assert torch.equal(upscaler.run_tiles(tiles(1)), eager[1])  # eager serves meanwhile
    compiling.join(timeout=600)

    assert upscaler.compiled
    for count, expected in eager.items():
        assert (upscaler.run_tiles(tiles(count)) - expected).abs().max().item() <= TOLERANCE


needs_int8 = pytest.mark.skipif(
    not has_vnni() or importlib.util.find_spec("torchao") is None,
    reason="the int8 path serves only where the CPU has VNNI, with torchao (a dependency"
    " since the int8 path; if missing, run make .venv/.dev)",
)


@needs_compiler
@pytest.mark.parametrize(
    ("model", "int8"), [("espcn", False), pytest.param("srcnn", True, marks=needs_int8)]
)
def test_served_batches_run_the_graphs_compiled_off_the_serving_path(
    model: str, int8: bool
) -> None:
    """Images of one tile to several batches, rendered two at a time through two lanes,
    compile no more graphs: a compile there stalls a miss (0.1-0.2 s from inductor's warm
    cache)."""
    upscaler = shipped(model)
    upscaler.compile_now(MAX_TILES, int8)
    assert upscaler.precision == ("int8" if int8 else "float32")
    graphs = counters["stats"]["unique_graphs"]
    photo = Image.open(PHOTO).convert("RGB")
    images = [photo.resize((TILE * n, TILE)) for n in (1, 2, MAX_TILES, 2 * MAX_TILES + 1)]
    batcher = BatchingUpscaler(upscaler, 0.0, MAX_TILES, lanes=2)
    try:
        with ThreadPoolExecutor(2) as pool:
            rendered = list(pool.map(batcher.upscale, images * 2))
    finally:
        batcher.close()

    assert [image.size for image in rendered] == [(4 * i.width, 4 * i.height) for i in images] * 2
    assert (upscaler.compiled, counters["stats"]["unique_graphs"]) == (True, graphs)


def failing_compile(*_: object, **__: object) -> Callable[[torch.Tensor], torch.Tensor]:
    raise RuntimeError("no C++ compiler")


def failing_forward(batch: torch.Tensor) -> torch.Tensor:
    raise RuntimeError("a recompile that cannot lower")


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
    upscaler = shipped()
    expected = upscaler.run_tiles(tiles(2))

    with caplog.at_level(logging.WARNING, logger="models.compiling"):
        upscaler.start_compiling(MAX_TILES).join(timeout=60)

    assert not upscaler.compiled
    assert torch.equal(upscaler.run_tiles(tiles(2)), expected)
    assert f"{upscaler.label} stays eager" in caplog.text and reason in caplog.text


def test_a_compiled_network_that_fails_while_serving_hands_over_to_eager(
    caplog: pytest.LogCaptureFixture,
) -> None:
    upscaler = shipped()
    expected = upscaler.run_tiles(tiles(2))
    upscaler._use(failing_forward)

    with caplog.at_level(logging.ERROR):
        served = upscaler.run_tiles(tiles(2))

    assert torch.equal(served, expected) and not upscaler.compiled
    assert "the compiled network failed; eager from now on" in caplog.text


@pytest.mark.parametrize(
    ("model", "settings", "vnni", "started"),
    [
        ("espcn", {}, True, [(3, False)]),
        ("espcn", {"int8": "all"}, True, [(3, True)]),
        ("espcn", {"int8": "all"}, False, [(3, False)]),
        ("espcn", {"compile": "off", "int8": "all"}, True, []),
        ("srcnn", {}, True, [(3, True)]),
        ("srcnn", {}, False, []),
        ("srcnn", {"int8": "off"}, True, []),
    ],
)
def test_the_engine_compiles_only_where_it_pays_and_only_when_asked(
    model: str,
    settings: dict[str, str],
    vnni: bool,
    started: list[tuple[int, bool]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    calls: list[tuple[int, bool]] = []
    monkeypatch.setattr(
        NeuralUpscaler, "start_compiling", lambda _, tiles, int8: calls.append((tiles, int8))
    )
    monkeypatch.setattr(inference, "has_vnni", lambda: vnni)
    found = find_weights(SHIPPED_WEIGHTS_DIR, model)
    assert found is not None
    config = Settings(
        **{"compile": "background", "int8": "auto", **settings},  # type: ignore[arg-type]
        device="cpu",
        tile_size=TILE,
        max_tiles_per_batch=3,
    )

    batcher = inference.build_upscaler(
        ModelRef(model, found.version), found.path.read_bytes(), config
    )
    batcher.close()

    assert calls == started


@needs_compiler
@needs_int8
@pytest.mark.parametrize("model", ["espcn", "srcnn"])
def test_int8_scores_within_005_db_of_float32(model: str) -> None:
    """The receipt's measure (Y-PSNR against the original) on a photo not calibrated on."""
    original = Image.open(PHOTO).convert("RGB").resize((128, 96))
    low = degrade(original, StoredCodec())
    upscaler = shipped(model)
    float32 = crop_to(upscaler.upscale(low), *original.size)

    upscaler.start_compiling(MAX_TILES, int8=True).join(timeout=600)
    batcher = BatchingUpscaler(upscaler, 0.0, MAX_TILES)  # serves on a thread of its own
    int8 = crop_to(batcher.upscale(low), *original.size)
    batcher.close()

    assert (upscaler.precision, upscaler.compiled) == ("int8", True)
    assert abs(luma_psnr(int8, original) - luma_psnr(float32, original)) <= 0.05
    assert luma_psnr(int8, float32) >= 45
