"""StarNet parity with the authors' code, the Star wrapper (padding, encodings) and the global skip."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vsstar.model import (Star, StarConfig, StarNet, StarOutput, blend_middle, encode_flow, load_official,
                          normalize, upscale)

from support import shared_path

# One thread: tiny convolutions spend most of their time in OpenMP hand-offs on a busy 2-core machine.
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent


def fixture_path(name: str) -> Path:
    """tests/data/starnet first (a fresh clone), the shared data's reference/starnet otherwise."""
    return shared_path(f"reference/starnet/{name}", ROOT / "data" / "starnet" / name)


@pytest.fixture(scope="module")
def fixture():
    return torch.load(fixture_path("star_v4_small_x4.pt"), weights_only=True)


@pytest.fixture(scope="module")
def small_net(fixture):
    return load_official(fixture["state_dict"])


def _inputs(fx, dtype=torch.float32):
    i = fx["inputs"]
    return tuple(i[k].to(dtype) for k in ("im1", "im2", "flow_f", "flow_b"))


def test_parity_float32(fixture, small_net):
    with torch.inference_mode():
        out = small_net(*_inputs(fixture))
    assert isinstance(out, tuple) and len(out) == 4
    for name, o in zip(("ht", "h1", "h2", "l"), out):
        ref = fixture["outputs"][name]
        assert o.shape == ref.shape
        rel = ((o - ref).abs().max() / ref.abs().max()).item()
        assert rel < 1e-4, (name, rel)


def test_parity_float64(fixture, small_net):
    net = StarNet(small_net.config).double().eval()
    net.load_state_dict(small_net.state_dict())
    with torch.inference_mode():
        out = net(*_inputs(fixture, torch.float64))
    for name, o in zip(("ht", "h1", "h2", "l"), out):
        ref = fixture["outputs_f64"][name]
        rel = ((o - ref).abs().max() / ref.abs().max()).item()
        assert rel < 1e-9, (name, rel)


def test_parity_train_mode(fixture, small_net):
    net = StarNet(small_net.config).train()
    net.load_state_dict(small_net.state_dict())
    with torch.no_grad():
        out = net(*_inputs(fixture))
    assert set(out) == {"ht", "h1", "h2", "l", "ht_s1", "h1_s1", "h2_s1", "l_s1"}
    for name in ("ht", "h1", "h2", "l"):
        stage1, stage2 = fixture["train_outputs"][name]
        for ours, ref in ((out[name + "_s1"], stage1), (out[name], stage2)):
            rel = ((ours - ref).abs().max() / ref.abs().max()).item()
            assert rel < 1e-4, (name, rel)


def _tiny(**kw) -> StarNet:
    cfg = StarConfig(**{**dict(base_filter=8, feat=4, n_resblock=1, s_resblocks=2, down_resblocks=1,
                               motion_resblocks=1, t_lr_resblocks=1), **kw})
    torch.manual_seed(5)
    return StarNet(cfg).double().eval()


def _tiny_inputs(h=6, w=7):
    g = torch.Generator().manual_seed(6)
    return (torch.randn(1, 3, h, w, generator=g, dtype=torch.float64),
            torch.randn(1, 3, h, w, generator=g, dtype=torch.float64),
            0.1 * torch.randn(1, 2, h, w, generator=g, dtype=torch.float64),
            0.1 * torch.randn(1, 2, h, w, generator=g, dtype=torch.float64))


def test_gradients_reach_every_used_parameter():
    net = _tiny().train()
    out = net(*_tiny_inputs())
    sum(v.sum() for v in out.values()).backward()
    unused = {n for n, p in net.named_parameters() if p.grad is None}
    assert unused and all(n.startswith("sr.res_feat3.") for n in unused)


