"""Counting what this process spends, and moving it into the fleet's cost ledger.

Work is counted where it runs, as CPU seconds of the thread that does it (``time.thread_time``),
by stage: ``ingest`` (decode, reduce and encode an upload), ``compaction`` (scoring and
choosing the representation), ``render`` (decode a stored copy, super-resolve, resize) and
``encode`` (the output encode of a read). The network's forward passes run on the batcher's
lanes: a pass on one thread counts that thread's CPU, a pass on several (torch's own threads
too) the process's CPU during it; either is shared among the stages of the tiles in it
(``models.batching``). On an accelerator they also count its busy seconds under
``device="cuda"``.

Each process adds to its Prometheus counters at once and to the shared ledger every
``SRSTORE_COST_FLUSH_SECONDS`` (and before ``/metrics`` reads the ledger), so a render never
waits on a ledger write. The cache's byte-seconds are sampled at each flush: a process's own
cache is integrated here; a shared one (Redis) in the ledger, on its clock, once for the fleet.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Mapping
from contextvars import ContextVar

from cache import CacheUnavailable, HRCache
from ledger import Ledger, LedgerUnavailable
from ledger.costs import CACHE_BYTE_SECONDS, Prices, compute_key
from models.batching import COMPUTE_STAGE
from render import metrics

log = logging.getLogger(__name__)

_MEASURED: ContextVar[bool] = ContextVar("measured", default=False)


class Account:
    """CPU seconds of one ``stage`` spent in a context (an upload), for per-key quotas.

    Threads started with ``asyncio.to_thread`` copy the context, so they add to it too; the
    network's passes on the batcher's thread serve many requests and are not attributed.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self.seconds = 0.0


_ACCOUNT: ContextVar[Account | None] = ContextVar("cost_account", default=None)


@contextlib.contextmanager
def account(stage: str) -> Iterator[Account]:
    """Count, besides the fleet's totals, what this context spends on ``stage``."""
    spent = Account(stage)
    token = _ACCOUNT.set(spent)
    try:
        yield spent
    finally:
        _ACCOUNT.reset(token)


class _Pending:
    """Amounts counted in this process and not yet in the ledger (any thread adds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._amounts: defaultdict[str, float] = defaultdict(float)

    def add(self, name: str, amount: float) -> None:
        with self._lock:
            self._amounts[name] += amount

    def drain(self) -> dict[str, float]:
        with self._lock:
            amounts, self._amounts = dict(self._amounts), defaultdict(float)
        return amounts

    def restore(self, amounts: Mapping[str, float]) -> None:
        """Put back what a failed ledger write did not keep, for the next flush."""
        for name, amount in amounts.items():
            self.add(name, amount)


PENDING = _Pending()


def record(stage: str, device: str, seconds: float) -> None:
    """Count ``seconds`` of compute for ``stage`` on ``device``."""
    if seconds <= 0:
        return
    metrics.COMPUTE_SECONDS.labels(stage, device).inc(seconds)
    PENDING.add(compute_key(stage, device), seconds)
    spent = _ACCOUNT.get()
    if spent is not None and spent.stage == stage:
        spent.seconds += seconds


def record_thread(stage: str, seconds: float) -> None:
    """Count CPU seconds of the calling thread, unless an enclosing :func:`measured` block
    already counts this thread's time."""
    if not _MEASURED.get():
        record(stage, "cpu", seconds)


@contextlib.contextmanager
def measured(stage: str) -> Iterator[None]:
    """Count the calling thread's CPU in the block as ``stage``; the network's passes the
    block asks for count as ``stage`` too. Run it inside the thread that does the work."""
    stage_token = COMPUTE_STAGE.set(stage)
    measured_token = _MEASURED.set(True)
    started = time.thread_time()
    try:
        yield
    finally:
        _MEASURED.reset(measured_token)
        COMPUTE_STAGE.reset(stage_token)
        record(stage, "cpu", time.thread_time() - started)


def current_stage() -> str:
    return COMPUTE_STAGE.get()


def record_forward_passes(cpu: Mapping[str, float], busy: Mapping[str, float], device: str) -> None:
    """The batcher's report: process CPU by stage, and accelerator time when not on the CPU."""
    for stage, seconds in cpu.items():
        record(stage, "cpu", seconds)
    if device != "cpu":
        for stage, seconds in busy.items():
            record(stage, device, seconds)


class CostFlusher:
    """Moves this process's counts into the ledger now and then; samples the cache."""

    def __init__(
        self,
        ledger: Ledger,
        cache: HRCache | None,
        prices: Prices,
        window_seconds: float,
        every_seconds: float,
    ) -> None:
        self.ledger = ledger
        self.cache = cache
        self.prices = prices
        self.window_seconds = window_seconds
        self.every_seconds = every_seconds
        self._lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._held: tuple[int, float] | None = None  # own cache: bytes held, sampled when

    async def start(self) -> None:
        self._task = asyncio.create_task(self._loop())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.flush()

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self.every_seconds)
            await self.flush()

    async def flush(self) -> None:
        """One ledger write of everything counted since the last; kept for later if it fails."""
        async with self._lock:
            cache_dollars = await self._sample_cache()
            amounts = PENDING.drain()
            dollars = sum(self.prices.dollars(amounts).values()) + cache_dollars
            if not amounts and not dollars:
                return
            try:
                await self.ledger.spend(amounts, dollars, self.window_seconds)
            except LedgerUnavailable as exc:
                log.warning("cost ledger not updated (kept for the next try): %s", exc)
                PENDING.restore(amounts)

    async def _sample_cache(self) -> float:
        """Integrate the cache's bytes since the last sample; the dollars of what was added
        in the shared ledger (it is already counted there)."""
        if self.cache is None:
            return 0.0
        try:
            held = await self.cache.held_bytes()
        except CacheUnavailable:
            return 0.0
        if self.cache.shared:
            try:
                added = await self.ledger.integrate(CACHE_BYTE_SECONDS, held)
            except LedgerUnavailable:
                return 0.0
            metrics.CACHE_BYTE_SECONDS.inc(added)
            return self.prices.cache(added)
        now = time.monotonic()
        if self._held is not None:
            byte_seconds = self._held[0] * (now - self._held[1])
            metrics.CACHE_BYTE_SECONDS.inc(byte_seconds)
            PENDING.add(CACHE_BYTE_SECONDS, byte_seconds)
        self._held = (held, now)
        return 0.0
