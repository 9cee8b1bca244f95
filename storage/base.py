"""The object-store interface: whole objects with string metadata, written atomically."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol


class ObjectNotFound(KeyError):
    """No object under that key."""


class StorageUnavailable(RuntimeError):
    """The store could not be reached; the caller answers 503 and retries later."""


@dataclass(frozen=True)
class StoredObject:
    data: bytes
    metadata: Mapping[str, str]


class ObjectStore(Protocol):
    """An object and its metadata become visible together, or not at all."""

    async def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None: ...

    async def get(self, key: str) -> StoredObject: ...

    async def head(self, key: str) -> Mapping[str, str]: ...

    async def delete(self, key: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""
        ...

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` unless the store answers."""
        ...
