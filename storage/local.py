"""Objects as files under a directory: the embedded default, for one machine."""

from __future__ import annotations

import asyncio
import bisect
import hashlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from storage.base import (
    KeyPage,
    ObjectNotFound,
    StorageUnavailable,
    StoredObject,
    check_list_limit,
)


class LocalStore:
    """Each object is ``root/key`` with its metadata in ``root/key.meta.json``.

    Metadata is written first and the data last, each by rename after fsync, so an object
    exists exactly when its data file does; a crash leaves at most an orphan sidecar.

    Replacing an object renames two files, which a reader could see half done (the new
    metadata beside the old data). The sidecar therefore carries a digest of its data, and
    ``get`` reads again until the two match: a read during a replacement returns one side,
    whole (background compaction replaces images while they are being read).
    """

    def __init__(self, root: Path, min_free_bytes: int = 0) -> None:
        self.root = root.resolve()
        self.min_free_bytes = min_free_bytes

    def _path(self, key: str) -> Path:
        """Checked lexically, without a system call: every request runs this on the event
        loop (the store writes no links, so no path inside the root leads out of it)."""
        path = Path(os.path.normpath(self.root / key))
        if self.root not in path.parents:
            raise ValueError(f"object key {key!r} escapes the store root")
        return path

    async def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None:
        await asyncio.to_thread(self._ping)  # a full disk refuses the upload with 503
        await asyncio.to_thread(self._put, self._path(key), data, dict(metadata))

    async def get(self, key: str) -> StoredObject:
        return await asyncio.to_thread(self._get, self._path(key))

    async def head(self, key: str) -> Mapping[str, str]:
        path = self._path(key)
        return await asyncio.to_thread(self._read_metadata, path)

    async def delete(self, key: str) -> None:
        await asyncio.to_thread(self._delete, self._path(key))

    def _delete(self, path: Path) -> None:
        for victim in (path, _sidecar(path)):
            victim.unlink(missing_ok=True)

    async def list_keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, prefix)

    async def list_page(self, prefix: str, limit: int, after: str | None = None) -> KeyPage:
        check_list_limit(limit)
        keys = await asyncio.to_thread(self._list, prefix)
        start = bisect.bisect_right(keys, after) if after is not None else 0
        page = keys[start : start + limit]
        more = start + limit < len(keys)
        return KeyPage(page, page[-1] if more else None)

    async def ping(self) -> None:
        await asyncio.to_thread(self._ping)

    def _ping(self) -> None:
        """Down when the root cannot be written, or its disk is (nearly) full."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            free = shutil.disk_usage(self.root).free
        except OSError as exc:
            raise StorageUnavailable(f"cannot create the store root: {exc.strerror}") from exc
        if not os.access(self.root, os.W_OK):
            raise StorageUnavailable("the store root is not writable")
        if free < self.min_free_bytes:
            raise StorageUnavailable(
                f"the store's disk has {free} bytes free, under {self.min_free_bytes}"
            )

    def _put(self, path: Path, data: bytes, metadata: dict[str, str]) -> None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            sealed = {**metadata, _DIGEST: _digest(data)}
            write_atomically(_sidecar(path), json.dumps(sealed).encode())
            write_atomically(path, data)
        except OSError as exc:
            raise StorageUnavailable(f"cannot write {path.name}: {exc.strerror}") from exc

    def _list(self, prefix: str) -> list[str]:
        """Walks only the directory the prefix names, not the whole store."""
        top = self.root / prefix.rpartition("/")[0]
        if not top.is_dir():
            return []
        keys = (
            path.relative_to(self.root).as_posix()
            for path in top.rglob("*")
            if path.is_file()
            and not path.name.startswith(".tmp-")
            and not path.name.endswith(".meta.json")
        )
        return sorted(key for key in keys if key.startswith(prefix))

    def _get(self, path: Path) -> StoredObject:
        for _ in range(_REREADS):
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                raise ObjectNotFound(path.name) from None
            metadata = self._read_sealed(path)
            digest = metadata.pop(_DIGEST, None)
            if digest is None or digest == _digest(data):
                return StoredObject(data, metadata)
            time.sleep(0.005)  # a replacement is between its two renames
        raise StorageUnavailable(f"{path.name} kept changing while it was read")

    def _read_metadata(self, path: Path) -> Mapping[str, str]:
        metadata = self._read_sealed(path)
        metadata.pop(_DIGEST, None)
        return metadata

    def _read_sealed(self, path: Path) -> dict[str, str]:
        if not path.exists():
            raise ObjectNotFound(path.name)
        try:
            return dict(json.loads(_sidecar(path).read_bytes()))
        except FileNotFoundError:
            raise ObjectNotFound(path.name) from None


_DIGEST = "srstore-blake2b"  # in the sidecar only: get and head never return it
_REREADS = 200


def _digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def write_atomically(path: Path, data: bytes) -> None:
    fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def _fsync_directory(directory: Path) -> None:
    """Make the rename itself durable: without this a power cut can forget an acked write."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
