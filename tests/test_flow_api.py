"""Public API of vsstar.flow: numpy drop-in, validation, edge cases, batching, devices."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from vsstar.flow import coarse2fine_flow, coarse2fine_flow_batch, level_sizes, warp_bicubic
from vsstar.flow.cpu import HAVE_NUMBA

DATA = Path(__file__).resolve().parent / "data" / "flow"
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (raster CPU kernel)")
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not available")


@pytest.fixture(autouse=True)
def _one_thread(one_torch_thread):
    # The machine is shared: one torch thread per test keeps OpenMP from spinning.
    yield


@pytest.fixture(scope="module")
def small():
    z = np.load(DATA / "bikes_120_small.npz")
    return {k: (z[k].astype(np.float64) / 255.0 if k.startswith("im") else z[k]) for k in z.files}


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img)).permute(2, 0, 1)[None]


# ---- numpy drop-in --------------------------------------------------------------------------

@needs_numba
def test_dropin_reproduces_cpp_float64(small):
    u, v, w = coarse2fine_flow(small["im0"], small["im1"], 0.012, 0.75, 20, 7, 1, 30, 0)
    ref = small["fw_f64"]
    assert u.shape == v.shape == small["im0"].shape[:2] and u.dtype == np.float64
    assert np.abs(u - ref[..., 0]).max() < 1e-9
    assert np.abs(v - ref[..., 1]).max() < 1e-9
    assert w.shape == small["im0"].shape and w.min() >= 0.0 and w.max() <= 1.0
    # The warped second frame is closer to the first frame than the second frame itself.
    assert np.abs(w - small["im0"]).mean() < 0.7 * np.abs(small["im1"] - small["im0"]).mean()


def test_dropin_defaults_are_starnet_params(small):
    a = coarse2fine_flow(small["im0"], small["im1"])
    b = coarse2fine_flow(small["im0"], small["im1"], alpha=0.012, ratio=0.75, minWidth=20,
                         nOuterFPIterations=7, nInnerFPIterations=1, nSORIterations=30, colType=0)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def test_dropin_float32_input(small):
    u, v, w = coarse2fine_flow(small["im0"].astype(np.float32), small["im1"].astype(np.float32))
    ref = small["fw"]
    assert np.abs(u - ref[..., 0]).mean() < 1e-3 and np.isfinite(w).all()


def test_warp_bicubic_integer_shift():
    rng = np.random.default_rng(0)
    im1 = torch.from_numpy(rng.random((1, 3, 12, 16)))
    im2 = torch.from_numpy(rng.random((1, 3, 12, 16)))
    u = torch.ones(1, 12, 16, dtype=torch.float64)
    v = torch.zeros(1, 12, 16, dtype=torch.float64)
    out = warp_bicubic(im1, im2, u, v)
    torch.testing.assert_close(out[..., :-1], im2[..., 1:], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[..., -1], im1[..., -1], rtol=0, atol=0)  # left the frame -> im1


# ---- edge cases -----------------------------------------------------------------------------

@pytest.mark.parametrize("ordering", ["raster", "redblack"])
def test_identical_frames_zero_flow(small, ordering):
    if ordering == "raster" and not HAVE_NUMBA:
        pytest.skip("numba not installed")
    a = _t(small["im0"]).float()
    fl = coarse2fine_flow_batch(a, a.clone(), ordering=ordering)
    assert torch.count_nonzero(fl) == 0
    u, v, w = coarse2fine_flow(small["im1"], small["im1"].copy())
    assert not u.any() and not v.any()


@pytest.mark.parametrize("ordering", ["auto", "redblack"])
@pytest.mark.parametrize("kind", ["black", "flat", "flat-vs-black", "noise-vs-black"])
def test_flat_and_black_frames_finite_and_silent(kind, ordering, capfd):
    h, w = 24, 40
    rng = np.random.default_rng(1)
    frames = {"black": (np.zeros((h, w, 3)), np.zeros((h, w, 3))),
              "flat": (np.full((h, w, 3), 0.5), np.full((h, w, 3), 0.5)),
              "flat-vs-black": (np.full((h, w, 3), 0.7), np.zeros((h, w, 3))),
              "noise-vs-black": (rng.random((h, w, 3)), np.zeros((h, w, 3)))}[kind]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fl = coarse2fine_flow_batch(_t(frames[0]).float(), _t(frames[1]).float(), ordering=ordering)
        u, v, im2w = coarse2fine_flow(*frames)
    assert torch.isfinite(fl).all() and np.isfinite(u).all() and np.isfinite(v).all()
    assert np.isfinite(im2w).all()
    if kind in ("black", "flat"):
        assert torch.count_nonzero(fl) == 0
    out, err = capfd.readouterr()
    assert out == "" and err == ""


def test_narrow_frames_get_single_level_flow():
    rng = np.random.default_rng(2)
    for h, w in ((16, 18), (20, 25), (8, 8)):  # narrower than minWidth/ratio = 26.7
        assert len(level_sizes(h, w, 0.75, 20)) == 1
        a = rng.random((h, w, 3))
        b = np.roll(a, 1, axis=1)
        u, v, _ = coarse2fine_flow(a, b)
        assert u.shape == (h, w) and np.isfinite(u).all()
        assert np.median(u[:, 2:-2]) > 0.3  # content moved right by one pixel


def test_more_inner_iterations_run_and_change_result(small):
    u1, _, _ = coarse2fine_flow(small["im0"], small["im1"], nInnerFPIterations=1)
    u3, v3, _ = coarse2fine_flow(small["im0"], small["im1"], nInnerFPIterations=3)
    assert np.isfinite(u3).all() and np.isfinite(v3).all()
    d = np.abs(u3 - u1).mean()
    assert 1e-6 < d < 0.05
    a, b = _t(small["im0"]), _t(small["im1"])
    rb = coarse2fine_flow_batch(a, b, n_inner=3, ordering="redblack")[0, 0].numpy()
    assert np.abs(rb - u3).mean() < 0.01


def test_gray_coltype1():
    rng = np.random.default_rng(3)
    a = rng.random((30, 44, 1))
    b = np.roll(a, 2, axis=0)
    u, v, w = coarse2fine_flow(a, b, colType=1)
    assert w.shape == (30, 44, 1)
    assert np.median(v[3:-3, 3:-3]) > 1.0 and abs(np.median(u[3:-3, 3:-3])) < 0.3


# ---- validation -----------------------------------------------------------------------------

GOOD = np.zeros((30, 40, 3))


@pytest.mark.parametrize("args, kwargs, name", [
    ((GOOD, np.zeros((30, 41, 3))), {}, "im2"),
    ((GOOD, GOOD.astype(np.float32)), {}, "im2"),
    ((GOOD[..., :2], GOOD[..., :2]), {}, "im1"),
    ((GOOD[..., 0], GOOD[..., 0]), {}, "im1"),
    ((GOOD.astype(np.uint8), GOOD.astype(np.uint8)), {}, "im1"),
    (([[0.0]], GOOD), {}, "im1"),
    ((np.where(np.arange(40)[:, None] == 3, np.nan, GOOD), GOOD), {}, "im1"),
    ((GOOD, np.where(np.arange(40)[:, None] == 3, np.inf, GOOD)), {}, "im2"),
    ((np.zeros((2, 400, 3)), np.zeros((2, 400, 3))), {}, "im1"),  # too short for 12 levels
    ((np.zeros((1, 1, 3)), np.zeros((1, 1, 3))), {}, "im1"),
    ((GOOD, GOOD), {"alpha": 0.0}, "alpha"),
    ((GOOD, GOOD), {"minWidth": 0}, "minWidth"),
    ((GOOD, GOOD), {"nOuterFPIterations": 0}, "nOuterFPIterations"),
    ((GOOD, GOOD), {"nInnerFPIterations": 1.5}, "nInnerFPIterations"),
    ((GOOD, GOOD), {"nSORIterations": -1}, "nSORIterations"),
    ((GOOD, GOOD), {"colType": 2}, "colType"),
    ((GOOD, GOOD), {"ratio": float("nan")}, "ratio"),
])
def test_dropin_rejects_bad_input(args, kwargs, name):
    with pytest.raises(ValueError) as e:
        coarse2fine_flow(*args, **kwargs)
    msg = str(e.value)
    assert msg.startswith(name + ":") and "\n" not in msg and "expected" in msg


@pytest.mark.parametrize("a, b, kwargs, name", [
    (torch.zeros(1, 3, 30, 40), torch.zeros(1, 3, 30, 41), {}, "im2"),
    (torch.zeros(1, 3, 30, 40), torch.zeros(2, 3, 30, 40), {}, "im2"),
    (torch.zeros(1, 3, 30, 40), torch.zeros(1, 3, 30, 40, dtype=torch.float64), {}, "im2"),
    (torch.zeros(1, 2, 30, 40), torch.zeros(1, 2, 30, 40), {}, "im1"),
    (torch.zeros(3, 30, 40), torch.zeros(3, 30, 40), {}, "im1"),
    (torch.zeros(1, 3, 30, 40, dtype=torch.uint8), torch.zeros(1, 3, 30, 40, dtype=torch.uint8), {}, "im1"),
    (torch.zeros(1, 3, 30, 40, dtype=torch.float16), torch.zeros(1, 3, 30, 40, dtype=torch.float16), {}, "im1"),
    (torch.zeros(1, 3, 30, 40, dtype=torch.bfloat16), torch.zeros(1, 3, 30, 40, dtype=torch.bfloat16), {}, "im1"),
    (torch.full((1, 3, 30, 40), float("nan")), torch.zeros(1, 3, 30, 40), {}, "im1"),
    (torch.zeros(1, 3, 30, 40), torch.full((1, 3, 30, 40), float("inf")), {}, "im2"),
    (torch.zeros(1, 3, 2, 400), torch.zeros(1, 3, 2, 400), {}, "im1"),
    (torch.zeros(1, 3, 30, 40), torch.zeros(1, 3, 30, 40), {"ordering": "jacobi"}, "ordering"),
    (torch.zeros(1, 3, 30, 40), torch.zeros(1, 3, 30, 40), {"n_sor": 2.0}, "n_sor"),
    (np.zeros((1, 3, 30, 40)), np.zeros((1, 3, 30, 40)), {}, "im1"),
])
def test_batch_rejects_bad_input(a, b, kwargs, name):
    with pytest.raises(ValueError) as e:
        coarse2fine_flow_batch(a, b, **kwargs)
    msg = str(e.value)
    assert msg.startswith(name + ":") and "\n" not in msg


# ---- batching, dtypes, orderings, devices ---------------------------------------------------

@pytest.mark.parametrize("ordering", ["auto", "redblack"])
def test_batch_equals_single_and_dtypes(small, ordering):
    a, b = _t(small["im0"]), _t(small["im1"])
    pair = coarse2fine_flow_batch(torch.cat([a, b, a]).float(), torch.cat([b, a, a]).float(), ordering=ordering)
    assert pair.shape == (3, 2) + a.shape[-2:] and pair.dtype == torch.float32
    one = coarse2fine_flow_batch(b.float(), a.float(), ordering=ordering)
    torch.testing.assert_close(pair[1:2], one, rtol=0, atol=1e-5)
    assert torch.count_nonzero(pair[2]) == 0
    f64 = coarse2fine_flow_batch(a, b, ordering=ordering)
    assert f64.dtype == torch.float64
    assert (f64.float() - pair[:1]).abs().max() < 1e-3
    assert coarse2fine_flow_batch(a[:0], b[:0]).shape == (0, 2) + a.shape[-2:]


def test_concurrent_callers_get_identical_results(small):
    """The flow is thread-safe (the C++ code kept noise parameters in static globals)."""
    from concurrent.futures import ThreadPoolExecutor

    a, b = _t(small["im0"]).float(), _t(small["im1"]).float()
    ref = coarse2fine_flow_batch(a, b)
    with ThreadPoolExecutor(3) as ex:
        outs = list(ex.map(lambda _: coarse2fine_flow_batch(a, b), range(3)))
    for o in outs:
        assert torch.equal(o, ref)


@needs_numba
def test_torch_pipeline_matches_compiled_pipeline(small):
    """The torch data terms/pyramid/warp (the GPU path) equal the compiled CPU ones when both use
    the raster SOR: any difference between orderings is the ordering alone."""
    from vsstar.flow import cpu
    from vsstar.flow.batch import _flow_core

    def sor_raster(a11, a12, a22, b1, b2, phi, alpha, n_sor, du=None, dv=None):
        """The compiled raster sweeps (what flow_numpy runs) as an inner solver of the torch pipeline."""
        a11, a12, a22, b1, b2, phi = (t.to(torch.float64).contiguous().numpy() for t in (a11, a12, a22, b1, b2, phi))
        x = [np.zeros_like(b1) if t is None else t.to(torch.float64).numpy().copy() for t in (du, dv)]
        k1, k2 = np.empty_like(a11), np.empty_like(a11)
        cpu._diag(a11, a22, phi, float(alpha), k1, k2)
        cpu._sweeps1(a12, b1, b2, phi, k1, k2, float(alpha), int(n_sor), x[0], x[1])
        return torch.from_numpy(x[0]), torch.from_numpy(x[1])

    a, b = _t(small["im0"]), _t(small["im1"])
    hybrid = _flow_core(a, b, 0.012, 0.75, 20, 7, 1, 30, 0, sor_raster)
    fused = coarse2fine_flow_batch(a, b, ordering="raster")
    assert (hybrid - fused).abs().max() < 1e-9


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cuda_matches_cpu_redblack(small, dtype):
    a, b = _t(small["im0"]).to(dtype), _t(small["im1"]).to(dtype)
    cpu = coarse2fine_flow_batch(a, b, ordering="redblack")
    gpu = coarse2fine_flow_batch(a.cuda(), b.cuda())
    assert gpu.device.type == "cuda" and gpu.dtype == dtype
    assert (gpu.cpu() - cpu).abs().max() < 1e-3


@needs_cuda
def test_cuda_accuracy_bar():
    from test_flow import _pair_names, assert_bar, check_accuracy

    rows = check_accuracy(lambda x, y: coarse2fine_flow_batch(x.cuda(), y.cuda()).cpu(), _pair_names())
    assert_bar(rows)


@needs_cuda
def test_cuda_rejects_raster():
    with pytest.raises(ValueError, match="^ordering:"):
        coarse2fine_flow_batch(torch.zeros(1, 3, 30, 40, device="cuda"), torch.zeros(1, 3, 30, 40, device="cuda"),
                               ordering="raster")


# ---- FlowSettings ---------------------------------------------------------------------------

def test_flow_settings_defaults_are_the_batch_defaults():
    """The dataclass owns STARnet's parameters: the flow functions default to exactly them."""
    import inspect

    from vsstar.flow import FlowSettings

    sig = inspect.signature(coarse2fine_flow_batch)
    assert {k: sig.parameters[k].default for k in FlowSettings().to_dict()} == FlowSettings().to_dict()
    assert FlowSettings().to_dict() == dict(alpha=0.012, ratio=0.75, min_width=20, n_outer=7, n_inner=1,
                                            n_sor=30, col_type=0)


