"""One contract for every ledger: the SQLite file (embedded) and Redis (a real server)."""

from __future__ import annotations

import asyncio
import math
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import pytest

from ledger import Ledger, LedgerUnavailable, LocalLedger, RedisLedger, Share, Spending, Totals
from tests.support.servers import (
    RedisClusterServer,
    RedisServer,
    free_port,
    start_redis,
    start_redis_cluster,
)
from tests.support.waiting import until

T = TypeVar("T")


@pytest.fixture(params=["local", "redis", "redis-cluster"])
def open_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Ledger]:
    """Opens the same ledger afresh each call, as a restarted process would."""
    if request.param == "local":
        return lambda: LocalLedger(tmp_path / "ledger.sqlite3")
    cluster = request.param == "redis-cluster"
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_cluster" if cluster else "redis_server"
    )
    return lambda: RedisLedger(server.url, cluster)


@pytest.fixture
async def ledger(open_ledger: Callable[[], Ledger]) -> AsyncIterator[Ledger]:
    opened = open_ledger()
    yield opened
    await _close(opened)


@pytest.fixture(params=["local", "redis", "redis-cluster"])
async def unshared_ledger(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Ledger]:
    """A ledger on a server of its own. The session's Redis servers are shared with the
    workers other tests start, and a worker that spends between two reads counts in the
    recent dollars (CI, 2026-12-04: a decay of one second read as one of 0.13 s)."""
    if request.param == "local":
        opened: Ledger = LocalLedger(tmp_path / "ledger.sqlite3")
        yield opened
        await _close(opened)
        return
    server: RedisServer | RedisClusterServer
    if request.param == "redis":
        server = start_redis(tmp_path / "redis")
    else:
        server = start_redis_cluster(tmp_path / "cluster")
    try:
        opened = RedisLedger(server.url, request.param == "redis-cluster")
        yield opened
        await _close(opened)
    finally:
        server.stop()


async def _close(ledger: Ledger) -> None:
    close = getattr(ledger, "close", None)
    if close is not None:
        await close()


def moved(before: Totals, after: Totals) -> tuple[int, int, int]:
    return (
        after.original_bytes - before.original_bytes,
        after.stored_bytes - before.stored_bytes,
        after.images - before.images,
    )


async def test_an_upload_credits_every_total_and_a_delete_debits_it(ledger: Ledger) -> None:
    before = await ledger.totals()

    await ledger.add(1000, 70, 1)
    credited = await ledger.totals()
    await ledger.add(-1000, -70, -1)

    assert moved(before, credited) == (1000, 70, 1)
    assert await ledger.totals() == before


async def test_concurrent_debits_of_one_image_debit_it_once(
    ledger: Ledger, open_ledger: Callable[[], Ledger]
) -> None:
    """Two processes (two ledger handles) racing twenty debits of the same image."""
    other = open_ledger()
    image_id = f"img-{uuid.uuid4().hex}"
    await ledger.add(1000, 70, 1, "webp")
    before = await ledger.totals()

    debited = await asyncio.gather(
        *(handle.debit_once(image_id, 1000, 70, "webp") for handle in [ledger, other] * 10)
    )
    after = await ledger.totals()

    assert debited.count(True) == 1
    assert moved(before, after) == (-1000, -70, -1)
    share_before, share_after = (
        before.by_representation["webp"],
        after.by_representation.get("webp", Share()),
    )
    assert share_before.images - share_after.images == 1
    assert share_before.stored_bytes - share_after.stored_bytes == 70
    assert await other.debit_once(image_id, 1000, 70, "webp") is False
    await _close(other)


async def test_totals_survive_reopening(ledger: Ledger, open_ledger: Callable[[], Ledger]) -> None:
    await ledger.add(5, 1, 1)
    expected = await ledger.totals()

    reopened = open_ledger()
    try:
        assert await reopened.totals() == expected
    finally:
        await _close(reopened)


