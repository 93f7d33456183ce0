"""Accuracy of vsstar.flow against the C++ Coarse2Fine reference flows (STARnet parameters)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from vsstar.flow import coarse2fine_flow_batch
from vsstar.flow.ops import warp
from vsstar.flow.pyramid import level_sizes

from support import shared_dir

HERE = Path(__file__).resolve().parent
LOCAL = HERE / "data" / "flow"
SHARED = shared_dir() / "reference" / "flow"


def _pair_names() -> list[str]:
    names = [p["name"] for p in json.loads((LOCAL / "manifest.json").read_text())["pairs"]]
    return [n for n in names if (LOCAL / f"{n}.npz").exists() or (SHARED / f"{n}_fw.npy").exists()]


def load_pair(name: str) -> dict:
    """im0/im1 float64 HxWx3 in [0,1], fw/bw float32 HxWx2 (tests/data first, then the shared data)."""
    f = LOCAL / f"{name}.npz"
    if f.exists():
        z = np.load(f)
        d = {k: z[k] for k in z.files}
    else:
        from PIL import Image
        d = {k: np.asarray(Image.open(SHARED / f"{name}_{k}.png").convert("RGB")) for k in ("im0", "im1")}
        d.update({k: np.load(SHARED / f"{name}_{k}.npy") for k in ("fw", "bw")})
    d["im0"] = d["im0"].astype(np.float64) / 255.0
    d["im1"] = d["im1"].astype(np.float64) / 255.0
    return d


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    # The machine is shared: one torch thread per test keeps OpenMP from spinning.
    yield


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


def _psnr(flow: np.ndarray, src: np.ndarray, dst: np.ndarray) -> float:
    """PSNR of dst warped back onto src with `flow` (HxWx2)."""
    f = torch.from_numpy(flow.astype(np.float64))
    w = warp(_t(src), _t(dst), f[None, ..., 0], f[None, ..., 1])[0].permute(1, 2, 0).numpy()
    return float(-10.0 * np.log10(np.mean((w - src) ** 2)))


def check_accuracy(flow_fn, names) -> list[tuple]:
    """Run `flow_fn(im1, im2) -> (N,2,H,W)` on both directions of each pair; return per-direction stats."""
    rows = []
    for name in names:
        d = load_pair(name)
        a, b = _t(d["im0"]), _t(d["im1"])
        fl = flow_fn(torch.cat([a, b]).float(), torch.cat([b, a]).float()).double().numpy()
        for k, (src, dst, ref) in enumerate([(d["im0"], d["im1"], d["fw"]), (d["im1"], d["im0"], d["bw"])]):
            mine = fl[k].transpose(1, 2, 0)
            epe = np.sqrt(((mine - ref.astype(np.float64)) ** 2).sum(-1))
            rows.append((name, "fw" if k == 0 else "bw", float(epe.mean()), float(np.percentile(epe, 99)),
                         _psnr(mine, src, dst) - _psnr(ref, src, dst)))
    return rows


def assert_bar(rows) -> None:
    means = [r[2] for r in rows]
    assert np.mean(means) <= 0.005, rows
    assert max(means) <= 0.05, rows
    assert max(r[3] for r in rows) <= 0.3, rows
    assert min(r[4] for r in rows) >= -0.02, rows


def test_level_sizes_match_cpp():
    assert level_sizes(144, 180, 0.75, 20) == [(144, 180), (108, 135), (81, 101), (60, 75), (45, 56),
                                               (34, 42), (25, 32)]
    assert len(level_sizes(64, 112, 0.75, 20)) == 5
    assert len(level_sizes(180, 320, 0.75, 20)) == 9
    assert len(level_sizes(270, 480, 0.75, 20)) == 11


def _redblack(a, b):
    return coarse2fine_flow_batch(a, b, ordering="redblack")


def test_accuracy_all_pairs_redblack_float32():
    """The issue's bar on both directions of every reference pair: float32, parallel (GPU) ordering."""
    names = _pair_names()
    assert len(names) == 7, f"the bar is defined on all 7 reference pairs, found {names}"
    rows = check_accuracy(_redblack, names)
    assert_bar(rows)
    # The ordering is not the reference's: the large-motion pair really differs (guards against a
    # test that silently compares the raster solver).
    assert max(r[2] for r in rows) > 1e-3


def test_small_pair_redblack_close():
    """A few-level pair is reproduced to ~1e-3 px even with the parallel SOR ordering."""
    rows = check_accuracy(_redblack, ["bikes_120_small"])
    assert max(r[2] for r in rows) < 1e-3, rows


def _have_numba() -> bool:
    from vsstar.flow.cpu import HAVE_NUMBA
    return HAVE_NUMBA


@pytest.mark.skipif(not _have_numba(), reason="numba not installed (raster CPU kernel)")
def test_accuracy_all_pairs_raster_float32():
    """CPU default path (raster order like the C++ code): float32 within ~1e-4 px of the reference."""
    names = _pair_names()
    rows = check_accuracy(lambda a, b: coarse2fine_flow_batch(a, b, ordering="raster"), names)
    assert_bar(rows)
    assert max(r[2] for r in rows) < 1e-3, rows
    assert max(r[3] for r in rows) < 1e-2, rows


@pytest.mark.skipif(not _have_numba(), reason="numba not installed (raster CPU kernel)")
def test_float64_raster_matches_cpp_float64():
    """float64 + raster order reproduces the C++ double-precision output to rounding level."""
    d = load_pair("bikes_120_small")
    if "fw_f64" not in d:
        pytest.skip("no float64 reference")
    a, b = _t(d["im0"]), _t(d["im1"])
    fl = coarse2fine_flow_batch(torch.cat([a, b]), torch.cat([b, a]), ordering="raster")
    assert fl.dtype == torch.float64
    for k, ref in enumerate((d["fw_f64"], d["bw_f64"])):
        err = np.abs(fl[k].permute(1, 2, 0).numpy() - ref).max()
        assert err < 1e-9, err
