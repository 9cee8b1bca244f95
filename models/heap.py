"""glibc's heap, set for forward passes that allocate the same buffers over and over.

Every forward pass allocates its activations and outputs afresh, eager and compiled alike,
and a 12 MP render keeps several batches' outputs alive until they are stitched. With
glibc's defaults each lane thread allocates from an arena of its own, whose heaps are
unmapped as soon as they empty, and the main arena hands memory back above a threshold that
moves with the largest block freed. So every 12 MP render faulted the same pages back in,
zeroed: 7,000-15,000 page faults per miss in a real ``srstore serve`` (2-3% of its CPU), and
31,000-39,000 in the engine alone (10-15%), on this project's VM (``python -m bench.heap``).
One arena that keeps freed memory up to a bound serves the next pass from pages already
mapped.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger(__name__)

# mallopt(3) parameters, from glibc's malloc.h.
M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
M_ARENA_MAX = -8

MMAP_THRESHOLD_MAX = 32 * 2**20
"""glibc's largest mmap threshold on 64-bit: blocks above it are always mapped on their own."""


def keep_freed_heap(keep_bytes: int) -> bool:
    """Let this process keep up to ``keep_bytes`` of freed heap for later allocations, all
    threads sharing one arena. ``0`` leaves glibc's defaults. Returns whether the settings
    took: ``False`` where the C library is not glibc.

    Call it before the threads it should cover first allocate: a thread keeps the arena it
    was given."""
    if keep_bytes <= 0:
        return False
    try:
        mallopt = ctypes.CDLL(ctypes.util.find_library("c")).mallopt
        mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    except (OSError, AttributeError):
        return False
    wanted = (
        (M_ARENA_MAX, 1),
        (M_MMAP_THRESHOLD, min(keep_bytes, MMAP_THRESHOLD_MAX)),
        (M_TRIM_THRESHOLD, keep_bytes),
    )
    took = all(mallopt(param, value) == 1 for param, value in wanted)
    if not took:
        log.warning("the C library refused the heap settings; its defaults stay")
    return took
