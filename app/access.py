"""Who may do what: the scope each route needs, who the caller is, and the protected default.

A caller is a :class:`Principal`: a key (its scopes and tenant), the bootstrap admin token,
or anonymous. Without any key in force, srstore behaves like Redis's protected mode: upload,
list and delete are accepted from loopback clients only. The first key ends that: from then
on every client needs one for those routes, loopback included.

This runs in :class:`app.middleware.RequestGate`, before a byte of any body is read. A plain
read with ``SRSTORE_PUBLIC_READ`` on and no ``Authorization`` header returns before any lookup,
so a cache hit pays one dictionary lookup and a comparison for it.
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import time
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from apikeys import (
    DEFAULT_TENANT,
    SCOPES,
    KeyRecord,
    KeyStore,
    KeyStoreUnavailable,
    Quotas,
    Scope,
    Window,
    key_id_of,
)
from app import metrics
from app.errors import AdminDisabled, Forbidden, KeysUnavailable, RateLimited, Unauthorized
from config.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")
MINUTE, HOUR, DAY = 60, 3_600, 86_400
ADMIN_TOKEN_ID = "admin-token"  # how the bootstrap credential is named in audit lines
CREATE_A_KEY = (
    "create a key with `srstore keys create --scopes upload,read` "
    "(or POST /v1/admin/keys) and send it as `Authorization: Bearer <key>`"
)


@dataclass(frozen=True)
class Principal:
    """Who is asking: ``key_id`` None is anonymous; ``tenant`` None sees every tenant."""

    key_id: str | None
    tenant: str | None
    scopes: frozenset[str]
    costly_options: bool = False
    record: KeyRecord | None = None
    signed_only: bool = False  # anonymous, let in by a URL signature the route must verify

    @property
    def admin(self) -> bool:
        return "admin" in self.scopes

    @property
    def owner(self) -> str:
        """The tenant an upload by this caller belongs to."""
        return self.tenant or DEFAULT_TENANT

    @property
    def only_tenant(self) -> str | None:
        """The one tenant whose images this caller may see or delete; None: all of them."""
        return None if self.admin else self.owner


ANONYMOUS = Principal(None, DEFAULT_TENANT, frozenset({"read"}))
LOOPBACK = Principal(None, DEFAULT_TENANT, frozenset({"read", "upload", "list", "delete"}))
NOBODY = Principal(None, DEFAULT_TENANT, frozenset())
SIGNED = Principal(None, DEFAULT_TENANT, frozenset({"read"}), signed_only=True)
ADMIN_TOKEN = Principal(ADMIN_TOKEN_ID, None, frozenset(SCOPES), costly_options=True)

IMAGES = "/v1/images"
ADMIN = "/v1/admin"


def required_scope(method: str, path: str) -> Scope | None:
    """The scope a route needs; None for the probes, metrics, docs and console."""
    if path == ADMIN or path.startswith(ADMIN + "/"):
        return "admin"
    if path == IMAGES:
        return "upload" if method == "POST" else "list"
    if path.startswith(IMAGES + "/"):
        return "delete" if method == "DELETE" else "read"
    return None


def costly_options_allowed(principal: Principal, settings: Settings) -> bool:
    """May this caller ask an upload for ``?policy=`` or ``?floor=`` (minutes of CPU each)?

    Admins and keys created with ``--costly-options`` may. Callers without a key (the
    protected default's loopback clients) only when ``SRSTORE_ANONYMOUS_COSTLY_OPTIONS`` says
    so: by default anyone who can reach an open port would otherwise start quality searches.
    """
    if principal.key_id is None:
        return settings.anonymous_costly_options
    return principal.admin or principal.costly_options


class TrustedProxies:
    """Which peers may say, in ``X-Forwarded-For``, whom they forward for."""

    def __init__(self, networks: Iterable[str]) -> None:
        self.networks = [ipaddress.ip_network(n, strict=False) for n in networks]

    def trusted(self, address: str) -> bool:
        ip = _ip(address)
        return ip is not None and any(ip in network for network in self.networks)

    def client(self, peer: str | None, forwarded_for: str | None) -> str | None:
        """The nearest address in the chain that is not a trusted proxy; None when unknown.

        ``X-Forwarded-For`` is read right to left and only while each hop is trusted: a
        client can write anything at the left end, so nothing it wrote is believed. A
        forwarded request from a peer that is not trusted has an unknown origin: a reverse
        proxy on the same host connects from loopback, and its clients are not local.
        """
        if peer is None or not forwarded_for:
            return peer
        if not self.trusted(peer):
            return None
        hops = [hop.strip() for hop in forwarded_for.split(",")]
        for hop in reversed(hops):
            if not self.trusted(hop):
                return hop
        return hops[0] or peer


def _ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(address)
    except ValueError:
        return None


def is_loopback(address: str | None) -> bool:
    ip = _ip(address) if address else None
    return ip is not None and ip.is_loopback


class Access:
    """Resolves callers to principals, with a short cache of key lookups.

    A revocation reaches every process within ``SRSTORE_KEY_CACHE_SECONDS`` (at most 5):
    each process re-reads a key, and whether any key is in force, at most that long after
    it last did.
    """

    def __init__(self, settings: Settings, store: KeyStore, quotas: Quotas) -> None:
        self.settings = settings
        self.store = store
        self.quotas = quotas
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self.ttl = settings.key_cache_seconds
        self._records: dict[str, tuple[float, KeyRecord | None]] = {}
        self._any: tuple[float, bool] | None = None

    async def principal(
        self,
        needed: Scope,
        authorization: str | None,
        peer: str | None,
        forwarded_for: str | None,
        signed: bool = False,
    ) -> Principal:
        """The caller, allowed ``needed``; raises 401 (who?) or 403 (not this) otherwise.

        ``signed``: the URL carries a ``sig`` (checked by the route, against the signing key).
        """
        if needed == "admin" and not await self._admin_possible():
            raise AdminDisabled(
                "the admin API is off on this server: set SRSTORE_ADMIN_TOKEN in the environment "
                "of srstore serve (in Kubernetes, the srstore Secret) and restart it, or create "
                "a key with `srstore keys create --scopes admin`"
            )
        if authorization is not None:
            principal = await self._authenticate(authorization)
        elif needed == "read" and signed and self.settings.url_signing_key is not None:
            principal = SIGNED
        else:
            principal = await self._anonymous(needed, self.proxies.client(peer, forwarded_for))
        if needed not in principal.scopes:
            raise Forbidden(f"this key lacks the {needed!r} scope")
        return principal

    async def whoami(
        self, authorization: str | None, peer: str | None, forwarded_for: str | None
    ) -> Principal:
        """What this caller may do, for the console: a bad key is 401, no key is anonymous
        (with the protected default's rights when it applies)."""
        if authorization is not None:
            return await self._authenticate(authorization)
        if not await self.any_active() and is_loopback(self.proxies.client(peer, forwarded_for)):
            return LOOPBACK
        return ANONYMOUS if self.settings.public_read else NOBODY

    async def _authenticate(self, authorization: str) -> Principal:
        scheme, _, given = authorization.partition(" ")
        given = given.strip()
        if scheme.lower() != "bearer" or not given:
            raise Unauthorized("send the key as `Authorization: Bearer <key>`")
        token = self.settings.admin_token
        if token is not None and hmac.compare_digest(
            given.encode(), token.get_secret_value().encode()
        ):
            return ADMIN_TOKEN
        key_id = key_id_of(given)
        record = await self.record(key_id) if key_id else None
        if record is None or not record.active or not record.matches(given):
            raise Unauthorized("unknown or revoked API key")
        scopes = frozenset(SCOPES) if "admin" in record.scopes else frozenset(record.scopes)
        tenant = None if "admin" in record.scopes else record.tenant
        return Principal(record.id, tenant, scopes, record.costly_options, record)

    async def _anonymous(self, needed: Scope, client: str | None) -> Principal:
        if needed == "admin":
            raise Unauthorized("a valid bearer token is required")
        if needed == "read" and self.settings.public_read:
            return ANONYMOUS
        if await self.any_active():
            raise Unauthorized(f"this route needs an API key: {CREATE_A_KEY}")
        if is_loopback(client):
            return LOOPBACK
        raise Unauthorized(
            "no API key exists yet, so srstore accepts uploads, listings and deletes only "
            f"from the machine it runs on (protected mode): {CREATE_A_KEY}"
        )

    async def _admin_possible(self) -> bool:
        """The admin API is off while neither the token nor any key could open it."""
        return self.settings.admin_token is not None or await self.any_active()

    async def admit_upload(self, principal: Principal) -> None:
        """Before an upload's body is read: the key's uploads this minute, and its scoring CPU
        this hour. Keys only: the bootstrap token and the protected default's loopback
        clients are the operator's own."""
        record = principal.record
        if record is None:
            return
        now = time.time()
        per_minute = _limit(
            record.limits.uploads_per_minute, self.settings.quota_uploads_per_minute
        )
        if per_minute:
            window = Window(MINUTE, now)
            if not await _answered(self.quotas.take(record.id, "uploads", 1, per_minute, window)):
                raise _throttled(record, "uploads", f"{per_minute:g} uploads a minute", window)
        per_hour = _limit(
            record.limits.cpu_seconds_per_hour, self.settings.quota_cpu_seconds_per_hour
        )
        if per_hour:
            window = Window(HOUR, now)
            if await _answered(self.quotas.used(record.id, "cpu", window)) >= per_hour:
                raise _throttled(
                    record, "cpu", f"{per_hour:g} CPU seconds of scoring an hour", window
                )

    async def spend_bytes(self, principal: Principal, size: int) -> None:
        """Once the body is read: its bytes against the key's bytes of the UTC day."""
        record = principal.record
        if record is None:
            return
        per_day = _limit(
            record.limits.upload_bytes_per_day, self.settings.quota_upload_bytes_per_day
        )
        if per_day:
            window = Window(DAY, time.time())
            if not await _answered(self.quotas.take(record.id, "bytes", size, per_day, window)):
                raise _throttled(record, "bytes", f"{per_day:g} uploaded bytes a day", window)

    async def spent_cpu(self, principal: Principal, seconds: float) -> None:
        """After the upload was ingested: what its request cost, for the key's next uploads."""
        record = principal.record
        if record is None or seconds <= 0:
            return
        metrics.KEY_CPU_SECONDS.labels(record.id).inc(seconds)
        try:
            await self.quotas.add(record.id, "cpu", seconds, Window(HOUR, time.time()))
        except KeyStoreUnavailable as exc:  # the upload is stored: only the count is lost
            log.warning("quota not counted for key %s: %s", record.id, exc)

    async def record(self, key_id: str) -> KeyRecord | None:
        now = time.monotonic()
        cached = self._records.get(key_id)
        if cached is not None and now - cached[0] < self.ttl:
            return cached[1]
        try:
            record = await self.store.get(key_id)
        except KeyStoreUnavailable as exc:
            log.warning("key store unavailable: %s", exc)
            raise KeysUnavailable("the key store is unavailable; retry later") from None
        if len(self._records) > 10_000:  # ids are guessable strings: bound the memory
            self._records.clear()
        self._records[key_id] = (now, record)
        return record

    async def any_active(self) -> bool:
        now = time.monotonic()
        if self._any is not None and now - self._any[0] < self.ttl:
            return self._any[1]
        try:
            found = await self.store.any_active()
        except KeyStoreUnavailable as exc:
            log.warning("key store unavailable: %s", exc)
            if self._any is not None and not self._any[1]:
                # No key was in force when last asked: the protected default (loopback only)
                # stays in force through an outage of the store, as uploads did before keys.
                return False
            raise KeysUnavailable("the key store is unavailable; retry later") from None
        self._any = (now, found)
        return found

    def forget(self) -> None:
        """After a key change in this process: it sees the change at once."""
        self._records.clear()
        self._any = None

    async def describe(self) -> str:
        """For start-up, /readyz and doctor: which regime this fleet is in."""
        if await self.any_active():
            return "keys: every upload, listing and delete needs an API key"
        return "protected: no API key exists; uploads, listings and deletes only from loopback"


def _limit(override: float | None, setting: float) -> float:
    """The key's own limit when it has one, else the setting's; 0 means none."""
    return setting if override is None else override


def _throttled(record: KeyRecord, quota: str, allowance: str, window: Window) -> RateLimited:
    metrics.KEY_THROTTLED.labels(record.id, quota).inc()
    return RateLimited(
        f"key {record.id} may use {allowance}; retry in {window.retry_after} s",
        window.retry_after,
    )


async def _answered(call: Awaitable[T]) -> T:
    try:
        return await call
    except KeyStoreUnavailable as exc:
        log.warning("quota store unavailable: %s", exc)
        raise KeysUnavailable("the key store is unavailable; retry later") from None
