"""CPU work apart from I/O: renditions made from a stored copy run on a pool of their own, are
admitted by their estimated cost, and one client cannot hold more than its share."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from app.services import delivery
from app.services.dependencies import DependencyMonitor
from app.services.work import ClientBusy, CpuAdmission, CpuBusy
from config.settings import Settings
from imaging.costs import rendition_seconds
from render import inference
from render.admission import FairSlots
from render.priority import HEAVY_NICENESS, MAX_NICENESS
from tests.conftest import serving


def test_a_client_past_its_share_is_told_when_to_come_back() -> None:
    admission = CpuAdmission(threads=1, backlog_seconds=100, client_share=0.5)
    with admission.admit("a", 30):
        with pytest.raises(ClientBusy) as refused, admission.admit("a", 30):
            pass
        assert refused.value.retry_after == 30  # its own 30 s ahead of it, on one thread
        with admission.admit("b", 30):
            assert admission.admitted == 60
    assert admission.admitted == 0
    with admission.admit("a", 30), admission.admit("a", 20):
        assert admission.held_by("a") == 50


def test_past_the_backlog_everyone_is_refused_with_the_time_it_takes_to_clear() -> None:
    admission = CpuAdmission(threads=2, backlog_seconds=10, client_share=1.0)
    with admission.admit("a", 12), admission.admit("b", 6):
        with pytest.raises(CpuBusy) as refused, admission.admit("c", 4):
            pass
        assert refused.value.retry_after == 9  # 18 CPU-s on two threads
        with admission.admit("c", 2):
            pass


def test_work_larger_than_any_bound_runs_on_an_idle_server() -> None:
    admission = CpuAdmission(threads=1, backlog_seconds=1, client_share=0.1)
    with admission.admit("a", 50):
        with pytest.raises(ClientBusy), admission.admit("a", 0.01):
            pass
        with pytest.raises(CpuBusy), admission.admit("b", 0.01):
            pass


class Held:
    """Stands in for the stored-copy render: blocks until released, notes its thread."""

    def __init__(self, real: Callable[..., bytes]) -> None:
        self.real = real
        self.release = threading.Event()
        self.entered = threading.Event()
        self.threads: list[str] = []

    def __call__(self, *args: Any) -> bytes:
        self.threads.append(threading.current_thread().name)
        self.entered.set()
        assert self.release.wait(30), "never released"
        return self.real(*args)


@pytest.fixture
def held(monkeypatch: pytest.MonkeyPatch) -> Held:
    stand_in = Held(delivery.render_stored_copy)
    monkeypatch.setattr(delivery, "render_stored_copy", stand_in)
    return stand_in


@pytest.fixture
async def one_cpu_thread(tmp_path: Path) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    settings = Settings(
        data_dir=tmp_path,
        cpu_threads=1,
        dependency_check_seconds=0.2,
        dependency_timeout_seconds=0.5,
    )
    async with serving(settings) as pair:
        yield pair


async def _upload(client: httpx.AsyncClient, photo_bytes: bytes) -> str:
    response = await client.post("/v1/images", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def _wait_for(event: threading.Event) -> None:
    assert await asyncio.to_thread(event.wait, 30)


async def test_thumbnails_holding_every_cpu_thread_leave_reads_and_readiness_alone(
    one_cpu_thread: tuple[FastAPI, httpx.AsyncClient], held: Held, photo_bytes: bytes
) -> None:
    """Twelve thumbnails stuck in their render: more than the old shared pool's threads."""
    _, client = one_cpu_thread
    image_id = await _upload(client, photo_bytes)
    thumbnails = [
        asyncio.create_task(client.get(f"/v1/images/{image_id}?w={40 + i}")) for i in range(12)
    ]
    await _wait_for(held.entered)

    stored = await asyncio.wait_for(client.get(f"/v1/images/{image_id}/stored"), 5)
    assert stored.status_code == 200
    await asyncio.sleep(1.0)  # several ping rounds while the CPU pool is held
    assert (await client.get("/readyz")).status_code == 200
    held.release.set()

    answers = await asyncio.gather(*thumbnails)
    assert [a.status_code for a in answers] == [200] * 12
    assert held.threads and all(name.startswith("cpu") for name in held.threads)


