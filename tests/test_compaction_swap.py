"""After compaction swaps in another stored copy, every read serves the new copy.

Reads while an upload is pending are made from the x4 copy written at ingest, and cached. When
``smallest`` then keeps a cheaper x4 copy, the cached renditions describe bytes no longer
stored: a read after the swap must get the new copy's bytes under a new ETag, in the process
that compacted and in one that only served the pending reads (its own in-process cache in the
embedded default; the shared Redis in full mode).
"""

from __future__ import annotations

import asyncio
import io
import math
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from config.settings import Settings
from tests.conftest import costly_options, serving
from tests.support.compaction import HeldCompactions, compacted


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


def studio_y(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), np.float64)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def ssim(served: Image.Image, original: Image.Image) -> float:
    return float(
        structural_similarity(
            studio_y(served),
            studio_y(original),
            data_range=255,
            gaussian_weights=True,
            sigma=1.5,
            use_sample_covariance=False,
        )
    )


async def q70_floor(tmp_path: Path, photo_bytes: bytes) -> str:
    """What the photo's WebP q70 x4 copy scores: ``smallest`` keeps a copy cheaper than the
    default WebP q90 one to meet it."""
    settings = costly_options(Settings(data_dir=tmp_path / "q70", stored_quality=70))
    async with serving(settings) as (_, client):
        response = await client.post(
            "/v1/images",
            params={"policy": "downscale"},
            content=photo_bytes,
            headers={"content-type": "image/jpeg"},
        )
        done = await compacted(client, response.json()["id"])
    return f"ssim:{math.floor(done['receipt']['ssim'] * 1e4) / 1e4}"


async def reads(client: httpx.AsyncClient, image_id: str) -> dict[str, httpx.Response]:
    url = f"/v1/images/{image_id}"
    return {
        "plain": await client.get(url),
        "thumbnail": await client.get(url, params={"w": 100}),
        "stored": await client.get(f"{url}/stored"),
    }


@pytest.mark.parametrize("mode", ["embedded", "full"])
async def test_renditions_cached_while_pending_are_not_served_after_a_swap(
    mode: str, request: pytest.FixtureRequest, tmp_path: Path, photo_bytes: bytes
) -> None:
    floor = await q70_floor(tmp_path, photo_bytes)
    settings: Settings = request.getfixturevalue(f"{mode}_settings")
    settings = costly_options(settings.model_copy(update={"compaction_sweep_seconds": 3600}))
    async with serving(settings) as (first, compacting), serving(settings) as (_, other):
        held = HeldCompactions(first)
        response = await compacting.post(
            "/v1/images",
            params={"policy": "smallest", "floor": floor},
            content=photo_bytes,
            headers={"content-type": "image/jpeg"},
        )
        image_id = response.json()["id"]
        await asyncio.wait_for(held.scored.wait(), 120)
        before = {
            name: await reads(client, image_id)
            for name, client in (("a", compacting), ("b", other))
        }
        again = await reads(other, image_id)  # cached now, where the cache is per process
        held.release.set()
        done = await compacted(compacting, image_id)
        after = {
            name: await reads(client, image_id)
            for name, client in (("a", compacting), ("b", other))
        }

    receipt = done["receipt"]
    assert response.json()["stored_bytes"] > done["stored_bytes"]  # another x4 copy is kept
    assert done["representation"] == "x4" and receipt["codec"] in ("webp", "avif")
    assert again["plain"].headers["x-cache"] == "HIT"
    for process in ("a", "b"):
        old, new = before[process], after[process]
        for name in ("plain", "thumbnail", "stored"):
            assert new[name].status_code == 200
            assert new[name].headers["etag"] != old[name].headers["etag"], (process, name)
            assert new[name].content != old[name].content, (process, name)
        assert len(new["stored"].content) == done["stored_bytes"]
        assert new["stored"].headers["content-type"] == f"image/{receipt['codec']}"
        assert receipt["ssim"] == pytest.approx(
            ssim(decoded(new["plain"].content), decoded(photo_bytes)), abs=1e-4
        )
