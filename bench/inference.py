"""Network throughput on this machine: tiles per forward pass, against bicubic and matmul peak.

    python -m bench.inference [--variants]

Every rate is given twice: per second of wall time, and per CPU-second of this process
(``time.process_time``, all threads). On a shared machine other tenants stretch wall time
but not CPU time, so the CPU-second fraction of the matmul peak is the one that says how
well a network uses the cores it gets; the wall fraction says what a user sees. The peak is
a float32 2048x2048 matmul at the same thread count. ``--variants`` adds the layouts and
compilers tried for the engine (NCHW, NHWC, TorchScript freezing, ``torch.compile`` as the
engine compiles, and int8 where the CPU has VNNI).

Untrained weights serve as well as trained ones here: the time does not depend on their values.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import platform
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import cv2
import torch
from PIL import Image
from torch import nn

from config.settings import Settings
from models.archs import ESPCN, SCALE, build_model
from models.batching import BatchingUpscaler
from models.engine import (
    NeuralUpscaler,
    luma_to_tensor,
    upscale_planes,
    ycrcb_planes,
    ycrcb_to_rgb,
)
from models.quantizing import has_vnni
from models.tiling import split_tiles, stitch_luma
from render.inference import keep_render_heap, tiles_per_pass

TILE = 128
TILE_SIZES = (64, 96, 128, 192, 256)
STORED_SIZES = {  # uploads as srstore stores them: a quarter of each side
    "1 MP square (256x256)": (256, 256),
    "2 MP 16:9 (480x270)": (480, 270),
    "12 MP 4:3 (1000x750)": (1000, 750),
    "12 MP 3:4 (756x1008)": (756, 1008),
    "24 MP 3:2 (1500x1000)": (1500, 1000),
}
BATCHES = {  # SRCNN: ~0.2 s per tile on one core; compiled, as the batcher sends (up to 4)
    "espcn": (1, 4, 16),
    "espcn compiled": (1, 4),
    "srcnn": (1, 4),
}
PHOTO = Path(__file__).parent.parent / "tests" / "data" / "flower.jpg"
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile")


def best_of(run: Callable[[], object], budget_s: float = 0.6, repeats: int = 5) -> float:
    """Wall seconds per call (see :func:`timed`)."""
    return timed(run, budget_s, repeats)[0]


def timed(
    run: Callable[[], object], budget_s: float = 0.6, repeats: int = 5
) -> tuple[float, float]:
    """Wall and CPU seconds per call, each the fastest of ``repeats`` rounds lasting
    ``budget_s`` in all. The fastest round, not the median: other tenants only add time."""
    run()
    started = time.perf_counter()
    run()
    once = max(time.perf_counter() - started, 1e-6)
    calls = max(1, int(budget_s / repeats / once))
    walls, cpus = [], []
    for _ in range(repeats):
        cpu_started, started = time.process_time(), time.perf_counter()
        for _ in range(calls):
            run()
        walls.append((time.perf_counter() - started) / calls)
        cpus.append((time.process_time() - cpu_started) / calls)
    return min(walls), min(cpus)


def instruction_set() -> str:
    """What torch dispatches to (its CPU capability) and the vector flags the CPU reports."""
    flags: set[str] = set()
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
                break
    present = [flag for flag in ISA_FLAGS if flag in flags]
    return f"torch kernels {torch.backends.cpu.get_cpu_capability()}; CPU flags: " + (
        " ".join(present) or "none of " + " ".join(ISA_FLAGS)
    )


def describe_machine() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    with open("/proc/cpuinfo") as cpuinfo:
        names = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
    cpu = names[0] if names else cpu
    load = " ".join(f"{value:.2f}" for value in os.getloadavg())
    return [
        f"CPU: {cpu}, {len(os.sched_getaffinity(0))} cores usable, load average {load}",
        f"Instruction set: {instruction_set()}",
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{torch.get_num_threads()} intra-op threads, "
        f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, device cpu",
    ]


def heap_as_served() -> str:
    """Set this process's heap as ``srstore serve`` does (first, before torch starts any
    thread: :mod:`models.heap`), and say how."""
    settings = Settings()
    kept = f"{settings.heap_keep_mb} MiB of freed memory kept"
    return f"Heap: {kept if keep_render_heap(settings) else 'glibc defaults'}"


def conv_macs(model: nn.Module, tile: torch.Tensor) -> int:
    """Multiply-adds of every convolution in one forward pass (bicubic and tanh excluded)."""
    total = 0

    def count(module: nn.Module, _: object, output: torch.Tensor) -> None:
        nonlocal total
        assert isinstance(module, nn.Conv2d)
        kh, kw = module.kernel_size
        total += output.numel() * (module.in_channels // module.groups) * kh * kw

    hooks = [m.register_forward_hook(count) for m in model.modules() if isinstance(m, nn.Conv2d)]
    with torch.inference_mode():
        model(tile)
    for hook in hooks:
        hook.remove()
    return total


def matmul_peak(n: int = 2048) -> tuple[float, float]:
    """Multiply-adds per wall second and per CPU-second of a float32 n x n matmul."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    wall, cpu = timed(lambda: torch.mm(a, b), budget_s=3.0, repeats=15)
    return n**3 / wall, n**3 / cpu


