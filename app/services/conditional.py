"""Conditional and range requests (RFC 9110 §13 and §14), as pure functions of header values.

The service evaluates preconditions before it renders, so a revalidation never costs a render.
Every parser here is linear in the header's length: an entity-tag pattern that backtracked over
a run of spaces once cost 6-8 CPU-seconds of the event loop for one 16 KB ``If-None-Match``
(RELIABILITY.md). The request gate bounds each header's length before any of this runs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime, parsedate_to_datetime

# Single character-class runs, each matched once from a given position: linear.
_SEPARATORS = re.compile(r"[ \t,]*")
_OWS = re.compile(r"[ \t]*")
_BYTE_RANGE = re.compile(r"bytes=([0-9]*)-([0-9]*)")
# A byte position longer than this is past any representation (and past Python's 4300-digit
# int conversion limit, which made ``Range: bytes=0-<5000 digits>`` a 500).
_MAX_POSITION_DIGITS = 18
_BEYOND_ANY_LENGTH = 10**_MAX_POSITION_DIGITS


class RangeNotSatisfiable(ValueError):
    """No byte of the representation lies in the requested range (HTTP 416)."""

    def __init__(self, length: int) -> None:
        super().__init__(f"the range lies outside the {length} bytes of the representation")
        self.length = length


@dataclass(frozen=True)
class Preconditions:
    if_none_match: str | None = None
    if_modified_since: str | None = None


def http_date(moment: datetime) -> str:
    """An IMF-fixdate (``Sun, 06 Nov 1994 08:49:37 GMT``), to the second (the format has no
    fraction: ``format_datetime`` drops it)."""
    return format_datetime(moment, usegmt=True)


def not_modified(preconditions: Preconditions, etag: str, last_modified: datetime) -> bool:
    """Whether a GET or HEAD is answered ``304`` (RFC 9110 §13.1.2, §13.1.3, §13.2.2).

    ``If-None-Match`` compares weakly, takes lists and ``*``; when it is present,
    ``If-Modified-Since`` is ignored. An unparseable date is ignored too.
    """
    if preconditions.if_none_match is not None:
        return _none_match_fails(preconditions.if_none_match, etag)
    if preconditions.if_modified_since is not None:
        since = _parse_date(preconditions.if_modified_since)
        return since is not None and last_modified.replace(microsecond=0) <= since
    return False


def _none_match_fails(header: str, etag: str) -> bool:
    if header.strip() == "*":
        return True
    opaque = etag.removeprefix("W/")
    return any(tag == opaque for _, tag in _entity_tags(header))


def _entity_tags(header: str) -> list[tuple[bool, str]]:
    """``(weak, opaque-tag)`` for each entity tag in a list; malformed members are skipped.

    One pass from left to right: the position only moves forward, so the cost is linear in
    the header's length whatever it holds (runs of spaces, unclosed quotes, commas).
    """
    tags: list[tuple[bool, str]] = []
    end = len(header)
    at = _skip(_SEPARATORS, header, 0)
    while at < end:
        weak = header.startswith("W/", at)
        opening = at + 2 if weak else at
        if opening < end and header[opening] == '"':
            closing = header.find('"', opening + 1)
            if closing == -1:
                break  # an unclosed quote: nothing after it is a tag
            after = _skip(_OWS, header, closing + 1)
            if after == end or header[after] == ",":
                tags.append((weak, header[opening : closing + 1]))
            at = after
        else:
            at = opening
        comma = header.find(",", at)  # past a malformed member, or the comma after a tag
        if comma == -1:
            break
        at = _skip(_SEPARATORS, header, comma)
    return tags


def _skip(run: re.Pattern[str], text: str, at: int) -> int:
    """The position just past the run of ``run``'s characters that starts at ``at``."""
    match = run.match(text, at)
    return match.end() if match else at


def _parse_date(value: str) -> datetime | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return parsed if parsed.tzinfo is not None else None


def byte_range(
    header: str | None,
    if_range: str | None,
    length: int,
    etag: str,
    last_modified: datetime | None,
) -> tuple[int, int] | None:
    """The inclusive ``(first, last)`` byte range to send, or ``None`` for the whole body.

    One range is served; several ranges, a malformed header, or an ``If-Range`` that does not
    match strongly get the whole representation, as RFC 9110 §14.2 allows. ``last_modified``
    is given only where it is a strong validator (the bytes cannot change while it stays the
    same); with ``None`` a date in ``If-Range`` never matches, so a range is never spliced
    onto bytes that changed under the same date.
    """
    if header is None:
        return None
    if if_range is not None and not _if_range_holds(if_range, etag, last_modified):
        return None
    match = _BYTE_RANGE.fullmatch(header.strip())
    if match is None or match.group(1) == match.group(2) == "":
        return None
    first_text, last_text = match.groups()
    if first_text == "":
        suffix = _position(last_text)
        if suffix == 0 or length == 0:
            raise RangeNotSatisfiable(length)
        return max(0, length - suffix), length - 1
    first = _position(first_text)
    if last_text and _position(last_text) < first:
        return None  # invalid: ignored
    if first >= length:
        raise RangeNotSatisfiable(length)
    return first, min(_position(last_text), length - 1) if last_text else length - 1


def _position(digits: str) -> int:
    """A byte position; any number too long to be a real offset counts as past every end."""
    significant = digits.lstrip("0")
    if len(significant) > _MAX_POSITION_DIGITS:
        return _BEYOND_ANY_LENGTH
    return int(significant or "0")


def _if_range_holds(if_range: str, etag: str, last_modified: datetime | None) -> bool:
    """Strong comparison for a tag; for a date, an exact match with a strong ``Last-Modified``
    (RFC 9110 §13.1.5). A weak tag (``W/"..."``) never matches: it is not a quoted tag, and
    it parses as no date."""
    value = if_range.strip()
    if value.startswith('"'):
        return value == etag
    if last_modified is None:
        return False
    since = _parse_date(value)
    return since is not None and since == last_modified.replace(microsecond=0)
