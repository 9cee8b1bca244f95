"""What a client's bytes can be wrong about; the API maps each to its 4xx."""

from __future__ import annotations


class ImageError(ValueError):
    """Base class of everything a client's bytes can be wrong about."""


class UnsupportedImage(ImageError):
    """Not an image format srstore accepts (HTTP 415)."""


class InvalidImage(ImageError):
    """Claims to be an image but cannot be decoded (HTTP 422)."""


class ImageTooLarge(ImageError):
    """Declares more pixels, or more decoding work, than the configured limits (HTTP 413)."""


class UnencodableFormat(ImageError):
    """The requested output codec cannot encode an image this large (HTTP 422)."""
