"""Quality receipts and storage policies, as a client and an operator see them.

Every upload is scored against its original through the read path; ``guarded`` and
``smallest`` keep a full-size copy (or the upload itself) when the 4x copy would fall below
the floor. Scores here are recomputed from their definition on the bytes a GET returns.
"""

from __future__ import annotations

import io
import math
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image, ImageDraw, ImageFont
from pydantic import SecretStr, ValidationError
from skimage.metrics import structural_similarity

from config.settings import Settings
from imaging import FullCodecName, encode_full
from tests.conftest import costly_options, encode, serving
from tests.support.compaction import compacted, keys
from tests.support.metrics import samples

TOKEN = "test-admin-token-123"
AUTH = {"authorization": f"Bearer {TOKEN}"}


def small_text(background: Image.Image | None = None) -> Image.Image:
    """Lines of 11-pixel text: strokes a pixel wide, which a 4x reduction cannot keep."""
    image = background.copy() if background else Image.new("RGB", (480, 200), "white")
    draw = ImageDraw.Draw(image)
    font = ImageFont.load_default(size=11)
    for line in range(image.height // 14):
        draw.text((4, 4 + 14 * line), "The quick brown fox jumps over 0123456789", "black", font)
    return image


@pytest.fixture
async def served(settings: Settings) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    """Every mode, with ``?policy=`` and ``?floor=`` allowed to this loopback client."""
    async with serving(costly_options(settings)) as pair:
        yield pair


@pytest.fixture(scope="module")
def text_png() -> bytes:
    """A page of small text: a tiny PNG that no lossy full-size copy undercuts."""
    return encode(small_text(), "PNG")


@pytest.fixture(scope="module")
def captioned_png(photo: Image.Image) -> bytes:
    """Small text over a photograph, as a PNG: the 4x copy fails, AVIF beats the upload."""
    return encode(small_text(photo), "PNG")


def studio_y(image: Image.Image) -> np.ndarray:
    rgb = np.asarray(image.convert("RGB"), np.float64)
    return 16 + (65.481 * rgb[..., 0] + 128.553 * rgb[..., 1] + 24.966 * rgb[..., 2]) / 255


def psnr_by_definition(served: Image.Image, original: Image.Image) -> float:
    mse = float(np.mean((studio_y(served) - studio_y(original)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255**2 / mse)


def ssim_by_definition(served: Image.Image, original: Image.Image) -> float:
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


def as_float(value: float | str) -> float:
    return float(value)  # JSON carries an infinite PSNR as the string "Infinity"


def decoded(data: bytes) -> Image.Image:
    return Image.open(io.BytesIO(data)).convert("RGB")


async def upload(client: httpx.AsyncClient, data: bytes, content_type: str, **query: str) -> dict:
    """The upload's metadata once compaction has chosen what to keep."""
    response = await client.post(
        "/v1/images", params=query, content=data, headers={"content-type": content_type}
    )
    assert response.status_code == 201, response.text
    assert response.json()["receipt"]["state"] == "pending"
    return dict(await compacted(client, response.json()["id"]))


async def test_every_upload_carries_a_receipt_that_scores_what_a_read_returns(
    client: httpx.AsyncClient, photo_bytes: bytes, captioned_png: bytes
) -> None:
    for data, content_type in ((photo_bytes, "image/jpeg"), (captioned_png, "image/png")):
        meta = await upload(client, data, content_type, policy="guarded", floor="ssim:0.9")
        served = await client.get(f"/v1/images/{meta['id']}")
        receipt = (await client.get(f"/v1/images/{meta['id']}/meta")).json()["receipt"]

        original = decoded(data)
        assert receipt == meta["receipt"]
        assert as_float(receipt["psnr"]) == pytest.approx(
            psnr_by_definition(decoded(served.content), original), abs=1e-6
        )
        assert receipt["ssim"] == pytest.approx(
            ssim_by_definition(decoded(served.content), original), abs=1e-4
        )
        assert receipt["ssim"] >= 0.9 and receipt["meets_floor"] is True
        assert receipt["stored_bytes"] == meta["stored_bytes"]
        assert receipt["representation"] == meta["representation"]


async def test_a_smooth_photo_meets_the_floor_and_keeps_the_x4_copy(
    client: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes, "image/jpeg", policy="guarded", floor="ssim:0.9")
    served = await client.get(f"/v1/images/{meta['id']}")

    assert meta["representation"] == "x4"
    assert (meta["stored_width"], meta["stored_height"]) == (151, 101)
    assert meta["receipt"]["model"] == served.headers["x-model-version"] != "none"
    assert meta["receipt"]["x4"] is None  # the x4 copy's own score is the receipt's


async def test_small_text_over_a_photo_fails_the_floor_and_is_kept_full_size_as_avif(
    client: httpx.AsyncClient, captioned_png: bytes
) -> None:
    meta = await upload(client, captioned_png, "image/png", policy="guarded", floor="ssim:0.9")
    image_id = meta["id"]
    first = await client.get(f"/v1/images/{image_id}")
    second = await client.get(f"/v1/images/{image_id}")
    stored = await client.get(f"/v1/images/{image_id}/stored")

    assert meta["receipt"]["x4"]["ssim"] < 0.9  # what the x4 copy would have served
    assert meta["representation"] == "avif"
    assert 5 <= meta["receipt"]["quality"] <= 100
    assert meta["stored_bytes"] == len(stored.content) < len(captioned_png)
    assert stored.headers["content-type"] == "image/avif"
    assert decoded(stored.content).size == (meta["width"], meta["height"])
    assert (meta["stored_width"], meta["stored_height"]) == (602, 402)
    assert first.headers["x-model-version"] == second.headers["x-model-version"] == "none"
    assert (first.headers["x-cache"], second.headers["x-cache"]) == ("MISS", "HIT")
    assert first.headers["content-type"] == "image/png"
    assert ssim_by_definition(decoded(first.content), decoded(captioned_png)) >= 0.9


async def test_the_kept_copy_can_be_webp_instead_of_avif(
    tmp_path: Path, captioned_png: bytes
) -> None:
    """SRSTORE_FULL_CODEC=webp: the copy kept when the x4 copy fails is a full-size WebP,
    at the lowest quality that meets the floor, and reads of it run no model."""
    settings = Settings(data_dir=tmp_path, full_codec="webp")
    async with serving(costly_options(settings)) as (_, client):
        meta = await upload(client, captioned_png, "image/png", policy="guarded", floor="ssim:0.9")
        stored = await client.get(f"/v1/images/{meta['id']}/stored")
        served = await client.get(f"/v1/images/{meta['id']}")

    assert meta["receipt"]["x4"]["ssim"] < 0.9
    assert meta["representation"] == "webp"
    assert 5 <= meta["receipt"]["quality"] <= 100
    assert stored.headers["content-type"] == "image/webp"
    assert meta["stored_bytes"] == len(stored.content) < len(captioned_png)
    assert decoded(stored.content).size == (meta["width"], meta["height"])
    assert served.headers["x-model-version"] == "none"
    assert ssim_by_definition(decoded(served.content), decoded(captioned_png)) >= 0.9


async def test_a_page_of_small_text_falls_back_to_the_uploaded_bytes(
    client: httpx.AsyncClient, text_png: bytes
) -> None:
    meta = await upload(client, text_png, "image/png", policy="guarded", floor="psnr:32")
    served = await client.get(f"/v1/images/{meta['id']}")

    assert meta["receipt"]["x4"]["psnr"] < 32
    assert meta["representation"] == "original"
    assert meta["stored_bytes"] == len(text_png)
    assert served.content == text_png
    assert served.headers["x-model-version"] == "none"
    assert meta["receipt"]["psnr"] == "Infinity" and meta["receipt"]["ssim"] == 1.0


async def test_another_format_or_size_of_a_full_size_copy_is_made_without_the_network(
    embedded_settings: Settings, captioned_png: bytes, text_png: bytes
) -> None:
    async with serving(costly_options(embedded_settings)) as (_, client):
        for data in (captioned_png, text_png):
            meta = await upload(client, data, "image/png", policy="guarded", floor="ssim:0.9")
            webp = await client.get(f"/v1/images/{meta['id']}", params={"format": "webp"})
            small = await client.get(f"/v1/images/{meta['id']}", params={"w": 240})

            assert meta["representation"] in ("avif", "original")
            assert webp.headers["content-type"] == "image/webp"
            assert webp.headers["x-model-version"] == small.headers["x-model-version"] == "none"
            assert decoded(webp.content).size == (meta["width"], meta["height"])
            assert decoded(small.content).width == 240


async def test_downscale_keeps_the_x4_copy_even_below_the_floor(
    embedded_settings: Settings, text_png: bytes
) -> None:
    async with serving(costly_options(embedded_settings)) as (_, client):
        meta = await upload(client, text_png, "image/png", floor="ssim:0.9")

    assert embedded_settings.storage_policy == "downscale"
    assert meta["representation"] == "x4"
    assert meta["receipt"]["policy"] == "downscale"
    assert meta["receipt"]["meets_floor"] is False
    assert meta["receipt"]["ssim"] < 0.9


@pytest.mark.parametrize("floor", ["ssim:0.9", "psnr:36"])
async def test_smallest_never_stores_more_than_guarded(
    embedded_settings: Settings,
    photo_bytes: bytes,
    captioned_png: bytes,
    text_png: bytes,
    floor: str,
) -> None:
    uploads = ((photo_bytes, "image/jpeg"), (captioned_png, "image/png"), (text_png, "image/png"))
    async with serving(costly_options(embedded_settings)) as (_, client):
        for data, content_type in uploads:
            guarded = await upload(client, data, content_type, policy="guarded", floor=floor)
            smallest = await upload(client, data, content_type, policy="smallest", floor=floor)

            assert smallest["stored_bytes"] <= guarded["stored_bytes"] <= len(data)
            assert smallest["receipt"]["meets_floor"] is guarded["receipt"]["meets_floor"] is True


async def test_smallest_keeps_the_x4_copy_when_it_is_the_fewest_bytes_that_meet_the_floor(
    embedded_settings: Settings, photo: Image.Image
) -> None:
    """A soft image (a photo enlarged 4x) rebuilds from its x4 copy almost exactly, and a
    floor just under that copy's own SSIM asks more of a full-size AVIF than the copy's
    bytes: ``smallest`` must still weigh the x4 copy against the others, and keep it."""
    soft = photo.resize((150, 100), Image.Resampling.LANCZOS).resize((600, 400))
    data = encode(soft, "PNG")
    async with serving(costly_options(embedded_settings)) as (_, client):
        scored = await upload(client, data, "image/png", policy="downscale")
        floor = f"ssim:{math.floor(scored['receipt']['ssim'] * 1e4) / 1e4}"
        guarded = await upload(client, data, "image/png", policy="guarded", floor=floor)
        smallest = await upload(client, data, "image/png", policy="smallest", floor=floor)

    assert guarded["representation"] == smallest["representation"] == "x4"
    assert smallest["stored_bytes"] == guarded["stored_bytes"] == scored["stored_bytes"]
    assert smallest["receipt"]["meets_floor"] is True


async def test_smallest_keeps_a_lower_quality_x4_copy_that_meets_the_floor_in_fewer_bytes(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    """The floor is what a WebP q70 x4 copy of the photo scores: ``guarded`` keeps the default
    x4 copy (WebP q90), ``smallest`` one of its cheaper x4 copies, which reads end to end."""
    q70_settings = costly_options(Settings(data_dir=tmp_path / "q70", stored_quality=70))
    async with serving(q70_settings) as (_, client):
        q70 = await upload(client, photo_bytes, "image/jpeg", policy="downscale")
    floor = f"ssim:{math.floor(q70['receipt']['ssim'] * 1e4) / 1e4}"
    async with serving(costly_options(Settings(data_dir=tmp_path / "data"))) as (_, client):
        guarded = await upload(client, photo_bytes, "image/jpeg", policy="guarded", floor=floor)
        smallest = await upload(client, photo_bytes, "image/jpeg", policy="smallest", floor=floor)
        served = await client.get(f"/v1/images/{smallest['id']}")
        stored = await client.get(f"/v1/images/{smallest['id']}/stored")
        thumbnail = await client.get(f"/v1/images/{smallest['id']}", params={"w": 100})

    receipt = smallest["receipt"]
    assert guarded["representation"] == smallest["representation"] == "x4"
    assert smallest["stored_bytes"] <= q70["stored_bytes"] < guarded["stored_bytes"]
    assert receipt["codec"] in ("webp", "avif") and receipt["quality"] <= 85
    assert stored.headers["content-type"] == f"image/{receipt['codec']}"
    assert len(stored.content) == smallest["stored_bytes"]
    assert decoded(stored.content).size == (smallest["stored_width"], smallest["stored_height"])
    assert served.headers["x-model-version"] != "none"
    assert receipt["ssim"] == pytest.approx(
        ssim_by_definition(decoded(served.content), decoded(photo_bytes)), abs=1e-4
    )
    assert receipt["ssim"] >= float(floor.removeprefix("ssim:")) and receipt["meets_floor"]
    assert decoded(thumbnail.content).width == 100


def fewest_bytes_meeting(image: Image.Image, codec: FullCodecName, floor: float) -> int:
    """The bytes of the lowest quality of ``codec`` whose decoded copy meets ``floor``."""
    for quality in range(5, 101):
        data = encode_full(image, codec, quality)
        if ssim_by_definition(decoded(data).convert("RGB"), image) >= floor:
            return len(data)
    raise AssertionError(f"no quality of {codec} meets ssim:{floor}")


async def test_smallest_keeps_a_full_size_webp_copy_when_it_is_the_fewest_bytes_that_meet_the_floor(
    embedded_settings: Settings,
) -> None:
    """Colour noise: nothing of it survives a 4x reduction, so every x4 copy fails the floor,
    and WebP meets the floor in about a quarter fewer bytes than AVIF (whose container alone
    costs some 300 bytes at this size); both in far fewer than the PNG upload."""
    rng = np.random.default_rng(64)
    noise = Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8))
    data, floor = encode(noise, "PNG"), 0.97
    async with serving(costly_options(embedded_settings)) as (_, client):
        x4 = await upload(client, data, "image/png", policy="downscale")
        meta = await upload(client, data, "image/png", policy="smallest", floor=f"ssim:{floor}")
        stored = await client.get(f"/v1/images/{meta['id']}/stored")
        served = await client.get(f"/v1/images/{meta['id']}")

    assert x4["receipt"]["ssim"] < floor
    assert meta["representation"] == "webp"
    assert stored.headers["content-type"] == "image/webp"
    assert len(stored.content) == meta["stored_bytes"]
    assert ssim_by_definition(decoded(served.content), noise) >= floor
    assert meta["stored_bytes"] < fewest_bytes_meeting(noise, "avif", floor) < len(data)


@pytest.mark.parametrize("side", [1, 4, 8, 10])
async def test_an_image_smaller_than_the_ssim_window_is_still_held_to_the_floor(
    embedded_settings: Settings, side: int
) -> None:
    """SSIM's window is 11 pixels: a smaller image is scored over the whole plane, and its
    receipt carries a real score, never ``scoring failed`` with the x4 copy kept anyway."""
    noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    async with serving(costly_options(embedded_settings)) as (_, client):
        meta = await upload(
            client, encode(Image.fromarray(noise), "PNG"), "image/png", policy="guarded"
        )
        served = decoded((await client.get(f"/v1/images/{meta['id']}")).content)

    receipt = meta["receipt"]
    assert receipt["error"] is None
    assert receipt["meets_floor"] is True and receipt["ssim"] >= 0.9
    assert served.size == (side, side)


async def test_the_policy_and_floor_settings_apply_to_uploads_without_a_query(
    tmp_path: Path, text_png: bytes
) -> None:
    settings = Settings(
        data_dir=tmp_path / "data", storage_policy="guarded", quality_floor="psnr:30"
    )
    async with serving(costly_options(settings)) as (_, client):
        meta = await upload(client, text_png, "image/png")

    assert (meta["receipt"]["policy"], meta["receipt"]["floor"]) == ("guarded", "psnr:30")
    assert meta["representation"] == "original"


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ({"floor": "ssim"}, "invalid_floor"),
        ({"floor": "ssim:1.5"}, "invalid_floor"),
        ({"floor": "butteraugli:2"}, "invalid_floor"),
        ({"floor": "psnr:nan"}, "invalid_floor"),
        ({"policy": "cheapest"}, "invalid_request"),
    ],
)
async def test_a_bad_policy_or_floor_is_a_422_and_nothing_is_stored(
    embedded_settings: Settings, photo_bytes: bytes, query: dict, code: str
) -> None:
    async with serving(costly_options(embedded_settings)) as (_, client):
        response = await client.post(
            "/v1/images", params=query, content=photo_bytes, headers={"content-type": "image/jpeg"}
        )
        values = samples((await client.get("/metrics")).text)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert values["srstore_fleet_images"] == 0


