"""Threads whose work may only use the CPU that other work leaves.

Linux schedules threads one by one, and a thread's niceness is inherited by the threads it
starts (an encoder's own workers), so a pool whose threads lower their own priority at start
yields the cores to every other thread of the process under contention, and runs at full
speed when nothing else wants them. Raising niceness needs no privilege; lowering it back
would, which is why priority belongs to a pool's threads, not to a piece of work.
"""

from __future__ import annotations

import logging
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from functools import partial

log = logging.getLogger(__name__)

# Added to the process's niceness (a server started niced keeps its threads' order).
HEAVY_NICENESS = 5  # renditions estimated over SRSTORE_HEAVY_WORK_SECONDS
COMPACTION_NICENESS = 10  # background compaction yields to every read, heavy ones included
MAX_NICENESS = 19


def lower_thread_priority(niceness: int) -> None:
    """Lower the calling thread's priority by ``niceness`` (a pool initializer); where the OS
    cannot, go on at the process's."""
    thread = threading.get_native_id()
    try:
        lowered = min(MAX_NICENESS, os.getpriority(os.PRIO_PROCESS, thread) + niceness)
        os.setpriority(os.PRIO_PROCESS, thread, lowered)
    except (AttributeError, OSError):
        log.debug("could not lower a thread's priority by %d", niceness)


def niced_pool(threads: int, prefix: str, niceness: int) -> ThreadPoolExecutor:
    """A pool of ``threads`` threads running ``niceness`` below the process."""
    return ThreadPoolExecutor(
        max_workers=threads,
        thread_name_prefix=prefix,
        initializer=partial(lower_thread_priority, niceness),
    )
