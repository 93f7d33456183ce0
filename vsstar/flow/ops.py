"""Image primitives of Ce Liu's Coarse2Fine code on batched torch tensors (N, C, H, W).

All filters use replicate (clamp-to-edge) borders, as the C++ code does. Sampling positions are
computed in float64 (the C++ code works in double) and only then cast to the working dtype.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

# Five-tap derivative and smoothing kernels (correlation taps for offsets -2..2).
D5 = (1.0 / 12.0, -8.0 / 12.0, 0.0, 8.0 / 12.0, -1.0 / 12.0)
G5 = (0.02, 0.11, 0.74, 0.11, 0.02)


def gauss_taps(sigma: float, radius: int) -> tuple[float, ...]:
    """Normalised Gaussian correlation taps exp(-k^2/(2 sigma^2)), k = -radius..radius."""
    g = [math.exp(-(k * k) / (2.0 * sigma * sigma)) for k in range(-radius, radius + 1)]
    s = sum(g)
    return tuple(v / s for v in g)


def filt_x(img: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """1-D correlation along the last axis with replicate borders."""
    r = len(taps) // 2
    if r == 0:
        return img * taps[0] if taps[0] != 1.0 else img
    w = img.shape[-1]
    p = F.pad(img, (r, r, 0, 0), mode="replicate")
    out = None
    for l, t in enumerate(taps):
        if t == 0.0:
            continue
        term = p[..., l:l + w] * t
        out = term if out is None else out + term
    return out


def filt_y(img: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """1-D correlation along the rows axis with replicate borders."""
    r = len(taps) // 2
    if r == 0:
        return img * taps[0] if taps[0] != 1.0 else img
    h = img.shape[-2]
    p = F.pad(img, (0, 0, r, r), mode="replicate")
    out = None
    for l, t in enumerate(taps):
        if t == 0.0:
            continue
        term = p[..., l:l + h, :] * t
        out = term if out is None else out + term
    return out


def filt2d(img: torch.Tensor, taps: tuple[float, ...]) -> torch.Tensor:
    """Separable 2-D correlation: x pass then y pass."""
    return filt_y(filt_x(img, taps), taps)


def neighbour_weights(phi: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Edge weights to the left/right/up/down neighbour (0 where the neighbour is missing)."""
    wl = F.pad(phi[..., :, :-1], (1, 0))
    wr = F.pad(phi[..., :, :-1], (0, 1))
    wu = F.pad(phi[..., :-1, :], (0, 0, 1, 0))
    wd = F.pad(phi[..., :-1, :], (0, 0, 0, 1))
    return wl, wr, wu, wd


def _axis_weights(n_src: int, n_dst: int, r: float, dtype: torch.dtype, device: torch.device) -> tuple:
    """Indices and weights of clamped linear interpolation at positions (k+1)/r - 1, k < n_dst.

    Positions are float64 like the C++ code's. They are built with device ops, not copied from
    the host, so that a CUDA graph can capture the whole flow (cuda_graphs.py).
    """
    dev = device if device.type in ("cpu", "cuda", "meta") else torch.device("cpu")  # no float64 on mps
    x = ((torch.arange(n_dst, dtype=torch.float64, device=dev) + 1.0) / r - 1.0).clamp(0.0, n_src - 1)
    x0 = torch.floor(x)
    i0 = x0.long()
    i1 = (i0 + 1).clamp(max=n_src - 1)
    return i0.to(device), i1.to(device), (x - x0).to(device=device, dtype=dtype)


def resize_scale(img: torch.Tensor, h_dst: int, w_dst: int, rx: float, ry: float) -> torch.Tensor:
    """Non-centred bilinear resize: dst(i, j) = bilinear(src, (j+1)/rx - 1, (i+1)/ry - 1)."""
    h, w = img.shape[-2:]
    x0, x1, dx = _axis_weights(w, w_dst, rx, img.dtype, img.device)
    y0, y1, dy = _axis_weights(h, h_dst, ry, img.dtype, img.device)
    t = img.index_select(-1, x0) * (1.0 - dx) + img.index_select(-1, x1) * dx
    dy = dy.view(-1, 1)
    return t.index_select(-2, y0) * (1.0 - dy) + t.index_select(-2, y1) * dy


def resize_ratio(img: torch.Tensor, r: float) -> torch.Tensor:
    """C++ `imresize(I, ratio)`: size int(W*r) x int(H*r), same ratio on both axes."""
    h, w = img.shape[-2:]
    return resize_scale(img, int(h * r), int(w * r), r, r)


def resize_to(img: torch.Tensor, h_dst: int, w_dst: int) -> torch.Tensor:
    """C++ `imresize(I, W, H)`: per-axis ratios W_dst/W and H_dst/H."""
    h, w = img.shape[-2:]
    return resize_scale(img, h_dst, w_dst, w_dst / w, h_dst / h)


def warp(f1: torch.Tensor, f2: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bilinear sample of f2 at (x+u, y+v); outside [0,W-1]x[0,H-1] take f1 (all channels).

    f1, f2: (N, C, H, W); u, v: (N, H, W).
    """
    n, c, h, w = f2.shape
    dev, dt = f2.device, f2.dtype
    gx = torch.arange(w, device=dev, dtype=dt).view(1, 1, w)
    gy = torch.arange(h, device=dev, dtype=dt).view(1, h, 1)
    x = gx + u
    y = gy + v
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    x = x.clamp(0, w - 1)
    y = y.clamp(0, h - 1)
    x0f = torch.floor(x)
    y0f = torch.floor(y)
    dx = (x - x0f).unsqueeze(1)
    dy = (y - y0f).unsqueeze(1)
    x0 = x0f.long()
    y0 = y0f.long()
    x1 = (x0 + 1).clamp(max=w - 1)
    y1 = (y0 + 1).clamp(max=h - 1)
    flat = f2.reshape(n, c, h * w)

    def g(yy, xx):
        idx = (yy * w + xx).view(n, 1, h * w).expand(n, c, h * w)
        return flat.gather(2, idx).view(n, c, h, w)

    top = g(y0, x0) * (1.0 - dx) + g(y0, x1) * dx
    bot = g(y1, x0) * (1.0 - dx) + g(y1, x1) * dx
    out = top * (1.0 - dy) + bot * dy
    return torch.where(outside.unsqueeze(1), f1, out)
