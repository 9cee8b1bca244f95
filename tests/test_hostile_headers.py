"""Headers a hostile client shapes to cost the server: every parser is linear, every header
bounded in length before any parser sees it, and a number too long for Python is no 500."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
import pytest
from fastapi import FastAPI
from hypothesis import given, settings
from hypothesis import strategies as st

from app.services.conditional import (
    Preconditions,
    RangeNotSatisfiable,
    byte_range,
    not_modified,
)
from config.settings import Settings
from tests.conftest import serving

ETAG = '"0123456789abcdef0123456789abcdef"'
MODIFIED = datetime(2026, 1, 1, tzinfo=UTC)
HEADER_LIMIT = Settings.model_fields["max_header_bytes"].default

# The pieces an attacker repeats: the old entity-tag pattern backtracked over runs of spaces
# and after an opening quote, so a 16 KB run of them cost 6-8 CPU-seconds.
PIECES = [" ", "\t", '"', ",", "W/", "a", 'W/"', '"a"', " ,", '" ', "*"]

# Generous: a linear parse of 8 KiB takes tens of microseconds here; the quadratic pattern
# took about 2 s for an 8 KB header. The bound only has to tell the two apart on a busy machine.
PARSE_BOUND_SECONDS = 0.25

adversarial_headers = st.builds(
    lambda prefix, piece, suffix: (
        (prefix + piece * (HEADER_LIMIT // len(piece)))[:HEADER_LIMIT] + suffix
    ),
    st.sampled_from(["", "a", '"', "W/", '"a", ']),
    st.sampled_from(PIECES),
    st.sampled_from(["", "a", '"', ",", ETAG]),
)


@settings(max_examples=60, deadline=None)
@given(header=adversarial_headers)
def test_if_none_match_parses_in_linear_time(header: str) -> None:
    started = time.process_time()
    not_modified(Preconditions(if_none_match=header), ETAG, MODIFIED)
    assert time.process_time() - started < PARSE_BOUND_SECONDS


@settings(max_examples=60, deadline=None)
@given(header=adversarial_headers)
def test_if_range_and_range_parse_in_linear_time(header: str) -> None:
    started = time.process_time()
    byte_range(f"bytes=0-{header}", header, 1000, ETAG, MODIFIED)
    byte_range("bytes=0-10", header, 1000, ETAG, MODIFIED)
    assert time.process_time() - started < PARSE_BOUND_SECONDS


@given(
    tags=st.lists(
        st.tuples(st.booleans(), st.text(st.characters(min_codepoint=0x23, max_codepoint=0x7E))),
        max_size=5,
    ),
    spaces=st.sampled_from(["", " ", "  \t"]),
)
def test_a_well_formed_list_matches_exactly_when_it_names_the_tag(
    tags: list[tuple[bool, str]], spaces: str
) -> None:
    members = [f'{"W/" if weak else ""}"{opaque}"' for weak, opaque in tags]
    header = f"{spaces},{spaces}".join(members)
    named = any(f'"{opaque}"' == ETAG for _, opaque in tags)
    assert not_modified(Preconditions(if_none_match=header), ETAG, MODIFIED) is named


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (f"a{' ' * 16000}a", False),
        (f'"x", {" " * 4000}{ETAG}', True),
        (f'W/{ETAG}, "never closed', True),
        (f'"never closed {ETAG}', False),
        (f'{ETAG}junk, "b"', False),
        (f"junk, {ETAG}", True),
        (f'"a,b", {ETAG}', True),
    ],
)
def test_malformed_members_are_skipped_and_the_rest_still_count(header: str, matches: bool) -> None:
    assert not_modified(Preconditions(if_none_match=header), ETAG, MODIFIED) is matches


def test_byte_positions_longer_than_any_body_are_past_its_end() -> None:
    many = "9" * 5000  # past Python's 4300-digit limit on int(): this was a 500
    assert byte_range(f"bytes=0-{many}", None, 100, ETAG, MODIFIED) == (0, 99)
    assert byte_range(f"bytes=-{many}", None, 100, ETAG, MODIFIED) == (0, 99)
    assert byte_range(f"bytes={'0' * 5000}7-9", None, 100, ETAG, MODIFIED) == (7, 9)
    with pytest.raises(RangeNotSatisfiable):
        byte_range(f"bytes={many}-", None, 100, ETAG, MODIFIED)


@pytest.fixture
async def embedded(embedded_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    pair: tuple[FastAPI, httpx.AsyncClient]
    async with serving(embedded_settings) as pair:
        yield pair[1]


async def _uploaded(client: httpx.AsyncClient, photo_bytes: bytes) -> str:
    response = await client.post("/v1/images", files={"file": ("a.jpg", photo_bytes, "image/jpeg")})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


async def test_a_header_over_the_limit_is_431_before_any_route_reads_it(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await _uploaded(embedded, photo_bytes)
    at_limit = "a" + " " * (HEADER_LIMIT - 2) + "a"
    for path in (f"/v1/images/{image_id}", f"/v1/images/{image_id}/meta", "/healthz"):
        response = await embedded.get(path, headers={"If-None-Match": at_limit})
        assert response.status_code == 200, (path, response.text)
        over = await embedded.get(path, headers={"If-None-Match": at_limit + " "})
        assert over.status_code == 431, path
        assert over.json()["error"]["code"] == "header_too_large"
        assert "if-none-match" in over.json()["error"]["message"]
        assert over.headers["cache-control"] == "no-store"


async def test_a_range_with_thousands_of_digits_is_a_range_not_a_500(
    embedded: httpx.AsyncClient, photo_bytes: bytes
) -> None:
    image_id = await _uploaded(embedded, photo_bytes)
    url = f"/v1/images/{image_id}/stored"
    whole = await embedded.get(url)
    many = "9" * 5000
    tail = await embedded.get(url, headers={"Range": f"bytes=0-{many}"})
    assert tail.status_code == 206
    assert tail.content == whole.content
    past = await embedded.get(url, headers={"Range": f"bytes={many}-"})
    assert past.status_code == 416
    assert past.headers["content-range"] == f"bytes */{len(whole.content)}"
