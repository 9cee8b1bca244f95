"""The trainer's scores: Y-PSNR and SSIM from :mod:`imaging.quality` (shared with the service's
receipts and the canary score), plus the in-loop PSNR of tensor planes."""

from __future__ import annotations

import math

import torch

from imaging.quality import BORDER, luma_psnr, luma_ssim, studio_luma

__all__ = ["luma_psnr", "luma_ssim", "plane_psnr", "studio_luma"]


def plane_psnr(a: torch.Tensor, b: torch.Tensor, border: int = BORDER) -> float:
    """PSNR of two [0, 1] planes, for the quick validation inside the training loop."""
    a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    error = float(torch.mean((a.clamp(0, 1) - b) ** 2))
    return math.inf if error == 0 else 10 * math.log10(1.0 / error)
