"""StarEngine: device selection, batching, flow directions, tiling, model resolution, errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from vsstar import engine as engine_mod
from vsstar.engine import PairOutput, StarEngine, resolve_device, tile_grid
from vsstar.model import StarNet, save_weights

from support import tiny_net

FAST_FLOW = {"n_outer": 2, "n_sor": 4}


@pytest.fixture(scope="module")
def net2() -> StarNet:
    return tiny_net(2)


def frames(n: int = 2, h: int = 24, w: int = 32, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    a = torch.rand(n, 3, h, w, generator=g)
    b = torch.roll(a, shifts=1, dims=3) * 0.9 + 0.05
    return a, b


@pytest.mark.parametrize("mode", ["st", "s", "t"])
def test_output_shapes_per_mode(net2: StarNet, mode: str) -> None:
    eng = StarEngine(net2, scale=2, mode=mode, device="cpu", flow_options=FAST_FLOW)
    a, b = frames(2)
    out = eng.process(a, b)
    assert isinstance(out, PairOutput)
    if mode == "t":
        assert out.sr_first is None and out.sr_second is None
        assert out.mid.shape == (2, 3, 24, 32)
    else:
        assert out.sr_first.shape == out.sr_second.shape == (2, 3, 48, 64)
        assert (out.mid is None) == (mode == "s")
        if mode == "st":
            assert out.mid.shape == (2, 3, 48, 64)
    for t in out:
        if t is not None:
            assert t.device.type == "cpu" and t.dtype == torch.float32
            assert float(t.min()) >= 0.0 and float(t.max()) <= 1.0
    assert eng.stats.pairs == 2


def test_batched_equals_one_by_one(net2: StarNet) -> None:
    a, b = frames(3)
    one = StarEngine(net2, scale=2, batch_size=1, flow_options=FAST_FLOW)
    many = StarEngine(net2, scale=2, batch_size=3, flow_options=FAST_FLOW)
    o1 = one.process(a, b)
    o3 = many.process(a, b)
    assert one.stats.batch_sizes == {1: 3} and many.stats.batch_sizes == {3: 1}
    for x, y in zip(o1, o3):
        torch.testing.assert_close(x, y, atol=2e-5, rtol=0)


def test_numpy_and_single_pair_inputs(net2: StarNet) -> None:
    a, b = frames(1)
    eng = StarEngine(net2, scale=2, flow_options=FAST_FLOW)
    ref = eng.process(a, b)
    out = eng.process(a[0].numpy(), b[0].numpy())  # (3, H, W) numpy: one pair
    torch.testing.assert_close(out.mid, ref.mid)


def test_both_flow_directions_in_one_call(net2: StarNet, monkeypatch: pytest.MonkeyPatch) -> None:
    """The network gets flow_f (first -> second) and flow_b (second -> first) from ONE batched solve."""
    import vsstar.flow as flow_mod

    calls = []
    real = flow_mod.coarse2fine_flow_batch

    def spy(im1, im2, **kw):
        calls.append(im1.shape[0])
        return real(im1, im2, **kw)

    monkeypatch.setattr(flow_mod, "coarse2fine_flow_batch", spy)
    seen = {}
    eng = StarEngine(net2, scale=2, batch_size=2, flow_options={"n_outer": 4, "n_sor": 10})
    star = eng.star
    orig_forward = star.forward

    def record(im1, im2, ff, fb):
        seen["ff"], seen["fb"] = ff.clone(), fb.clone()
        return orig_forward(im1, im2, ff, fb)

    monkeypatch.setattr(star, "forward", record)
    # second = first shifted right by 2 px: second(x + 2) = first(x) -> forward flow u ~ +2.
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(48.0), indexing="ij")
    img = torch.stack([torch.sin(xx / 3) * 0.4 + 0.5, torch.cos(yy / 4) * 0.4 + 0.5,
                       torch.sin((xx + yy) / 5) * 0.4 + 0.5])[None].repeat(2, 1, 1, 1)
    shifted = torch.roll(img, shifts=2, dims=3)
    eng.process(img, shifted)
    assert calls == [4]  # 2 pairs x 2 directions, one call
    inner = (slice(None), 0, slice(8, -8), slice(8, -8))
    assert float(seen["ff"][inner].mean()) == pytest.approx(2.0, abs=0.5)
    assert float(seen["fb"][inner].mean()) == pytest.approx(-2.0, abs=0.5)


def test_tiled_matches_untiled(net2: StarNet) -> None:
    a, b = frames(1, h=40, w=72, seed=3)
    whole = StarEngine(net2, scale=2, tile=0, flow_options=FAST_FLOW).process(a, b)
    eng = StarEngine(net2, scale=2, tile=32, tile_overlap=16, flow_options=FAST_FLOW)
    tiled = eng.process(a, b)
    assert eng.stats.tiles == 8  # 2 rows x 4 columns
    for x, y in zip(whole, tiled):
        assert float((x - y).abs().max()) < 1e-3


def test_automatic_tiling_when_memory_is_short(net2: StarNet) -> None:
    a, b = frames(1, h=40, w=72, seed=4)
    eng = StarEngine(net2, scale=2, memory_budget=int(net2_bytes(net2) * 40 * 40), flow_options=FAST_FLOW)
    assert eng.plan_tile(1, 40, 72) is not None
    tiled = eng.process(a, b)
    assert eng.stats.tiles > 1
    big = StarEngine(net2, scale=2, memory_budget=1 << 40, flow_options=FAST_FLOW)
    assert big.plan_tile(1, 40, 72) is None
    whole = big.process(a, b)
    assert big.stats.tiles == 0
    for x, y in zip(whole, tiled):
        assert float((x - y).abs().max()) < 1e-3


def net2_bytes(net: StarNet) -> float:
    return StarEngine(net, scale=2, tile=0).bytes_per_pixel()


def test_tile_grid_covers_with_overlap() -> None:
    for size, tile, ov in [(100, 30, 8), (64, 64, 16), (65, 32, 16), (10, 32, 4)]:
        grid = tile_grid(size, tile, ov)
        assert grid[0][0] == 0 and grid[-1][1] == size
        for (s0, e0), (s1, e1) in zip(grid, grid[1:]):
            assert s1 < e0 and e0 - s1 >= min(ov, tile)  # overlapping neighbours
            assert e1 - s1 == min(tile, size)


def test_device_selection() -> None:
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device"):
        resolve_device("tpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error raised without CUDA")
def test_cuda_without_cuda_is_a_clear_error(net2: StarNet) -> None:
    with pytest.raises(ValueError, match="device='cuda'.*CUDA is not available"):
        StarEngine(net2, scale=2, device="cuda")


def _smooth_frames(h: int = 48, w: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    big = F.interpolate(torch.rand(1, 3, h // 4 + 3, w // 4 + 3, generator=g), scale_factor=4, mode="bicubic",
                        align_corners=False).clamp(0, 1)
    return big[..., :h, :w], big[..., 1:h + 1, 2:w + 2]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_engine_matches_cpu_and_fp16_stays_close() -> None:  # pragma: no cover - GPU machines only
    # Trained weights on smooth frames (random weights on noise amplify any rounding): CUDA float32 is exact
    # float32, so it differs from the CPU only by the flow's red-black order; float16 stays within 40 dB.
    a, b = _smooth_frames()
    cpu = StarEngine("star_st_x2", scale=2, device="cpu").process(a, b)
    gpu32 = StarEngine("star_st_x2", scale=2, device="cuda", fp16=False).process(a, b)
    gpu16 = StarEngine("star_st_x2", scale=2, device="cuda").process(a, b)
    for x, y, z in zip(cpu, gpu32, gpu16):
        assert float((x - y).abs().max()) < 2e-2
        psnr = -10 * torch.log10(((y - z) ** 2).mean().clamp_min(1e-12))
        assert psnr > 40, f"float16 {float(psnr):.1f} dB against float32"


@pytest.mark.parametrize("kwargs, name", [
    ({"scale": 3}, "scale"), ({"mode": "x"}, "mode"), ({"batch_size": 0}, "batch_size"),
    ({"tile": 5}, "tile"), ({"tile": "big"}, "tile"), ({"tile_overlap": -1}, "tile_overlap"),
    ({"fp16": True, "device": "cpu"}, "fp16"), ({"flow_options": {"bogus": 1}}, "flow_options"),
    ({"scale": 4}, "scale"),  # the x2 model asked for x4
])
def test_bad_arguments_name_the_parameter(net2: StarNet, kwargs: dict, name: str) -> None:
    kw = {"scale": 2, **kwargs}
    with pytest.raises(ValueError, match=name):
        StarEngine(net2, **kw)


@pytest.mark.parametrize("options, match", [
    ({"bogus": 1}, r"flow_options: unknown keys \['bogus'\]"),
    ({"n_outer": 0}, "flow_options: n_outer: expected an integer >= 1, got 0"),
    ({"alpha": float("nan")}, "flow_options: alpha"),
    ({"col_type": 2}, "flow_options: col_type"),
    ({"ratio": "fast"}, "flow_options: ratio"),
    ([("n_sor", 3)], "flow_options must be None or a dict"),
])
def test_bad_flow_options_fail_at_build(net2: StarNet, options, match: str) -> None:
    """Bad flow settings are refused when the engine is built, naming the key, not at the first frame."""
    with pytest.raises(ValueError, match=match):
        StarEngine(net2, scale=2, flow_options=options)


def test_engine_uses_the_flow_settings_of_the_weights(tmp_path, net2: StarNet, monkeypatch) -> None:
    """Weights record their flow settings; the engine runs the flow with them, user overrides on top."""
    import copy

    from vsstar.flow import FlowSettings

    net = copy.deepcopy(net2)
    net.flow_settings = FlowSettings(n_outer=2, n_sor=5, alpha=0.02)
    path = tmp_path / "w.safetensors"
    save_weights(net, path)
    seen = []
    import vsstar.flow as flow_mod
    real_flow = flow_mod.coarse2fine_flow_batch

    def spy(a, b, **kw):
        seen.append(kw)
        return real_flow(a, b, **kw)

    monkeypatch.setattr(flow_mod, "coarse2fine_flow_batch", spy)
    eng = StarEngine(str(path), scale=2)
    assert eng.flow == FlowSettings(n_outer=2, n_sor=5, alpha=0.02)
    eng.process(*frames(1))
    assert seen[-1] == FlowSettings(n_outer=2, n_sor=5, alpha=0.02).to_dict()
    over = StarEngine(str(path), scale=2, flow_options={"n_sor": 3})
    assert over.flow == FlowSettings(n_outer=2, n_sor=3, alpha=0.02)
    assert StarEngine(net2, scale=2).flow == FlowSettings()  # a fresh net: STARnet's settings


def test_bad_inputs(net2: StarNet) -> None:
    eng = StarEngine(net2, scale=2, flow_options=FAST_FLOW)
    a, b = frames(1)
    with pytest.raises(ValueError, match="same shape"):
        eng.process(a, b[..., :-2])
    with pytest.raises(ValueError, match="first"):
        eng.process(a[:, :2], b[:, :2])
    with pytest.raises(ValueError, match="at least"):
        eng.process(a[..., :4, :4], b[..., :4, :4])
    with pytest.raises(ValueError, match="first"):
        eng.process((a * 255).to(torch.uint8), b)


def test_model_by_path_and_errors(tmp_path, net2: StarNet) -> None:
    path = tmp_path / "tiny.safetensors"
    save_weights(net2, path)
    eng = StarEngine(str(path), scale=2, flow_options=FAST_FLOW)
    a, b = frames(1)
    ref = StarEngine(net2, scale=2, flow_options=FAST_FLOW).process(a, b)
    torch.testing.assert_close(eng.process(a, b).mid, ref.mid)
    with pytest.raises(ValueError, match="model"):
        StarEngine("no-such-model", scale=2)
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(ValueError, match="model"):
        StarEngine(str(junk), scale=2)
    with pytest.raises(ValueError, match="model"):
        StarEngine(12345, scale=2)


def test_default_model_lookup(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(engine_mod, "_bundled", lambda: {})
    with pytest.raises(ValueError, match="model=None.*no bundled weights for scale=4"):
        engine_mod.default_model_name(4, "st")
    fake = {"a_x2": {"scale": 2, "objective": "STAR-ST"}, "b_x4_s": {"scale": 4, "objective": "STAR-S"},
            "c_x4_st": {"scale": 4, "objective": "STAR-ST"}}
    monkeypatch.setattr(engine_mod, "_bundled", lambda: fake)
    assert engine_mod.default_model_name(4, "st") == "c_x4_st"
    assert engine_mod.default_model_name(4, "s") == "b_x4_s"
    # Never a model trained for another mode: the x2 STAR-ST model has no trained in-between at input size.
    with pytest.raises(ValueError, match=r"model=None: no bundled weights for scale=2 trained for mode='t'"):
        engine_mod.default_model_name(2, "t")
    assert engine_mod.default_model_name(2, "st") == "a_x2"
    fake["d_x4_t"] = {"scale": 4, "objective": "STAR-T_LR"}
    fake["e_x4"] = {"scale": 4, "objective": "STAR"}
    assert engine_mod.default_model_name(4, "t") == "d_x4_t"
    assert engine_mod.default_model_name(4, "st") == "c_x4_st"


# Which (objective, mode) pairs run: a mode needs a model trained for the outputs it delivers.
_RUNS = {"STAR": "st s t", "STAR-ST": "st s", "STAR-S": "s", "STAR-T_LR": "t", "STAR-T_HR": "t"}


@pytest.mark.parametrize("objective", list(_RUNS))
@pytest.mark.parametrize("mode", ["st", "s", "t"])
def test_model_objective_must_suit_the_mode(objective: str, mode: str) -> None:
    net = tiny_net(2, objective=objective)
    if mode in _RUNS[objective].split():
        assert StarEngine(net, scale=2, mode=mode).mode == mode
    else:
        with pytest.raises(ValueError, match=rf"^model: a {objective} model cannot run mode='{mode}' \(.*\); use mode="):
            StarEngine(net, scale=2, mode=mode)


@pytest.mark.parametrize("filename, mode, ok", [
    ("FBPNSR_RBPN_V4_Lf_STAR_S.pth", "st", False),
    ("FBPNSR_RBPN_V4_Lf_STAR_S.pth", "s", True),
    ("FBPNSR_RBPN_V4_REF_Lf_STAR_T_HR.pth", "s", False),
    ("FBPNSR_RBPN_V4_REF_Lf_STAR_T_HR.pth", "st", False),
    ("FBPNSR_RBPN_V4_REF_Lf_STAR_T_HR.pth", "t", True),
    ("FBPNSR_RBPN_V4_Lf_STAR_T_LR.pth", "s", False),
    ("FBPNSR_RBPN_V4_REF_Lr_STAR_ST.pth", "t", False),
    ("FBPNSR_RBPN_V4_REF_Lr_STAR_ST.pth", "st", True),
    ("FBPNSR_RBPN_V4_Lf_STAR.pth", "t", True),
])
def test_official_checkpoint_objective_from_its_name(tmp_path, filename: str, mode: str, ok: bool) -> None:
    """An authors' checkpoint is what its file name says; the engine refuses it for a mode it was not trained for."""
    import shutil
    from pathlib import Path

    src = Path(__file__).resolve().parent / "data" / "starnet" / "star_v4_small_x4.pt"
    if not src.exists():
        pytest.skip("fixture star_v4_small_x4.pt not found")
    path = tmp_path / filename
    shutil.copy(src, path)
    if ok:
        assert StarEngine(str(path), scale=4, mode=mode).mode == mode
    else:
        with pytest.raises(ValueError, match=f"model: a STAR-[A-Z_]+ model cannot run mode='{mode}'"):
            StarEngine(str(path), scale=4, mode=mode)


def test_thread_safe_process(net2: StarNet) -> None:
    import threading

    eng = StarEngine(net2, scale=2, flow_options=FAST_FLOW)
    a, b = frames(1)
    ref = eng.process(a, b).mid
    results, errors = [], []

    def work() -> None:
        try:
            results.append(eng.process(a, b).mid)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for r in results:
        torch.testing.assert_close(r, ref)
