"""Objects in an S3-compatible bucket through boto3, with metadata as ``x-amz-meta-*``."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from storage.base import (
    KeyPage,
    ObjectNotFound,
    StorageUnavailable,
    StoredObject,
    check_list_limit,
)

_MISSING = {"404", "NoSuchKey", "NotFound"}


class S3Store:
    """A PUT in S3 is atomic: data and metadata appear together once it returns 200."""

    def __init__(
        self, bucket: str, endpoint_url: str | None, region: str, prefix: str = ""
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix
        self.client = boto3.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=region,
            config=Config(
                # A store that is down must cost a request seconds, not minutes: two attempts
                # in all (botocore's "max_attempts" counts retries only, so it meant three),
                # each refused by the OS at once or given up after these timeouts.
                connect_timeout=1,
                read_timeout=5,
                retries={"total_max_attempts": 2, "mode": "standard"},
                max_pool_connections=32,
            ),
        )

    async def put(self, key: str, data: bytes, metadata: Mapping[str, str]) -> None:
        await self._call("put_object", Key=self.prefix + key, Body=data, Metadata=dict(metadata))

    async def get(self, key: str) -> StoredObject:
        response = await self._call("get_object", Key=self.prefix + key)
        data = await asyncio.to_thread(response["Body"].read)
        return StoredObject(data, response.get("Metadata", {}))

    async def head(self, key: str) -> Mapping[str, str]:
        response = await self._call("head_object", Key=self.prefix + key)
        return dict(response.get("Metadata", {}))

    async def delete(self, key: str) -> None:
        await self._call("delete_object", Key=self.prefix + key)

    async def list_keys(self, prefix: str) -> list[str]:
        return await asyncio.to_thread(self._list, self.prefix + prefix)

    def _list(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        try:
            pages = list(paginator.paginate(Bucket=self.bucket, Prefix=prefix))
        except (ClientError, BotoCoreError) as exc:
            raise StorageUnavailable(f"S3 list_objects_v2 failed: {exc}") from exc
        keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
        return sorted(key.removeprefix(self.prefix) for key in keys)

    async def list_page(self, prefix: str, limit: int, after: str | None = None) -> KeyPage:
        check_list_limit(limit)
        request: dict[str, Any] = {"Prefix": self.prefix + prefix, "MaxKeys": limit}
        if after is not None:
            request["StartAfter"] = self.prefix + after
        response = await self._call("list_objects_v2", **request)
        keys = [item["Key"].removeprefix(self.prefix) for item in response.get("Contents", [])]
        more = bool(response.get("IsTruncated")) and bool(keys)
        return KeyPage(keys, keys[-1] if more else None)

    async def ping(self) -> None:
        await self._call("head_bucket")

    async def ensure_bucket(self) -> None:
        """Create the bucket when it is missing (first start of a fresh deployment)."""
        try:
            await self.ping()
        except ObjectNotFound:
            await self._call("create_bucket")

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        method = getattr(self.client, operation)
        try:
            return await asyncio.to_thread(method, Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            if str(error.get("Code")) in _MISSING:
                raise ObjectNotFound(kwargs.get("Key", self.bucket)) from None
            raise StorageUnavailable(f"S3 {operation} failed: {error.get('Code')}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3 {operation} failed: {exc}") from exc