def test_a_malformed_floor_setting_is_refused_at_start() -> None:
    with pytest.raises(ValidationError, match="floor"):
        Settings(quality_floor="ssim:2")


async def test_the_ledger_and_metrics_count_each_representation_and_deletes_debit_them(
    client: httpx.AsyncClient,
    settings: Settings,
    photo_bytes: bytes,
    captioned_png: bytes,
    text_png: bytes,
) -> None:
    """The ledger is fleet-wide (shared by the tests in full mode): compare before and after.
    Compaction counts receipts where it runs: this process, or a worker in queue mode."""
    before = samples((await client.get("/metrics")).text)
    uploads = [(photo_bytes, "image/jpeg"), (captioned_png, "image/png"), (text_png, "image/png")]
    kept = [
        await upload(client, data, content_type, policy="guarded", floor="ssim:0.9")
        for data, content_type in uploads
    ]
    after = samples((await client.get("/metrics")).text)

    def moved(name: str, representation: str) -> float:
        series = f'{name}{{representation="{representation}"}}'
        return after.get(series, 0) - before.get(series, 0)

    assert [m["representation"] for m in kept] == ["x4", "avif", "original"]
    for meta, (data, _) in zip(kept, uploads, strict=True):
        representation = meta["representation"]
        assert moved("srstore_fleet_representation_images", representation) == 1
        assert (
            moved("srstore_fleet_representation_stored_bytes", representation)
            == (meta["stored_bytes"])
        )
        assert moved("srstore_fleet_representation_original_bytes", representation) == len(data)
        here = 0 if settings.inference == "queue" else 1
        assert (
            moved("srstore_representation_stored_bytes_total", representation)
            == here * meta["stored_bytes"]
        )
        assert moved("srstore_receipt_ssim_count", representation) == here
    assert after["srstore_fleet_stored_bytes"] - before["srstore_fleet_stored_bytes"] == sum(
        m["stored_bytes"] for m in kept
    )

    for meta in kept:
        await client.get(f"/v1/images/{meta['id']}")
        assert (await client.delete(f"/v1/images/{meta['id']}")).status_code == 204
        assert (await client.get(f"/v1/images/{meta['id']}")).status_code == 404
    after = samples((await client.get("/metrics")).text)

    for representation in ("x4", "avif", "original"):
        assert moved("srstore_fleet_representation_images", representation) == 0
        assert moved("srstore_fleet_representation_stored_bytes", representation) == 0
    assert after["srstore_fleet_images"] == before["srstore_fleet_images"]