def thread_counts() -> list[int]:
    cores = len(os.sched_getaffinity(0))
    return [1] if cores == 1 else [1, cores]


def lane_plans() -> list[tuple[int, int]]:
    """(lanes, threads a lane): one pass on one thread, one pass on every core, and (the
    served default on the CPU) one single-threaded lane a core."""
    cores = len(os.sched_getaffinity(0))
    return [(1, threads) for threads in thread_counts()] + ([(cores, 1)] if cores > 1 else [])


def network_rows() -> tuple[list[list[str]], dict[str, float]]:
    """Per thread count: the peak, then each network and batch against it; ESPCN also as
    served (compiled, batches of up to 4 and of one), where this machine can compile, and
    in one single-threaded lane a core against every core's peak."""
    rows = []
    peaks = {}
    forms = {
        name: NeuralUpscaler(build_model(name), name, 0, torch.device("cpu"), TILE)
        for name in ("espcn", "srcnn")
    }
    compiled = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), TILE)
    with contextlib.suppress(Exception):  # no C++ compiler, say: no compiled rows
        compiled.compile_now(4)
        forms["espcn compiled"] = compiled
    default_threads = torch.get_num_threads()
    try:
        for threads in thread_counts():
            torch.set_num_threads(threads)
            peak = matmul_peak()
            peaks[f"{threads} threads, wall"], peaks[f"{threads} threads, CPU"] = peak
            for label, upscaler in forms.items():
                for batch in BATCHES[label]:
                    tiles = torch.rand(batch, 1, upscaler.tile_span, upscaler.tile_span)
                    speed = timed(partial(upscaler.run_tiles, tiles))
                    rows.append(_network_row(label, str(threads), upscaler, batch, speed, peak))
        lanes = thread_counts()[-1]
        if lanes > 1 and "espcn compiled" in forms:
            rows += _lane_network_rows(compiled, lanes, peak)
    finally:
        torch.set_num_threads(default_threads)
    return rows, peaks


def _lane_network_rows(
    upscaler: NeuralUpscaler, lanes: int, peak: tuple[float, float]
) -> list[list[str]]:
    """The network in ``lanes`` single-threaded passes at once, as the batcher's lanes run
    it; threads made at one thread keep it (a thread takes torch's count at first use)."""
    torch.set_num_threads(1)
    rows = []
    with ThreadPoolExecutor(lanes) as pool:
        for batch in BATCHES["espcn compiled"]:
            tiles = torch.rand(batch, 1, upscaler.tile_span, upscaler.tile_span)

            def each_lane(tiles: torch.Tensor = tiles) -> None:
                for done in [pool.submit(upscaler.run_tiles, tiles) for _ in range(lanes)]:
                    done.result()

            wall, cpu = timed(each_lane)
            label = f"espcn compiled, {lanes} lanes"
            speed = (wall / lanes, cpu / lanes)  # per pass, as the rows above
            rows.append(_network_row(label, f"{lanes} x 1", upscaler, batch, speed, peak))
    return rows


def _network_row(
    label: str,
    threads: str,
    upscaler: NeuralUpscaler,
    batch: int,
    speed: tuple[float, float],
    peak: tuple[float, float],
) -> list[str]:
    """A row of the network table: a pass of ``batch`` tiles taking ``speed`` (wall, CPU)
    seconds, against the matmul ``peak`` (wall, CPU) at the same thread count."""
    span = upscaler.tile_span
    macs = batch * conv_macs(upscaler.model, torch.zeros(1, 1, span, span))
    core_mp = batch * (TILE * SCALE) ** 2 / 1e6
    (wall, cpu), (peak_wall, peak_cpu) = speed, peak
    return [
        label,
        threads,
        str(batch),
        f"{core_mp / wall:.2f}",
        f"{macs / wall / 1e9:.1f}",
        f"{100 * macs / wall / peak_wall:.0f}%",
        f"{macs / cpu / 1e9:.1f}",
        f"{100 * macs / cpu / peak_cpu:.0f}%",
    ]


