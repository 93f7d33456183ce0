"""Image helpers shared by the data pipeline, validation and evaluation.

LR frames are made exactly like the original STARnet data loader: crop the HR frame to a multiple of the
scale (from the top-left corner), then PIL's antialiased bicubic downscaling on 8-bit RGB.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

__all__ = [
    "crop_to_multiple", "downscale_bicubic", "upscale_pil", "to_tensor", "rgb_to_y",
]


def crop_to_multiple(img: np.ndarray, scale: int) -> np.ndarray:
    """Crop an (H, W, C) image from the top-left so that H and W are multiples of ``scale``."""
    if img.ndim != 3:
        raise ValueError(f"img: expected an (H, W, C) array, got shape {img.shape}")
    h, w = img.shape[:2]
    hh, ww = h - h % scale, w - w % scale
    if hh == 0 or ww == 0:
        raise ValueError(f"img: {w}x{h} is smaller than the scale {scale}")
    return img[:hh, :ww]


def downscale_bicubic(img: np.ndarray, scale: int) -> np.ndarray:
    """PIL antialiased bicubic downscaling of an 8-bit (H, W, 3) image whose sides are multiples of ``scale``."""
    if img.dtype != np.uint8:
        raise ValueError(f"img: expected uint8, got {img.dtype}")
    h, w = img.shape[:2]
    if h % scale or w % scale:
        raise ValueError(f"img: {w}x{h} is not a multiple of the scale {scale}; crop it first")
    return np.asarray(Image.fromarray(img).resize((w // scale, h // scale), Image.BICUBIC))


def upscale_pil(img: np.ndarray, scale: int, method: str = "bicubic") -> np.ndarray:
    """Classical upscaling of an 8-bit (H, W, 3) image with PIL ("bicubic" or "lanczos")."""
    resample = {"bicubic": Image.BICUBIC, "lanczos": Image.LANCZOS}.get(method)
    if resample is None:
        raise ValueError(f"method: expected 'bicubic' or 'lanczos', got {method!r}")
    h, w = img.shape[:2]
    return np.asarray(Image.fromarray(img).resize((w * scale, h * scale), resample))


def to_tensor(img: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> (3, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.array(img, copy=True)).permute(2, 0, 1).float().div_(255.0)


def rgb_to_y(t: torch.Tensor) -> torch.Tensor:
    """ITU-R BT.601 luma of (..., 3, H, W) RGB in [0, 1], in [16/255, 235/255] like MATLAB's rgb2ycbcr."""
    r, g, b = t.unbind(-3)
    return (16.0 + 65.481 * r + 128.553 * g + 24.966 * b).unsqueeze(-3) / 255.0
