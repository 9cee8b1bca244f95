"""Conditional and range requests, header by header (RFC 9110 §13 and §14).

What a client's cache or download manager gets for each validator and range it sends: these
are the rules the routes apply (tests/test_http_caching.py shows them end to end), one case
per boundary, fast enough to run under mutation testing.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from app.services.conditional import (
    Preconditions,
    RangeNotSatisfiable,
    byte_range,
    http_date,
    not_modified,
)

ETAG = '"5d41402abc4b2a76b9719d911017c592"'
# Stored with sub-second precision; HTTP dates carry whole seconds.
MODIFIED = datetime(2026, 3, 1, 12, 30, 15, 700_000, tzinfo=UTC)
MODIFIED_HEADER = "Sun, 01 Mar 2026 12:30:15 GMT"


def revalidated(if_none_match: str | None = None, if_modified_since: str | None = None) -> bool:
    return not_modified(Preconditions(if_none_match, if_modified_since), ETAG, MODIFIED)


def test_an_http_date_is_an_imf_fixdate_in_gmt_to_the_second() -> None:
    assert http_date(MODIFIED) == MODIFIED_HEADER


def test_without_validators_the_representation_is_sent() -> None:
    assert not revalidated()


@pytest.mark.parametrize("header", ["*", " * ", "\t*"])
def test_if_none_match_star_matches_any_current_representation(header: str) -> None:
    assert revalidated(if_none_match=header)


@pytest.mark.parametrize(
    ("header", "matches"),
    [
        (ETAG, True),
        (f"W/{ETAG}", True),  # weak comparison: W/ on the client's tag is ignored
        (f'"", {ETAG}', True),  # an empty tag is a tag; the list goes on after it
        (f',, "a" ,\t{ETAG} ,', True),  # empty members and whitespace around commas
        (f'W/x, "a", {ETAG}', True),  # a malformed member is skipped to its comma
        (f'"a"  , W/"b"\t,{ETAG}', True),
        (f"{ETAG[:-1]}", False),  # unclosed
        ('"a", "b"', False),
        ('""', False),
        (f"W/ {ETAG}", False),  # W/ must touch the quote
        (f'"a", W/{ETAG}', True),  # a weak tag after the first member
        (f"{ETAG}, W/", True),  # a list that ends in a bare W/
        ("W/", False),
    ],
)
def test_if_none_match_names_the_tag_in_a_list(header: str, matches: bool) -> None:
    assert revalidated(if_none_match=header) is matches


def test_a_weak_representation_tag_is_matched_weakly_too() -> None:
    weak = not_modified(Preconditions(if_none_match=ETAG), f"W/{ETAG}", MODIFIED)
    assert weak


@pytest.mark.parametrize(
    ("since", "not_changed"),
    [
        (MODIFIED_HEADER, True),  # the Last-Modified the client was given: sub-seconds dropped
        (http_date(MODIFIED + timedelta(days=1)), True),
        (http_date(MODIFIED - timedelta(seconds=1)), False),
        ("Sun, 01 Mar 2026 12:30:15 -0000", False),  # no known zone: ignored
        ("yesterday", False),
        ("", False),
    ],
)
def test_if_modified_since_compares_whole_seconds(since: str, not_changed: bool) -> None:
    assert revalidated(if_modified_since=since) is not_changed


def test_if_none_match_decides_alone_when_both_are_sent() -> None:
    later = http_date(MODIFIED + timedelta(days=1))
    assert not revalidated(if_none_match='"other"', if_modified_since=later)
    assert revalidated(if_none_match=ETAG, if_modified_since="garbage")


def ranged(header: str | None, length: int = 100, if_range: str | None = None) -> object:
    return byte_range(header, if_range, length, ETAG, MODIFIED)


@pytest.mark.parametrize(
    ("header", "span"),
    [
        ("bytes=0-9", (0, 9)),
        ("bytes=0-0", (0, 0)),
        (" bytes=10-19 ", (10, 19)),
        ("bytes=99-", (99, 99)),  # the last byte
        ("bytes=90-200", (90, 99)),  # a last position past the end is the end
        ("bytes=-1", (99, 99)),
        ("bytes=-30", (70, 99)),
        ("bytes=-500", (0, 99)),  # a suffix longer than the body is the whole body
        ("bytes=0007-0009", (7, 9)),
        ("bytes=00-", (0, 99)),
    ],
)
def test_one_satisfiable_range_is_served(header: str, span: tuple[int, int]) -> None:
    assert ranged(header) == span


@pytest.mark.parametrize(
    "header",
    [None, "bytes=-", "bytes=5-2", "bytes=0-1,5-6", "items=0-9", "bytes=a-9", "bytes 0-9", ""],
)
def test_a_missing_invalid_or_multiple_range_gets_the_whole_body(header: str | None) -> None:
    assert ranged(header) is None


@pytest.mark.parametrize(
    ("header", "length"), [("bytes=100-", 100), ("bytes=100-150", 100), ("bytes=-0", 100)]
)
def test_a_range_past_the_end_is_416_with_the_length(header: str, length: int) -> None:
    with pytest.raises(RangeNotSatisfiable) as refused:
        ranged(header, length)
    assert refused.value.length == length  # the Content-Range: bytes */100 of the 416
    assert str(refused.value) == "the range lies outside the 100 bytes of the representation"


@pytest.mark.parametrize("header", ["bytes=-5", "bytes=0-", "bytes=0-0"])
def test_no_range_of_an_empty_body_is_satisfiable(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        ranged(header, 0)


@pytest.mark.parametrize(
    ("if_range", "last_modified", "served"),
    [
        (ETAG, MODIFIED, (0, 9)),
        (f"  {ETAG}\t", MODIFIED, (0, 9)),
        (f"W/{ETAG}", MODIFIED, None),  # a weak tag never validates a range
        ('"other"', MODIFIED, None),
        (ETAG[:-1], MODIFIED, None),
        (MODIFIED_HEADER, MODIFIED, (0, 9)),  # the exact date of a strong Last-Modified
        (f" {MODIFIED_HEADER} ", MODIFIED, (0, 9)),
        (http_date(MODIFIED + timedelta(seconds=1)), MODIFIED, None),
        (http_date(MODIFIED - timedelta(seconds=1)), MODIFIED, None),
        ("Sun, 01 Mar 2026 12:30:15 -0000", MODIFIED, None),
        ("not a date", MODIFIED, None),
        (MODIFIED_HEADER, None, None),  # no strong date: a date never validates
        (ETAG, None, (0, 9)),  # while the tag still does
    ],
)
def test_if_range_serves_the_range_only_for_a_strong_match(
    if_range: str, last_modified: datetime | None, served: tuple[int, int] | None
) -> None:
    assert byte_range("bytes=0-9", if_range, 100, ETAG, last_modified) == served


def test_an_if_range_that_fails_sends_the_whole_body_even_for_a_range_past_its_end() -> None:
    assert ranged("bytes=500-", if_range='"other"') is None


def test_byte_positions_of_eighteen_digits_are_still_read_as_numbers() -> None:
    length = 10**18
    assert byte_range(f"bytes={10**17}-", None, length, ETAG, MODIFIED) == (10**17, length - 1)
