"""SmoothFlowSOR of Coarse2Fine on batched torch tensors, red-black SOR ordering.

The C++ code sweeps in raster order, which is inherently sequential. A red-black ordering (one
checkerboard colour, then the other) updates each colour in one parallel step and stays within
the project's accuracy bar with the same number of sweeps; a Jacobi ordering with omega 1.8
diverges, and more or fewer sweeps move the result away from the reference (30 sweeps are far
from converged, so the reference *is* the 30-sweep iterate; see docs/flow.md).
"""
from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from .constants import EPS2, FIRST_COLOUR, OMEGA, PROX
from .ops import D5, G5, filt2d, filt_x, filt_y, neighbour_weights, warp


def smoothness_weight(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """phi = 0.5/sqrt(|grad u|^2+|grad v|^2+eps^2), forward differences, 0 on last column/row."""
    ux = F.pad(u[..., :, 1:] - u[..., :, :-1], (0, 1))
    uy = F.pad(u[..., 1:, :] - u[..., :-1, :], (0, 0, 0, 1))
    vx = F.pad(v[..., :, 1:] - v[..., :, :-1], (0, 1))
    vy = F.pad(v[..., 1:, :] - v[..., :-1, :], (0, 0, 0, 1))
    return 0.5 / torch.sqrt(ux * ux + uy * uy + vx * vx + vy * vy + EPS2)


def neighbour_sum(x: torch.Tensor, wl, wr, wu, wd) -> torch.Tensor:
    """sum_q w_pq x_q over the 4-neighbourhood (zero-padded: border weights are 0 anyway)."""
    p = F.pad(x, (1, 1, 1, 1))
    return (wl * p[..., 1:-1, :-2] + wr * p[..., 1:-1, 2:]
            + wu * p[..., :-2, 1:-1] + wd * p[..., 2:, 1:-1])


def derivatives(i1: torch.Tensor, w2: torch.Tensor):
    """Ix, Iy of the 0.4/0.6 blend of the G5-smoothed images and It = I2 - I1, (N, C, H, W) each.

    i1 is the G5-smoothed F1 (constant over a level), w2 the current warped F2.
    """
    i2 = filt2d(w2, G5)
    im = 0.4 * i1 + 0.6 * i2
    return filt_x(im, D5), filt_y(im, D5), i2 - i1


def data_terms(ix, iy, it, du=None, dv=None):
    """Channel-averaged robust data tensors A11, A12, A22, B1, B2 (each (N, H, W)).

    The L1 weight psi is taken at the linearised residual It + Ix du + Iy dv (du = dv = 0 on the
    first inner iteration, the only one STARnet runs); the B terms use It itself.
    """
    r = it if du is None else it + ix * du.unsqueeze(1) + iy * dv.unsqueeze(1)
    psi = 0.5 / torch.sqrt(r * r + EPS2)
    c = ix.shape[1]
    pix = psi * ix
    piy = psi * iy
    a11 = (pix * ix).sum(1) / c
    a12 = (pix * iy).sum(1) / c
    a22 = (piy * iy).sum(1) / c
    b1 = (pix * it).sum(1) / c
    b2 = (piy * it).sum(1) / c
    return a11, a12, a22, b1, b2


def checkerboard(h: int, w: int, device, colour: int = 0) -> torch.Tensor:
    """Boolean (H, W) mask of the pixels with (i+j) % 2 == colour."""
    i = torch.arange(h, device=device).view(h, 1)
    j = torch.arange(w, device=device).view(1, w)
    return ((i + j) % 2) == colour


def sor_redblack_torch(a11, a12, a22, b1, b2, phi, alpha: float, n_sor: int, du=None, dv=None):
    """n_sor red-black SOR sweeps on the 2x2-coupled increment system, from (du, dv) (or 0).

    Written for few kernel launches per half-sweep (the cost on a GPU): all per-pixel constants
    are folded per colour, with zeros on the other colour, so one in-place update
    du <- o*du + c + k*S - e*dv leaves the other colour's pixels exactly unchanged (o = 1 there);
    the neighbour sums of du and dv come from one stacked tensor (a colour's du and dv updates
    only read the other colour's neighbours, which this half-sweep does not change).
    """
    wl, wr, wu, wd = neighbour_weights(phi)
    diag = PROX * alpha + alpha * (wl + wr + wu + wd)
    k1 = OMEGA / (a11 + diag)
    k2 = OMEGA / (a22 + diag)
    aw = [(alpha * w).unsqueeze(1) for w in (wl, wr, wu, wd)]  # broadcast over (du, dv)
    first = checkerboard(a11.shape[-2], a11.shape[-1], a11.device, FIRST_COLOUR).to(a11.dtype)
    consts = []
    for m in (first, 1.0 - first):
        km1, km2 = k1 * m, k2 * m
        consts.append((1.0 - OMEGA * m, km1, km1 * b1, km1 * a12, km2, km2 * b2, km2 * a12))
    x = torch.zeros(b1.shape[0], 2, *b1.shape[1:], dtype=b1.dtype, device=b1.device)
    if du is not None:
        x[:, 0] = du
        x[:, 1] = dv
    xu, xv = x[:, 0], x[:, 1]
    for _ in range(n_sor):
        for o, km1, c1, e1, km2, c2, e2 in consts:
            p = F.pad(x, (1, 1, 1, 1))
            s = torch.mul(aw[0], p[..., 1:-1, :-2])
            s.addcmul_(aw[1], p[..., 1:-1, 2:])
            s.addcmul_(aw[2], p[..., :-2, 1:-1])
            s.addcmul_(aw[3], p[..., 2:, 1:-1])
            xu.mul_(o).add_(c1).addcmul_(km1, s[:, 0]).addcmul_(e1, xv, value=-1.0)
            xv.mul_(o).add_(c2).addcmul_(km2, s[:, 1]).addcmul_(e2, xu, value=-1.0)
    return xu.clone(), xv.clone()


def laplacian(x: torch.Tensor, wl, wr, wu, wd) -> torch.Tensor:
    """L_phi(x)[p] = sum_q w_pq (x_p - x_q) = -div(phi grad x)."""
    return (wl + wr + wu + wd) * x - neighbour_sum(x, wl, wr, wu, wd)


def smooth_flow_sor(f1, f2, w2, u, v, alpha: float, n_outer: int, n_sor: int, n_inner: int = 1,
                    sor=None):
    """Outer fixed-point iterations of one pyramid level; returns the updated (u, v).

    f1, f2, w2: (N, C, H, W) features; u, v: (N, H, W). `sor` is the inner solver (signature of
    `sor_redblack_torch`), default `sor_redblack`. (On the CPU with numba the whole pipeline runs as
    compiled loops instead, see cpu.flow_numpy.)
    """
    sor = sor or sor_redblack
    i1 = filt2d(f1, G5)
    for _ in range(n_outer):
        ix, iy, it = derivatives(i1, w2)
        du = dv = None
        for hh in range(n_inner):
            # Inner fixed-point iterations re-linearise around u + du but keep the Laplacian
            # of u itself on the right-hand side, as the C++ code does.
            uu, vv = (u, v) if hh == 0 else (u + du, v + dv)
            phi = smoothness_weight(uu, vv)
            a11, a12, a22, b1, b2 = data_terms(ix, iy, it, du, dv)
            wl, wr, wu, wd = neighbour_weights(phi)
            r1 = -b1 - alpha * laplacian(u, wl, wr, wu, wd)
            r2 = -b2 - alpha * laplacian(v, wl, wr, wu, wd)
            du, dv = sor(a11, a12, a22, r1, r2, phi, alpha, n_sor, du, dv)
        u = u + du
        v = v + dv
        w2 = warp(f1, f2, u, v)
    return u, v


def use_triton(t: torch.Tensor) -> bool:
    """The Triton kernel serves CUDA tensors; VSSTAR_FLOW_TRITON=0 forces the eager torch ops."""
    if not t.is_cuda or os.environ.get("VSSTAR_FLOW_TRITON", "1") == "0":
        return False
    from . import triton_sor  # imported on CUDA only: loading Triton costs CPU-only processes time

    return triton_sor.HAVE_TRITON


def sor_redblack(a11, a12, a22, b1, b2, phi, alpha: float, n_sor: int, du=None, dv=None):
    """Red-black SOR: one Triton launch per half-sweep on CUDA, eager torch ops elsewhere."""
    if use_triton(b1):
        from . import triton_sor

        return triton_sor.sor_redblack_triton(a11, a12, a22, b1, b2, phi, alpha, n_sor, du, dv)
    return sor_redblack_torch(a11, a12, a22, b1, b2, phi, alpha, n_sor, du, dv)
