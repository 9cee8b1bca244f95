"""One contract for every object store: the local directory and S3 (real SeaweedFS)."""

from __future__ import annotations

import asyncio
import os
import stat
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage import (
    MAX_LIST_LIMIT,
    LocalStore,
    ObjectNotFound,
    ObjectStore,
    S3Store,
    StorageUnavailable,
)
from tests.conftest import unique_bucket
from tests.support.servers import SeaweedServer, free_port


@pytest.fixture(params=["local", "s3"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ObjectStore]:
    if request.param == "local":
        yield LocalStore(tmp_path / "objects")
        return
    seaweed: SeaweedServer = request.getfixturevalue("seaweed_server")
    s3 = S3Store(unique_bucket(), seaweed.endpoint_url, "us-east-1")
    await s3.ensure_bucket()
    yield s3


async def test_an_object_reads_back_with_its_metadata(store: ObjectStore) -> None:
    await store.put("images/a", b"\x00bytes\xff", {"width": "7", "content_type": "image/png"})

    stored = await store.get("images/a")

    assert stored.data == b"\x00bytes\xff"
    assert dict(stored.metadata) == {"width": "7", "content_type": "image/png"}
    assert dict(await store.head("images/a")) == {"width": "7", "content_type": "image/png"}


async def test_a_put_replaces_the_object_whole(store: ObjectStore) -> None:
    await store.put("images/b", b"old", {"v": "1"})
    await store.put("images/b", b"new", {"v": "2"})

    stored = await store.get("images/b")

    assert (stored.data, dict(stored.metadata)) == (b"new", {"v": "2"})


async def test_a_read_during_replacements_gets_one_side_whole(store: ObjectStore) -> None:
    """Compaction replaces an image while it is read: data and metadata never mix."""
    sides = {"x4": b"x" * 3000, "avif": b"a" * 5000}
    await store.put("images/swap", sides["x4"], {"representation": "x4"})

    async def replace() -> None:
        for turn in range(40):
            name = "avif" if turn % 2 == 0 else "x4"
            await store.put("images/swap", sides[name], {"representation": name})

    async def read() -> list[tuple[str, bytes]]:
        seen = []
        for _ in range(80):
            stored = await store.get("images/swap")
            seen.append((stored.metadata["representation"], stored.data))
        return seen

    _, seen = await asyncio.gather(replace(), read())

    assert all(data == sides[name] for name, data in seen)


async def test_missing_objects_raise_not_found(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        await store.get("images/missing")
    with pytest.raises(ObjectNotFound):
        await store.head("images/missing")


async def test_delete_removes_the_object_and_is_idempotent(store: ObjectStore) -> None:
    await store.put("images/c", b"x", {})

    await store.delete("images/c")
    await store.delete("images/c")

    with pytest.raises(ObjectNotFound):
        await store.get("images/c")


async def test_list_names_the_keys_under_a_prefix(store: ObjectStore) -> None:
    for key in ("models/espcn/1/weights", "models/espcn/2/weights", "images/zz"):
        await store.put(key, b"x", {})

    assert await store.list_keys("models/") == ["models/espcn/1/weights", "models/espcn/2/weights"]
    assert await store.list_keys("nothing/") == []


async def test_a_listing_pages_through_a_prefix_in_key_order(store: ObjectStore) -> None:
    for key in ("images/d", "images/b", "images/a", "images/e", "images/c", "models/x", "imagesz"):
        await store.put(key, b"x", {})

    first = await store.list_page("images/", 2)
    second = await store.list_page("images/", 2, after=first.next_after)
    last = await store.list_page("images/", 2, after=second.next_after)

    assert (first.keys, first.next_after) == (["images/a", "images/b"], "images/b")
    assert (second.keys, second.next_after) == (["images/c", "images/d"], "images/d")
    assert (last.keys, last.next_after) == (["images/e"], None)


async def test_a_listing_that_ends_on_a_page_boundary_says_it_is_done(store: ObjectStore) -> None:
    for key in ("images/a", "images/b"):
        await store.put(key, b"x", {})

    page = await store.list_page("images/", 2)

    assert (page.keys, page.next_after) == (["images/a", "images/b"], None)
    assert (await store.list_page("images/", 2, after="images/b")).keys == []


async def test_a_listing_resumes_after_any_key_even_a_deleted_one(store: ObjectStore) -> None:
    for key in ("images/a", "images/b", "images/c"):
        await store.put(key, b"x", {})
    await store.delete("images/b")

    page = await store.list_page("images/", 10, after="images/b")

    assert (page.keys, page.next_after) == (["images/c"], None)
    assert (await store.list_page("empty/", 10)).keys == []


@pytest.mark.parametrize("limit", [0, -1, MAX_LIST_LIMIT + 1])
async def test_a_listing_page_is_bounded(store: ObjectStore, limit: int) -> None:
    with pytest.raises(ValueError, match="1 to 1000"):
        await store.list_page("images/", limit)


async def test_ping_succeeds_on_a_working_store(store: ObjectStore) -> None:
    await store.ping()


async def test_an_unreachable_s3_endpoint_is_unavailable_not_missing() -> None:
    s3 = S3Store("srstore-nowhere", f"http://127.0.0.1:{free_port()}", "us-east-1")

    with pytest.raises(StorageUnavailable):
        await s3.get("images/a")


def test_local_keys_cannot_escape_the_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "objects")

    with pytest.raises(ValueError, match="escapes"):
        store._path("../outside")


async def test_a_fresh_local_store_is_ready_before_its_first_write(tmp_path: Path) -> None:
    await LocalStore(tmp_path / "not" / "yet" / "there").ping()


async def test_a_local_put_is_durable_down_to_the_directory_entry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsync of the data and of the directory holding the rename, before put returns."""
    synced: list[bool] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)

    await LocalStore(tmp_path / "objects").put("images/d", b"data", {"k": "v"})

    assert synced.count(False) == 2  # the sidecar's and the data's bytes
    assert synced.count(True) == 2  # the directory after each rename
