"""Upload work stays within its reservations (issue 23, items 3 and 4).

An upload holds the decode budget only while it is decoded and reduced: its quality search
runs later, in compaction, which holds its own estimate of the scoring's memory from a budget
of its own. Two small uploads under a costly floor no longer lock out every other upload, and
an image too large to score within the bound keeps its x4 copy with a receipt that says why.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from fastapi import FastAPI
from PIL import Image

from config.settings import Settings
from imaging import decode_memory_bytes
from render.compaction import Compactor, scoring_memory_bytes
from tests.conftest import costly_options, encode, queue_env, serving, settings_from
from tests.support.compaction import compacted
from tests.support.servers import RedisServer, SeaweedServer
from tests.support.waiting import until


class HeldScoring:
    """Every compaction of the app waits, inside its memory reservation, before it scores."""

    def __init__(self, app: FastAPI) -> None:
        self.compactor: Compactor = app.state.image_service.compactions.compactor
        self.entered = 0
        self.release = asyncio.Event()
        score = self.compactor._score

        async def held(*args: Any) -> Any:
            self.entered += 1
            await self.release.wait()
            return await score(*args)

        self.compactor._score = held  # type: ignore[method-assign]


@contextmanager
def released(held: HeldScoring) -> Iterator[HeldScoring]:
    try:
        yield held
    finally:
        held.release.set()


def checkerboard(side: int) -> bytes:
    """One-pixel squares: no x4 copy or lossy copy meets psnr:99, so guarded searches."""
    board = (np.indices((side, side)).sum(axis=0) % 2 * 255).astype(np.uint8)
    return encode(Image.fromarray(board, "L").convert("RGB"), "PNG")


async def post(client: httpx.AsyncClient, data: bytes, query: str = "") -> httpx.Response:
    return await client.post(
        f"/v1/images{query}", content=data, headers={"content-type": "image/png"}
    )


async def test_an_upload_being_scored_holds_no_decode_reservation(
    embedded_settings: Settings, photo: Image.Image
) -> None:
    """The decode budget fits one 600x600 upload, not two: while a ``guarded psnr:99`` search
    of one is under way, three more uploads of the same size are each decoded and answered."""
    budget = decode_memory_bytes(600, 600) * 3 // 2
    settings = costly_options(embedded_settings).model_copy(
        update={"decode_memory_budget_bytes": budget, "decode_wait_seconds": 1.0}
    )
    async with serving(settings) as (app, client):
        with released(HeldScoring(app)) as held:
            searched = await post(client, checkerboard(600), "?policy=guarded&floor=psnr:99")
            await until(lambda: held.entered == 1, "the search starting")
            reserved_while_scoring = app.state.image_service.decoding.reserved_bytes
            others = [await post(client, encode(photo.resize((600, 600)), "PNG")) for _ in range(3)]
        done = await compacted(client, searched.json()["id"])

    assert searched.status_code == 201
    assert reserved_while_scoring == 0
    assert [answer.status_code for answer in others] == [201, 201, 201]
    assert done["receipt"]["state"] == "done" and done["receipt"]["policy"] == "guarded"


async def test_an_upload_too_large_to_score_within_the_bound_keeps_its_x4_copy(
    embedded_settings: Settings, photo_bytes: bytes
) -> None:
    """602x402 needs about 28 MiB to score; the bound is 16 MiB."""
    settings = embedded_settings.model_copy(update={"compaction_memory_bytes": 16 * 2**20})
    async with serving(settings) as (_, client):
        uploaded = await client.post(
            "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        done = await compacted(client, uploaded.json()["id"])
        read = await client.get(f"/v1/images/{done['id']}")

    assert scoring_memory_bytes(602, 402) > 16 * 2**20
    receipt = done["receipt"]
    assert (receipt["state"], done["representation"]) == ("failed", "x4")
    assert "too large to score" in receipt["error"]
    assert "SRSTORE_COMPACTION_MEMORY_BYTES" in receipt["error"]
    assert receipt["psnr"] is None and receipt["ssim"] is None
    assert read.status_code == 200
    assert Image.open(io.BytesIO(read.content)).size == (602, 402)


async def test_compactions_score_at_once_only_as_many_as_the_memory_bound_fits(
    embedded_settings: Settings, photo_bytes: bytes
) -> None:
    """Two compaction threads, memory for one scoring of the photo: the second waits."""
    cost = scoring_memory_bytes(602, 402)
    settings = embedded_settings.model_copy(
        update={"compaction_threads": 2, "compaction_memory_bytes": cost * 3 // 2}
    )
    async with serving(settings) as (app, client):
        with released(HeldScoring(app)) as held:
            uploads = [
                await client.post(
                    "/v1/images", content=photo_bytes, headers={"content-type": "image/jpeg"}
                )
                for _ in range(2)
            ]
            memory = held.compactor.memory
            await until(
                lambda: held.entered == 1 and memory.waiting == 1, "one scoring, one waiting"
            )
            scoring, reserved = held.entered, memory.reserved_bytes
        done = [await compacted(client, answer.json()["id"]) for answer in uploads]
        left = memory.reserved_bytes

    assert (scoring, reserved) == (1, cost)
    assert [meta["receipt"]["state"] for meta in done] == ["done", "done"]
    assert held.entered == 2 and left == 0


def refused_for_backlog(answer: httpx.Response) -> bool:
    return (
        answer.status_code == 503
        and answer.json()["error"]["code"] == "compaction_backlog_full"
        and int(answer.headers["retry-after"]) >= 1
    )


async def test_an_upload_past_the_compaction_backlog_is_503_and_nothing_is_stored(
    embedded_settings: Settings, photo_bytes: bytes
) -> None:
    """One upload may wait for compaction (``SRSTORE_COMPACTION_QUEUE_MAX=1``); its scoring held."""
    settings = embedded_settings.model_copy(update={"compaction_queue_max": 1})
    jpeg = {"content-type": "image/jpeg"}
    async with serving(settings) as (app, client):
        with released(HeldScoring(app)) as held:
            first = await client.post("/v1/images", content=photo_bytes, headers=jpeg)
            await until(lambda: held.entered == 1, "the first compaction scoring")
            second = await client.post("/v1/images", content=photo_bytes, headers=jpeg)
            listed = (await client.get("/v1/images")).json()["images"]
        await compacted(client, first.json()["id"])
        compactions = app.state.image_service.compactions
        await until(lambda: compactions.waiting == 0, "the first upload leaving the backlog")
        third = await client.post("/v1/images", content=photo_bytes, headers=jpeg)

    assert first.status_code == 201
    assert refused_for_backlog(second)
    assert [image["id"] for image in listed] == [first.json()["id"]]
    assert third.status_code == 201  # the backlog drained


async def test_in_queue_mode_the_backlog_is_the_compaction_stream(
    redis_server: RedisServer, seaweed_server: SeaweedServer, tmp_path: Path, photo_bytes: bytes
) -> None:
    """No worker runs: the first upload's compaction job stays in the stream, the second is 503."""
    env = queue_env(redis_server, seaweed_server)
    settings = settings_from(env, data_dir=tmp_path / "data", compaction_queue_max=1)
    jpeg = {"content-type": "image/jpeg"}
    async with serving(settings) as (_, client):
        first = await client.post("/v1/images", content=photo_bytes, headers=jpeg)
        second = await client.post("/v1/images", content=photo_bytes, headers=jpeg)
        meta = (await client.get(f"/v1/images/{first.json()['id']}/meta")).json()

    assert first.status_code == 201 and meta["receipt"]["state"] == "pending"
    assert refused_for_backlog(second)
