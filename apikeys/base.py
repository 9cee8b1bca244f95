"""API keys: what a key may do, and how it is kept without its secret.

A key reads ``srk_<id>_<secret>``: ``srk_`` marks it as an srstore key (so a leaked one can be
found by a scanner), the 10-hex-digit id is public and names it in listings, logs and metrics,
and the secret is 256 random bits. Only the SHA-256 of the whole key is stored: a salted slow
hash (bcrypt) protects low-entropy passwords, but guessing 256 random bits is hopeless either
way, and a fast hash keeps each lookup cheap.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Literal, Protocol

Scope = Literal["read", "upload", "list", "delete", "admin"]
SCOPES: tuple[Scope, ...] = ("read", "upload", "list", "delete", "admin")
KEY_PREFIX = "srk_"
DEFAULT_TENANT = "default"  # the owner of anonymous uploads and of images older than tenants
TENANT_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_KEY_PATTERN = re.compile(r"^srk_([0-9a-f]{10})_([A-Za-z0-9_-]{43})$")


class KeyStoreUnavailable(RuntimeError):
    """The key store could not be read or written."""


class InvalidKeySpec(ValueError):
    """A key was asked for with an unknown scope, a malformed tenant or a bad limit."""


@dataclass(frozen=True)
class Limits:
    """Per-key overrides of the quota settings; ``None`` keeps the setting's value."""

    uploads_per_minute: int | None = None
    upload_bytes_per_day: int | None = None
    cpu_seconds_per_hour: float | None = None


@dataclass(frozen=True)
class KeyRecord:
    """Everything kept about a key: never the key itself, only its digest."""

    id: str
    digest: str
    scopes: tuple[Scope, ...]
    tenant: str = DEFAULT_TENANT
    name: str = ""
    created_at: float = 0.0
    revoked_at: float | None = None
    costly_options: bool = False  # may ask for ?policy= and ?floor= on upload
    limits: Limits = field(default_factory=Limits)

    @property
    def active(self) -> bool:
        return self.revoked_at is None

    def matches(self, key: str) -> bool:
        """Constant-time: how much of the digest matched is not observable."""
        return hmac.compare_digest(self.digest, digest_of(key))

    def public(self) -> dict[str, object]:
        """What listings show: everything but the digest."""
        shown = asdict(self)
        del shown["digest"]
        return shown

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> KeyRecord:
        data = json.loads(text)
        data["scopes"] = tuple(data["scopes"])
        data["limits"] = Limits(**data.get("limits", {}))
        return cls(**data)


def digest_of(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def key_id_of(key: str) -> str | None:
    """The public id of a well-formed key, else None (nothing to look up)."""
    match = _KEY_PATTERN.match(key)
    return match.group(1) if match else None


def check_spec(scopes: list[str], tenant: str) -> tuple[Scope, ...]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown or not scopes:
        raise InvalidKeySpec(
            f"scopes must be one or more of {', '.join(SCOPES)}"
            + (f" (not {', '.join(unknown)})" if unknown else "")
        )
    if not TENANT_PATTERN.match(tenant):
        raise InvalidKeySpec(
            "a tenant is 1-64 of a-z, 0-9, '_' and '-', starting with a letter or digit"
        )
    return tuple(s for s in SCOPES if s in scopes)


def mint(
    scopes: list[str],
    tenant: str = DEFAULT_TENANT,
    name: str = "",
    costly_options: bool = False,
    limits: Limits | None = None,
) -> tuple[str, KeyRecord]:
    """A new key (shown to its owner once) and the record to keep (its digest only)."""
    checked = check_spec(scopes, tenant)
    key_id = secrets.token_hex(5)
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    record = KeyRecord(
        id=key_id,
        digest=digest_of(key),
        scopes=checked,
        tenant=tenant,
        name=name[:100],
        created_at=time.time(),
        costly_options=costly_options,
        limits=limits or Limits(),
    )
    return key, record


def revoked(record: KeyRecord) -> KeyRecord:
    return record if record.revoked_at is not None else replace(record, revoked_at=time.time())


class KeyStore(Protocol):
    """Shared by every process of a fleet; a revocation written here is seen by all."""

    async def add(self, record: KeyRecord) -> None: ...

    async def get(self, key_id: str) -> KeyRecord | None: ...

    async def all(self) -> list[KeyRecord]:
        """Every key, revoked ones included, by creation time."""
        ...

    async def revoke(self, key_id: str) -> KeyRecord | None:
        """Mark the key revoked (kept for the audit trail); None when there is no such key."""
        ...

    async def any_active(self) -> bool:
        """Whether any key is in force: the protected default ends with the first one."""
        ...
