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


MAX_LIST_LIMIT = 1000  # S3's own bound on one ListObjectsV2 page


@dataclass(frozen=True)
class KeyPage:
    """One page of a listing, and the key to pass as ``after`` for the next (None: the last)."""

    keys: list[str]
    next_after: str | None


def check_list_limit(limit: int) -> None:
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise ValueError(f"a listing page holds 1 to {MAX_LIST_LIMIT} keys, not {limit}")


class ObjectStore(Protocol):
    """An object and its metadata become visible together, or not at all."""

    async def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None: ...

    async def get(self, key: str) -> StoredObject: ...

    async def head(self, key: str) -> Mapping[str, str]: ...

    async def delete(self, key: str) -> None: ...

    async def list_keys(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""
        ...

    async def list_page(self, prefix: str, limit: int, after: str | None = None) -> KeyPage:
        """Up to ``limit`` keys under ``prefix``, sorted, each greater than ``after``.

        One bounded request to the store per page, however many objects it holds.
        """
        ...

    async def ping(self) -> None:
        """Raise :class:`StorageUnavailable` unless the store answers."""
        ...
