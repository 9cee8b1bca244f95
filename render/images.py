"""A stored image as every process names it: its object key, its metadata, its absence."""

from __future__ import annotations

import re
from datetime import datetime

from pydantic import BaseModel

from imaging import OutputFormat

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

    def to_metadata(self) -> dict[str, str]:
        return {k: str(v) for k, v in self.model_dump(mode="json").items()}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str]) -> ImageMeta:
        return cls.model_validate(metadata)


def object_key(image_id: str) -> str:
    if not _ID_PATTERN.match(image_id):
        raise InvalidImageId("image ids are 22 URL-safe base64 characters")
    return f"{IMAGES_PREFIX}{image_id}"