async def test_concurrent_updates_are_never_lost(ledger: Ledger) -> None:
    before = await ledger.totals()

    await asyncio.gather(*(ledger.add(3, 2, 1) for _ in range(40)))

    assert moved(before, await ledger.totals()) == (120, 80, 40)


def test_the_savings_ratio_is_the_share_of_original_bytes_not_stored() -> None:
    assert Totals(1000, 250, 3).savings_ratio == 0.75
    assert Totals().savings_ratio == 0.0


async def test_an_unreachable_redis_raises_ledger_unavailable_from_every_call() -> None:
    ledger = RedisLedger(f"redis://127.0.0.1:{free_port()}/0")
    calls: list[Callable[[], Awaitable[object]]] = [
        lambda: ledger.add(1, 1, 1),
        lambda: ledger.debit_once("an-image", 1, 1),
        ledger.totals,
        lambda: ledger.spend({"compute_seconds:render:cpu": 1.0}, 0.1, 60),
        lambda: ledger.integrate("a-gauge", 1.0),
        lambda: ledger.spending(60),
        lambda: ledger.touch({"an-image": 1.0}),
        lambda: ledger.idle(1.0, 10),
        lambda: ledger.forget("an-image"),
    ]
    try:
        for call in calls:
            with pytest.raises(LedgerUnavailable, match=r"^Redis ledger: "):
                await call()
    finally:
        await ledger.close()


async def test_a_redis_that_accepts_and_never_answers_fails_the_call_in_seconds() -> None:
    """A hung server (here a socket that listens and never replies) must not hang the
    request that writes the ledger: the client's 2 s socket timeouts end it."""
    with socket.create_server(("127.0.0.1", 0)) as hung:
        ledger = RedisLedger(f"redis://127.0.0.1:{hung.getsockname()[1]}/0")
        started = time.monotonic()
        try:
            with pytest.raises(LedgerUnavailable, match=r"^Redis ledger: "):
                await asyncio.wait_for(ledger.totals(), timeout=30)
        finally:
            await ledger.close()
    assert time.monotonic() - started < 20


async def test_an_unwritable_ledger_file_raises_ledger_unavailable(tmp_path: Path) -> None:
    (tmp_path / "not-a-dir").write_bytes(b"")
    path = tmp_path / "not-a-dir" / "ledger.sqlite3"
    ledger = LocalLedger(path)

    with pytest.raises(LedgerUnavailable) as refused:
        await ledger.add(1, 1, 1)
    assert str(refused.value).startswith(f"ledger {path}: ")


async def test_a_ledger_file_in_folders_not_made_yet_makes_them(tmp_path: Path) -> None:
    ledger = LocalLedger(tmp_path / "data" / "ledger" / "ledger.sqlite3")

    await ledger.add(1000, 100, 1)
    assert (await ledger.totals()).images == 1


async def test_a_new_ledger_is_empty_and_an_unnamed_share_is_the_x4_copys(
    unshared_ledger: Ledger,
) -> None:
    """A fresh ledger reads zeros and has spent nothing; an add or a debit that names no
    representation moves the x4 copy's share, and a share back at zero is not listed."""
    assert await unshared_ledger.totals() == Totals()
    assert await unshared_ledger.spending(60) == Spending({}, 0.0)

    await unshared_ledger.add(1000, 100, 1)
    assert await unshared_ledger.totals() == Totals(1000, 100, 1, {"x4": Share(1000, 100, 1)})
    assert await unshared_ledger.debit_once("an-image", 1000, 100) is True
    assert await unshared_ledger.totals() == Totals()


async def test_spending_adds_up_across_processes(open_ledger: Callable[[], Ledger]) -> None:
    name = f"compute_seconds:render:test-{uuid.uuid4().hex[:8]}"
    first, second = open_ledger(), open_ledger()
    try:
        await first.spend({name: 1.25}, 0.0, 60)
        await second.spend({name: 0.5, "unrelated": 0.0}, 0.0, 60)
        spent = await open_ledger().spending(60)
    finally:
        await _close(first)
        await _close(second)

    assert spent.amounts[name] == pytest.approx(1.75)