def test_res_feat3_optional():
    net = _tiny()
    lean = StarNet(net.config.replace(keep_res_feat3=False)).double().eval()
    lean.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("sr.res_feat3.")})
    assert sum(p.numel() for p in lean.parameters()) < sum(p.numel() for p in net.parameters())
    with torch.inference_mode():
        a = net(*_tiny_inputs())
        b = lean(*_tiny_inputs())
    for x, y in zip(a, b):
        assert torch.equal(x, y)


@pytest.mark.parametrize("knobs", [dict(), dict(flow_refine=True, fr_widths=(4, 4, 4)),
                                   dict(num_stages=1, down_resblocks=0, t_lr_resblocks=0, scale=2),
                                   dict(num_stages=4, scale=8)])
def test_inference_mode_matches_no_grad(knobs):
    """The lean in-place inference path computes the same function as the autograd-safe one."""
    net = _tiny(**knobs)
    inputs = _tiny_inputs(8, 12)
    with torch.inference_mode():
        a = net(*inputs)
    with torch.enable_grad():
        b = net(*(t.clone().requires_grad_(True) for t in inputs))
    for x, y in zip(a, b):
        assert y.requires_grad
        assert ((x - y.detach()).abs().max() / y.abs().max()).item() < 1e-12


def test_batched_frames_match():
    net = _tiny()
    inputs = _tiny_inputs()
    with torch.inference_mode():
        a = net(*inputs)
        net.batch_frames = True
        b = net(*inputs)
    for x, y in zip(a, b):
        assert ((x - y).abs().max() / y.abs().max()).item() < 1e-12