def stored_photo(size: tuple[int, int] = (256, 256)) -> Image.Image:
    """A stored copy of the bench's photo, decoded: resized, through a JPEG round trip."""
    low_res = Image.open(PHOTO).convert("RGB").resize(size, Image.Resampling.LANCZOS)
    return Image.open(io.BytesIO(_jpeg(low_res))).convert("RGB")


LARGE = (1000, 750)  # the stored copy of a 12 MP 4:3 upload
STREAM = 4  # images each render thread renders back to back in lane_rows


def image_rows() -> list[list[str]]:
    """A 1024x1024 output from a 256x256 stored copy: bicubic against the full SR path, and
    the full path against the network alone on the same tiles, the two taking turns, in each
    of :func:`lane_plans`. ESPCN runs eager and as served by default (compiled), where
    this machine can compile; the served form also on a 12 MP image's stored copy (48 tiles,
    in batches of 4, as served). The full path is ``upscale`` (colour split, tiles, network,
    stitch, chroma, back to RGB); decoding the stored bytes and encoding the answer are not
    in it."""
    rows = []
    default_threads = torch.get_num_threads()
    forms = (
        ("espcn", False, (256, 256), (1, 4)),
        ("espcn", True, (256, 256), (1, 4)),
        ("espcn", True, LARGE, (4,)),
        ("srcnn", False, (256, 256), (1, 4)),
    )
    bicubic: dict[tuple[int, int], float] = {}
    for name, compiled, stored, batches in forms:
        low_res = stored_photo(stored)
        size = (low_res.width * SCALE, low_res.height * SCALE)
        output_mp = size[0] * size[1] / 1e6
        if stored not in bicubic:
            bicubic[stored] = best_of(partial(low_res.resize, size, Image.Resampling.BICUBIC))
            label = f"Pillow bicubic, {stored[0]}x{stored[1]}"
            rows.append(
                [label, "-", "1", "-", f"{output_mp / bicubic[stored]:.1f}", "1.00", "-", "-"]
            )
        label = (f"{name} compiled" if compiled else name) + f", {stored[0]}x{stored[1]}"
        neural = NeuralUpscaler(build_model(name), name, 0, torch.device("cpu"), tile=TILE)
        if compiled:
            try:
                neural.compile_now(4)
            except Exception as exc:  # no C++ compiler, say: the row says so
                rows.append([label, "-", "-", "-", f"cannot compile: {exc}", "-", "-", "-"])
                continue
        luma = luma_to_tensor(low_res.convert("YCbCr").getchannel("Y"))
        tiles = split_tiles(luma, TILE, neural.margin)[0]  # the image's tiles
        try:
            for lanes, threads in lane_plans():
                torch.set_num_threads(threads)
                for max_tiles in batches:
                    batcher = BatchingUpscaler(neural, 0.0, max_tiles, lanes=lanes)
                    (whole, whole_cpu), (network, network_cpu) = side_by_side(
                        partial(batcher.upscale, low_res),
                        partial(batcher.run_batches, tiles),
                        budget_s=0.4 * len(tiles) / 4,
                    )
                    batcher.close()
                    rows.append(
                        [
                            label,
                            str(lanes),
                            str(threads),
                            str(max_tiles),
                            f"{output_mp / whole:.1f}",
                            f"{bicubic[stored] / whole:.3f}",
                            f"{100 * network / whole:.0f}%",
                            f"{100 * network_cpu / whole_cpu:.0f}%",
                        ]
                    )
        finally:
            torch.set_num_threads(default_threads)
    return rows


