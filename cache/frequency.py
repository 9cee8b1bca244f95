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
import struct

import numpy as np

ROWS = 4
_HASHES = f"<{ROWS}I"
MAX_COUNT = 15  # 4-bit counters in the paper: a key's popularity is capped, aging stays cheap


class FrequencySketch:
    def __init__(self, width: int) -> None:
        self.width = 1 << max(4, (width - 1).bit_length())  # a power of two, at least 16
        self._counters = np.zeros((ROWS, self.width), dtype=np.uint8)
        # Each row as a memoryview: one counter is a plain int there, ten times cheaper to
        # read and write than through numpy's indexing; aging still halves the whole array.
        self._rows = [row.data for row in self._counters]
        self._mask = self.width - 1
        self._sample_size = 10 * self.width
        self._additions = 0

    def _slots(self, key: str) -> tuple[int, ...]:
        digest = hashlib.blake2b(key.encode(), digest_size=4 * ROWS).digest()
        return tuple(h & self._mask for h in struct.unpack(_HASHES, digest))

    def add(self, key: str) -> None:
        """Count one request for ``key`` (every read does: plain integers, not array views)."""
        for row, slot in zip(self._rows, self._slots(key), strict=True):
            if row[slot] < MAX_COUNT:
                row[slot] += 1
        self._additions += 1
        if self._additions >= self._sample_size:
            self._counters >>= 1
            self._additions //= 2

    def estimate(self, key: str) -> int:
        """Requests for ``key`` lately (never fewer than it had, up to ``MAX_COUNT``)."""
        return min(row[slot] for row, slot in zip(self._rows, self._slots(key), strict=True))
