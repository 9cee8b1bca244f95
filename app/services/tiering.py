"""Tiering by access (``SRSTORE_TIERING=on``): an upload stays as it came while it is read, and
is compacted by the cold policy and floor once unread for ``SRSTORE_COMPACT_AFTER_IDLE``.

Hot: ingest gives an upload without an explicit policy the ``original`` policy, so it stores
the uploaded bytes as the image at once (no x4 copy, no compaction), and a plain read serves
them as stored (no model, no decode), from the first read on. Reads are remembered cheaply:
a read sets an entry in this process's memory; every ``SRSTORE_ACCESS_FLUSH_SECONDS`` the
last read of each image goes to the ledger in one write (a Redis sorted set, or the SQLite
file) where an earlier time never replaces a later one, so any number of processes may
report and a restart forgets at most one flush. Nothing is written to the object store on a
read.

Cold: a sweep (every ``compact_after_idle / 8``, at most a minute) asks the ledger for the
images last read before ``now - compact_after_idle`` and turns each back into a pending
upload, as ingest leaves one: ``pending/{id}`` holds the kept upload, ``images/{id}`` its x4
copy with a ``pending`` receipt of the cold policy and floor (one put: a reader gets either
the whole hot copy or the whole x4 copy, each with its own metadata). The background
compactor (:mod:`app.services.compaction`) then does the rest, and its delete checks apply:
a DELETE at any point wins. A cold image read again is not expanded back.

One sweeper at a time: every replica (and every ``serve --workers`` process) runs the sweep
loop, but a sweep first takes the lease ``tiering-sweep`` (:mod:`cache.leases`, the one
compaction's per-image claims use: Redis ``SET NX PX`` in full mode, a file lock in the data
directory otherwise). While one process sweeps, the others skip their turn; the images it
handed on are forgotten before it lets go, so the next sweep, wherever it runs, finds only
what is still to do.

Only when it pays: a compaction costs its CPU once, and saves storage every month after. An
image is compacted only if the storage it saves over ``SRSTORE_COLD_HORIZON`` (its expected
further life) is worth more than ``SRSTORE_COMPACTION_CPU_SECONDS_PER_MEGAPIXEL`` of CPU, at
the price settings; otherwise it stays as it came (and is looked at again only if read again).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from app.services.ingest import CompactionQueue, ModelSource
from cache import CacheUnavailable, HRCache, ImageDeleted, Leases
from config.settings import Settings
from imaging import decode_upload, downscale, encode_stored
from ledger import Ledger, LedgerUnavailable
from ledger.costs import SECONDS_PER_MONTH
from policy import Receipt, StoragePolicy
from render import costs
from render.compaction import meta_cache_key, pending_key
from render.images import ImageMeta, InvalidImageId, object_key
from storage import ObjectNotFound, ObjectStore, StorageUnavailable

log = logging.getLogger(__name__)

HOT_POLICY: StoragePolicy = "original"  # what an upload keeps while it is read
SWEEP_BATCH = 100
MAX_SWEEP_SECONDS = 60.0
SWEEP_LEASE = "tiering-sweep"


def is_hot(meta: ImageMeta) -> bool:
    """Kept full-size as uploaded, its compaction finished: a candidate to go cold."""
    receipt = meta.receipt
    return (
        meta.representation != "x4"
        and receipt is not None
        and receipt.state != "pending"
        and receipt.policy == HOT_POLICY
    )


class Tiering:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        cache: HRCache,
        ledger: Ledger,
        compactions: CompactionQueue,
        models: ModelSource,
        leases: Leases,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        self.store = store
        self.cache = cache
        self.ledger = ledger
        self.compactions = compactions
        self.models = models
        self.leases = leases
        self.clock = clock
        self._reads: dict[str, float] = {}
        self._tasks: list[asyncio.Task[None]] = []

    def read(self, image_id: str) -> None:
        """A read of a hot image: one dictionary write, nothing else on the request path."""
        self._reads[image_id] = self.clock()

    async def uploaded(self, image_id: str) -> None:
        """A new hot image: tracked from its upload, as if read then, at once (durably)."""
        self._reads[image_id] = self.clock()
        await self.flush()

    async def flush(self) -> None:
        reads, self._reads = self._reads, {}
        if not reads:
            return
        try:
            await self.ledger.touch(reads)
        except LedgerUnavailable as exc:
            log.warning("last reads not recorded (kept for the next flush): %s", exc)
            for image_id, at in reads.items():
                self._reads[image_id] = max(at, self._reads.get(image_id, 0.0))

    async def sweep(self) -> int:
        """Hand every hot image idle past the threshold to compaction; how many were (none
        when another process is sweeping: it hands them on)."""
        await self.flush()
        async with self.leases.hold(SWEEP_LEASE) as held:
            if not held:
                return 0
            return await self._sweep(self.clock() - self.settings.compact_after_idle)

    async def _sweep(self, before: float) -> int:
        handed = 0
        while True:
            idle = await self.ledger.idle(before, SWEEP_BATCH)
            fresh = [image_id for image_id in idle if image_id not in self._reads]
            for image_id in fresh:  # the others were read since the flush above
                if await self.cool(image_id):
                    handed += 1
                await self.ledger.forget(image_id)
            if len(idle) < SWEEP_BATCH or not fresh:
                return handed

    async def cool(self, image_id: str) -> bool:
        """Make a hot image a pending upload of the cold policy, and queue its compaction.

        False when there is nothing to do: the image is gone, not hot, or was deleted
        meanwhile (then what this wrote is deleted again: nothing deleted is written back)."""
        try:
            stored = await self.store.get(object_key(image_id))
        except InvalidImageId:
            log.warning("tiering: %r in the read ledger is not an image id; forgotten", image_id)
            return False
        except ObjectNotFound:
            return False
        hot = ImageMeta.from_metadata(dict(stored.metadata))
        if not is_hot(hot) or not self.pays(hot, 0):  # not even saving every byte would pay
            return False
        x4, width, height = await asyncio.to_thread(self._reduce, stored.data)
        if not self.pays(hot, len(x4)):
            log.info("tiering: compacting %s would not pay for itself; kept as it is", image_id)
            return False
        cold = hot.model_copy(
            update={
                "stored_width": width,
                "stored_height": height,
                "stored_bytes": len(x4),
                "representation": "x4",
                "receipt": Receipt(
                    state="pending",
                    policy=self.settings.cold_policy,
                    floor=str(self.settings.cold),
                    representation="x4",
                    stored_bytes=len(x4),
                    model=self.models.label,
                ),
            }
        )
        await self.store.put(pending_key(image_id), stored.data, hot.to_metadata())
        await self.store.put(object_key(image_id), x4, cold.to_metadata())
        try:
            await self.cache.drop_image(image_id)  # renditions made from the hot copy
            await self.cache.put(meta_cache_key(image_id), cold.model_dump_json().encode())
        except ImageDeleted:
            await self.store.delete(object_key(image_id))
            await self.store.delete(pending_key(image_id))
            log.info("image %s was deleted while going cold; nothing kept", image_id)
            return False
        except CacheUnavailable:
            pass  # a pending receipt is read from the store anyway
        await self.compactions.submit(image_id)
        return True

    def pays(self, hot: ImageMeta, cold_bytes: int) -> bool:
        """Whether storing ``cold_bytes`` instead of the hot copy saves, over
        ``SRSTORE_COLD_HORIZON``, more than the compaction's CPU costs, at the price settings.

        The saving accrues month after month; the compaction is paid once, up front: a small
        upload (or a short horizon) never earns back its scoring, so it stays as it came."""
        settings = self.settings
        prices = settings.prices
        months = settings.cold_horizon / SECONDS_PER_MONTH
        saving = prices.storage_per_month(hot.stored_bytes - cold_bytes) * months
        megapixels = hot.width * hot.height / 1e6
        cost = prices.compute("cpu", settings.compaction_cpu_seconds_per_megapixel * megapixels)
        return saving > cost

    def _reduce(self, data: bytes) -> tuple[bytes, int, int]:
        """The x4 copy of the kept upload, as ingest makes it (counted as compaction CPU)."""
        with costs.measured("compaction"):
            low_res = downscale(decode_upload(data, self.settings.max_pixels).image)
            return encode_stored(low_res, self.settings.codec), low_res.width, low_res.height

    async def start(self) -> None:
        self._tasks = [
            asyncio.create_task(self._every(self.settings.access_flush_seconds, self.flush)),
            asyncio.create_task(self._every(self._sweep_seconds(), self._sweep_logged)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.flush()
        await self.leases.close()

    def _sweep_seconds(self) -> float:
        return min(MAX_SWEEP_SECONDS, self.settings.compact_after_idle / 8)

    async def _sweep_logged(self) -> None:
        try:
            if handed := await self.sweep():
                log.info("tiering: %d idle image(s) handed to compaction", handed)
        except (LedgerUnavailable, StorageUnavailable, CacheUnavailable) as exc:
            log.warning("tiering sweep failed (%s); the next one tries again", exc)
        except Exception:  # a background loop outlives one bad image
            log.exception("tiering sweep failed; the next one tries again")

    @staticmethod
    async def _every(seconds: float, action: Callable[[], Awaitable[object]]) -> None:
        while True:
            await asyncio.sleep(seconds)
            await action()