def lane_rows() -> list[list[str]]:
    """Images rendered as the service renders them: by one render thread, and by
    ``render_threads`` (2 by default) at once, each rendering back to back. One pass on
    every core (passes of up to 4 tiles) against one single-threaded lane a core, with
    passes of up to 4 tiles and of one (the CPU default), the plans taking turns; ESPCN
    compiled. Each plan's renders are followed by the same images' tiles through the network
    alone, streamed the same way: the network share. Each turn builds its batcher at its own
    thread count: a thread takes torch's count at its first parallel work."""
    cores = len(os.sched_getaffinity(0))
    if cores == 1:
        return []
    default_threads = torch.get_num_threads()
    neural = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), tile=TILE)
    try:
        neural.compile_now(4)
    except Exception as exc:  # no C++ compiler, say: the table says so
        return [["-", "-", f"cannot compile: {exc}", "-", "-", "-", "-", "-"]]
    served = {
        threads: tiles_per_pass(Settings(), torch.device("cpu"), threads) for threads in (1, cores)
    }
    plans = {
        f"one pass on {cores} threads, {served[cores]} tiles": (1, cores, served[cores]),
        f"{cores} lanes of 1 thread, 4 tiles": (cores, 1, 4),
        f"{cores} lanes of 1 thread, {served[1]} tile(s)": (cores, 1, served[1]),
    }
    rows = []
    try:
        for stored in ((256, 256), LARGE):
            low_res = stored_photo(stored)
            output_mp = low_res.width * low_res.height * SCALE**2 / 1e6
            for callers in (1, Settings().render_threads):
                best = _plans_in_turns(plans, neural, low_res, callers, STREAM * 0.05 * output_mp)
                first_wall = best[next(iter(plans))][0][0]
                rows += [
                    [
                        f"{stored[0]}x{stored[1]}",
                        str(callers),
                        plan,
                        f"{callers * STREAM * output_mp / wall:.1f}",
                        f"{callers * STREAM * output_mp / cpu:.1f}",
                        f"{first_wall / wall:.2f}",
                        f"{100 * network_wall / wall:.0f}%",
                        f"{100 * network_cpu / cpu:.0f}%",
                    ]
                    for plan, ((wall, cpu), (network_wall, network_cpu)) in best.items()
                ]
    finally:
        torch.set_num_threads(default_threads)
    return rows


Timing = tuple[float, float]  # wall, CPU seconds


def _plans_in_turns(
    plans: dict[str, tuple[int, int, int]],
    neural: NeuralUpscaler,
    image: Image.Image,
    callers: int,
    budget_s: float,
) -> dict[str, tuple[Timing, Timing]]:
    """Fastest (wall, CPU) seconds of ``callers`` renders at once under each plan of
    (lanes, threads a lane, most tiles a pass), and of the same images' tiles through the
    network alone, three rounds in turns."""
    luma = luma_to_tensor(image.convert("YCbCr").getchannel("Y"))
    tiles = split_tiles(luma, TILE, neural.margin)[0]
    best: dict[str, tuple[Timing, Timing]] = {}
    with ThreadPoolExecutor(callers) as pool:
        for _ in range(3):
            for plan, (lanes, threads, max_tiles) in plans.items():
                torch.set_num_threads(threads)
                batcher = BatchingUpscaler(neural, 0.0, max_tiles, lanes=lanes)
                timings = tuple(
                    timed(partial(_streams, pool, render, callers), budget_s, repeats=2)
                    for render in (
                        partial(batcher.upscale, image),
                        partial(batcher.run_batches, tiles),
                    )
                )
                batcher.close()
                was = best.get(plan, timings)
                best[plan] = tuple(  # type: ignore[assignment]
                    (min(a[0], b[0]), min(a[1], b[1])) for a, b in zip(was, timings, strict=True)
                )
    return best


def _streams(pool: ThreadPoolExecutor, render: Callable[[], object], callers: int) -> None:
    """``callers`` render threads, each rendering ``STREAM`` times back to back: a steady
    flow of misses, not rounds that start and end together."""

    def stream() -> None:
        for _ in range(STREAM):
            render()

    for done in [pool.submit(stream) for _ in range(callers)]:
        done.result()


