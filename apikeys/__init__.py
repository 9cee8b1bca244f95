"""API keys and where they are kept, chosen by configuration in :func:`make_key_store`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from apikeys.base import (
    DEFAULT_TENANT,
    KEY_PREFIX,
    SCOPES,
    InvalidKeySpec,
    KeyRecord,
    KeyStore,
    KeyStoreUnavailable,
    Limits,
    Scope,
    digest_of,
    key_id_of,
    mint,
)
from apikeys.local import LocalKeyStore
from apikeys.quotas import LocalQuotas, Quotas, RedisQuotas, Window
from apikeys.redis import RedisKeyStore

if TYPE_CHECKING:
    from config.settings import Settings


def make_key_store(settings: Settings) -> KeyStore:
    """Beside the ledger: Redis when configured (the fleet's), else the local ledger's file."""
    if settings.redis_url:
        return RedisKeyStore(settings.redis_url, settings.redis_cluster)
    return LocalKeyStore(settings.data_dir / "ledger.sqlite3")


def make_quotas(settings: Settings) -> Quotas:
    """Beside the keys: one count per key and window for the whole fleet."""
    if settings.redis_url:
        return RedisQuotas(settings.redis_url, settings.redis_cluster)
    return LocalQuotas(settings.data_dir / "ledger.sqlite3")


__all__ = [
    "DEFAULT_TENANT",
    "KEY_PREFIX",
    "SCOPES",
    "InvalidKeySpec",
    "KeyRecord",
    "KeyStore",
    "KeyStoreUnavailable",
    "Limits",
    "LocalKeyStore",
    "LocalQuotas",
    "Quotas",
    "RedisKeyStore",
    "RedisQuotas",
    "Scope",
    "Window",
    "digest_of",
    "key_id_of",
    "make_key_store",
    "make_quotas",
    "mint",
]
