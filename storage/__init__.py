"""Object stores for the low-resolution copies, chosen by configuration in :func:`make_store`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from storage.base import (
    MAX_LIST_LIMIT,
    KeyPage,
    ObjectNotFound,
    ObjectStore,
    StorageUnavailable,
    StoredObject,
)
from storage.local import LocalStore
from storage.s3 import S3Store

if TYPE_CHECKING:
    from config.settings import Settings


def make_store(settings: Settings) -> ObjectStore:
    """S3 when a bucket is configured, else the local directory store."""
    if settings.s3_bucket:
        return S3Store(
            settings.s3_bucket, settings.s3_endpoint_url, settings.s3_region, settings.s3_prefix
        )
    return LocalStore(settings.data_dir / "objects")


__all__ = [
    "MAX_LIST_LIMIT",
    "KeyPage",
    "LocalStore",
    "ObjectNotFound",
    "ObjectStore",
    "S3Store",
    "StorageUnavailable",
    "StoredObject",
    "make_store",
]
