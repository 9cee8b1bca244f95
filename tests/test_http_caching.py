"""HTTP caching as RFC 9110 has it: ETags, conditional requests, ranges, Cache-Control."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime, parsedate_to_datetime
from functools import cached_property
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given
from hypothesis import strategies as st

from app.services.conditional import RangeNotSatisfiable, byte_range
from config.settings import Settings
from imaging import OutputEncoding
from tests.conftest import serving
from tests.support.compaction import compacted, evict


async def upload(client: httpx.AsyncClient, data: bytes) -> dict:
    response = await client.post("/v1/images", files={"file": ("a.jpg", data, "image/jpeg")})
    assert response.status_code == 201, response.text
    await compacted(client, response.json()["id"])  # the receipt is done, the read cached
    return dict(response.json())


@pytest.fixture
async def served_embedded(
    embedded_settings: Settings,
) -> AsyncIterator[tuple[FastAPI, httpx.AsyncClient]]:
    async with serving(embedded_settings) as pair:
        yield pair


@pytest.fixture
def embedded(served_embedded: tuple[FastAPI, httpx.AsyncClient]) -> httpx.AsyncClient:
    return served_embedded[1]


def http_date(moment: datetime) -> str:
    return format_datetime(moment, usegmt=True)


async def test_equivalent_urls_are_one_render_and_one_etag(
    client: httpx.AsyncClient, app: FastAPI, settings: Settings, photo_bytes: bytes
) -> None:
    meta = await upload(client, photo_bytes)
    await evict(app, meta["id"])
    url = f"/v1/images/{meta['id']}"
    renderer = app.state.image_service.renderer
    renders = []
    original = renderer.render

    async def counting(key: object) -> bytes:
        renders.append(key)
        return await original(key)  # type: ignore[no-any-return]

    renderer.render = counting
    try:
        plain = await client.get(url)
        same = [
            await client.get(url, params=params)
            for params in (
                {"format": "jpeg"},
                {"format": "jpeg", "quality": settings.output_jpeg_quality},
                {"w": meta["width"]},
                {"w": 5000, "h": 5000},  # inside, not enlarged: the upload's own size
            )
        ]
    finally:
        del renderer.render

    assert len(renders) == 1
    assert {r.headers["etag"] for r in same} == {plain.headers["etag"]}
    assert [r.headers["x-cache"] for r in same] == ["HIT"] * 4
    assert {r.content for r in same} == {plain.content}


async def test_the_etag_changes_with_everything_that_changes_the_bytes(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    variants = [
        {},
        {"format": "webp"},
        {"format": "webp", "quality": 50},
        {"w": 300},
        {"w": 300, "h": 100, "fit": "cover"},
        {"w": 300, "h": 100, "fit": "fill"},
        {"w": 300, "h": 100, "fit": "contain"},
    ]
    tags = [(await embedded.get(url, params=params)).headers["etag"] for params in variants]

    assert len(set(tags)) == len(variants)


class WebpMethod4(Settings):
    """WebP's method is not a setting (README, 'Codecs'); a release may still change it."""

    @cached_property
    def output_encoding(self) -> OutputEncoding:
        return replace(super().output_encoding, webp_method=4)


@pytest.mark.parametrize(
    ("fmt", "changed"),
    [
        ("avif", {"output_avif_speed": 6}),
        ("png", {"output_png_compress_level": 6}),
        ("webp", {}),  # WebpMethod4
    ],
)
async def test_encoder_settings_are_part_of_the_etag(
    tmp_path: Path, photo_bytes: bytes, fmt: str, changed: dict[str, int]
) -> None:
    """The same image served again after the encoder settings changed (AVIF speed, PNG
    level, WebP method) has another ETag, so no cache keeps the old bytes under it."""
    before = Settings(data_dir=tmp_path)
    after = (WebpMethod4 if fmt == "webp" else Settings)(data_dir=tmp_path, **changed)
    tags = []
    async with serving(before) as (_, client):
        image_id = (await upload(client, photo_bytes))["id"]
        tags.append((await client.get(f"/v1/images/{image_id}", params={"format": fmt})).headers)
    for settings in (after, before):  # the same data directory, so the same image
        async with serving(settings) as (_, client):
            response = await client.get(f"/v1/images/{image_id}", params={"format": fmt})
            tags.append(response.headers)

    assert [t["x-model-version"] for t in tags] == [tags[0]["x-model-version"]] * 3
    assert tags[1]["etag"] != tags[0]["etag"] == tags[2]["etag"]


