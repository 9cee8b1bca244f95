"""PSNR and SSIM with the SR literature's protocol: Y channel, 4-pixel border shaved."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image
from torch.nn import functional as F

from models.validation import luma_psnr, studio_luma

BORDER = 4

__all__ = ["luma_psnr", "luma_ssim", "studio_luma"]


def _gaussian_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    coords = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(coords**2) / (2 * sigma**2))
    g /= g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Wang et al. 2004 SSIM with an 11x11 Gaussian window (sigma 1.5), valid region only."""
    window = _gaussian_window()
    x = torch.from_numpy(a.astype(np.float64))[None, None]
    y = torch.from_numpy(b.astype(np.float64))[None, None]
    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_x, mu_y = F.conv2d(x, window), F.conv2d(y, window)
    sigma_x = F.conv2d(x * x, window) - mu_x**2
    sigma_y = F.conv2d(y * y, window) - mu_y**2
    sigma_xy = F.conv2d(x * y, window) - mu_x * mu_y
    numerator = (2 * mu_x * mu_y + c1) * (2 * sigma_xy + c2)
    denominator = (mu_x**2 + mu_y**2 + c1) * (sigma_x + sigma_y + c2)
    return float((numerator / denominator).mean())


def luma_ssim(a: Image.Image, b: Image.Image) -> float:
    return ssim(studio_luma(a), studio_luma(b))


def plane_psnr(a: torch.Tensor, b: torch.Tensor, border: int = BORDER) -> float:
    """PSNR of two [0, 1] planes, for the quick validation inside the training loop."""
    a, b = a[..., border:-border, border:-border], b[..., border:-border, border:-border]
    error = float(torch.mean((a.clamp(0, 1) - b) ** 2))
    return math.inf if error == 0 else 10 * math.log10(1.0 / error)
