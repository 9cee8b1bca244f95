"""How often each rendition was asked for lately: TinyLFU's frequency sketch.

A count-min sketch (Cormode and Muthukrishnan): four rows of small counters, each key
counted in one counter per row, its estimate the smallest of the four, so it never
under-counts and over-counts only by collisions. Every ``10 x width`` increments all counters
are halved, so old popularity fades and the sketch follows what is hot now (Einziger,
Friedman and Manes, "TinyLFU", 2017; Caffeine keeps the same in Java). Memory is fixed:
4 x width counters, whatever the number of distinct keys, so a client inventing renditions
cannot grow it.
"""

from __future__ import annotations

import hashlib

import numpy as np

ROWS = 4
MAX_COUNT = 15  # 4-bit counters in the paper: a key's popularity is capped, aging stays cheap


class FrequencySketch:
    def __init__(self, width: int) -> None:
        self.width = 1 << max(4, (width - 1).bit_length())  # a power of two, at least 16
        self._counters = np.zeros((ROWS, self.width), dtype=np.uint8)
        self._rows = np.arange(ROWS)
        self._sample_size = 10 * self.width
        self._additions = 0

    def _slots(self, key: str) -> np.ndarray:
        digest = hashlib.blake2b(key.encode(), digest_size=4 * ROWS).digest()
        hashes = np.frombuffer(digest, dtype=np.uint32)
        return hashes & np.uint32(self.width - 1)

    def add(self, key: str) -> None:
        """Count one request for ``key``."""
        slots = self._slots(key)
        counts = self._counters[self._rows, slots]
        self._counters[self._rows, slots] = np.minimum(counts + 1, MAX_COUNT)
        self._additions += 1
        if self._additions >= self._sample_size:
            self._counters >>= 1
            self._additions //= 2

    def estimate(self, key: str) -> int:
        """Requests for ``key`` lately (never fewer than it had, up to ``MAX_COUNT``)."""
        return int(self._counters[self._rows, self._slots(key)].min())