async def test_a_model_swap_after_uploads_changes_only_what_the_x4_copies_serve(
    settings: Settings, photo_bytes: bytes, captioned_png: bytes
) -> None:
    configured = settings.model_copy(update={"admin_token": SecretStr(TOKEN)})
    async with serving(costly_options(configured)) as (application, client):
        rebuilt = await upload(client, photo_bytes, "image/jpeg", policy="guarded")
        full = await upload(client, captioned_png, "image/png", policy="guarded")
        before = [await client.get(f"/v1/images/{m['id']}") for m in (rebuilt, full)]
        swapped = await client.put(
            "/v1/admin/models/active",
            json={"name": "srcnn", "version": 2, "force": True},
            headers=AUTH,
        )
        models = application.state.models
        for _ in range(100):
            if models.label == "srcnn:2":
                break
            await models.refresh()
        after = [await client.get(f"/v1/images/{m['id']}") for m in (rebuilt, full)]
        later = await upload(client, photo_bytes, "image/jpeg", policy="guarded")

    assert swapped.status_code == 200, swapped.text
    assert (rebuilt["representation"], full["representation"]) == ("x4", "avif")
    assert before[0].headers["x-model-version"] == "espcn:2"
    assert after[0].headers["x-model-version"] == "srcnn:2"
    assert after[0].headers["x-cache"] == "MISS"
    assert before[1].headers["x-model-version"] == after[1].headers["x-model-version"] == "none"
    assert after[1].headers["x-cache"] == "HIT"  # a full-size rendition outlives the swap
    assert after[1].content == before[1].content
    assert later["receipt"]["model"] == "srcnn:2"
    assert rebuilt["receipt"]["model"] == "espcn:2"


