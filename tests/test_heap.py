"""A rendering process keeps the memory its renders free for the next ones (glibc only)."""

from __future__ import annotations

import json
import logging
import platform
import subprocess
import sys
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from app.main import create_app
from config.settings import Settings
from models.heap import keep_freed_heap

ROOT = Path(__file__).resolve().parent.parent

# A process that sets its heap first, as `srstore serve` and `srstore worker` do, then
# renders a 512x512 luma (16 tiles through two one-thread lanes) twelve times over.
RENDERS = """
import json, resource, sys
from models.heap import keep_freed_heap
kept = keep_freed_heap(int(sys.argv[1]) * 2**20)
import torch
from PIL import Image
from models.archs import build_model
from models.batching import BatchingUpscaler
from models.engine import NeuralUpscaler
torch.set_num_threads(1)
torch.manual_seed(0)
network = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"))
batcher = BatchingUpscaler(network, 0.0, 4, lanes=2)
luma = Image.effect_noise((512, 512), 64)
faults = []
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    batcher.upscale_luma(luma)
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
batcher.close()
print(json.dumps({"kept": kept, "faults": faults}))
"""


def page_faults_of_renders(keep_mb: int) -> tuple[bool, list[int]]:
    """Whether the heap settings took, and each render's page faults (new memory mapped)."""
    done = subprocess.run(
        [sys.executable, "-c", RENDERS, str(keep_mb)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    outcome = json.loads(done.stdout.splitlines()[-1])
    return outcome["kept"], outcome["faults"]


needs_glibc = pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc", reason="the heap settings are glibc's"
)


@needs_glibc
def test_once_warm_a_render_maps_no_new_memory() -> None:
    """With glibc's defaults every render faults thousands of pages back in (each lane's
    arena unmaps its heaps as they empty); with the kept heap, renders after the first few
    take pages already mapped."""
    kept, faults = page_faults_of_renders(256)
    defaults_took, default_faults = page_faults_of_renders(0)

    assert kept and not defaults_took
    warm, default_warm = sorted(faults[6:]), sorted(default_faults[6:])
    assert warm[len(warm) // 2] == 0, faults  # most warm renders map nothing new
    assert sum(warm) * 4 < sum(default_warm), (faults, default_faults)
    assert default_warm[len(default_warm) // 2] > 1000, default_faults


def test_zero_leaves_the_c_library_defaults() -> None:
    assert keep_freed_heap(0) is False


def test_the_api_keeps_its_heap_from_the_start_where_it_renders(
    embedded_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    with (
        caplog.at_level(logging.INFO, "render.inference"),
        TestClient(create_app(embedded_settings)),
    ):
        pass
    assert "up to 256 MiB of freed memory kept" in caplog.text

    caplog.clear()
    unkept = embedded_settings.model_copy(update={"heap_keep_mb": 0})
    with caplog.at_level(logging.INFO, "render.inference"), TestClient(create_app(unkept)):
        pass
    assert "freed memory kept" not in caplog.text


def test_an_api_that_queues_its_renders_keeps_glibcs_heap(
    queue_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """One arena would serialise the API's I/O threads' allocations for nothing: its
    renders run on the workers."""
    with caplog.at_level(logging.INFO, "render.inference"), TestClient(create_app(queue_settings)):
        pass
    assert "freed memory kept" not in caplog.text