def stage_rows() -> list[list[str]]:
    """Where the whole image's CPU goes: each step of ``upscale`` on the bench's photo,
    timed on its own on one thread, ESPCN compiled where it compiles (else eager), the 4
    tiles in one batch; the steps' sum beside the whole ``upscale`` measured in turn."""
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        neural = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), TILE)
        with contextlib.suppress(Exception):  # eager where it cannot compile
            neural.compile_now(4)
        low_res = stored_photo()
        ycbcr = low_res.convert("YCbCr")
        tiles, layout = split_tiles(luma_to_tensor(ycbcr.getchannel("Y")), TILE, neural.margin)
        outputs = neural.run_tiles(tiles)
        luma = stitch_luma(outputs, layout, SCALE)
        stored_planes = ycrcb_planes(ycbcr)
        planes = upscale_planes(stored_planes)

        def split_colour() -> object:
            converted = low_res.convert("YCbCr")
            return converted.getchannel("Y"), ycrcb_planes(converted)

        def with_network_luma() -> None:
            cv2.insertChannel(luma, planes, 0)

        stages: dict[str, Callable[[], object]] = {
            "RGB to YCbCr (Pillow), luma and Y, Cr, Cb planes": split_colour,
            "luma to float tiles with margins": lambda: split_tiles(
                luma_to_tensor(ycbcr.getchannel("Y")), TILE, neural.margin
            ),
            f"network ({neural.precision}, compiled {neural.compiled})": partial(
                neural.run_tiles, tiles
            ),
            "tiles to 8-bit luma": partial(stitch_luma, outputs, layout, SCALE),
            "Y, Cr, Cb bicubic x4 (one OpenCV pass)": partial(upscale_planes, stored_planes),
            "network luma over the bicubic Y": with_network_luma,
            "YCrCb to RGB (OpenCV, into Pillow's layout)": partial(ycrcb_to_rgb, planes),
            "whole upscale (measured)": partial(neural.upscale, low_res),
        }
        results: dict[str, list[float]] = {stage: [] for stage in stages}
        for _ in range(3):
            for stage, run in stages.items():
                results[stage].append(timed(run, budget_s=0.3, repeats=2)[1])
        cpu = {stage: min(runs) for stage, runs in results.items()}
    finally:
        torch.set_num_threads(default_threads)
    whole = cpu.pop("whole upscale (measured)")
    rows = [[stage, f"{1000 * ms:.2f}", f"{100 * ms / whole:.0f}%"] for stage, ms in cpu.items()]
    rows.append(["sum of the steps", f"{1000 * sum(cpu.values()):.2f}", "-"])
    rows.append(["whole upscale, measured in turn", f"{1000 * whole:.2f}", "100%"])
    return rows


def side_by_side(
    first: Callable[[], object],
    second: Callable[[], object],
    rounds: int = 3,
    budget_s: float = 0.4,
) -> tuple[tuple[float, float], tuple[float, float]]:
    """(wall, CPU) seconds per call of each, the two taking turns so both see the same load."""
    a, b = [], []
    for _ in range(rounds):
        a.append(timed(first, budget_s=budget_s, repeats=2))
        b.append(timed(second, budget_s=budget_s, repeats=2))
    return (min(r[0] for r in a), min(r[1] for r in a)), (
        min(r[0] for r in b),
        min(r[1] for r in b),
    )


def tile_rows() -> tuple[list[list[str]], list[list[str]], list[str]]:
    """ESPCN per tile size and batch, eager and compiled (the served form where it compiles),
    all taking turns in one process at this process's thread count; then what each tile
    size costs the stored sizes of common uploads, padding to whole tiles included."""
    torch._dynamo.config.recompile_limit = 64  # two graphs per tile size, all on one class
    forms: dict[tuple[int, str, int], Callable[[], object]] = {}
    notes = []
    for tile in TILE_SIZES:
        for compiled in (False, True):
            neural = NeuralUpscaler(build_model("espcn"), "espcn", 0, torch.device("cpu"), tile)
            if compiled:
                try:
                    neural.compile_now(4)
                except Exception as exc:  # no C++ compiler, say
                    notes.append(f"tile {tile}: cannot compile ({exc})")
                    continue
            for batch in (1, 4):
                tiles = torch.rand(batch, 1, neural.tile_span, neural.tile_span)
                form = "compiled" if compiled else "eager"
                forms[(tile, form, batch)] = partial(neural.run_tiles, tiles)
    results: dict[tuple[int, str, int], list[tuple[float, float]]] = {k: [] for k in forms}
    for _ in range(3):
        for key, run in forms.items():
            results[key].append(timed(run, budget_s=0.3, repeats=2))
    per_tile_cpu = {}
    rows = []
    for (tile, form, batch), runs in results.items():
        wall = min(r[0] for r in runs) / batch
        cpu = min(r[1] for r in runs) / batch
        per_tile_cpu[(tile, form, batch)] = cpu
        core_mp = (tile * SCALE) ** 2 / 1e6
        span = tile + 2 * 2 * ESPCN.receptive_radius
        rows.append(
            [
                str(tile),
                f"{(span / tile) ** 2:.2f}",
                form,
                str(batch),
                f"{1000 * cpu:.1f}",
                f"{core_mp / cpu:.1f}",
                f"{core_mp / wall:.1f}",
            ]
        )
    sizes = []
    for label, (width, height) in STORED_SIZES.items():
        output_mp = width * height * SCALE**2 / 1e6
        row = [label]
        for tile in TILE_SIZES:
            cpu = min(
                per_tile_cpu.get((tile, form, batch), math.inf)
                for form in ("eager", "compiled")
                for batch in (1, 4)
            )
            count = math.ceil(width / tile) * math.ceil(height / tile)
            row.append(f"{count} / {output_mp / (count * cpu):.1f}")
        sizes.append(row)
    return rows, sizes, notes


