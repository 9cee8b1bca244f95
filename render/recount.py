"""The ledger recounted from the object store: the truth the Redis counters drift from.

The ledger's counters live in Redis, which replicates asynchronously: a master that dies
loses the increments it had not yet passed to its replica (on a LAN, the last milliseconds),
and an update that failed (``srstore_ledger_errors_total``) was never made. The object store
is the record of what is kept, so ``srstore ledger reconcile`` lists it, reads each image's
metadata, and moves each representation's share (and with it the totals) by the difference,
through the ledger's own ``add``. An upload or delete that lands while it runs may be counted
wrongly, each by its own bytes (the listing may or may not have passed its id): run it when
writes are quiet, or twice, for an exact count.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from dataclasses import dataclass

from ledger import Ledger, Share, Totals
from render.images import IMAGES_PREFIX, ImageMeta
from storage import ObjectNotFound, ObjectStore

PAGE = 1000  # keys per listing request
HEADS_AT_ONCE = 32  # metadata reads in flight


async def recount(store: ObjectStore) -> Totals:
    """Every image's bytes, from the store's listing and each image's metadata."""
    shares: defaultdict[str, list[int]] = defaultdict(lambda: [0, 0, 0])
    limit = asyncio.Semaphore(HEADS_AT_ONCE)

    async def meta(key: str) -> ImageMeta | None:
        async with limit:
            try:
                return ImageMeta.from_metadata(dict(await store.head(key)))
            except ObjectNotFound:
                return None  # deleted since the listing

    after: str | None = None
    while True:
        page = await store.list_page(IMAGES_PREFIX, PAGE, after)
        for found in await asyncio.gather(*(meta(key) for key in page.keys)):
            if found is not None:
                share = shares[found.representation]
                share[0] += found.original_bytes
                share[1] += found.stored_bytes
                share[2] += 1
        if page.next_after is None:
            break
        after = page.next_after
    return Totals(
        sum(s[0] for s in shares.values()),
        sum(s[1] for s in shares.values()),
        sum(s[2] for s in shares.values()),
        {name: Share(*amounts) for name, amounts in shares.items()},
    )


@dataclass(frozen=True)
class Reconciled:
    before: Totals
    counted: Totals
    after: Totals


async def reconcile(store: ObjectStore, ledger: Ledger, apply: bool = True) -> Reconciled:
    """Recount, then move each representation's share by its difference from the count."""
    before = await ledger.totals()
    counted = await recount(store)
    if apply:
        current = await ledger.totals()
        names = set(current.by_representation) | set(counted.by_representation)
        for name in sorted(names):
            now = current.by_representation.get(name, Share())
            then = counted.by_representation.get(name, Share())
            delta = (
                then.original_bytes - now.original_bytes,
                then.stored_bytes - now.stored_bytes,
                then.images - now.images,
            )
            if any(delta):
                await ledger.add(*delta, representation=name)
    after = await ledger.totals()
    return Reconciled(before, counted, after)
