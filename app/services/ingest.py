"""Ingest: an upload is validated, decoded, reduced 4x and stored, then answered ``201``.

What to keep of it (and its quality receipt) is decided later by compaction (see
:mod:`render.compaction`); ingest leaves it the uploaded bytes under ``pending/{id}``, written
beside the x4 copy, so nothing acknowledged depends on memory: a crash after the ``201``
leaves the x4 copy readable and the pending upload for the next sweep.

One exception: under the ``original`` policy (and tiering's hot uploads) there is nothing
to decide. The upload itself is stored as the image, its receipt done, and no x4 copy is
made: a read never needs the model, not even one that comes before a compaction would
have finished (the replayed trace's first reads did, 285 model runs for "originals").
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol, TypeVar

from apikeys import DEFAULT_TENANT
from app import metrics
from app.services.decoding import DecodeGate
from config.settings import Settings
from imaging import (
    DecodedImage,
    declared_size,
    decode_memory_bytes,
    decode_upload,
    downscale,
    encode_stored,
)
from ledger import Ledger, LedgerUnavailable
from policy import Floor, Receipt, StoragePolicy
from render import costs
from render import metrics as render_metrics
from render.compaction import pending_key
from render.images import ImageMeta, object_key, stored_digest
from storage import ObjectStore

log = logging.getLogger(__name__)

_T = TypeVar("_T")


class ModelSource(Protocol):
    """Which model version serves right now (see ``app.services.models.ActiveModel``)."""

    @property
    def label(self) -> str: ...


class CompactionQueue(Protocol):
    """Where an acknowledged upload waits for its compaction (see ``app.services.compaction``)."""

    async def admit(self) -> None:
        """Raise ``CompactionBacklogFull`` when no more uploads may wait."""
        ...

    async def submit(self, image_id: str) -> None:
        """Queue the compaction of a stored upload (best effort: the pending object stays)."""
        ...


@dataclass(frozen=True)
class _Reduced:
    data: bytes  # the encoded 4x-reduced copy
    width: int
    height: int


def new_image_id() -> str:
    """128 random bits, URL-safe: unguessable and never derived from anything a client sent.

    Never with a leading ``-``: one id in 64 had one, and a shell command took it for an
    option (``srstore images meta $ID`` printed a usage error instead of the image).
    """
    while (image_id := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return image_id


class Ingest:
    def __init__(
        self,
        settings: Settings,
        store: ObjectStore,
        ledger: Ledger,
        models: ModelSource,
        decoding: DecodeGate,
        compactions: CompactionQueue,
    ) -> None:
        self.settings = settings
        self.store = store
        self.ledger = ledger
        self.models = models
        self.decoding = decoding
        self.compactions = compactions

    async def upload(
        self,
        data: bytes,
        policy: StoragePolicy | None = None,
        floor: Floor | None = None,
        tenant: str = DEFAULT_TENANT,
    ) -> ImageMeta:
        """Acknowledged (and counted in the ledger) only after the store confirmed the write.

        The x4 copy is stored and readable at once; the receipt is ``pending`` until
        compaction has chosen by ``policy`` and ``floor`` (the settings' unless given).
        Decoding holds the upload's estimated peak memory from the decode budget."""
        policy = policy or self.settings.storage_policy
        if policy == "original":
            return await self._keep_as_uploaded(data, floor, tenant)
        await self.compactions.admit()  # refuse before any work when compaction is behind
        decoded, reduced = await self._decoded(data, self._reduce)
        meta = ImageMeta(
            id=new_image_id(),
            width=decoded.image.width,
            height=decoded.image.height,
            stored_width=reduced.width,
            stored_height=reduced.height,
            content_type=decoded.content_type,
            original_bytes=len(data),
            stored_bytes=len(reduced.data),
            stored_digest=stored_digest(reduced.data),
            served_format=decoded.served_format,
            created_at=datetime.now(UTC),
            greyscale=decoded.greyscale,
            tenant=tenant,
            receipt=Receipt(
                state="pending",
                policy=policy,
                floor=str(floor or self.settings.floor),
                representation="x4",
                stored_bytes=len(reduced.data),
                model=self.models.label,
            ),
        )
        metadata = meta.to_metadata()
        # The pending upload first: a failure between the two leaves only it, which the
        # next sweep drops (no image), never an image whose compaction cannot run.
        await self.store.put(pending_key(meta.id), data, metadata)
        await self.store.put(object_key(meta.id), reduced.data, metadata)
        metrics.IMAGES_UPLOADED.inc()
        metrics.ORIGINAL_BYTES.inc(meta.original_bytes)
        metrics.STORED_BYTES.inc(meta.stored_bytes)
        await self._credit(meta)
        await self.compactions.submit(meta.id)
        return meta

    async def _keep_as_uploaded(self, data: bytes, floor: Floor | None, tenant: str) -> ImageMeta:
        """The ``original`` policy: the upload, validated by decoding it, is the image at once
        (one put, receipt done); there is no compaction to wait for, so none is queued."""
        decoded = await self._decoded(data, self._validate)
        image = decoded.image
        receipt = Receipt(
            policy="original",
            floor=str(floor or self.settings.floor),
            representation="original",
            stored_bytes=len(data),
            model=self.models.label,
            meets_floor=True,
        )
        meta = ImageMeta(
            id=new_image_id(),
            width=image.width,
            height=image.height,
            stored_width=image.width,
            stored_height=image.height,
            content_type=decoded.content_type,
            original_bytes=len(data),
            stored_bytes=len(data),
            stored_digest=stored_digest(data),
            served_format=decoded.served_format,
            created_at=datetime.now(UTC),
            greyscale=decoded.greyscale,
            tenant=tenant,
            representation="original",
            receipt=receipt,
        )
        await self.store.put(object_key(meta.id), data, meta.to_metadata())
        metrics.IMAGES_UPLOADED.inc()
        metrics.ORIGINAL_BYTES.inc(meta.original_bytes)
        metrics.STORED_BYTES.inc(meta.stored_bytes)
        render_metrics.observe_receipt(receipt)
        await self._credit(meta)
        return meta

    async def _decoded(self, data: bytes, work: Callable[[bytes], _T]) -> _T:
        """``work`` on the decode threads, holding the upload's estimated peak memory."""
        width, height = declared_size(data) or (0, 0)
        cost = max(decode_memory_bytes(width, height), 2 * len(data))
        async with self.decoding.reserve(cost):
            return await self.decoding.run(lambda: work(data))

    def _validate(self, data: bytes) -> DecodedImage:
        with costs.measured("ingest"):
            return decode_upload(data, self.settings.max_pixels)

    def _reduce(self, data: bytes) -> tuple[DecodedImage, _Reduced]:
        with costs.measured("ingest"):
            decoded = decode_upload(data, self.settings.max_pixels)
            low_res = downscale(decoded.image)
            stored = encode_stored(low_res, self.settings.codec)
        return decoded, _Reduced(stored, low_res.width, low_res.height)

    async def _credit(self, meta: ImageMeta) -> None:
        """The object store already holds the image: a ledger failure only logs."""
        try:
            await self.ledger.add(meta.original_bytes, meta.stored_bytes, 1, meta.representation)
        except LedgerUnavailable as exc:
            metrics.LEDGER_ERRORS.inc()
            log.warning("ledger not updated for %s: %s", meta.id, exc)
