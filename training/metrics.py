"""PSNR and SSIM on RGB and on the Y channel (inputs in [0, 1])."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .imaging import rgb_to_y

__all__ = ["psnr", "ssim", "frame_metrics"]


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1] (any shape, mean over all values)."""
    mse = torch.mean((a.double() - b.double()) ** 2).item()
    return float("inf") if mse == 0 else 10.0 * math.log10(1.0 / mse)


def _gauss(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x ** 2) / (2 * sigma ** 2))
    return (g / g.sum()).float()


def _filt(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    # Separable Gaussian ("valid" region): two 1-D passes cost 22 instead of 121 MACs per pixel.
    c = x.shape[1]
    x = F.conv2d(x, g.view(1, 1, 1, -1).expand(c, 1, 1, g.numel()), groups=c)
    return F.conv2d(x, g.view(1, 1, -1, 1).expand(c, 1, g.numel(), 1), groups=c)


def ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean SSIM (Gaussian window 11, sigma 1.5, valid region) of (C, H, W) images in [0, 1], averaged over C."""
    if a.shape[-1] < 11 or a.shape[-2] < 11:
        raise ValueError(f"ssim: images must be at least 11x11, got {tuple(a.shape[-2:])}")
    a = a.float().unsqueeze(0)
    b = b.float().unsqueeze(0)
    g = _gauss().to(a.device)
    mu_a, mu_b = _filt(a, g), _filt(b, g)
    saa = _filt(a * a, g) - mu_a ** 2
    sbb = _filt(b * b, g) - mu_b ** 2
    sab = _filt(a * b, g) - mu_a * mu_b
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    m = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (saa + sbb + c2))
    return float(m.double().mean())


def frame_metrics(out: torch.Tensor, ref: torch.Tensor, with_ssim: bool = True) -> dict[str, float]:
    """PSNR/SSIM on Y and RGB of one (3, H, W) output against its reference, both in [0, 1]."""
    out = out.clamp(0, 1)
    ya, yb = rgb_to_y(out), rgb_to_y(ref)
    m = {"psnr_y": psnr(ya, yb), "psnr_rgb": psnr(out, ref)}
    if with_ssim:
        m["ssim_y"] = ssim(ya, yb)
        m["ssim_rgb"] = ssim(out, ref)
    return m
