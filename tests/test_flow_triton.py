"""The CUDA SOR kernel (Triton) against the eager red-black solver.

On a machine without CUDA the kernel runs under Triton's interpreter (TRITON_INTERPRET=1, set
before triton is imported, hence the subprocess); with CUDA it is compiled and compared on the
device.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent

CHECK = r"""
import torch
from vsstar.flow.triton_sor import sor_redblack_triton
from vsstar.flow.solver import sor_redblack_torch
dev = "{dev}"
g = torch.Generator().manual_seed(0)
worst = 0.0
for dt in (torch.float64, torch.float32):
    for n, h, w in ((2, 9, 13), (1, 8, 10), (1, 5, 2)):
        A = [torch.rand(n, h, w, generator=g, dtype=dt) * 0.01 for _ in range(6)]
        A[0] += 1; A[2] += 1; A[1] -= 0.005; A[5] = A[5] * 100 + 0.1
        A = [x.to(dev) for x in A]
        a = sor_redblack_torch(*A, 0.012, 6)
        b = sor_redblack_triton(*A, 0.012, 6)
        du0, dv0 = torch.rand(2, n, h, w, generator=g, dtype=dt).to(dev)
        c = sor_redblack_torch(*A, 0.012, 3, du0, dv0)
        d = sor_redblack_triton(*A, 0.012, 3, du0, dv0)
        tol = 1e-12 if dt == torch.float64 else 1e-6
        for x, y in ((a[0], b[0]), (a[1], b[1]), (c[0], d[0]), (c[1], d[1])):
            err = (x - y).abs().max().item()
            assert err < tol, (dt, n, h, w, err)
            worst = max(worst, err)
        assert a[0].abs().max() > 1e-3
print("ok", worst)
"""


def _have_triton() -> bool:
    try:
        import triton  # noqa: F401
        return True
    except ImportError:
        return False


@pytest.mark.skipif(not _have_triton(), reason="triton not installed")
def test_triton_half_sweep_matches_torch_interpreter():
    env = dict(os.environ, TRITON_INTERPRET="1", PYTHONPATH=str(ROOT))
    r = subprocess.run([sys.executable, "-c", CHECK.format(dev="cpu")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]


@pytest.mark.skipif(not torch.cuda.is_available() or not _have_triton(), reason="CUDA device not available")
def test_triton_half_sweep_matches_torch_cuda():
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.pop("TRITON_INTERPRET", None)
    r = subprocess.run([sys.executable, "-c", CHECK.format(dev="cuda")], capture_output=True, text=True,
                       env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("ok"), r.stderr[-2000:]