async def timed(call: Awaitable[T]) -> tuple[T, float, float]:
    """The call's result and the wall-clock times around it: the ledger reads its clock (the
    process's, or the Redis server's on the same host) somewhere in between."""
    started = time.time()
    result = await call
    return result, started, time.time()


# The ledger keeps its times to the microsecond (Redis: "%.6f").
CLOCK_SLACK = 1e-3


async def test_recent_dollars_decay_over_the_window(unshared_ledger: Ledger) -> None:
    """Between two reads, the recent dollars shrink by exp(-elapsed / window), for whatever
    elapsed on a loaded machine: the bounds come from the clock around each call."""
    ledger = unshared_ledger
    window = 2.0  # not 1: a window multiplied instead of divided would pass
    before = (await ledger.spending(window)).recent_dollars
    _, spent_from, _ = await timed(ledger.spend({}, 2.0, window))
    just_after, first_from, first_to = await timed(ledger.spending(window))
    await asyncio.sleep(1.0)
    later, second_from, second_to = await timed(ledger.spending(window))

    since_spent = first_to - spent_from + CLOCK_SLACK
    assert 2.0 * math.exp(-since_spent / window) <= just_after.recent_dollars <= before + 2.0
    shortest = second_from - first_to - CLOCK_SLACK
    longest = second_to - first_from + CLOCK_SLACK
    ratio = later.recent_dollars / just_after.recent_dollars
    assert math.exp(-longest / window) <= ratio <= math.exp(-shortest / window)


async def answers(ledger: Ledger) -> bool:
    """Whether the ledger answers a read: a first connection on a loaded machine may take
    longer than the client's connect timeout, which is not what these tests measure."""
    try:
        await ledger.totals()
    except LedgerUnavailable:
        return False
    return True


async def test_a_shared_gauge_is_integrated_over_time_once(
    open_ledger: Callable[[], Ledger],
) -> None:
    """Two processes sampling one gauge: each interval is counted once, on one clock."""
    name = f"gauge-{uuid.uuid4().hex[:8]}"
    first, second = open_ledger(), open_ledger()
    try:
        # both connected (a cluster client first learns the slots)
        await until(lambda: answers(first), "the first ledger connected")
        await until(lambda: answers(second), "the second ledger connected")
        nothing, a_from, a_to = await timed(first.integrate(name, 1000))
        await asyncio.sleep(0.3)
        by_second, b_from, b_to = await timed(second.integrate(name, 3000))
        await asyncio.sleep(0.2)
        by_first, c_from, c_to = await timed(first.integrate(name, 0))
        spent = await first.spending(60)
    finally:
        await _close(first)
        await _close(second)

    assert nothing == 0  # nothing before the first sample
    # Each sample's value, held from its time to the next sample's, whichever process took it.
    assert 1000 * (b_from - a_to - CLOCK_SLACK) <= by_second <= 1000 * (b_to - a_from + CLOCK_SLACK)
    assert 3000 * (c_from - b_to - CLOCK_SLACK) <= by_first <= 3000 * (c_to - b_from + CLOCK_SLACK)
    assert spent.amounts[name] == pytest.approx(by_second + by_first, rel=1e-6)


async def test_idle_images_are_those_last_read_before_the_cutoff(
    open_ledger: Callable[[], Ledger],
) -> None:
    """Kept across a restart (a new handle), and a late touch never moves a read back."""
    tag = uuid.uuid4().hex[:8]
    cold, hot, gone = f"cold-{tag}", f"hot-{tag}", f"gone-{tag}"
    first = open_ledger()
    try:
        await first.touch({cold: 1000.0, hot: 1000.0, gone: 1000.0})
        await first.touch({hot: 5000.0})
        await first.touch({hot: 2000.0})  # an older report of a read, from a slower process
        await first.forget(gone)
    finally:
        await _close(first)
    reopened = open_ledger()
    try:
        idle = await reopened.idle(before=3000.0, limit=10_000)
        await reopened.forget(cold)
    finally:
        await _close(reopened)

    assert cold in idle
    assert hot not in idle and gone not in idle