class BrokenUpscaler:
    label = "broken:1"

    def upscale(self, *args: object) -> object:
        raise RuntimeError("the scoring path broke")


class BrokenModels:
    """What compaction scores with, broken; reads keep the service's own models."""

    async def get(self, label: str) -> BrokenUpscaler:
        return BrokenUpscaler()


async def test_a_scoring_failure_keeps_the_x4_copy_and_the_receipt_says_so(
    embedded_settings: Settings, captioned_png: bytes
) -> None:
    async with serving(costly_options(embedded_settings)) as (application, client):
        application.state.image_service.compactions.compactor.models = BrokenModels()
        meta = await upload(client, captioned_png, "image/png", policy="guarded")
        served = await client.get(f"/v1/images/{meta['id']}")
        values = samples((await client.get("/metrics")).text)

    assert meta["representation"] == "x4"
    assert meta["receipt"]["state"] == "failed"
    assert meta["receipt"]["error"] == "scoring failed: RuntimeError"
    assert meta["receipt"]["psnr"] is None and meta["receipt"]["meets_floor"] is None
    assert served.status_code == 200
    assert values["srstore_receipt_failures_total"] >= 1


async def test_original_keeps_the_upload_from_the_first_read_on_with_no_compaction(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    """There is nothing to choose: the 201 already says what is kept, no pending upload waits,
    and a read straight after it is the upload's very bytes (no x4 copy in between)."""
    async with serving(costly_options(Settings(data_dir=tmp_path / "data"))) as (app, client):
        response = await client.post(
            "/v1/images",
            params={"policy": "original"},
            content=photo_bytes,
            headers={"content-type": "image/jpeg"},
        )
        meta = response.json()
        served = await client.get(f"/v1/images/{meta['id']}")
        stored = await keys(app.state.image_service.store, meta["id"])

    assert response.status_code == 201
    assert (meta["representation"], meta["stored_bytes"]) == ("original", len(photo_bytes))
    assert meta["receipt"]["state"] == "done" and meta["receipt"]["meets_floor"] is True
    assert stored == [f"images/{meta['id']}"]
    assert served.content == photo_bytes
    assert served.headers["x-model-version"] == "none"


async def test_full_keeps_the_full_size_copy_at_the_floor_even_where_x4_would_pass(
    tmp_path: Path, photo_bytes: bytes
) -> None:
    async with serving(costly_options(Settings(data_dir=tmp_path / "data"))) as (_, client):
        meta = await upload(client, photo_bytes, "image/jpeg", policy="full", floor="ssim:0.9")
        x4 = await upload(client, photo_bytes, "image/jpeg", policy="guarded", floor="ssim:0.9")
        served = await client.get(f"/v1/images/{meta['id']}")

    assert x4["representation"] == "x4"
    assert meta["representation"] == "avif"
    assert meta["receipt"]["meets_floor"] is True
    assert ssim_by_definition(decoded(served.content), decoded(photo_bytes)) >= 0.9
    assert meta["stored_bytes"] < len(photo_bytes)
