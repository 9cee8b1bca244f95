"""Tiering by access: reads remembered cheaply and across restarts, idle images compacted.

The tracker and sweep run here against both ledgers (the SQLite file and a real Redis) on a
clock the test moves; the end-to-end behaviour through the API is further below.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from app.services.tiering import Tiering
from config.settings import Settings
from ledger import Ledger, LocalLedger, RedisLedger
from tests.support.servers import RedisServer

IDLE = 600.0


@pytest.fixture(params=["local", "redis"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Ledger]:
    if request.param == "local":
        return lambda: LocalLedger(tmp_path / "ledger.sqlite3")
    server: RedisServer = request.getfixturevalue("redis_server")
    return lambda: RedisLedger(server.url)


class Clock:
    def __init__(self) -> None:
        self.now = 2_000_000_000.0  # far past any real read another test recorded

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def compacted() -> AsyncIterator[list[str]]:
    yield []


def tiering(ledger: Ledger, clock: Clock, compacted: list[str], mine: str) -> Tiering:
    """Compacts (records) only this test's images: the session's Redis is shared."""

    async def compact(image_id: str) -> None:
        if image_id.endswith(mine):
            compacted.append(image_id)

    settings = Settings(tiering=True, compact_after_idle=IDLE)
    return Tiering(settings, ledger, compact, clock)


async def test_an_image_unread_for_the_idle_time_is_compacted_once(
    open_ledger: Callable[[], Ledger], compacted: list[str], tmp_path: Path
) -> None:
    clock = Clock()
    tiers = tiering(open_ledger(), clock, compacted, tmp_path.name)
    await tiers.uploaded(f"read-{tmp_path.name}")
    await tiers.uploaded(f"unread-{tmp_path.name}")

    clock.now += IDLE / 2
    tiers.read(f"read-{tmp_path.name}")
    await tiers.sweep()
    assert compacted == []
    clock.now += IDLE / 2 + 1
    await tiers.sweep()
    assert compacted == [f"unread-{tmp_path.name}"]

    clock.now += IDLE
    await tiers.sweep()
    assert compacted == [f"unread-{tmp_path.name}", f"read-{tmp_path.name}"]
    await tiers.sweep()
    assert len(compacted) == 2


async def test_reads_survive_a_restart(
    open_ledger: Callable[[], Ledger], compacted: list[str], tmp_path: Path
) -> None:
    """Reads flushed by one process are known to the next (no object-store write)."""
    clock = Clock()
    before = tiering(open_ledger(), clock, compacted, tmp_path.name)
    await before.uploaded(f"kept-hot-{tmp_path.name}")
    clock.now += IDLE - 10
    before.read(f"kept-hot-{tmp_path.name}")
    await before.stop()  # flushes

    clock.now += 20  # idle since the upload, not since the read
    after = tiering(open_ledger(), clock, compacted, tmp_path.name)
    await after.sweep()

    assert f"kept-hot-{tmp_path.name}" not in compacted
