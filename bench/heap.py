"""The heap a rendering process keeps: renders with glibc's defaults against the kept heap.

    python -m bench.heap [--turns 3] [--renders 6]

glibc's heap settings hold for a whole process from its start (:mod:`models.heap`), so each
measurement is a process of its own, and the two settings take turns, ``--turns`` processes
each. A process sets its heap as ``srstore serve`` does, builds the engine as served (compiled
ESPCN behind the batcher, its default lanes and threads), renders each stored size twice to
warm up, then ``--renders`` times. The table gives the median render: the pages it faulted in
(memory newly mapped, zeroed by the kernel), its user and system CPU, and its wall time; and
the process's resident memory at its peak and at the end.

Then the same two settings in a real ``srstore serve`` (embedded, local rendering, nothing
cached so that every read is a miss), in turns: 12 MP JPEG uploads, compacted to their x4
copies, each read once. Each miss is measured from the server's ``/proc`` counters: its page
faults, its CPU (the kernel's 10 ms ticks) and the request's wall time.
"""

from __future__ import annotations

import argparse
import io
import json
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from PIL import Image

from bench.inference import PHOTO, table
from bench.service import cpu_seconds, rendered_miss
from tests.support.compaction import compacted_sync
from tests.support.process import start_api

SIZES = {"1 MP (256x256 stored)": (256, 256), "12 MP (1000x750 stored)": (1000, 750)}
HEAPS = {"glibc defaults (SRSTORE_HEAP_KEEP_MB=0)": 0, "kept heap (the default, 256 MiB)": 256}


def child(keep_mb: int, renders: int) -> dict[str, object]:
    """One process's renders, its heap set first (before torch starts any thread)."""
    from config.settings import Settings
    from render.inference import keep_render_heap

    settings = Settings(heap_keep_mb=keep_mb)
    keep_render_heap(settings)

    import torch

    from bench.inference import stored_photo
    from models.archs import build_model
    from models.batching import BatchingUpscaler
    from models.engine import NeuralUpscaler
    from render.inference import inference_lanes, tiles_per_pass

    device = torch.device("cpu")
    lanes, threads = inference_lanes(settings, device)
    max_tiles = tiles_per_pass(settings, device, threads)
    torch.set_num_threads(threads)
    neural = NeuralUpscaler(build_model("espcn"), "espcn", 0, device, settings.tile_size)
    neural.compile_now(max_tiles)
    batcher = BatchingUpscaler(neural, 0.0, max_tiles, lanes=lanes)
    measured: dict[str, list[list[float]]] = {}
    for label, size in SIZES.items():
        low_res = stored_photo(size)
        for _ in range(2):
            batcher.upscale(low_res)
        measured[label] = [_one_render(batcher.upscale, low_res) for _ in range(renders)]
    batcher.close()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    with open("/proc/self/statm") as statm:
        resident_mb = int(statm.read().split()[1]) * resource.getpagesize() / 2**20
    return {"renders": measured, "peak_mb": peak_mb, "resident_mb": resident_mb}


def _one_render(render: Callable[[Image.Image], object], low_res: Image.Image) -> list[float]:
    """Page faults, user CPU ms, system CPU ms and wall ms of one render."""
    before, started = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    render(low_res)
    after, wall = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - started
    return [
        after.ru_minflt - before.ru_minflt,
        1000 * (after.ru_utime - before.ru_utime),
        1000 * (after.ru_stime - before.ru_stime),
        1000 * wall,
    ]


