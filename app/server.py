"""The HTTP protocol ``srstore serve`` runs: uvicorn's h11 with request read deadlines.

uvicorn 0.54 has none: its keep-alive timer is cancelled by the first byte of a request and
no timer runs on a fresh connection, so 200 connections holding partial headers or bodies
stayed open for 90 s and more (slowloris). Here a request head must arrive within
``header_timeout`` seconds of its first byte (or of the connection), and a body may pause at
most ``body_timeout`` seconds between chunks; past either, the connection is closed (the app
sees a disconnect, as when the client goes away).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol


class DeadlineH11Protocol(H11Protocol):
    def __init__(
        self, *args: Any, header_timeout: float, body_timeout: float, **kwargs: Any
    ) -> None:
        super().__init__(*args, **kwargs)
        self.header_timeout = header_timeout
        self.body_timeout = body_timeout
        self._deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(self.header_timeout)

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        state = self.conn.their_state
        if state is h11.IDLE:
            if self._deadline is None:  # the first bytes of the next request's head
                self._arm(self.header_timeout)
        elif state is h11.SEND_BODY:
            self._arm(self.body_timeout)  # each chunk renews the body's deadline
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._too_slow)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _too_slow(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            self.transport.close()
