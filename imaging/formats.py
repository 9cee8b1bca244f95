"""Codec and format names and Pillow's pixel ceiling: what the settings declare.

Kept apart from the pipeline so that reading the settings (every ``srstore`` command does)
imports neither NumPy nor the codecs' code.
"""

from __future__ import annotations

from typing import Literal

from PIL import Image

# Pillow refuses to open anything over this many pixels, whatever SRSTORE_MAX_PIXELS says.
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS if Image.MAX_IMAGE_PIXELS else 2**63 - 1

StoredCodecName = Literal["jpeg", "webp", "webp-lossless", "png"]
OutputFormat = Literal["jpeg", "png", "webp", "avif"]
FullCodecName = Literal["avif", "webp"]  # a full-size copy kept instead of the 4x-reduced one
