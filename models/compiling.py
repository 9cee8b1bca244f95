"""``torch.compile`` (inductor) for the networks where it pays, warmed up off the serving path.

Inductor fuses ESPCN's PReLU, residual add and pixel shuffle into fewer passes over memory:
8-20% less CPU per tile on this AVX-512 machine; SRCNN, whose time is in convolutions at high
resolution, gains nothing (bench/RESULTS.md). The price is a compilation with the system C++
compiler: about 20 CPU-seconds the first time on a machine, then about 3 s per process from
inductor's on-disk cache. So a network is never compiled on the serving path: the engine
serves eagerly from its first request while a daemon thread compiles the two graphs the tile
batcher needs (one tile, and 2 to ``max_tiles`` tiles), checks each against eager, and only
then hands the compiled forward over. Any failure (no compiler, an unsupported CPU, an output
that disagrees) leaves eager in place and says why in the log.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)

COMPILE_PAYS = frozenset({"espcn"})
"""Architectures whose compiled form measured faster than eager on the CPU."""

TOLERANCE = 1e-4
"""Largest difference from eager accepted from a compiled network, on [0, 1] pixel values."""

Forward = Callable[[torch.Tensor], torch.Tensor]


class CompileMismatch(RuntimeError):
    """The compiled network's output differs from eager by more than :data:`TOLERANCE`."""


def compile_forward(
    model: nn.Module, prepare: Callable[[torch.Tensor], torch.Tensor], span: int, max_tiles: int
) -> Forward:
    """The compiled ``model``, warmed up for every batch size up to ``max_tiles`` tiles of
    ``span`` pixels, as ``prepare`` lays them out; raises if it cannot be trusted.

    Dynamo specialises a batch of one, so that graph is compiled on its own; larger batches
    share one graph with a symbolic batch size, so no batch the batcher sends recompiles."""
    compiled = torch.compile(model)
    for batch in sorted({1, max_tiles}):
        with torch.inference_mode():  # as the engine's tiles are made: guards check it
            sample = prepare(torch.rand(batch, 1, span, span))
            if batch > 1:
                torch._dynamo.mark_dynamic(sample, 0, min=2, max=max_tiles)
            error = (compiled(sample) - model(sample)).abs().max().item()
        if not error <= TOLERANCE:
            raise CompileMismatch(f"compiled output differs from eager by {error:.2e}")
    return compiled


def compile_in_background(
    label: str, build: Callable[[], Forward], ready: Callable[[Forward], None]
) -> threading.Thread:
    """Run ``build`` on a daemon thread and pass its result to ``ready``; log a failure."""

    def run() -> None:
        started = time.perf_counter()
        try:
            forward = build()
        except Exception as exc:
            log.warning(
                "%s stays eager: torch.compile failed (%s: %s)", label, type(exc).__name__, exc
            )
            return
        ready(forward)
        log.info(
            "%s compiled in %.1f s; serving the compiled network",
            label,
            time.perf_counter() - started,
        )

    thread = threading.Thread(target=run, name=f"compile-{label}", daemon=True)
    thread.start()
    return thread
