"""Drop-in replacement for the `pyflow` wrapper's `coarse2fine_flow` call on numpy arrays."""
from __future__ import annotations

import numpy as np
import torch

from .batch import check_pyramid, coarse2fine_flow_batch
from .settings import FlowSettings, check_params

_DEFAULT = FlowSettings()


def _cubic_weights(t: torch.Tensor) -> list[torch.Tensor]:
    """Keys cubic-convolution weights (a = -0.5) for the taps at offsets -1, 0, 1, 2."""
    a = -0.5
    t2 = t * t
    t3 = t2 * t
    return [a * (t3 - 2 * t2 + t),
            (a + 2) * t3 - (a + 3) * t2 + 1,
            -(a + 2) * t3 + (2 * a + 3) * t2 - a * t,
            a * (t2 - t3)]


def warp_bicubic(im1: torch.Tensor, im2: torch.Tensor, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Bicubic sample of im2 at (x+u, y+v) with clamped taps; outside the frame take im1; clip [0,1].

    im1, im2: (N, C, H, W); u, v: (N, H, W). This is the wrapper's third output (it does not
    influence the flow).
    """
    n, c, h, w = im2.shape
    x = torch.arange(w, dtype=u.dtype).view(1, 1, w) + u
    y = torch.arange(h, dtype=u.dtype).view(1, h, 1) + v
    outside = (x < 0) | (x > w - 1) | (y < 0) | (y > h - 1)
    x0 = torch.floor(x)
    y0 = torch.floor(y)
    wx = _cubic_weights(x - x0)
    wy = _cubic_weights(y - y0)
    x0 = x0.long()
    y0 = y0.long()
    flat = im2.reshape(n, c, h * w)
    out = torch.zeros_like(im2)
    for a in range(4):
        yy = (y0 + a - 1).clamp(0, h - 1)
        row = torch.zeros_like(im2)
        for b in range(4):
            xx = (x0 + b - 1).clamp(0, w - 1)
            idx = (yy * w + xx).view(n, 1, h * w).expand(n, c, h * w)
            row += flat.gather(2, idx).view(n, c, h, w) * wx[b].unsqueeze(1)
        out += row * wy[a].unsqueeze(1)
    out = torch.where(outside.unsqueeze(1), im1, out)
    return out.clamp(0.0, 1.0)


def _check_image(name: str, im, need_c: int) -> None:
    if not isinstance(im, np.ndarray):
        raise ValueError(f"{name}: expected a numpy array HxWx3 (float64 RGB in [0,1]), got {type(im).__name__}")
    if im.ndim != 3 or im.shape[2] < need_c:
        raise ValueError(f"{name}: expected an HxWx{3 if need_c == 3 else 'C'} array "
                         f"({'RGB' if need_c == 3 else 'gray'} channels last), got shape {im.shape}")
    if im.dtype not in (np.float64, np.float32):
        raise ValueError(f"{name}: expected dtype float64 (or float32), got {im.dtype}")


def coarse2fine_flow(im1: np.ndarray, im2: np.ndarray, alpha: float = _DEFAULT.alpha,
                     ratio: float = _DEFAULT.ratio, minWidth: int = _DEFAULT.min_width,
                     nOuterFPIterations: int = _DEFAULT.n_outer, nInnerFPIterations: int = _DEFAULT.n_inner,
                     nSORIterations: int = _DEFAULT.n_sor, colType: int = _DEFAULT.col_type):
    """Ce Liu's Coarse2Fine flow with the `pyflow` call signature (defaults: STARnet's parameters).

    im1, im2: HxWx3 float64 RGB in [0,1] (HxWx1 gray with colType=1). Returns (u, v, im2W): u, v
    HxW float64 with im2(x+u, y+v) ~ im1(x, y), and im2W, im2 warped onto im1 (bicubic, pixels
    that leave the frame taken from im1, clipped to [0,1]). Computed in float64 on the CPU with
    the reference's raster SOR order when numba is installed (red-black otherwise). Unlike the
    C++ code it prints nothing and is thread-safe.
    """
    need_c = 3 if colType == 0 else 1
    _check_image("im1", im1, need_c)
    _check_image("im2", im2, need_c)
    if im1.shape != im2.shape:
        raise ValueError(f"im2: expected the shape of im1 {im1.shape}, got {im2.shape}")
    if im1.dtype != im2.dtype:
        raise ValueError(f"im2: expected the dtype of im1 ({im1.dtype}), got {im2.dtype}")
    check_params(alpha, ratio, minWidth, nOuterFPIterations, nInnerFPIterations, nSORIterations, colType,
                 names=("alpha", "ratio", "minWidth", "nOuterFPIterations", "nInnerFPIterations",
                        "nSORIterations", "colType"))
    check_pyramid(im1.shape[0], im1.shape[1], ratio, minWidth)
    for name, im in (("im1", im1), ("im2", im2)):
        if not np.isfinite(im).all():
            raise ValueError(f"{name}: expected finite values, found NaN or inf")
    t1 = torch.from_numpy(np.array(im1, dtype=np.float64).transpose(2, 0, 1))[None]
    t2 = torch.from_numpy(np.array(im2, dtype=np.float64).transpose(2, 0, 1))[None]
    if colType == 0:
        t1, t2 = t1[:, :3], t2[:, :3]
    flow = coarse2fine_flow_batch(t1, t2, alpha=alpha, ratio=ratio, min_width=minWidth,
                                  n_outer=nOuterFPIterations, n_inner=nInnerFPIterations,
                                  n_sor=nSORIterations, col_type=colType)
    with torch.no_grad():
        im2w = warp_bicubic(t1, t2, flow[:, 0], flow[:, 1])
    u = np.ascontiguousarray(flow[0, 0].numpy())
    v = np.ascontiguousarray(flow[0, 1].numpy())
    return u, v, np.ascontiguousarray(im2w[0].permute(1, 2, 0).numpy())
