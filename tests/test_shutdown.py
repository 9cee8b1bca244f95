"""Processes stop promptly, even where the Redis client loses a task cancellation.

On Python 3.11, redis-py commands with a socket timeout run under ``asyncio.wait_for``, which
can swallow a cancellation (CPython gh-86296). A background loop that relied on cancellation
alone would then never end, and the process would hang on shutdown.
"""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest
from pydantic import SecretStr

from app.services.models import ActiveModel
from config.settings import Settings
from models.control import LocalControl
from models.registry import ModelRef
from tests.conftest import serving
from tests.support.waiting import until

TOKEN = "shutdown-admin-token"


class CancellationSwallowingControl(LocalControl):
    """Reads the pointer the way redis-py can on Python 3.11: a cancellation is lost."""

    reads = 0

    async def active(self) -> ModelRef | None:
        self.reads += 1
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(0.05)
        return await super().active()


async def stops_within(stop: asyncio.Future[None] | asyncio.Task[None], seconds: float) -> bool:
    done, _ = await asyncio.wait([stop], timeout=seconds)
    return bool(done)


async def test_the_model_follower_stops_even_when_a_cancellation_is_lost(tmp_path: Path) -> None:
    control = CancellationSwallowingControl(tmp_path)
    active = ActiveModel(control, poll_seconds=0.01)
    await active.start()
    await until(lambda: control.reads >= 3, "the follower polling the pointer")

    assert await stops_within(asyncio.ensure_future(active.stop()), seconds=5)


@pytest.mark.full
async def test_a_full_mode_app_stops_promptly_right_after_a_model_swap(
    full_settings: Settings, shipped_dir: Path
) -> None:
    configured = full_settings.model_copy(
        update={"admin_token": SecretStr(TOKEN), "weights_dir": shipped_dir}
    )
    headers = {"authorization": f"Bearer {TOKEN}"}

    async def swap_then_stop(name: str) -> None:
        async with serving(configured) as (_, http):
            response = await http.put(
                "/v1/admin/models/active",
                json={"name": name, "version": 1, "force": True},
                headers=headers,
            )
            assert response.status_code == 200, response.text

    for name in ("srcnn", "espcn", "srcnn"):
        assert await stops_within(asyncio.ensure_future(swap_then_stop(name)), seconds=15)
