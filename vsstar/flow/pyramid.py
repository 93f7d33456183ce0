"""Gaussian pyramid and per-level features exactly as Coarse2Fine builds them."""
from __future__ import annotations

import math

import torch

from .ops import D5, filt2d, filt_x, filt_y, gauss_taps, resize_ratio


def effective_ratio(ratio: float) -> float:
    """The C++ code silently replaces out-of-range ratios by 0.75."""
    return 0.75 if (ratio > 0.98 or ratio < 0.4) else ratio


def num_levels(width: int, ratio: float, min_width: int) -> int:
    """int(log(minWidth/W)/log(ratio)) (width only), at least 1 (a single level for narrow frames)."""
    ratio = effective_ratio(ratio)
    n = int(math.log(min_width / width) / math.log(ratio))
    return max(n, 1)


def level_sizes(height: int, width: int, ratio: float, min_width: int) -> list[tuple[int, int]]:
    """(H, W) of every pyramid level, finest first (sizes may reach 0 for very short frames)."""
    sizes = [(height, width)]
    for src, _, _, r in pyramid_plan(width, ratio, min_width):
        hs, ws = sizes[src]
        if r < 0:
            r = -r / ws if ws > 0 else 0.0
        sizes.append((int(hs * r), int(ws * r)))
    return sizes


def pyramid_plan(width: int, ratio: float, min_width: int) -> list[tuple[int, float, int, float]]:
    """(source level, sigma, radius, resize ratio) for levels 1..nLevels-1 (see build_pyramid).

    The resize ratio of deep levels depends on the source width, so it is returned as a factor
    `f` with ratio = f / width(blurred source)."""
    ratio = effective_ratio(ratio)
    n_levels = num_levels(width, ratio, min_width)
    base = 1.0 / ratio - 1.0
    n = int(math.log(0.25) / math.log(ratio))
    plan = []
    for i in range(1, n_levels):
        if i <= n:
            sigma = base * i
            plan.append((0, sigma, int(3.0 * sigma), ratio ** i))
        else:
            sigma = base * n
            plan.append((i - n, sigma, int(3.0 * sigma), -(ratio ** i * width)))
    return plan


def build_pyramid(img: torch.Tensor, ratio: float, min_width: int) -> list[torch.Tensor]:
    """Levels of (N, C, H, W) `img`, finest (the input) first.

    Level i <= n (n = int(log .25/log ratio)) blurs the input with sigma = (1/ratio-1)*i and radius
    int(3 sigma) (so level 1 is not blurred at all for ratio .75) and resizes by ratio^i; deeper
    levels blur level i-n with the level-n kernel and resize to ratio^i of the input width.
    """
    levels = [img]
    for src, sigma, radius, r in pyramid_plan(img.shape[-1], ratio, min_width):
        foo = filt2d(levels[src], gauss_taps(sigma, radius))
        # r < 0 encodes ratio^i * W, to be divided by the blurred source's width (C++ order).
        levels.append(resize_ratio(foo, r if r > 0 else -r / foo.shape[-1]))
    return levels


def features(img: torch.Tensor, col_type: int = 0) -> torch.Tensor:
    """colType 0 on RGB: [gray, d/dx gray, d/dy gray, G-R, G-B] (5 channels).

    colType 1 (or a 1-channel image): [I, dI/dx, dI/dy] per channel.
    """
    if col_type == 0 and img.shape[1] >= 3:
        r, g, b = img[:, 0:1], img[:, 1:2], img[:, 2:3]
        gray = 0.299 * r + 0.587 * g + 0.114 * b
        return torch.cat([gray, filt_x(gray, D5), filt_y(gray, D5), g - r, g - b], dim=1)
    return torch.cat([img, filt_x(img, D5), filt_y(img, D5)], dim=1)
