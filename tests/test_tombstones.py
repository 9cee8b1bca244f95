"""The embedded cache's delete marks, at their edges: a mark holds for exactly its lifetime,
sweeps run at most once a sweep interval and forget only marks past their lifetime, and an
id that is not an image id never names a file.

``tests/contract/test_hr_caches.py`` shows the marks at work between two processes' caches.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cache.tombstones import SWEEP_INTERVAL_SECONDS, Tombstones

START = 1_000_000.0  # whole seconds: file times hold them exactly


class Clock:
    def __init__(self) -> None:
        self.now = START

    def __call__(self) -> float:
        return self.now


def files(directory: Path) -> list[str]:
    return sorted(os.listdir(directory))


def test_a_mark_holds_for_exactly_its_lifetime(tmp_path: Path) -> None:
    clock = Clock()
    marks = Tombstones(tmp_path, lifetime_seconds=100, clock=clock)
    marks.mark("img")

    assert marks.marked("img")
    assert not marks.marked("other")
    clock.now = START + 99.5
    assert marks.marked("img")
    clock.now = START + 100
    assert not marks.marked("img")


def test_marking_again_renews_a_mark(tmp_path: Path) -> None:
    clock = Clock()
    marks = Tombstones(tmp_path, lifetime_seconds=100, clock=clock)
    marks.mark("img")
    clock.now = START + 50
    marks.mark("img")
    clock.now = START + 120

    assert marks.marked("img")


def test_sweeps_run_only_once_more_than_an_interval_has_passed(tmp_path: Path) -> None:
    clock = Clock()
    marks = Tombstones(tmp_path, lifetime_seconds=10, clock=clock)
    marks.mark("old")
    clock.now = START + SWEEP_INTERVAL_SECONDS  # "old" is past its lifetime, not yet swept

    marks.mark("a")
    assert files(tmp_path) == ["a", "old"]
    clock.now = START + SWEEP_INTERVAL_SECONDS + 0.5
    marks.mark("b")  # more than an interval since the object began: a sweep
    assert files(tmp_path) == ["a", "b"]

    clock.now = START + 2 * SWEEP_INTERVAL_SECONDS  # "a" and "b" are past their lifetime
    marks.mark("c")  # under an interval since that sweep: none
    assert files(tmp_path) == ["a", "b", "c"]


def test_a_sweep_forgets_a_mark_exactly_at_its_lifetime_and_keeps_a_younger_one(
    tmp_path: Path,
) -> None:
    clock = Clock()
    lifetime = 2 * SWEEP_INTERVAL_SECONDS
    marks = Tombstones(tmp_path, lifetime_seconds=lifetime, clock=clock)
    marks.mark("expiring")
    clock.now = START + 1
    marks.mark("young")
    clock.now = START + lifetime

    marks.mark("now")

    assert files(tmp_path) == ["now", "young"]
    assert marks.marked("young")


def test_the_first_mark_makes_the_directory_and_its_parents(tmp_path: Path) -> None:
    marks = Tombstones(tmp_path / "data" / "tombstones", lifetime_seconds=10)

    assert not marks.marked("img")
    marks.mark("img")

    assert marks.marked("img")
    marks.mark("img")  # the directory exists now: no error


@pytest.mark.parametrize("image_id", ["../escape", "a/b", "", "a" * 65, "dot.ted", "sp ace"])
def test_an_id_that_is_not_an_image_id_names_no_file(tmp_path: Path, image_id: str) -> None:
    marks = Tombstones(tmp_path / "marks", lifetime_seconds=10)

    with pytest.raises(ValueError) as refused:
        marks.mark(image_id)
    with pytest.raises(ValueError):
        marks.marked(image_id)
    assert str(refused.value) == f"not an image id: {image_id!r}"
    assert not (tmp_path / "marks").exists() or files(tmp_path / "marks") == []


def test_every_image_id_shape_can_be_marked(tmp_path: Path) -> None:
    marks = Tombstones(tmp_path, lifetime_seconds=10)
    for image_id in ("a", "A-z_09", "x" * 64):
        marks.mark(image_id)
        assert marks.marked(image_id)


def test_a_mark_another_process_swept_first_does_not_end_the_sweep(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two processes can sweep one directory at once: a mark gone between the listing and its
    stat is skipped, and every other old mark is still forgotten."""
    clock = Clock()
    marks = Tombstones(tmp_path, lifetime_seconds=10, clock=clock)
    for image_id in ("a", "b", "c"):
        marks.mark(image_id)
    listed = os.scandir

    def listing_raced_by_another_sweep(path: Path) -> Iterator[os.DirEntry[str]]:
        entries = sorted(listed(path), key=lambda entry: entry.name)
        os.unlink(entries[0].path)  # "a": the other process got there first
        return iter(entries)

    monkeypatch.setattr(os, "scandir", listing_raced_by_another_sweep)
    clock.now = START + SWEEP_INTERVAL_SECONDS + 1

    marks.mark("new")

    assert files(tmp_path) == ["new"]
