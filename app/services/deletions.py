"""Deletions this process made lately, so a DELETE that overlapped one is not a 404."""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager

# A DELETE is answered within a request deadline; thousands of deletions would have to finish
# in this process while one waits for its HEAD before its record is forgotten.
REMEMBERED = 4096


class RecentDeletions:
    """When each image's removal finished here (infinity while under way), and whose it was.

    A DELETE whose own read of the image comes back not found, because a removal in this
    process was under way or finished while the request was (its ownership HEAD answered
    after the object went, or it came to join the shared deletion after it had ended),
    overlapped that deletion and is answered as if it had joined it. Only a DELETE that
    arrived after the image was gone is a 404.
    """

    def __init__(self, remembered: int = REMEMBERED) -> None:
        self._ended: OrderedDict[str, tuple[float, str]] = OrderedDict()
        self._remembered = remembered

    @staticmethod
    def now() -> float:
        return time.monotonic()

    @contextmanager
    def removing(self, image_id: str, tenant: str) -> Iterator[None]:
        """Around the object's removal: a removal that failed left the image readable, so
        no DELETE could have seen it gone, and its end is recorded all the same."""
        self._remember(image_id, math.inf, tenant)
        try:
            yield
        finally:
            self._remember(image_id, self.now(), tenant)

    def overlapped(self, image_id: str, arrived: float, owner: str | None) -> bool:
        """Whether ``owner``'s DELETE that arrived at ``arrived`` overlapped a removal here."""
        ended = self._ended.get(image_id)
        if ended is None:
            return False
        ended_at, tenant = ended
        return ended_at >= arrived and owner in (None, tenant)

    def _remember(self, image_id: str, ended_at: float, tenant: str) -> None:
        self._ended[image_id] = (ended_at, tenant)
        self._ended.move_to_end(image_id)
        while len(self._ended) > self._remembered:
            self._ended.popitem(last=False)
