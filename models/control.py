"""Which model version the fleet serves: an active pointer, an audit trail, and announcements.

Full mode keeps them in Redis (a Lua script swaps the pointer, appends the audit record and
publishes the change atomically); the embedded default keeps them in files and announces
within the process. Every process also re-reads the pointer periodically, so a missed
announcement delays a swap by at most that period.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal, Protocol

from redis.exceptions import RedisError

from keyspace import MODEL_ACTIVE, MODEL_AUDIT, MODEL_SWAPS, connect, subscriber
from models.registry import ModelRef
from storage.local import write_atomically

if TYPE_CHECKING:
    from config.settings import Settings

log = logging.getLogger(__name__)

SwapAction = Literal["bootstrap", "activate", "rollback"]


class PointerMoved(RuntimeError):
    """Another admin swapped the model meanwhile; nothing was changed."""


class ControlUnavailable(RuntimeError):
    """The pointer's store could not be reached."""


@dataclass(frozen=True)
class SwapRecord:
    at: str
    action: SwapAction
    from_label: str | None
    to_label: str
    forced: bool

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str | bytes) -> SwapRecord:
        return cls(**json.loads(text))


class ModelControl(Protocol):
    async def active(self) -> ModelRef | None: ...

    async def swap(self, record: SwapRecord) -> None:
        """Point the fleet at ``record.to_label`` if it still points at ``record.from_label``."""
        ...

    async def history(self, limit: int = 100) -> list[SwapRecord]:
        """Newest first."""
        ...

    def announcements(self, until: asyncio.Event) -> AsyncIterator[ModelRef]:
        """Labels as they are published, ending within a second of ``until`` being set.

        The event, not only a task cancellation, ends it: on Python 3.11 redis-py can swallow
        a cancellation that lands inside a command with a socket timeout (CPython gh-86296),
        and a listener that relied on it would never stop.
        """
        ...

    async def close(self) -> None: ...


_SWAP = """
local current = redis.call('GET', KEYS[1]) or ''
if current ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2])
redis.call('LPUSH', KEYS[2], ARGV[3])
redis.call('LTRIM', KEYS[2], 0, 9999)
redis.call('PUBLISH', KEYS[3], ARGV[2])
return 1
"""


class RedisControl:
    """Keys without a TTL, so a ``volatile-lru`` Redis never evicts them; one hash tag, so the
    swap script runs on a Redis Cluster too."""

    ACTIVE, AUDIT, CHANNEL = MODEL_ACTIVE, MODEL_AUDIT, MODEL_SWAPS

    def __init__(self, url: str, cluster: bool = False) -> None:
        self.client = connect(url, cluster, socket_connect_timeout=1, socket_timeout=2)
        self._swap = self.client.register_script(_SWAP)

    async def active(self) -> ModelRef | None:
        try:
            label = await self.client.get(self.ACTIVE)
        except RedisError as exc:
            raise ControlUnavailable(f"Redis: {type(exc).__name__}") from exc
        return ModelRef.parse(_text(label)) if label else None

    async def swap(self, record: SwapRecord) -> None:
        keys = [self.ACTIVE, self.AUDIT, self.CHANNEL]
        args = [record.from_label or "", record.to_label, record.to_json()]
        try:
            swapped = await self._swap(keys=keys, args=args)
        except RedisError as exc:
            raise ControlUnavailable(f"Redis: {type(exc).__name__}") from exc
        if not swapped:
            raise PointerMoved("the active model changed meanwhile; retry")

    async def history(self, limit: int = 100) -> list[SwapRecord]:
        try:
            raw = await self.client.lrange(self.AUDIT, 0, limit - 1)
        except RedisError as exc:
            raise ControlUnavailable(f"Redis: {type(exc).__name__}") from exc
        return [SwapRecord.from_json(item) for item in raw]

    async def announcements(self, until: asyncio.Event) -> AsyncIterator[ModelRef]:
        """Reads wake every second to look at ``until``; reconnects quietly when Redis drops."""
        while not until.is_set():
            try:
                async with await subscriber(self.client) as pubsub:
                    await pubsub.subscribe(self.CHANNEL)
                    while not until.is_set():
                        message = await pubsub.get_message(
                            ignore_subscribe_messages=True, timeout=1.0
                        )
                        if message is None:
                            continue
                        try:
                            ref = ModelRef.parse(_text(message["data"]))
                        except ValueError:
                            # one bad message must not end the follower: swaps would then
                            # arrive only by the poll
                            log.warning("skipped a model announcement %r", message["data"])
                            continue
                        yield ref
            except RedisError:
                await asyncio.sleep(1)

    async def close(self) -> None:
        await self.client.aclose()


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


class LocalControl:
    """``active.json`` and ``audit.jsonl`` under the data directory, for one machine."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._listeners: set[asyncio.Queue[ModelRef]] = set()
        self._lock = asyncio.Lock()

    @property
    def _active_path(self) -> Path:
        return self.directory / "active.json"

    @property
    def _audit_path(self) -> Path:
        return self.directory / "audit.jsonl"

    async def active(self) -> ModelRef | None:
        if not self._active_path.exists():
            return None
        return ModelRef.parse(json.loads(self._active_path.read_text())["label"])

    async def swap(self, record: SwapRecord) -> None:
        async with self._lock:
            current = await self.active()
            if (current.label if current else None) != record.from_label:
                raise PointerMoved("the active model changed meanwhile; retry")
            self.directory.mkdir(parents=True, exist_ok=True)
            with self._audit_path.open("a") as audit:
                audit.write(record.to_json() + "\n")
            write_atomically(self._active_path, json.dumps({"label": record.to_label}).encode())
        for listener in self._listeners:
            listener.put_nowait(ModelRef.parse(record.to_label))

    async def history(self, limit: int = 100) -> list[SwapRecord]:
        if not self._audit_path.exists():
            return []
        lines = self._audit_path.read_text().splitlines()
        return [SwapRecord.from_json(line) for line in reversed(lines[-limit:])]

    async def announcements(self, until: asyncio.Event) -> AsyncIterator[ModelRef]:
        queue: asyncio.Queue[ModelRef] = asyncio.Queue()
        self._listeners.add(queue)
        try:
            while not until.is_set():
                try:
                    ref = await asyncio.wait_for(queue.get(), timeout=1.0)
                except TimeoutError:
                    continue
                yield ref
        finally:
            self._listeners.discard(queue)

    async def close(self) -> None:
        return None


def make_control(settings: Settings) -> ModelControl:
    """Redis when a URL is configured, else files under the data directory."""
    if settings.redis_url:
        return RedisControl(settings.redis_url, settings.redis_cluster)
    return LocalControl(settings.data_dir / "control")
