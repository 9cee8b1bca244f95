"""The load threads of the outage and swap tests: what goes wrong in them fails the test."""

from __future__ import annotations

import threading

import pytest

from tests.support.threads import Helper, join_all


def test_an_assertion_in_a_helper_thread_is_raised_where_it_is_joined() -> None:
    def checks_a_header() -> None:
        assert {}.get("retry-after"), "a 503 without Retry-After"

    helper = Helper(checks_a_header, name="load")
    helper.start()

    with pytest.raises(AssertionError, match="a 503 without Retry-After"):
        helper.join(timeout=10)


def test_join_all_waits_for_every_helper_then_raises_the_first_failure() -> None:
    finished = threading.Event()

    def fails() -> None:
        raise ConnectionError("cut mid-request")

    def finishes() -> None:
        finished.set()

    helpers = [Helper(fails, name="a"), Helper(finishes, name="b")]
    for helper in helpers:
        helper.start()

    with pytest.raises(AssertionError, match="helper thread a failed: ConnectionError"):
        join_all(helpers, timeout=10)
    assert finished.is_set()


def test_a_helper_still_running_at_its_deadline_fails_the_test() -> None:
    release = threading.Event()
    helper = Helper(release.wait, 30, name="stuck")
    helper.start()

    with pytest.raises(TimeoutError, match="stuck still runs"):
        helper.join(timeout=0.1)
    release.set()