@pytest.mark.parametrize("kw, name", [({"alpha": 0}, "alpha"), ({"ratio": -1}, "ratio"), ({"min_width": 0}, "min_width"),
                                      ({"n_outer": 1.5}, "n_outer"), ({"n_inner": True}, "n_inner"),
                                      ({"n_sor": -1}, "n_sor"), ({"col_type": 3}, "col_type")])
def test_flow_settings_reject_bad_values(kw, name):
    from vsstar.flow import FlowSettings

    with pytest.raises(ValueError, match=f"^{name}: expected"):
        FlowSettings(**kw)
    with pytest.raises(ValueError, match=f"^{name}: expected"):
        FlowSettings().replace(**kw)


def test_flow_settings_from_dict():
    from vsstar.flow import FlowSettings

    base = FlowSettings(n_outer=3)
    assert FlowSettings.from_dict(None, base=base) is base
    assert FlowSettings.from_dict({"n_sor": 4}, base=base) == FlowSettings(n_outer=3, n_sor=4)
    assert FlowSettings(alpha=1) == FlowSettings(alpha=1.0) and isinstance(FlowSettings(alpha=1).alpha, float)
    with pytest.raises(ValueError, match=r"unknown keys \['speed'\]"):
        FlowSettings.from_dict({"speed": 1})
    with pytest.raises(ValueError, match="expected a dict"):
        FlowSettings.from_dict([1, 2])
