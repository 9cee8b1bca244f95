"""Helper threads whose failures fail the test that started them.

An ``assert`` or an exception inside a plain ``threading.Thread`` only prints a warning and
ends that thread; the test goes on and passes. :class:`Helper` keeps what went wrong and
raises it again in the test's own thread when the test joins it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class Helper(threading.Thread):
    """A daemon thread running ``target``; :meth:`join` re-raises whatever it raised."""

    def __init__(self, target: Callable[..., Any], *args: Any, name: str | None = None) -> None:
        super().__init__(target=target, args=args, name=name, daemon=True)
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            super().run()
        except BaseException as exc:  # everything, assertions included, goes to the test
            self.error = exc

    def join(self, timeout: float | None = None) -> None:
        super().join(timeout)
        if self.is_alive():
            raise TimeoutError(f"helper thread {self.name} still runs after {timeout} s")
        if self.error is not None:
            raise AssertionError(f"helper thread {self.name} failed: {self.error!r}") from (
                self.error
            )


def join_all(helpers: list[Helper], timeout: float) -> None:
    """Join every helper (each gets ``timeout``), then raise the first failure, if any."""
    failures: list[BaseException] = []
    for helper in helpers:
        try:
            helper.join(timeout)
        except (AssertionError, TimeoutError) as exc:
            failures.append(exc)
    if failures:
        raise failures[0]