def variant_rows() -> list[list[str]]:
    """ESPCN and SRCNN at batch 1 on one thread in each form the engine could take, taking
    turns so that each sees the same load; the output is checked against eager NCHW."""
    rows = []
    default_threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        _, peak_cpu = matmul_peak()
        for name in ("espcn", "srcnn"):
            model = build_model(name).eval()
            span = TILE + 2 * 2 * int(getattr(model, "receptive_radius", 4))
            macs = conv_macs(model, torch.zeros(1, 1, span, span))
            forms = _forms(model, torch.rand(1, 1, span, span))
            reference = forms["eager NCHW"][0]()
            results: dict[str, list[tuple[float, float]]] = {form: [] for form in forms}
            for _ in range(3):
                for form, (run, _) in forms.items():
                    results[form].append(timed(run, budget_s=0.3, repeats=2))
            for form, (run, warm_s) in forms.items():
                wall = min(r[0] for r in results[form])
                cpu = min(r[1] for r in results[form])
                error = (run() - reference).abs().max().item()
                rows.append(
                    [
                        name,
                        form,
                        f"{1000 * cpu:.1f}",
                        f"{1000 * wall:.1f}",
                        f"{100 * macs / cpu / peak_cpu:.0f}%",
                        f"{warm_s:.1f}",
                        f"{error:.1e}",
                    ]
                )
    finally:
        torch.set_num_threads(default_threads)
    return rows


Form = tuple[Callable[[], torch.Tensor], float]