@pytest.mark.parametrize(
    ("if_none_match", "status"),
    [
        ("{etag}", 304),
        ("W/{etag}", 304),  # weak comparison (RFC 9110 §13.1.2)
        ('"other", {etag}', 304),
        ('"other",W/{etag} ,"third"', 304),
        ("*", 304),
        ('"other"', 200),
        ('W/"other", "more"', 200),
        ("{etag_unquoted}", 200),  # not an entity tag
    ],
)
async def test_if_none_match_compares_weakly_and_takes_lists_and_star(
    client: httpx.AsyncClient, photo_bytes: bytes, if_none_match: str, status: int
) -> None:
    meta = await upload(client, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    etag = (await client.get(url)).headers["etag"]
    header = if_none_match.format(etag=etag, etag_unquoted=etag.strip('"'))

    response = await client.get(url, headers={"if-none-match": header})

    assert response.status_code == status
    if status == 304:
        assert response.content == b""
        assert response.headers["etag"] == etag
        assert "max-age" in response.headers["cache-control"]


async def test_a_revalidation_costs_no_render(
    embedded: httpx.AsyncClient,
    served_embedded: tuple[FastAPI, httpx.AsyncClient],
    photo_bytes: bytes,
) -> None:
    """The ETag is known from the request alone, so even an uncached rendition revalidates."""
    app = served_embedded[0]
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    etag = (await embedded.get(url, params={"w": 500})).headers["etag"]
    await app.state.image_service.cache.drop_image(meta["id"])

    response = await embedded.get(url, params={"w": 500}, headers={"if-none-match": etag})

    assert response.status_code == 304


@pytest.mark.parametrize(
    ("offset", "status"),
    [(timedelta(0), 304), (timedelta(hours=1), 304), (timedelta(seconds=-1), 200)],
)
async def test_last_modified_is_the_upload_time_and_if_modified_since_uses_it(
    client: httpx.AsyncClient, photo_bytes: bytes, offset: timedelta, status: int
) -> None:
    meta = await upload(client, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    uploaded = datetime.fromisoformat(meta["created_at"]).replace(microsecond=0)

    first = await client.get(url)
    response = await client.get(url, headers={"if-modified-since": http_date(uploaded + offset)})

    assert parsedate_to_datetime(first.headers["last-modified"]) == uploaded
    assert response.status_code == status


async def test_if_none_match_takes_precedence_over_if_modified_since(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    later = http_date(datetime.now(UTC) + timedelta(days=1))

    response = await embedded.get(
        url, headers={"if-none-match": '"not-it"', "if-modified-since": later}
    )
    garbage = await embedded.get(url, headers={"if-modified-since": "yesterday, more or less"})

    assert response.status_code == 200
    assert garbage.status_code == 200


async def test_range_requests_get_206_and_416(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    whole = await embedded.get(url)
    length = len(whole.content)

    first = await embedded.get(url, headers={"range": "bytes=0-99"})
    tail = await embedded.get(url, headers={"range": "bytes=-50"})
    rest = await embedded.get(url, headers={"range": f"bytes={length - 10}-"})
    beyond = await embedded.get(url, headers={"range": f"bytes={length}-"})
    several = await embedded.get(url, headers={"range": "bytes=0-1,5-6"})

    assert whole.headers["accept-ranges"] == "bytes"
    assert first.status_code == 206 and first.content == whole.content[:100]
    assert first.headers["content-range"] == f"bytes 0-99/{length}"
    assert tail.status_code == 206 and tail.content == whole.content[-50:]
    assert rest.content == whole.content[-10:]
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{length}"
    assert beyond.json()["error"]["code"] == "range_not_satisfiable"
    assert several.status_code == 200 and several.content == whole.content


async def test_if_range_serves_the_range_only_for_the_current_representation(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    etag = (await embedded.get(url)).headers["etag"]

    current = await embedded.get(url, headers={"range": "bytes=0-9", "if-range": etag})
    stale = await embedded.get(url, headers={"range": "bytes=0-9", "if-range": '"old"'})

    assert current.status_code == 206
    assert stale.status_code == 200


async def test_if_range_never_matches_a_weak_tag_or_a_rendition_date(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    """RFC 9110 §13.1.5: a weak tag never matches. An image's Last-Modified is the upload
    time, which a model swap does not change (see test_admin_models), so no date validates
    a range of a rendition."""
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}"
    whole = await embedded.get(url)
    ranged = {"range": "bytes=0-9"}

    weak = await embedded.get(url, headers={**ranged, "if-range": "W/" + whole.headers["etag"]})
    dated = await embedded.get(url, headers={**ranged, "if-range": whole.headers["last-modified"]})

    assert (weak.status_code, weak.content) == (200, whole.content)
    assert (dated.status_code, dated.content) == (200, whole.content)


async def test_if_range_on_the_stored_copy_takes_its_exact_date_or_strong_tag(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    """The stored bytes of an id never change, so their Last-Modified is strong; a later or
    earlier date than it, or a weak tag, gets the whole copy."""
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}/stored"
    whole = await embedded.get(url)
    modified = parsedate_to_datetime(whole.headers["last-modified"])

    def ask(if_range: str) -> Awaitable[httpx.Response]:
        return embedded.get(url, headers={"range": "bytes=5-14", "if-range": if_range})

    by_date = await ask(whole.headers["last-modified"])
    by_tag = await ask(whole.headers["etag"])
    later = await ask(http_date(modified + timedelta(seconds=1)))
    earlier = await ask(http_date(modified - timedelta(seconds=1)))
    weak = await ask("W/" + whole.headers["etag"])

    for part in (by_date, by_tag):
        assert (part.status_code, part.content) == (206, whole.content[5:15])
        assert part.headers["content-range"] == f"bytes 5-14/{len(whole.content)}"
    for refused in (later, earlier, weak):
        assert (refused.status_code, refused.content) == (200, whole.content)


@given(
    length=st.integers(0, 10_000),
    first=st.integers(0, 12_000) | st.none(),
    last=st.integers(0, 12_000) | st.none(),
)
def test_a_served_range_always_lies_within_the_body(
    length: int, first: int | None, last: int | None
) -> None:
    header = f"bytes={'' if first is None else first}-{'' if last is None else last}"
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    try:
        span = byte_range(header, None, length, '"x"', moment)
    except RangeNotSatisfiable:
        assert length == 0 or (first is not None and first >= length) or last == 0
        return
    if span is not None:
        assert 0 <= span[0] <= span[1] < length


@pytest.mark.parametrize("path", ["/stored", "/meta"])
async def test_head_and_validators_on_stored_and_meta(
    client: httpx.AsyncClient, photo_bytes: bytes, path: str
) -> None:
    meta = await upload(client, photo_bytes)
    url = f"/v1/images/{meta['id']}{path}"

    got = await client.get(url)
    head = await client.head(url)
    again = await client.get(url, headers={"if-none-match": got.headers["etag"]})

    assert got.status_code == head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == str(len(got.content))
    assert "max-age" in got.headers["cache-control"]
    assert again.status_code == 304


async def test_a_degraded_answer_is_cached_briefly(tmp_path: Path, photo_bytes: bytes) -> None:
    """No weights: bicubic serves, and clients must come back soon for the real thing."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    settings = Settings(data_dir=tmp_path / "data", weights_dir=empty)
    async with serving(settings) as (_, client):
        meta = await upload(client, photo_bytes)
        degraded = await client.get(f"/v1/images/{meta['id']}")
        thumb = await client.get(f"/v1/images/{meta['id']}", params={"w": 100})

    assert degraded.headers["x-model-version"] == "bicubic"
    assert degraded.headers["cache-control"] == "public, max-age=60"
    assert thumb.headers["cache-control"] == "public, max-age=86400"  # no model was needed


async def test_both_max_ages_follow_their_settings(tmp_path: Path, photo_bytes: bytes) -> None:
    """SRSTORE_HTTP_MAX_AGE_SECONDS and its degraded twin at values other than the defaults:
    a model's render, the stored copy and the metadata take the first; bicubic the second."""
    empty = tmp_path / "no-weights"
    empty.mkdir()
    ages = {"http_max_age_seconds": 1234, "http_degraded_max_age_seconds": 7}
    served = {}
    for name, extra in (("model", {}), ("bicubic", {"weights_dir": empty})):
        settings = Settings(data_dir=tmp_path / name, **ages, **extra)  # type: ignore[arg-type]
        async with serving(settings) as (_, client):
            url = f"/v1/images/{(await upload(client, photo_bytes))['id']}"
            for path in ("", "/stored", "/meta"):
                served[name + path] = (await client.get(url + path)).headers

    assert served["model"]["x-model-version"] != "bicubic"
    assert served["bicubic"]["x-model-version"] == "bicubic"
    assert served["bicubic"]["cache-control"] == "public, max-age=7"
    for name in ("model", "model/stored", "model/meta", "bicubic/stored", "bicubic/meta"):
        assert (name, served[name]["cache-control"]) == (name, "public, max-age=1234")


@pytest.mark.parametrize("path", ["/stored", "/meta"])
@pytest.mark.parametrize(
    ("offset", "status"),
    [(timedelta(0), 304), (timedelta(hours=1), 304), (timedelta(seconds=-1), 200)],
)
async def test_if_modified_since_on_stored_and_meta(
    embedded: httpx.AsyncClient, photo_bytes: bytes, path: str, offset: timedelta, status: int
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}{path}"
    first = await embedded.get(url)
    modified = parsedate_to_datetime(first.headers["last-modified"])

    response = await embedded.get(url, headers={"if-modified-since": http_date(modified + offset)})

    assert modified == datetime.fromisoformat(meta["created_at"]).replace(microsecond=0)
    assert response.status_code == status
    assert response.content == (b"" if status == 304 else first.content)
    assert response.headers["etag"] == first.headers["etag"]


async def test_range_requests_on_the_stored_copy(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)
    url = f"/v1/images/{meta['id']}/stored"
    whole = await embedded.get(url)
    length = len(whole.content)

    first = await embedded.get(url, headers={"range": "bytes=0-99"})
    tail = await embedded.get(url, headers={"range": "bytes=-50"})
    beyond = await embedded.get(url, headers={"range": f"bytes={length}-"})

    assert whole.headers["accept-ranges"] == "bytes"
    assert (first.status_code, first.content) == (206, whole.content[:100])
    assert first.headers["content-range"] == f"bytes 0-99/{length}"
    assert (tail.status_code, tail.content) == (206, whole.content[-50:])
    assert beyond.status_code == 416
    assert beyond.headers["content-range"] == f"bytes */{length}"


async def test_a_normal_answer_keeps_the_long_max_age(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    meta = await upload(embedded, photo_bytes)

    response = await embedded.get(f"/v1/images/{meta['id']}")

    assert response.headers["x-model-version"] != "bicubic"
    assert response.headers["cache-control"] == "public, max-age=86400"


@pytest.mark.parametrize(
    ("path", "status"),
    [("/v1/images/AAAAAAAAAAAAAAAAAAAAAA", 404), ("/v1/images/bad id", 400), ("/nowhere", 404)],
)
async def test_errors_are_not_cacheable(
    embedded: httpx.AsyncClient, path: str, status: int
) -> None:
    response = await embedded.get(path)

    assert response.status_code == status
    assert response.headers["cache-control"] == "no-store"


async def test_an_image_deleted_by_another_process_is_gone_here_too(
    full_settings: Settings, photo_bytes: bytes
) -> None:
    """Each process remembers metadata; a delete elsewhere must still end every answer."""
    async with serving(full_settings) as (_, here), serving(full_settings) as (_, there):
        meta = await upload(here, photo_bytes)
        url = f"/v1/images/{meta['id']}"
        etag = (await here.get(url)).headers["etag"]
        thumb_etag = (await here.get(url, params={"w": 100})).headers["etag"]

        assert (await there.delete(url)).status_code == 204

        plain = await here.get(url)
        thumb = await here.get(url, params={"w": 100})
        revalidated = await here.get(url, headers={"if-none-match": etag})
        thumb_revalidated = await here.get(
            url, params={"w": 100}, headers={"if-none-match": thumb_etag}
        )

    assert [plain.status_code, thumb.status_code] == [404, 404]
    assert [revalidated.status_code, thumb_revalidated.status_code] == [404, 404]


async def test_the_openapi_document_names_every_delivery_option(
    embedded: httpx.AsyncClient,
) -> None:
    schema = (await embedded.get("/openapi.json")).json()
    image = schema["paths"]["/v1/images/{image_id}"]["get"]
    stored = schema["paths"]["/v1/images/{image_id}/stored"]

    names = {p["name"] for p in image["parameters"]}
    assert {"w", "h", "fit", "dpr", "enlarge", "format", "quality", "sig"} <= names
    assert {"accept", "if-none-match", "if-modified-since", "range", "if-range"} <= names
    assert {"200", "206", "304", "403", "416"} <= set(image["responses"])
    assert {"ETag", "Last-Modified", "Vary", "Cache-Control"} <= set(
        image["responses"]["200"]["headers"]
    )
    assert {"get", "head"} <= set(stored)
    assert "avif" in str(next(p for p in image["parameters"] if p["name"] == "format"))
