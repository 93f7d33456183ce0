"""Triton red-black SOR half-sweep for CUDA tensors.

One kernel launch updates du then dv at all pixels of one colour, so a sweep is two launches
instead of the ~26 elementwise torch ops of the eager path (on a GPU these tiny levels are bound
by launch latency, not arithmetic), and the whole flow call is replayed from a CUDA graph
(cuda_graphs.py). Neither the graph path nor the compiled kernel could be run where they were
written (no GPU); tests/test_flow_triton.py, tests/test_flow_api.py and
tests/test_flow_cuda_graphs.py check them where CUDA exists. Same ordering
and arithmetic as `solver.sor_redblack_torch`; tested against it on CPU with Triton's
interpreter (TRITON_INTERPRET=1).
"""
from __future__ import annotations

import contextlib

import torch

from .constants import FIRST_COLOUR, OMEGA, PROX
from .ops import neighbour_weights

try:
    import triton
    import triton.language as tl
    HAVE_TRITON = True
except ImportError:  # pragma: no cover - triton ships with torch's CUDA wheels on Linux
    HAVE_TRITON = False

BLOCK = 1024

if HAVE_TRITON:
    @triton.jit
    def _rb_half_sweep(du_ptr, dv_ptr, a12_ptr, b1_ptr, b2_ptr, k1_ptr, k2_ptr, aphi_ptr,
                       total, H, W, HALF_W, colour, om_ptr, BLOCK: tl.constexpr):
        one_m_omega = tl.load(om_ptr)  # 1 - omega in the tensors' dtype (a float arg would be fp32)
        pid = tl.program_id(0)
        q = pid * BLOCK + tl.arange(0, BLOCK)  # over the colour's pixels, N*H*ceil(W/2)
        t = q % HALF_W
        r = q // HALF_W  # n*H + i
        i = r % H
        j = 2 * t + (i + colour) % 2
        valid = (q < total) & (j < W)
        p = r * W + j
        has_l = valid & (j > 0)
        has_r = valid & (j < W - 1)
        has_u = valid & (i > 0)
        has_d = valid & (i < H - 1)
        ph = tl.load(aphi_ptr + p, mask=valid, other=0.0)
        wl = tl.load(aphi_ptr + p - 1, mask=has_l, other=0.0)
        wu = tl.load(aphi_ptr + p - W, mask=has_u, other=0.0)
        wr = tl.where(has_r, ph, 0.0)
        wd = tl.where(has_d, ph, 0.0)
        du_c = tl.load(du_ptr + p, mask=valid, other=0.0)
        dv_c = tl.load(dv_ptr + p, mask=valid, other=0.0)
        s1 = (wl * tl.load(du_ptr + p - 1, mask=has_l, other=0.0)
              + wr * tl.load(du_ptr + p + 1, mask=has_r, other=0.0)
              + wu * tl.load(du_ptr + p - W, mask=has_u, other=0.0)
              + wd * tl.load(du_ptr + p + W, mask=has_d, other=0.0))
        s2 = (wl * tl.load(dv_ptr + p - 1, mask=has_l, other=0.0)
              + wr * tl.load(dv_ptr + p + 1, mask=has_r, other=0.0)
              + wu * tl.load(dv_ptr + p - W, mask=has_u, other=0.0)
              + wd * tl.load(dv_ptr + p + W, mask=has_d, other=0.0))
        a12 = tl.load(a12_ptr + p, mask=valid, other=0.0)
        nu = one_m_omega * du_c + tl.load(k1_ptr + p, mask=valid, other=0.0) * (
            tl.load(b1_ptr + p, mask=valid, other=0.0) + s1 - a12 * dv_c)
        tl.store(du_ptr + p, nu, mask=valid)
        nv = one_m_omega * dv_c + tl.load(k2_ptr + p, mask=valid, other=0.0) * (
            tl.load(b2_ptr + p, mask=valid, other=0.0) + s2 - a12 * nu)
        tl.store(dv_ptr + p, nv, mask=valid)


def sor_redblack_triton(a11, a12, a22, b1, b2, phi, alpha: float, n_sor: int, du=None, dv=None,
                        omega: float = OMEGA, prox: float = PROX):
    """Red-black SOR like `solver.sor_redblack_torch`, each half-sweep one Triton launch.

    On CUDA the launches are recorded with the rest of the flow call in one CUDA graph (batch.py).
    """
    wl, wr, wu, wd = neighbour_weights(phi)
    diag = prox * alpha + alpha * (wl + wr + wu + wd)
    k1 = (omega / (a11 + diag)).contiguous()
    k2 = (omega / (a22 + diag)).contiguous()
    aphi = (alpha * phi).contiguous()
    a12, b1, b2 = a12.contiguous(), b1.contiguous(), b2.contiguous()
    du = torch.zeros_like(b1) if du is None else du.contiguous().clone()
    dv = torch.zeros_like(b2) if dv is None else dv.contiguous().clone()
    om = torch.full((1,), 1.0 - omega, dtype=b1.dtype, device=b1.device)
    n, h, w = b1.shape
    half_w = (w + 1) // 2
    total = n * h * half_w
    grid = (triton.cdiv(total, BLOCK),)
    # Triton launches on the current CUDA device, not the tensors' (matters for cuda:N).
    with torch.cuda.device(b1.device) if b1.is_cuda else contextlib.nullcontext():
        for _ in range(n_sor):
            for colour in (FIRST_COLOUR, 1 - FIRST_COLOUR):
                _rb_half_sweep[grid](du, dv, a12, b1, b2, k1, k2, aphi, total, h, w, half_w, colour, om,
                                     BLOCK=BLOCK)
    return du, dv
