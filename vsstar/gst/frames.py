"""Raw video rows <-> dense RGB frames for the element's formats (numpy only, no GStreamer).

The element maps a buffer's memory and hands it here with the plane's geometry; ``FORMATS`` is the
one list of raw formats the element negotiates.
"""
from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["FORMATS", "bytes_per_pixel", "read_rgb", "write_rgb"]

#: Raw formats the element accepts and produces (packed, 8 bits per channel).
FORMATS = ("RGB", "RGBx", "BGRx")


def bytes_per_pixel(fmt: str) -> int:
    """Bytes of one pixel in ``fmt`` (one of :data:`FORMATS`)."""
    return 3 if fmt == "RGB" else 4


def _pixels(data: Any, fmt: str, width: int, height: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    bpp = bytes_per_pixel(fmt)
    rows = np.frombuffer(data, np.uint8, count=stride * height).reshape(height, stride)
    return rows, rows[:, : width * bpp].reshape(height, width, bpp)


def read_rgb(data: Any, fmt: str, width: int, height: int, stride: int) -> np.ndarray:
    """A dense RGB (H, W, 3) uint8 copy of a mapped plane (honours the row stride)."""
    _rows, px = _pixels(data, fmt, width, height, stride)
    return px[..., 2::-1].copy() if fmt == "BGRx" else px[..., :3].copy()


def write_rgb(data: Any, fmt: str, width: int, height: int, stride: int, rgb: np.ndarray) -> None:
    """Write RGB (H, W, 3) uint8 into a mapped writable plane: padding bytes 0, the x byte 255."""
    if rgb.shape != (height, width, 3):
        raise RuntimeError(f"engine gave a {rgb.shape[1]}x{rgb.shape[0]} frame, caps say {width}x{height}")
    rows, px = _pixels(data, fmt, width, height, stride)
    if fmt == "BGRx":
        px[..., 2::-1] = rgb
    else:
        px[..., :3] = rgb
    if px.shape[2] == 4:
        px[..., 3] = 255
    if stride > px.shape[1] * px.shape[2]:
        rows[:, px.shape[1] * px.shape[2]:] = 0
