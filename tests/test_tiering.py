"""Tiering by access: reads remembered cheaply and across restarts, idle images compacted.

The tracker and sweep run here against both ledgers (the SQLite file and a real Redis) on a
clock the test moves; the end-to-end behaviour through the API is further below.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import httpx
import pytest
from PIL import Image

from app.services.tiering import Tiering
from config.settings import Settings
from ledger import Ledger, LocalLedger, RedisLedger
from tests.conftest import serving
from tests.support.metrics import samples
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


# Through the API: the behaviour a user sees, in the embedded default and in full mode.

IDLE_SECONDS = 3


@pytest.fixture(params=["embedded", "full"])
def tiered_settings(request: pytest.FixtureRequest) -> Settings:
    base: Settings = request.getfixturevalue(f"{request.param}_settings")
    return base.model_copy(
        update={
            "tiering": True,
            "compact_after_idle": IDLE_SECONDS,
            "access_flush_seconds": 0.2,
            "compaction_sweep_seconds": 0.5,
        }
    )


async def meta_of(client: httpx.AsyncClient, image_id: str) -> dict:
    response = await client.get(f"/v1/images/{image_id}/meta")
    assert response.status_code == 200
    return response.json()  # type: ignore[no-any-return]


async def wait_for_x4(client: httpx.AsyncClient, image_id: str, within: float = 90) -> dict:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        meta = await meta_of(client, image_id)
        if meta["representation"] == "x4" and meta["receipt"]["state"] == "done":
            return meta
        await asyncio.sleep(0.25)
    raise AssertionError(f"{image_id} was not compacted within {within} s")


async def test_a_hot_image_is_its_upload_then_compacted_when_idle_then_rebuilt(
    tiered_settings: Settings, photo_bytes: bytes
) -> None:
    async with serving(tiered_settings) as (_, client):
        created = await client.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        image_id = created.json()["id"]
        before = samples((await client.get("/metrics")).text)
        hot = await client.get(f"/v1/images/{image_id}")
        after = samples((await client.get("/metrics")).text)
        cold_meta = await wait_for_x4(client, image_id)
        cold = await client.get(f"/v1/images/{image_id}")

    assert created.json()["representation"] == "original"
    assert hot.content == photo_bytes  # the upload's very bytes
    assert hot.headers["x-model-version"] == "none"
    for stage in ("render", "encode"):  # nothing decoded, resized or encoded for it
        name = f'srstore_compute_seconds_total{{device="cpu",stage="{stage}"}}'
        assert after.get(name, 0) == before.get(name, 0)
    assert cold_meta["stored_bytes"] < len(photo_bytes) / 4
    assert cold.headers["x-model-version"] != "none"  # rebuilt by the model
    assert Image.open(io.BytesIO(cold.content)).size == Image.open(io.BytesIO(hot.content)).size


async def test_an_image_read_within_the_idle_time_stays_full_size(
    tiered_settings: Settings, photo_bytes: bytes
) -> None:
    async with serving(tiered_settings) as (_, client):
        image_id = (
            await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
        ).json()["id"]
        for _ in range(int(IDLE_SECONDS * 2.5)):  # reads every ~0.5 s, for twice the idle time
            assert (await client.get(f"/v1/images/{image_id}")).content == photo_bytes
            await asyncio.sleep(0.5)
        meta = await meta_of(client, image_id)

    assert meta["representation"] == "original"


async def test_reads_racing_the_compaction_each_get_a_whole_image(
    tiered_settings: Settings, photo_bytes: bytes, photo: Image.Image
) -> None:
    async with serving(tiered_settings) as (_, client):
        image_id = (
            await client.post(
                "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
            )
        ).json()["id"]
        await asyncio.sleep(IDLE_SECONDS - 0.5)  # reads start just before it goes cold
        sizes = []
        compacted = False
        deadline = time.monotonic() + 90
        while not compacted and time.monotonic() < deadline:
            responses = await asyncio.gather(
                *(client.get(f"/v1/images/{image_id}?w=300") for _ in range(2)),
                client.get(f"/v1/images/{image_id}"),
            )
            for response in responses:
                assert response.status_code == 200
                decoded = Image.open(io.BytesIO(response.content))
                decoded.load()  # a truncated or mixed body fails here
                sizes.append(decoded.size)
            compacted = (await meta_of(client, image_id))["representation"] == "x4"
            await asyncio.sleep(0.3)

    assert compacted
    assert set(sizes) == {photo.size, (300, round(300 * photo.height / photo.width))}
