"""Batched coarse-to-fine variational flow (Ce Liu's Coarse2Fine with STARnet's parameters)."""
from __future__ import annotations

import torch

from .ops import resize_to, warp
from .pyramid import build_pyramid, effective_ratio, features
from .solver import smooth_flow_sor


def _flow_core(im1: torch.Tensor, im2: torch.Tensor, alpha: float, ratio: float, min_width: int,
               n_outer: int, n_inner: int, n_sor: int, col_type: int, sor=None) -> torch.Tensor:
    ratio = effective_ratio(ratio)
    p1 = build_pyramid(im1, ratio, min_width)
    p2 = build_pyramid(im2, ratio, min_width)
    u = v = None
    for k in range(len(p1) - 1, -1, -1):
        f1 = features(p1[k], col_type)
        f2 = features(p2[k], col_type)
        h, w = f1.shape[-2:]
        if u is None:
            u = f1.new_zeros(f1.shape[0], h, w)
            v = f1.new_zeros(f1.shape[0], h, w)
            w2 = f2
        else:
            # The C++ code scales by 1/ratio, not by the true size ratio of the levels.
            u = resize_to(u.unsqueeze(1), h, w).squeeze(1) * (1.0 / ratio)
            v = resize_to(v.unsqueeze(1), h, w).squeeze(1) * (1.0 / ratio)
            w2 = warp(f1, f2, u, v)
        # nInner > 1 is not implemented (STARnet uses 1); validated by the public API.
        u, v = smooth_flow_sor(f1, f2, w2, u, v, alpha, n_outer + k, n_sor + 3 * k, sor=sor)
    return torch.stack([u, v], dim=1)


def coarse2fine_flow_batch(im1: torch.Tensor, im2: torch.Tensor, *, alpha: float = 0.012,
                           ratio: float = 0.75, min_width: int = 20, n_outer: int = 7,
                           n_inner: int = 1, n_sor: int = 30, col_type: int = 0) -> torch.Tensor:
    """Flow from im1 to im2 for a batch: (N,3,H,W) RGB in [0,1] -> (N,2,H,W) pixels.

    Channel 0 is horizontal; im2(x+u, y+v) ~ im1(x, y). Runs on the inputs' device and in their
    dtype (float32 default, float64 for exactness checks).
    """
    with torch.no_grad():
        return _flow_core(im1, im2, alpha, ratio, min_width, n_outer, n_inner, n_sor, col_type)
