"""The image pipeline shared by the service and the trainer.

Names load on first use (PEP 562): the settings need a few literals, and the ``srstore``
CLI starts without NumPy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from imaging.errors import UnencodableFormat
    from imaging.limits import declared_size, decode_memory_bytes, encodable
    from imaging.pipeline import (
        ACCEPTED_FORMATS,
        AVIF_SPEED,
        MEDIA_TYPES,
        PILLOW_MAX_PIXELS,
        SCALE,
        DecodedImage,
        FullCodecName,
        ImageError,
        ImageTooLarge,
        InvalidImage,
        OutputEncoding,
        OutputFormat,
        StoredCodec,
        StoredCodecName,
        UnsupportedImage,
        bicubic_upscale,
        crop_to,
        decode_stored,
        decode_upload,
        degrade,
        downscale,
        encode_full,
        encode_output,
        encode_stored,
        media_type_of,
        pad_to_scale,
        padded_size,
        to_srgb,
    )
    from imaging.resize import Fit, Geometry, InvalidSize, apply_geometry, plan_geometry

_HOMES = {
    "UnencodableFormat": "imaging.errors",
    "declared_size": "imaging.limits",
    "decode_memory_bytes": "imaging.limits",
    "encodable": "imaging.limits",
    "ACCEPTED_FORMATS": "imaging.pipeline",
    "AVIF_SPEED": "imaging.pipeline",
    "MEDIA_TYPES": "imaging.pipeline",
    "PILLOW_MAX_PIXELS": "imaging.formats",
    "SCALE": "imaging.pipeline",
    "DecodedImage": "imaging.pipeline",
    "FullCodecName": "imaging.formats",
    "ImageError": "imaging.pipeline",
    "ImageTooLarge": "imaging.pipeline",
    "InvalidImage": "imaging.pipeline",
    "OutputEncoding": "imaging.pipeline",
    "OutputFormat": "imaging.formats",
    "StoredCodec": "imaging.pipeline",
    "StoredCodecName": "imaging.formats",
    "UnsupportedImage": "imaging.pipeline",
    "bicubic_upscale": "imaging.pipeline",
    "crop_to": "imaging.pipeline",
    "decode_stored": "imaging.pipeline",
    "decode_upload": "imaging.pipeline",
    "degrade": "imaging.pipeline",
    "downscale": "imaging.pipeline",
    "encode_full": "imaging.pipeline",
    "encode_output": "imaging.pipeline",
    "encode_stored": "imaging.pipeline",
    "media_type_of": "imaging.pipeline",
    "pad_to_scale": "imaging.pipeline",
    "padded_size": "imaging.pipeline",
    "to_srgb": "imaging.pipeline",
    "Fit": "imaging.resize",
    "Geometry": "imaging.resize",
    "InvalidSize": "imaging.resize",
    "apply_geometry": "imaging.resize",
    "plan_geometry": "imaging.resize",
}

__all__ = [
    "ACCEPTED_FORMATS",
    "AVIF_SPEED",
    "MEDIA_TYPES",
    "PILLOW_MAX_PIXELS",
    "SCALE",
    "DecodedImage",
    "Fit",
    "FullCodecName",
    "Geometry",
    "ImageError",
    "ImageTooLarge",
    "InvalidImage",
    "InvalidSize",
    "OutputEncoding",
    "OutputFormat",
    "StoredCodec",
    "StoredCodecName",
    "UnencodableFormat",
    "UnsupportedImage",
    "apply_geometry",
    "bicubic_upscale",
    "crop_to",
    "declared_size",
    "decode_memory_bytes",
    "decode_stored",
    "decode_upload",
    "degrade",
    "downscale",
    "encodable",
    "encode_full",
    "encode_output",
    "encode_stored",
    "media_type_of",
    "pad_to_scale",
    "padded_size",
    "plan_geometry",
    "to_srgb",
]


def __getattr__(name: str) -> Any:
    module = _HOMES.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # the next lookup is a plain attribute
    return value
