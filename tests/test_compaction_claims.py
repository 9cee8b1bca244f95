"""One compaction per pending upload, however many processes sweep the store.

Every process of ``srstore serve --workers N`` (and every API replica sharing Redis and the
bucket) lists ``pending/`` and would compact what it finds. Each compaction claims the image
first: while one process compacts it, the others are refused and leave it alone; a process
killed while it holds the claim leaves the image pending, and another takes it over. In the
embedded default (two apps on one data directory, as two ``serve`` processes) and in full
mode (two apps on one Redis and one bucket).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from config.settings import Settings
from render.compaction import compaction_lease
from tests.conftest import serving
from tests.support.compaction import (
    GatedCompactions,
    HeldCompactions,
    claimed_elsewhere,
    compacted,
    keys,
    until_pending_dropped,
)
from tests.support.waiting import until

MODES = ["embedded", "full"]


def quiet(settings: Settings) -> Settings:
    """No periodic sweep: each test sweeps when it means to."""
    return settings.model_copy(update={"compaction_sweep_seconds": 3600})


async def upload(client: httpx.AsyncClient, data: bytes) -> str:
    response = await client.post("/v1/images", content=data, headers={"content-type": "image/jpeg"})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def state(client: httpx.AsyncClient, image_id: str) -> str:
    return str((await client.get(f"/v1/images/{image_id}/meta")).json()["receipt"]["state"])


@pytest.mark.parametrize("mode", MODES)
async def test_a_second_process_sweeping_the_store_leaves_an_upload_being_compacted_alone(
    mode: str, request: pytest.FixtureRequest, photo_bytes: bytes
) -> None:
    settings = quiet(request.getfixturevalue(f"{mode}_settings"))
    async with serving(settings) as (first, client), serving(settings) as (second, _):
        held = HeldCompactions(first)  # the first process compacts it, held before the swap
        other = GatedCompactions(second)
        other.gate.set()
        image_id = await upload(client, photo_bytes)
        await asyncio.wait_for(held.scored.wait(), 60)

        await second.state.image_service.compactions.sweep()  # it finds the upload pending
        await until(lambda: other.outcomes, "the second process's compaction", timeout=60)
        while_held = await state(client, image_id)
        held.release.set()
        done = await compacted(client, image_id)
        store = first.state.image_service.store
        await until_pending_dropped(store, image_id)
        left = await keys(store, image_id)

    assert other.outcomes == ["busy"]
    assert while_held == "pending"
    assert done["receipt"]["state"] == "done"
    assert left == [f"images/{image_id}"]


@pytest.mark.parametrize("mode", MODES)
async def test_a_compaction_claimed_by_a_killed_process_is_taken_over(
    mode: str, request: pytest.FixtureRequest, photo_bytes: bytes
) -> None:
    settings = quiet(request.getfixturevalue(f"{mode}_settings"))
    env = {
        "SRSTORE_DATA_DIR": str(settings.data_dir),
        "SRSTORE_COMPACTION_LEASE_SECONDS": "2",
        **({"SRSTORE_REDIS_URL": settings.redis_url} if settings.redis_url else {}),
    }
    async with serving(settings) as (app, client):
        compactions = app.state.image_service.compactions
        gated = GatedCompactions(app)  # until the other process has claimed it
        image_id = await upload(client, photo_bytes)
        claimer = claimed_elsewhere(env, compaction_lease(image_id))
        try:
            gated.gate.set()
            await until(lambda: gated.outcomes, "the compaction queued at upload", timeout=60)
            while_claimed = await state(client, image_id)
        finally:
            claimer.kill()  # SIGKILL: it gives nothing back
            claimer.wait()

        async def swept() -> bool:
            await compactions.sweep()
            await until(lambda: compactions.waiting == 0, "the sweep's compaction", timeout=120)
            return await state(client, image_id) != "pending"

        await until(swept, "the dead claimer's compaction taken over", timeout=60)
        done = await compacted(client, image_id)

    assert gated.outcomes[0] == "busy"
    assert while_claimed == "pending"
    assert gated.outcomes[-1] == "done"
    assert done["receipt"]["state"] == "done"