def run_child(keep_mb: int, renders: int) -> dict[str, object]:
    command = [sys.executable, "-m", "bench.heap", "--child", str(keep_mb)]
    done = subprocess.run(
        [*command, "--renders", str(renders)], capture_output=True, text=True, check=True
    )
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def report(turns: int, renders: int) -> str:
    outcomes: dict[str, list[dict[str, object]]] = {label: [] for label in HEAPS}
    for _ in range(turns):
        for label, keep_mb in HEAPS.items():
            outcomes[label].append(run_child(keep_mb, renders))
    rows = []
    for size in SIZES:
        for label, runs in outcomes.items():
            samples = [render for run in runs for render in run["renders"][size]]  # type: ignore[index]
            medians = [statistics.median(column) for column in zip(*samples, strict=True)]
            peak = max(float(run["peak_mb"]) for run in runs)  # type: ignore[arg-type]
            end = max(float(run["resident_mb"]) for run in runs)  # type: ignore[arg-type]
            rows.append(
                [size, label, f"{medians[0]:.0f}"]
                + [f"{value:.0f}" for value in medians[1:]]
                + [f"{peak:.0f}", f"{end:.0f}"]
            )
    header = ["render", "heap", "page faults", "user CPU ms", "system CPU ms", "wall ms"]
    return table([*header, "peak RSS MB", "RSS at end MB"], rows)


def served_misses(keep_mb: int, misses: int) -> list[list[float]]:
    """Page faults, CPU ms and wall ms of each 12 MP miss of a real ``srstore serve``."""
    with tempfile.TemporaryDirectory() as scratch:
        env = {
            "SRSTORE_DATA_DIR": scratch,
            "SRSTORE_HEAP_KEEP_MB": str(keep_mb),
            "SRSTORE_COMPACT_AFTER_IDLE": "1",  # compacted to the x4 copy at once
            "SRSTORE_MEMORY_CACHE_MAX_BYTES": "0",  # nothing cached: every read renders
        }
        api = start_api(env)
        try:
            with httpx.Client(base_url=api.url, timeout=120) as http:
                ids = [_upload_12mp(http, index) for index in range(misses)]
                for image_id in ids:
                    compacted_sync(http, image_id)
                return [_one_miss(http, api.process.pid, image_id) for image_id in ids]
        finally:
            api.stop()


def _upload_12mp(http: httpx.Client, index: int) -> str:
    """The bench's photo at 4000x3000, one pixel changed so that each upload is its own."""
    image = Image.open(PHOTO).convert("RGB").resize((4000, 3000))
    image.putpixel((index, 0), (index % 256, 0, 0))
    body = io.BytesIO()
    image.save(body, "JPEG", quality=90)
    response = http.post("/v1/images", files={"file": ("photo.jpg", body.getvalue())})
    response.raise_for_status()
    return str(response.json()["id"])


def _one_miss(http: httpx.Client, pid: int, image_id: str) -> list[float]:
    faults, cpu, started = _page_faults(pid), cpu_seconds(pid), time.perf_counter()
    response = http.get(f"/v1/images/{image_id}")
    wall = time.perf_counter() - started
    rendered_miss(response)
    return [_page_faults(pid) - faults, 1000 * (cpu_seconds(pid) - cpu), 1000 * wall]


def _page_faults(pid: int) -> int:
    """A process's minor page faults, from /proc."""
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


def served_report(turns: int, misses: int) -> str:
    samples: dict[str, list[list[float]]] = {label: [] for label in HEAPS}
    for _ in range(turns):
        for label, keep_mb in HEAPS.items():
            samples[label] += served_misses(keep_mb, misses)
    rows = []
    for label, measured in samples.items():
        medians = [statistics.median(column) for column in zip(*measured, strict=True)]
        rows.append([label, str(len(measured))] + [f"{value:.0f}" for value in medians])
    header = ["heap", "misses", "page faults", "server CPU ms", "wall ms"]
    return table(header, rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--turns", type=int, default=3, help="processes of each setting")
    parser.add_argument("--renders", type=int, default=6, help="measured renders of each size")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.renders)))
        return
    from bench.inference import describe_machine

    print("\n".join(describe_machine()))
    print(f"\n{args.turns} processes of each setting in turns, {args.renders} renders each:\n")
    print(report(args.turns, args.renders))
    print(
        f"\nA real srstore serve, 12 MP misses (median), {args.turns} servers of each in turns:\n"
    )
    print(served_report(args.turns, args.renders))


if __name__ == "__main__":
    main()
