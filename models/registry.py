"""Model versions kept in the object store beside the images.

``models/{name}/{version}/weights.pt`` holds the state dict and ``.../card.json`` its model
card, with the canary score the service measured when the version was accepted. The card is
written last, so a version exists exactly when its card does.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from storage import ObjectNotFound, ObjectStore

_CARD_KEY = re.compile(r"^models/(?P<name>[a-z0-9]+)/(?P<version>\d+)/card\.json$")


class UnknownModelVersion(LookupError):
    """No such model version in the registry."""


class ModelVersionExists(ValueError):
    """That name and version are already registered; versions are immutable."""


@dataclass(frozen=True)
class ModelRef:
    name: str
    version: int

    @property
    def label(self) -> str:
        return f"{self.name}:{self.version}"

    @classmethod
    def parse(cls, label: str) -> ModelRef:
        name, _, version = label.partition(":")
        return cls(name, int(version))


@dataclass(frozen=True)
class ModelEntry:
    ref: ModelRef
    card: dict[str, Any]


def _prefix(ref: ModelRef) -> str:
    return f"models/{ref.name}/{ref.version}/"


class ModelRegistry:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    async def entries(self) -> list[ModelEntry]:
        """Every registered version, by name then version."""
        refs = []
        for key in await self.store.list_keys("models/"):
            match = _CARD_KEY.match(key)
            if match:
                refs.append(ModelRef(match["name"], int(match["version"])))
        refs.sort(key=lambda r: (r.name, r.version))
        return [await self.entry(ref) for ref in refs]

    async def entry(self, ref: ModelRef) -> ModelEntry:
        try:
            stored = await self.store.get(_prefix(ref) + "card.json")
        except ObjectNotFound:
            raise UnknownModelVersion(ref.label) from None
        return ModelEntry(ref, json.loads(stored.data))

    async def weights(self, ref: ModelRef) -> bytes:
        try:
            return (await self.store.get(_prefix(ref) + "weights.pt")).data
        except ObjectNotFound:
            raise UnknownModelVersion(ref.label) from None

    async def add(self, ref: ModelRef, weights: bytes, card: dict[str, Any]) -> ModelEntry:
        """Store a new version: weights first, card last."""
        if await self.exists(ref):
            raise ModelVersionExists(f"{ref.label} is already registered")
        await self.store.put(_prefix(ref) + "weights.pt", weights, {})
        card_bytes = json.dumps(card, indent=2, sort_keys=True).encode()
        await self.store.put(_prefix(ref) + "card.json", card_bytes, {})
        return ModelEntry(ref, card)

    async def exists(self, ref: ModelRef) -> bool:
        try:
            await self.store.head(_prefix(ref) + "card.json")
        except ObjectNotFound:
            return False
        return True
