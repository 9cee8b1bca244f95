"""One contract for every lease backend: files in the data directory and Redis (a real server,
one node and a cluster). A lease has one holder at a time, across processes; a holder that
dies loses it (a file lock at once, a Redis lease once it lapses); a live holder keeps it."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from cache import FileLeases, Leases, RedisLeases
from tests.support.servers import RedisClusterServer, RedisServer
from tests.support.waiting import until

LIFETIME = 2.0  # seconds a Redis lease lasts unrenewed

# Another process holds the lease named on its command line until it is killed.
HOLDER = """
import asyncio, sys
from pathlib import Path
from cache import FileLeases, RedisLeases

async def main(kind, where, name, cluster):
    if kind == "file":
        leases = FileLeases(Path(where))
    else:
        leases = RedisLeases(where, float(sys.argv[5]), cluster == "cluster")
    async with leases.hold(name) as held:
        print("held" if held else "refused", flush=True)
        await asyncio.sleep(3600)

asyncio.run(main(*sys.argv[1:5]))
"""


@pytest.fixture(params=["file", "redis", "redis-cluster"])
async def backend(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[tuple[Leases, list[str]]]:
    """The leases, and the arguments that give another process the same ones."""
    if request.param == "file":
        directory = tmp_path / "leases"
        yield FileLeases(directory), ["file", str(directory), "-", "-"]
        return
    cluster = request.param == "redis-cluster"
    server: RedisServer | RedisClusterServer = request.getfixturevalue(
        "redis_cluster" if cluster else "redis_server"
    )
    leases = RedisLeases(server.url, LIFETIME, cluster)
    yield leases, ["redis", server.url, "-", "cluster" if cluster else "one", str(LIFETIME)]
    await leases.close()


def name() -> str:
    return f"compaction:{{{uuid.uuid4().hex}}}"


def holder(arguments: list[str], lease: str) -> subprocess.Popen[str]:
    """Another process that holds ``lease`` once it has printed ``held``."""
    arguments = [*arguments[:2], lease, *arguments[3:]]
    process = subprocess.Popen(
        [sys.executable, "-c", HOLDER, *arguments],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path.cwd())},
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == "held"
    return process


async def test_a_held_lease_refuses_a_second_holder_until_it_is_given_back(
    backend: tuple[Leases, list[str]],
) -> None:
    leases, _ = backend
    lease = name()
    async with leases.hold(lease) as first, leases.hold(lease) as second:
        held_while = await leases.held(lease)
    async with leases.hold(lease) as after:
        pass

    assert (first, second, held_while) == (True, False, True)
    assert after is True
    assert await leases.held(lease) is False


async def test_leases_of_other_names_do_not_exclude_each_other(
    backend: tuple[Leases, list[str]],
) -> None:
    leases, _ = backend
    async with leases.hold(name()) as one, leases.hold(name()) as other:
        assert (one, other) == (True, True)


async def test_another_process_is_refused_while_one_holds_it(
    backend: tuple[Leases, list[str]],
) -> None:
    leases, arguments = backend
    lease = name()
    process = holder(arguments, lease)
    try:
        async with leases.hold(lease) as here:
            refused = not here
    finally:
        process.kill()
        process.wait()

    assert refused


async def test_a_lease_left_by_a_killed_holder_is_taken_again(
    backend: tuple[Leases, list[str]],
) -> None:
    leases, arguments = backend
    lease = name()
    process = holder(arguments, lease)
    process.kill()  # SIGKILL: it gives nothing back
    process.wait()
    taken: list[bool] = []

    async def take() -> bool:
        async with leases.hold(lease) as held:
            taken.append(held)
            return held

    await until(take, "the dead holder's lease taken", timeout=10 * LIFETIME)

    assert taken[-1] is True


async def test_a_live_holder_keeps_its_lease_past_its_lifetime(
    backend: tuple[Leases, list[str]],
) -> None:
    leases, _ = backend
    lease = name()
    refusals: list[bool] = []
    async with leases.hold(lease) as held:
        for _ in range(3):  # over two lifetimes, asked again every three quarters of one
            await asyncio.sleep(0.75 * LIFETIME)
            async with leases.hold(lease) as other:
                refusals.append(not other)

    assert held is True
    assert refusals == [True] * 3


async def test_a_lease_name_is_checked_before_it_names_a_file(tmp_path: Path) -> None:
    leases = FileLeases(tmp_path / "leases")

    with pytest.raises(ValueError, match="not a lease name"):
        async with leases.hold("../outside"):
            pass
