"""Model versions for admins (upload, activate, roll back) and for every serving process.

:class:`ActiveModel` is what a process serves with. It follows the fleet's active pointer:
it switches on an announcement and re-reads the pointer every few seconds in case one was
missed. A request takes the current upscaler once, at its start, so a request that began on
the old version finishes on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from imaging import StoredCodec
from models.control import ControlUnavailable, ModelControl, SwapAction, SwapRecord
from models.engine import BICUBIC_LABEL
from models.registry import (
    ModelEntry,
    ModelRef,
    ModelRegistry,
    ModelVersionExists,
    UnknownModelVersion,
)
from models.validation import InvalidWeights, score_weights
from models.weights import WeightsFile
from storage import StorageUnavailable

log = logging.getLogger(__name__)

# Canary scores closer than this are equal: float noise must not block a re-upload.
SCORE_TOLERANCE_DB = 0.01


class InvalidCard(ValueError):
    """The model card is not valid JSON of the expected shape."""


class WorseThanActive(ValueError):
    """The candidate scores below the active version on the canary set."""


class NothingToRollBack(ValueError):
    """No earlier version was ever active."""


class ModelCard(BaseModel):
    """The fields the service relies on; everything else in a card is kept as given."""

    model_config = ConfigDict(extra="allow")

    name: str = Field(pattern=r"^(espcn|srcnn)$")
    version: int = Field(ge=1)


def parse_card(raw: str | dict[str, Any]) -> ModelCard:
    try:
        if isinstance(raw, str):
            return ModelCard.model_validate_json(raw)
        return ModelCard.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
        raise InvalidCard(f"invalid model card: {problems}") from None


def canary_of(entry: ModelEntry) -> float:
    return float(entry.card["canary"]["model_psnr"])


class ModelAdmin:
    def __init__(self, registry: ModelRegistry, control: ModelControl, codec: StoredCodec) -> None:
        self.registry = registry
        self.control = control
        self.codec = codec

    async def upload(self, weights: bytes, raw_card: str | dict[str, Any]) -> ModelEntry:
        """Accept a version only if it loads, runs, and has been scored on the canary set."""
        card = parse_card(raw_card)
        ref = ModelRef(card.name, card.version)
        if await self.registry.exists(ref):
            raise ModelVersionExists(f"{ref.label} is already registered")
        measured = await asyncio.to_thread(score_weights, card.name, weights, self.codec)
        canary = {
            "model_psnr": round(measured.model_psnr, 4),
            "bicubic_psnr": round(measured.bicubic_psnr, 4),
            "gain_db": round(measured.gain, 4),
            "codec": f"{self.codec.name} q{self.codec.quality}",
        }
        return await self.registry.add(ref, weights, {**card.model_dump(), "canary": canary})

    async def activate(self, ref: ModelRef, force: bool = False) -> SwapRecord | None:
        """Point the fleet at ``ref``; refused if it scores worse than the active one."""
        candidate = await self.registry.entry(ref)
        active = await self.control.active()
        if active == ref:
            return None
        if active is not None and not force:
            current = await self.registry.entry(active)
            if canary_of(candidate) < canary_of(current) - SCORE_TOLERANCE_DB:
                raise WorseThanActive(
                    f"{ref.label} scores {canary_of(candidate):.2f} dB on the canary set, "
                    f"below {active.label} at {canary_of(current):.2f} dB"
                )
        return await self._swap("activate", active, ref, forced=force)

    async def rollback(self) -> SwapRecord:
        history = await self.control.history(limit=1)
        if not history or history[0].from_label is None:
            raise NothingToRollBack("no earlier version was ever active")
        previous = ModelRef.parse(history[0].from_label)
        return await self._swap("rollback", await self.control.active(), previous, forced=False)

    async def bootstrap(self, shipped: list[WeightsFile], preferred: ModelRef | None) -> None:
        """Register the repository's weights and activate one if the fleet has none yet."""
        for weights in shipped:
            ref = ModelRef(weights.name, weights.version)
            if not await self.registry.exists(ref):
                card = {**weights.card(), "name": ref.name, "version": ref.version}
                with contextlib.suppress(ValueError):  # another process registered it first
                    await self.upload(weights.path.read_bytes(), card)
        if preferred is not None and await self.control.active() is None:
            with contextlib.suppress(ValueError):  # another process bootstrapped first
                await self._swap("bootstrap", None, preferred, forced=False)

    async def overview(self) -> dict[str, Any]:
        active = await self.control.active()
        return {
            "active": {"name": active.name, "version": active.version} if active else None,
            "models": [
                {
                    "name": e.ref.name,
                    "version": e.ref.version,
                    "active": e.ref == active,
                    "card": e.card,
                }
                for e in await self.registry.entries()
            ],
        }

    async def _swap(
        self, action: SwapAction, old: ModelRef | None, new: ModelRef, forced: bool
    ) -> SwapRecord:
        record = SwapRecord(
            at=datetime.now(UTC).isoformat(),
            action=action,
            from_label=old.label if old else None,
            to_label=new.label,
            forced=forced,
        )
        await self.control.swap(record)
        log.info(
            "model %s: %s -> %s%s",
            action,
            record.from_label,
            new.label,
            " (forced)" if forced else "",
        )
        return record


class ActiveModel:
    """The version this process serves, kept in step with the fleet's pointer.

    With ``preload`` (local inference), the new version is loaded before the label flips, so
    the switch happens between requests and none waits on a load.
    """

    def __init__(
        self,
        control: ModelControl,
        poll_seconds: float = 2.0,
        preload: Callable[[str], Awaitable[object]] | None = None,
    ) -> None:
        self.control = control
        self.poll_seconds = poll_seconds
        self.preload = preload
        self.label = BICUBIC_LABEL
        self._switching = asyncio.Lock()
        self._stopping = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        await self.refresh()
        self._tasks = [asyncio.create_task(self._follow()), asyncio.create_task(self._poll())]

    async def stop(self) -> None:
        """The flag ends the loops even where redis-py swallowed the cancellation."""
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    async def refresh(self) -> None:
        """Follow the pointer; on failure keep serving what is loaded and try again later."""
        try:
            ref = await self.control.active()
            if ref is not None:
                await self.switch(ref)
        except (ControlUnavailable, StorageUnavailable, UnknownModelVersion, InvalidWeights) as exc:
            log.warning("keeping %s: %s", self.label, exc)

    async def switch(self, ref: ModelRef) -> None:
        async with self._switching:
            if self.label == ref.label:
                return
            if self.preload is not None:
                await self.preload(ref.label)
            self.label = ref.label
            log.info("now serving %s", ref.label)

    async def _follow(self) -> None:
        """An announcement prompts a re-read of the pointer, which stays the authority."""
        async for ref in self.control.announcements(until=self._stopping):
            if ref.label != self.label:
                await self.refresh()

    async def _poll(self) -> None:
        while not self._stopping.is_set():
            await asyncio.sleep(self.poll_seconds)
            await self.refresh()