def _rgb_pair(h, w, n=1, seed=0):
    g = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, max(2, h // 4), max(2, w // 4), generator=g)
    im1 = torch.nn.functional.interpolate(base, size=(h, w), mode="bilinear", align_corners=False)
    im2 = im1.roll(1, 3)
    flow = torch.zeros(n, 2, h, w)
    flow[:, 0] = 1.0
    return im1, im2, flow, -flow


@pytest.mark.parametrize("scale,flow_refine,h,w", [(4, False, 7, 9), (2, False, 5, 7), (8, False, 3, 5),
                                                   (4, True, 5, 11), (2, True, 33, 6)])
def test_wrapper_pads_and_crops_any_size(scale, flow_refine, h, w):
    cfg = StarConfig(scale=scale, base_filter=8, feat=4, n_resblock=1, s_resblocks=1, down_resblocks=1,
                     motion_resblocks=1, t_lr_resblocks=1, flow_refine=flow_refine, fr_widths=(4, 4, 4, 4, 4, 4))
    torch.manual_seed(0)
    star = Star(StarNet(cfg))
    out = star(*_rgb_pair(h, w))
    assert isinstance(out, StarOutput)
    for name in ("ht", "h1", "h2"):
        assert getattr(out, name).shape == (1, 3, h * scale, w * scale)
    assert out.l.shape == (1, 3, h, w)
    for t in out:
        assert t.min() >= 0 and t.max() <= 1 and torch.isfinite(t).all()
        assert not t.requires_grad


def test_wrapper_padding_is_reflection_of_the_input():
    """A padded run equals running the network on the reflected input and cropping."""
    cfg = StarConfig(scale=2, base_filter=8, feat=4, n_resblock=1, s_resblocks=1)
    torch.manual_seed(1)
    net = StarNet(cfg).eval()
    star = Star(net)
    im1, im2, ff, fb = _rgb_pair(5, 7)
    out = star(im1, im2, ff, fb)
    pad = lambda t: torch.nn.functional.pad(t, (0, 1, 0, 1), mode="reflect")  # noqa: E731

    def pad_flow(t):  # mirrored bands: the normal component changes sign
        t = pad(t)
        t[:, 0, :, 7:] *= -1
        t[:, 1, 5:, :] *= -1
        return t

    with torch.inference_mode():
        ref = net(pad(normalize(im1)), pad(normalize(im2)), pad_flow(encode_flow(ff)), pad_flow(encode_flow(fb)))
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    assert torch.allclose(out.ht, (ref[0] * std + mean).clamp(0, 1)[..., :10, :14], atol=1e-6)
    assert torch.allclose(out.l, (ref[3] * std + mean).clamp(0, 1)[..., :5, :7], atol=1e-6)


@pytest.mark.parametrize("h, w, ph, pw", [(9, 11, 14, 15), (5, 4, 13, 11)])  # one, then repeated reflections
def test_flow_padding_is_consistent_with_the_mirrored_pictures(h, w, ph, pw):
    """Warping the padded second frame by the padded flow gives the padded first frame, in the bands too."""
    from vsstar.model import backward_warp
    from vsstar.model.wrapper import pad_reflect

    g = torch.Generator().manual_seed(0)
    world = torch.rand(1, 3, h + 8, w + 8, generator=g)
    u, v = 2, 1  # integer motion: bilinear warping is exact
    im1 = world[..., 4:4 + h, 4:4 + w]
    im2 = world[..., 4 - v:4 - v + h, 4 - u:4 - u + w]  # im2(x + u, y + v) = im1(x, y)
    flow = torch.zeros(1, 2, h, w)
    flow[:, 0], flow[:, 1] = u, v
    p1, p2 = pad_reflect(im1, ph, pw), pad_reflect(im2, ph, pw)
    padded = pad_reflect(flow, ph, pw, flow=True)
    warped_new = backward_warp(p2, padded)
    warped_old = backward_warp(p2, pad_reflect(flow, ph, pw))
    # Where each padded pixel comes from in the original frame (the pictures' own reflection).
    oy = pad_reflect(torch.arange(h, dtype=torch.float32).view(1, 1, h, 1).expand(1, 1, h, w).contiguous(), ph, pw)[0, 0]
    ox = pad_reflect(torch.arange(w, dtype=torch.float32).view(1, 1, 1, w).expand(1, 1, h, w).contiguous(), ph, pw)[0, 0]
    yy = torch.arange(ph).view(ph, 1).float()
    xx = torch.arange(pw).view(1, pw).float()
    ty, tx = yy + padded[0, 1], xx + padded[0, 0]
    # Exact wherever the moved point exists in the original second frame and lands inside the padded one.
    ok = (oy + v <= h - 1) & (ox + u <= w - 1) & (ty >= 0) & (ty <= ph - 1) & (tx >= 0) & (tx <= pw - 1)
    band = (yy >= h) | (xx >= w)
    assert (ok & band).sum() >= 0.5 * ((oy + v <= h - 1) & (ox + u <= w - 1) & band).sum() > 10
    assert torch.allclose(warped_new[..., ok], p1[..., ok], atol=1e-5)
    assert (warped_old[..., band & ok] - p1[..., band & ok]).abs().max() > 0.1  # unsigned padding is wrong


def test_padded_flow_matches_the_solver_on_the_mirrored_frames():
    """The flow solver run on reflect-padded frames finds the normal component negated in the bands, as
    the padded flow has it (to ~0.01 px here; the unsigned padding was off by twice the motion)."""
    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.model.wrapper import pad_reflect

    im1, im2, h, w = _smooth_shift_pair()
    both = coarse2fine_flow_batch(torch.cat([im1, im2]), torch.cat([im2, im1]))
    p1, p2 = pad_reflect(im1, 32, 32), pad_reflect(im2, 32, 32)
    solved = coarse2fine_flow_batch(p1, p2)
    padded = pad_reflect(both[:1], 32, 32, flow=True)
    for band in ((..., slice(h + 2, None), slice(0, w - 2)), (..., slice(0, h - 2), slice(w + 2, None))):
        assert (padded - solved)[band].abs().mean() < 0.05
    assert solved[0, 1, h + 2:, : w - 2].mean() < -1.5 and solved[0, 1, : h - 2].mean() > 1.5


def _smooth_shift_pair():
    g = torch.Generator().manual_seed(3)
    base = torch.nn.functional.interpolate(torch.rand(1, 3, 12, 14, generator=g), size=(48, 56), mode="bicubic",
                                           align_corners=False).clamp(0, 1)
    h, w = 20, 24
    im1 = base[..., 10:10 + h, 10:10 + w]
    im2 = base[..., 8:8 + h, 9:9 + w]  # moves by (1, 2) px
    return im1, im2, h, w


def test_padded_and_unpadded_results_agree_away_from_the_border():
    """Star on 20x24 frames (padded inside to the FR net's 32x32) against Star on the reflect-padded 32x32
    frames with flows solved on them: away from the border the outputs agree."""
    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.model.wrapper import pad_reflect

    cfg = StarConfig(scale=2, base_filter=8, feat=8, n_resblock=1, s_resblocks=1, down_resblocks=1,
                     motion_resblocks=1, t_lr_resblocks=1, flow_refine=True, fr_widths=(8,) * 6, global_skip=True)
    torch.manual_seed(0)
    net = StarNet(cfg).eval()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                m.weight.mul_(0.5)
    star = Star(net)
    im1, im2, h, w = _smooth_shift_pair()
    assert cfg.min_size == 32
    fl = coarse2fine_flow_batch(torch.cat([im1, im2]), torch.cat([im2, im1]))
    small = star(im1, im2, fl[:1], fl[1:])
    p1, p2 = pad_reflect(im1, 32, 32), pad_reflect(im2, 32, 32)
    pfl = coarse2fine_flow_batch(torch.cat([p1, p2]), torch.cat([p2, p1]))
    big = star(p1, p2, pfl[:1], pfl[1:])
    m = 4  # LR pixels from the bottom/right border
    for name in ("ht", "h1", "h2", "l"):
        a, b = getattr(small, name), getattr(big, name)
        s = a.shape[-1] // w
        d = (a - b[..., : h * s, : w * s])[..., : (h - m) * s, : (w - m) * s].abs()
        assert d.mean() < 2e-3 and d.max() < 0.05, name


def test_wrapper_encodes_flow_like_the_original():
    flow = torch.tensor([-400.0, -150.0, -15.0, 0.0, 75.0, 300.0]).view(1, 1, 1, 6)
    assert torch.allclose(encode_flow(flow), torch.tensor([1.0, 1.0, 0.1, 0.0, -0.5, -1.0]).view(1, 1, 1, 6))


def test_net_rejects_sizes_it_cannot_process():
    net = StarNet(StarConfig(scale=2, base_filter=8, feat=4, n_resblock=1)).eval()
    with pytest.raises(ValueError, match="multiple of 2"):
        net(torch.zeros(1, 3, 5, 6), torch.zeros(1, 3, 5, 6), torch.zeros(1, 2, 5, 6), torch.zeros(1, 2, 5, 6))
    with pytest.raises(ValueError, match="flow_f"):
        net(torch.zeros(1, 3, 4, 6), torch.zeros(1, 3, 4, 6), torch.zeros(1, 3, 4, 6), torch.zeros(1, 2, 4, 6))
    star = Star(net)
    with pytest.raises(ValueError, match="im2"):
        star(torch.zeros(1, 3, 4, 6), torch.zeros(1, 3, 4, 5), torch.zeros(1, 2, 4, 6), torch.zeros(1, 2, 4, 6))
    with pytest.raises(ValueError, match=r"flow_b_px must be a \(N,2,H,W\) tensor"):
        star(torch.zeros(1, 3, 4, 6), torch.zeros(1, 3, 4, 6), torch.zeros(1, 2, 4, 6), torch.zeros(2, 4, 6))
    with pytest.raises(ValueError, match="flow_f_px must be a floating-point tensor"):
        star(torch.zeros(1, 3, 4, 6), torch.zeros(1, 3, 4, 6), torch.zeros(1, 2, 4, 6, dtype=torch.int64),
             torch.zeros(1, 2, 4, 6))


@pytest.mark.parametrize("flow_refine", [False, True])
def test_global_skip_starts_at_the_baseline(flow_refine):
    cfg = StarConfig(base_filter=8, feat=4, n_resblock=1, s_resblocks=1, global_skip=True,
                     flow_refine=flow_refine, fr_widths=(4, 4, 4))
    torch.manual_seed(0)
    net = StarNet(cfg)
    im1, im2, ff, fb = _rgb_pair(4, 8, n=2)
    a, b, ef, eb = normalize(im1), normalize(im2), encode_flow(ff), encode_flow(fb)
    mid = blend_middle(a, b, ef, eb)
    net.eval()
    with torch.inference_mode():
        ht, h1, h2, l = net(a, b, ef, eb)
        # (inference on the CPU upscales by phase convolutions: compare in the same mode)
        assert torch.equal(h1, upscale(a, 4)) and torch.equal(h2, upscale(b, 4))
        assert torch.equal(l, mid) and torch.equal(ht, upscale(mid, 4))
    net.train()
    out = net(a, b, ef, eb)
    assert torch.equal(out["h1_s1"], upscale(a, 4)) and torch.equal(out["l_s1"], mid)
    if flow_refine:
        assert out["flow_f"].shape == ef.shape
    # The residual path is trainable: the zero output convs get gradients at once.
    out["ht"].mean().backward()
    assert net.rec_h.conv.weight.grad.abs().sum() > 0


def test_blend_middle_compensates_motion():
    """A pattern shifted by 2 px: the blend equals the pattern shifted by 1 px (the temporal middle)."""
    x = torch.linspace(0, 1, 16).view(1, 1, 1, 16).expand(1, 3, 6, 16).contiguous()
    im1 = x
    im2 = torch.roll(x, 2, 3)
    ff = torch.zeros(1, 2, 6, 16)
    ff[:, 0] = 2.0  # im2(x+2) ~ im1(x)
    mid = blend_middle(im1, im2, encode_flow(ff), encode_flow(-ff))
    expected = torch.roll(x, 1, 3)
    assert torch.allclose(mid[..., 3:13], expected[..., 3:13], atol=1e-5)


def test_global_skip_activations_stay_bounded():
    cfg = StarConfig(base_filter=32, feat=16, n_resblock=2, global_skip=True)
    torch.manual_seed(0)
    net = StarNet(cfg).eval()
    seen = []
    net.interp.register_forward_hook(lambda m, i, o: seen.append(o.abs().max().item()))
    net.up_f.register_forward_hook(lambda m, i, o: seen.append(o.abs().max().item()))
    im1, im2, ff, fb = _rgb_pair(8, 8)
    with torch.inference_mode():
        net(normalize(im1), normalize(im2), encode_flow(ff), encode_flow(fb))
    assert 1e-3 < max(seen) < 100


def test_benchmark_original_style_forward_reproduces_the_fixture(fixture, small_net):
    """The benchmark's baseline (a re-creation of the authors' inference) is faithful."""
    import runpy

    bench = runpy.run_path(str(ROOT.parent / "benchmarks" / "bench_model.py"))
    with torch.no_grad():
        out = bench["original_forward"](small_net, *_inputs(fixture))
    for name, o in zip(("ht", "h1", "h2", "l"), out):
        ref = fixture["outputs"][name]
        assert ((o - ref).abs().max() / ref.abs().max()).item() < 1e-4


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_upscale_phase_convolutions_match_interpolate(scale):
    """Inference on the CPU runs bicubic upscaling as phase convolutions + pixel shuffle: the same numbers as
    F.interpolate to float rounding, at the edges (index clamping) and on 1-pixel inputs too."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(scale)
    for shape in ((2, 3, 7, 5), (1, 3, 1, 1), (1, 2, 16, 24)):
        x = torch.rand(*shape, generator=g)
        ref = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False)
        with torch.no_grad():
            out = upscale(x, scale)
        assert out.shape == ref.shape
        assert float((out - ref).abs().max()) < 2e-6
        assert torch.equal(upscale(x, scale), ref)  # with autograd on: F.interpolate itself