def _thumbnail_cost(width: int, height: int, w: int) -> float:
    out_h = round(height * w / width)
    return rendition_seconds(width * height // 16, w * out_h, "jpeg")


async def test_one_client_past_its_share_gets_429_while_another_is_served(
    tmp_path: Path, held: Held, photo_bytes: bytes
) -> None:
    """Room for two thumbnails' work, one per client: the first client's second is refused,
    a second client's is queued and served, a third client's finds the backlog full."""
    one = _thumbnail_cost(602, 402, 60)
    settings = Settings(
        data_dir=tmp_path, cpu_threads=1, cpu_backlog_seconds=one * 2.5, cpu_client_share=0.4
    )
    async with serving(settings) as (app, first):
        image_id = await _upload(first, photo_bytes)
        other = httpx.ASGITransport(app=app, client=("198.51.100.7", 4000))
        async with httpx.AsyncClient(transport=other, base_url="http://srstore") as second:
            running = asyncio.create_task(first.get(f"/v1/images/{image_id}?w=60"))
            await _wait_for(held.entered)

            refused = await first.get(f"/v1/images/{image_id}?w=61")
            queued = asyncio.create_task(second.get(f"/v1/images/{image_id}?w=62"))
            admission = app.state.image_service.cpu.admission
            while admission.held_by("198.51.100.7") == 0:  # admitted, queued behind the first
                await asyncio.sleep(0.01)
            third = httpx.ASGITransport(app=app, client=("198.51.100.8", 4000))
            async with httpx.AsyncClient(transport=third, base_url="http://srstore") as late:
                crowded = await late.get(f"/v1/images/{image_id}?w=63&h=40&fit=fill")
            held.release.set()
            assert (await running).status_code == 200
            assert (await queued).status_code == 200

    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "client_busy"
    assert int(refused.headers["retry-after"]) >= 1
    assert crowded.status_code == 503
    assert crowded.json()["error"]["code"] == "cpu_busy"
    assert int(crowded.headers["retry-after"]) >= 1


def _niceness() -> int:
    return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())


def _lowered() -> int:
    """A heavy lane's niceness, seen from this (ordinary) thread."""
    return min(MAX_NICENESS, _niceness() + HEAVY_NICENESS)


async def test_a_heavy_rendition_waits_and_runs_apart_at_a_lower_priority(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo_bytes: bytes
) -> None:
    """A thumbnail estimated over SRSTORE_HEAVY_WORK_SECONDS takes neither the only ordinary
    CPU thread nor its priority: while it is stuck, the same client's small one is served."""
    stuck, entered = threading.Event(), threading.Event()
    niceness: dict[str, int] = {}
    real = delivery.render_stored_copy

    def stand_in(*args: Any) -> bytes:
        lane = threading.current_thread().name.rpartition("_")[0]
        niceness[lane] = _niceness()
        if lane == "cpu-heavy":
            entered.set()
            assert stuck.wait(30), "never released"
        return real(*args)

    monkeypatch.setattr(delivery, "render_stored_copy", stand_in)
    small, large = _thumbnail_cost(602, 402, 60), _thumbnail_cost(602, 402, 150)
    settings = Settings(data_dir=tmp_path, cpu_threads=1, heavy_work_seconds=(small + large) / 2)
    async with serving(settings) as (_, client):
        image_id = await _upload(client, photo_bytes)
        heavy = asyncio.create_task(client.get(f"/v1/images/{image_id}?w=150"))
        await _wait_for(entered)
        thumbnail = await asyncio.wait_for(client.get(f"/v1/images/{image_id}?w=60"), 10)
        stuck.set()
        assert thumbnail.status_code == 200
        assert (await heavy).status_code == 200
    assert niceness == {
        "cpu": _niceness(),
        "cpu-heavy": min(MAX_NICENESS, _niceness() + HEAVY_NICENESS),
    }


