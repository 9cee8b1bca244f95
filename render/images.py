"""A stored image as every process names it: its object key, its metadata, its absence."""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime

from pydantic import BaseModel, field_validator

from imaging import OutputFormat
from policy import Receipt, Representation

_ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{22}$")
IMAGES_PREFIX = "images/"  # every image's object key starts with it


class InvalidImageId(ValueError):
    """The id is not one srstore could have issued."""


class ImageNotFound(LookupError):
    """No image with that id."""


class ImageMeta(BaseModel):
    """What srstore knows about an upload; kept as the stored object's metadata."""

    id: str
    width: int
    height: int
    stored_width: int
    stored_height: int
    content_type: str
    original_bytes: int
    stored_bytes: int
    served_format: OutputFormat
    created_at: datetime
    greyscale: bool = False  # served as greyscale wherever the output format can hold it
    representation: Representation = "x4"  # images stored before receipts existed are x4
    tenant: str = "default"  # the uploading key's tenant; images older than tenants: default
    receipt: Receipt | None = None
    stored_digest: str = ""  # of the stored bytes (images stored before it existed: none)

    @property
    def source(self) -> str:
        """A name for the stored copy, part of every rendition's cache key and ETag: when
        compaction replaces the copy (a lower-quality x4 copy, a full-size one), every
        rendition made from the old one is left behind under the old name."""
        kept = f"{self.representation}:{self.stored_width}x{self.stored_height}"
        named = f"{kept}:{self.stored_bytes}:{self.stored_digest}"
        return hashlib.blake2b(named.encode(), digest_size=6).hexdigest()

    @field_validator("served_format", mode="before")
    @classmethod
    def _uncompressed_is_served_as_png(cls, value: object) -> object:
        """BMP and TIFF uploads kept before they were served as PNG: served as PNG too."""
        return "png" if value in ("bmp", "tiff") else value

    def to_metadata(self) -> dict[str, str]:
        fields = self.model_dump(mode="json", exclude_none=True).items()
        return {k: json.dumps(v) if isinstance(v, dict) else str(v) for k, v in fields}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ImageMeta:
        return cls.model_validate(metadata)

    @field_validator("receipt", mode="before")
    @classmethod
    def _receipt_from_json(cls, value: object) -> object:
        return json.loads(value) if isinstance(value, str) else value


def stored_digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def object_key(image_id: str) -> str:
    if not _ID_PATTERN.match(image_id):
        raise InvalidImageId("image ids are 22 URL-safe base64 characters")
    return f"{IMAGES_PREFIX}{image_id}"
