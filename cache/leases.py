"""Leases: one holder at a time for a named piece of background work, across processes.

Every ``srstore serve`` process (and every worker) sweeps the store's ``pending/`` objects, so
two of them may find the same upload to compact. A lease makes one of them do it: the others
are refused at once and leave the work to the holder. A holder that dies loses its lease
without any help, so its work is taken again:

- :class:`FileLeases` (no Redis: the processes of one machine, beside the in-process cache's
  delete marks in the data directory) holds an ``flock`` on a file. The kernel drops it the
  moment the holder's process ends, however it ends, so a dead holder's work is free at once
  and no staleness bound has to guess how long a live one may take.
- :class:`RedisLeases` (the fleet shares Redis) is a key ``SET NX PX`` with the holder's
  token, renewed every third of its lifetime while the holder works, and deleted by the
  holder only while it still names it. A holder that dies stops renewing: its work is free
  once the lease lapses.

A lease is a guard against doing work twice, not a lock that correctness rests on: the work
it guards (compaction) ends the same if it runs twice, so a holder stalled past its lease
(which another then takes) costs CPU, never data.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import re
import socket
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Protocol

from redis.exceptions import RedisError

from cache.base import CacheUnavailable
from keyspace import connect, lease_key

log = logging.getLogger(__name__)

_NAME = re.compile(r"^[A-Za-z0-9_.:{}-]{1,128}$")


class Leases(Protocol):
    def hold(self, name: str) -> AbstractAsyncContextManager[bool]:
        """Hold the lease on ``name`` for the block (True), or enter it at once with False
        when another process or task holds it. Raise :class:`CacheUnavailable` when the
        lease cannot be asked for."""
        ...

    async def held(self, name: str) -> bool:
        """Whether some holder has the lease on ``name`` now (for operators and tests)."""
        ...

    async def close(self) -> None: ...


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(f"not a lease name: {name!r}")
    return name


class FileLeases:
    """A lease is ``directory/<name>``, locked with ``flock`` by its holder, who writes its
    pid in it (for an operator asking who holds it) and deletes it when done."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        path = self.directory / _checked(name)
        fd = self._take(path)
        if fd is None:
            yield False
            return
        try:
            yield True
        finally:
            path.unlink(missing_ok=True)  # before the unlock: see _take
            os.close(fd)

    async def held(self, name: str) -> bool:
        try:
            fd = os.open(self.directory / _checked(name), os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    async def close(self) -> None:
        return None

    def _take(self, path: Path) -> int | None:
        """The locked file's descriptor, or None when another holds it.

        A holder deletes the file before it unlocks, so a lock won on a file no longer at
        ``path`` (opened just before the holder deleted it) is worth nothing: try again."""
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            while True:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    return None
                try:
                    current = os.stat(path).st_ino == os.fstat(fd).st_ino
                except FileNotFoundError:
                    current = False
                if current:
                    os.ftruncate(fd, 0)
                    os.write(fd, f"{os.getpid()}\n".encode())
                    return fd
                os.close(fd)
        except OSError as exc:
            raise CacheUnavailable(f"cannot take the lease {path.name}: {exc.strerror}") from exc


# KEYS: the lease. ARGV: the holder's token, and for renewal the lifetime in milliseconds.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisLeases:
    """A lease is the key ``srstore:lease:<name>`` holding its holder's token."""

    def __init__(self, url: str, lifetime_seconds: float, cluster: bool = False) -> None:
        self.lifetime_ms = max(1, round(lifetime_seconds * 1000))
        self.client = connect(
            url, cluster, decode_responses=True, socket_connect_timeout=1, socket_timeout=2
        )
        self._renew = self.client.register_script(_RENEW)
        self._release = self.client.register_script(_RELEASE)

    @contextlib.asynccontextmanager
    async def hold(self, name: str) -> AsyncIterator[bool]:
        key = lease_key(_checked(name))
        token = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex}"
        try:
            taken = await self.client.set(key, token, nx=True, px=self.lifetime_ms)
        except RedisError as exc:
            raise CacheUnavailable(f"cannot take the lease {name}: {exc}") from exc
        if not taken:
            yield False
            return
        renewing = asyncio.create_task(self._keep(key, token))
        try:
            yield True
        finally:
            renewing.cancel()
            await asyncio.gather(renewing, return_exceptions=True)
            try:
                await self._release(keys=[key], args=[token])
            except RedisError as exc:  # it lapses on its own
                log.warning("could not give back the lease %s: %s", name, exc)

    async def _keep(self, key: str, token: str) -> None:
        while True:
            await asyncio.sleep(self.lifetime_ms / 3000)
            try:
                if not await self._renew(keys=[key], args=[token, self.lifetime_ms]):
                    log.warning("the lease %s lapsed while held; another may take it", key)
                    return
            except RedisError as exc:
                log.warning("could not renew the lease %s: %s", key, exc)

    async def held(self, name: str) -> bool:
        try:
            return bool(await self.client.exists(lease_key(_checked(name))))
        except RedisError as exc:
            raise CacheUnavailable(str(exc)) from exc

    async def close(self) -> None:
        await self.client.aclose()
