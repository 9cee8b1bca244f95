"""Admission control: bounded renders, a bounded wait, then 503 with a computed Retry-After."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from config.settings import Settings
from render.admission import Backlog, QueueFull, RenderSlots, RenderTimeout
from tests.conftest import serving


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_retry_after_is_the_time_the_backlog_takes_at_the_recent_rate() -> None:
    clock = FakeClock()
    backlog = Backlog(fallback_seconds=20, clock=clock)
    for _ in range(10):  # 10 renders in 5 s: 2 a second
        backlog.finished()
        clock.now += 0.5

    assert backlog.retry_after(9) == 5  # 9 / 2 = 4.5, rounded up
    assert backlog.retry_after(1) == 1  # never "now"
    assert backlog.retry_after(10_000) == 300  # never "in an hour"
    clock.now += 61  # nothing finished within the window: the wait a miss would have had
    assert backlog.retry_after(9) == 20


async def test_a_miss_beyond_the_waiting_bound_is_refused_and_a_waiter_times_out() -> None:
    clock = FakeClock()
    slots = RenderSlots(
        concurrent=1, max_waiting=1, wait_seconds=0.2, backlog=Backlog(7, clock=clock)
    )
    release = asyncio.Event()

    async def render() -> None:
        async with slots.slot():
            await release.wait()

    running = asyncio.create_task(render())
    await asyncio.sleep(0)
    waiting = asyncio.create_task(render())
    await asyncio.sleep(0)
    try:
        with pytest.raises(QueueFull) as refused:
            async with slots.slot():
                pass
        with pytest.raises(RenderTimeout) as timed_out:
            await waiting
    finally:
        release.set()
        await running

    assert refused.value.retry_after == 7  # nothing finished yet: the fallback
    assert timed_out.value.retry_after == 7
    assert slots.queued == 0
    async with slots.slot():  # the slot is free again
        assert slots.queued == 1


async def test_the_embedded_default_bounds_concurrent_misses_with_503_and_retry_after(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        render_threads=1,
        queue_max_length=1,
        request_deadline_seconds=3,
    )
    async with serving(settings) as (_, client):
        image_id = (
            await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
        ).json()["id"]
        # Eight distinct renditions miss together: one renders, one waits, six are refused.
        # (Sizes above the stored copy's, so the network renders each.)
        answers = await asyncio.gather(
            *(client.get(f"/v1/images/{image_id}?format=jpeg&w={w}") for w in range(300, 308))
        )

    served = [a for a in answers if a.status_code == 200]
    refused = [a for a in answers if a.status_code == 503]
    assert len(served) + len(refused) == 8
    assert len(served) >= 2 and len(refused) >= 4  # six, unless a render ends mid-burst
    assert all(a.headers["content-type"] == "image/jpeg" for a in served)
    assert {a.json()["error"]["code"] for a in refused} == {"queue_full"}
    assert {a.headers["retry-after"] for a in refused} == {"3"}  # no render finished yet