def _forms(model: nn.Module, tile: torch.Tensor) -> dict[str, Form]:
    """name -> (one forward pass, seconds its preparation took)."""
    nhwc = tile.contiguous(memory_format=torch.channels_last)
    last = build_model(type(model).__name__.lower()).eval()
    last.load_state_dict(model.state_dict())
    last = last.to(memory_format=torch.channels_last)  # type: ignore[call-overload]

    def prepared(make: Callable[[], Callable[[], torch.Tensor]]) -> Form:
        started = time.perf_counter()
        run = make()
        run()  # compilers do their work on the first call
        return run, time.perf_counter() - started

    def no_grad(module: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Form:
        def run() -> torch.Tensor:
            with torch.no_grad():
                return module(x)

        return prepared(lambda: run)

    def served(int8: bool) -> Form:
        """The engine's own compiled form (``SRSTORE_COMPILE``, ``SRSTORE_INT8``)."""
        name = type(model).__name__.lower()
        engine = NeuralUpscaler(last, name, 0, torch.device("cpu"), TILE)
        return prepared(lambda: _compiled(engine, int8, tile))

    with torch.no_grad():
        frozen = torch.jit.freeze(torch.jit.trace(last, nhwc))
    forms = {
        "eager NCHW": no_grad(model, tile),
        "eager NHWC (served uncompiled)": no_grad(last, nhwc),
        "TorchScript frozen NHWC": no_grad(frozen, nhwc),
        "compiled NHWC (SRSTORE_COMPILE)": served(int8=False),
    }
    if isinstance(model, ESPCN) and has_vnni():  # int8 sets inductor's freezing for good: last
        forms["int8, last layer float32 (SRSTORE_INT8)"] = served(int8=True)
    return forms


def _compiled(engine: NeuralUpscaler, int8: bool, tile: torch.Tensor) -> Callable[[], torch.Tensor]:
    engine.compile_now(1, int8)
    if engine.precision != ("int8" if int8 else "float32"):
        raise RuntimeError(f"{engine.label} did not compile as asked (see the log)")
    return partial(engine.run_tiles, tile)


def _jpeg(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tile_report() -> str:
    rows, sizes, notes = tile_rows()
    return "\n".join(
        [
            f"ESPCN per tile size, {torch.get_num_threads()} intra-op threads, taking turns "
            "(margin = input pixels per output pixel from the tile's margins; rates count "
            "the tiles' cores only):",
            "",
            table(
                [
                    "tile",
                    "margin",
                    "form",
                    "tiles/batch",
                    "CPU ms per tile",
                    "output MP/CPU-s",
                    "output MP/s (wall)",
                ],
                rows,
            ),
            "",
            "Stored copies of common uploads, tiles needed / output MP per CPU-second "
            "(padding to whole tiles included; each tile size at its cheapest form and "
            "batch above):",
            "",
            table(["stored copy", *(f"tile {tile}" for tile in TILE_SIZES)], sizes),
            *notes,
        ]
    )


def report(variants: bool = False) -> str:
    # Dynamo keeps graphs per code object and guards the thread count: this bench compiles
    # ESPCN at both thread counts and batch shapes in several sections, past its default
    # 8 (after which it would run the "compiled" rows eagerly). The service needs 2.
    torch._dynamo.config.recompile_limit = 64
    networks, peaks = network_rows()
    peak_lines = ", ".join(f"{name} {value / 1e9:.1f}" for name, value in peaks.items())
    parts = [
        f"Peak: float32 2048x2048 matmul, G multiply-adds/s: {peak_lines}.",
        "",
        f"Network only, tiles of {TILE}x{TILE} low-res pixels (+ margins), NHWC as served, "
        f"output megapixels = tile cores at x{SCALE}; fractions of the matmul peak at the same "
        "thread count, per wall second and per CPU-second:",
        "",
        table(
            [
                "model",
                "threads",
                "tiles/batch",
                "output MP/s",
                "G MAC/s",
                "of peak (wall)",
                "G MAC/CPU-s",
                "of peak (CPU)",
            ],
            networks,
        ),
        "",
        "Whole image, stored copy -> RGB at x4 (256x256 -> 1024x1024: 4 tiles; 1000x750 -> "
        "4000x3000: 48 tiles; luma through the network, chroma bicubic meanwhile), "
        "SR/bicubic = speed ratio, network share = the same tiles through the network alone "
        "over the whole image (wall, CPU):",
        "",
        table(
            [
                "upscaler",
                "lanes",
                "threads a lane",
                "tiles/batch",
                "output MP/s",
                "SR/bicubic",
                "network share (wall)",
                "network share (CPU)",
            ],
            image_rows(),
        ),
        "",
        f"Whole images as served: render threads (one, and SRSTORE_RENDER_THREADS) rendering "
        f"{STREAM} images each back to back, ESPCN compiled, the plans (most tiles a pass) "
        "taking turns; speed-up = wall time of one pass on every core over this plan's; "
        "network share = the same images' tiles streamed through the network alone the same "
        "way, over the whole images (wall, CPU):",
        "",
        table(
            [
                "stored",
                "render threads",
                "plan",
                "output MP/s",
                "MP per CPU-s",
                "speed-up",
                "network share (wall)",
                "network share (CPU)",
            ],
            lane_rows(),
        ),
        "",
        "Where the whole image's CPU goes, one thread, each step timed on its own in turns:",
        "",
        table(["step", "CPU ms", "of the whole"], stage_rows()),
    ]
    if variants:
        parts += [
            "",
            "Forms of the network, batch 1, one thread, taking turns (CPU ms per tile; "
            "warm-up = preparation and first call; error = largest difference from eager NCHW):",
            "",
            table(
                [
                    "model",
                    "form",
                    "CPU ms",
                    "wall ms",
                    "of peak (CPU)",
                    "warm-up s",
                    "max error",
                ],
                variant_rows(),
            ),
        ]
    return "\n".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--variants", action="store_true", help="compare the engine's forms")
    parser.add_argument("--tiles", action="store_true", help="only compare tile sizes")
    parser.add_argument("--threads", type=int, help="intra-op threads for --tiles")
    args = parser.parse_args()
    heap = heap_as_served()
    if args.threads:
        torch.set_num_threads(args.threads)
    print("\n".join(describe_machine()))
    print(heap)
    print()
    print(tile_report() if args.tiles else report(args.variants))


if __name__ == "__main__":
    main()