async def test_a_heavy_model_render_runs_on_the_engines_lower_priority_lane(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, photo_bytes: bytes
) -> None:
    """An enlargement over the bound renders on ``render-heavy``, a plain read on ``render``."""
    lanes: dict[str, int] = {}
    real = inference.render

    def noting(*args: Any) -> bytes:
        lanes[threading.current_thread().name.rpartition("_")[0]] = _niceness()
        return real(*args)

    monkeypatch.setattr(inference, "render", noting)
    plain = rendition_seconds(150 * 100, 600 * 400, "jpeg", model=True)
    settings = Settings(data_dir=tmp_path, heavy_work_seconds=plain * 2)
    async with serving(settings) as (_, client):
        image_id = await _upload(client, photo_bytes)
        await client.get(f"/v1/images/{image_id}/meta")
        assert (await client.get(f"/v1/images/{image_id}?format=png")).status_code == 200
        enlarged = await client.get(f"/v1/images/{image_id}?w=1800&enlarge=true&format=png")
        assert enlarged.status_code == 200
    assert lanes == {
        "render": _niceness(),
        "render-heavy": min(MAX_NICENESS, _niceness() + HEAVY_NICENESS),
    }


async def test_a_freed_thread_goes_to_the_client_that_runs_least() -> None:
    """A client with a burst queued waits behind a newcomer, and never runs more than its
    share of the threads."""
    slots = FairSlots(slots=2, per_client=1)
    order: list[str] = []
    release = asyncio.Event()

    async def work(client: str) -> None:
        await slots.acquire(client, timeout=5)
        order.append(client)
        await release.wait()
        slots.release(client)

    burst = [asyncio.create_task(work("attacker")) for _ in range(4)]
    await asyncio.sleep(0)
    newcomer = asyncio.create_task(work("newcomer"))
    await asyncio.sleep(0.05)
    assert order == ["attacker", "newcomer"]  # one thread each, the burst waits
    assert slots.running("attacker") == 1
    release.set()
    await asyncio.gather(*burst, newcomer)
    assert order.count("attacker") == 4


async def test_a_wait_past_its_deadline_leaves_no_slot_behind() -> None:
    slots = FairSlots(slots=1, per_client=1)
    await slots.acquire("a", timeout=1)
    with pytest.raises(TimeoutError):
        await slots.acquire("b", timeout=0.05)
    slots.release("a")
    await slots.acquire("b", timeout=1)  # the abandoned wait took nothing
    assert slots.free == 0
    slots.release("b")
    assert slots.free == 1


async def test_listings_together_hold_at_most_a_quarter_of_the_io_threads(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    """Four clients paging at once: the metadata reads behind them never take more than a
    quarter of the I/O threads, so the readiness ping and single reads always find one."""
    settings = Settings(data_dir=tmp_path, io_threads=8)
    async with serving(settings) as (app, client):
        for _ in range(12):
            await _upload(client, photo_bytes)
        store = app.state.image_service.store
        reading, most = 0, 0
        head = store.head

        async def counted(key: str) -> object:
            nonlocal reading, most
            reading += 1
            most = max(most, reading)
            try:
                await asyncio.sleep(0.01)  # a store that takes a moment to answer
                return await head(key)
            finally:
                reading -= 1

        store.head = counted
        try:
            pages = await asyncio.gather(*(client.get("/v1/images?limit=100") for _ in range(4)))
        finally:
            del store.head
    assert [len(p.json()["images"]) for p in pages] == [12] * 4
    assert most == 8 // 4


async def test_one_missed_ping_does_not_make_the_process_unready() -> None:
    """A ping a starved process could not finish in time is not an outage; two in a row are."""
    answers = iter([None, TimeoutError(), None, TimeoutError(), TimeoutError(), None])

    async def ping() -> None:
        answer = next(answers)
        if answer is not None:
            raise answer

    monitor = DependencyMonitor({"object_store": ping}, interval=60, timeout=1)
    seen = []
    for _ in range(6):
        await monitor._check("object_store", ping)
        seen.append(monitor.up()["object_store"])
    assert seen == [True, True, True, True, False, True]
