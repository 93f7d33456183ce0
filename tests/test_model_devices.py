"""Memory layouts, mixed precision and CUDA paths of the model (CUDA tests skip without a GPU)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vsstar.model import Star, StarConfig, StarNet, exact_float32, load_official

from support import shared_path

# One thread: tiny convolutions spend most of their time in OpenMP hand-offs on a busy 2-core machine.
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")


def _tiny(fr: bool = False, **kw) -> StarNet:
    cfg = StarConfig(scale=4, base_filter=8, feat=4, n_resblock=1, s_resblocks=1, down_resblocks=1,
                     motion_resblocks=1, t_lr_resblocks=1, flow_refine=fr, fr_widths=(4, 8, 8), **kw)
    torch.manual_seed(0)
    return StarNet(cfg).eval()


def _pair(h=9, w=13, device="cpu"):
    g = torch.Generator().manual_seed(2)
    im1 = torch.rand(1, 3, h, w, generator=g)
    im2 = torch.rand(1, 3, h, w, generator=g)
    ff = 2 * torch.randn(1, 2, h, w, generator=g)
    return [t.to(device) for t in (im1, im2, ff, -ff)]


def test_channels_last_same_numbers_and_plain_outputs():
    a = Star(_tiny(), channels_last=False)(*_pair())
    star = Star(_tiny(), channels_last=True)
    assert star.net.rec_h.conv.weight.is_contiguous(memory_format=torch.channels_last)
    b = star(*_pair())
    for x, y in zip(a, b):
        assert y.is_contiguous() and torch.allclose(x, y, atol=1e-3)  # raw outputs reach hundreds


def test_bf16_autocast_runs_the_inference_path_on_cpu():
    """Mixed precision through the in-place inference code (the CPU stand-in for CUDA fp16)."""
    net = _tiny(fr=True)
    inputs = _pair(8, 12)
    with torch.inference_mode():
        ref = net(*inputs)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(*inputs)
    for x, y in zip(ref, out):
        assert torch.isfinite(y).all()
        assert ((x - y.float()).abs().max() / x.abs().max()).item() < 0.1
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb = Star(net)(*inputs)
    assert all(torch.isfinite(t).all() for t in rgb)


def test_train_mode_wrapper_keeps_gradients():
    star = Star(_tiny(global_skip=True))
    star.train()
    out = star(*_pair())
    assert out.ht.requires_grad
    out.ht.mean().backward()
    assert star.net.rec_h.conv.weight.grad is not None


@needs_cuda
def test_cuda_matches_cpu_float32():
    net = _tiny(fr=True)
    cpu = Star(net, channels_last=False)(*_pair(32, 40))
    gpu_star = Star(_tiny(fr=True)).cuda()
    tf32 = torch.backends.cudnn.allow_tf32
    with exact_float32():  # torch's default lets cuDNN run float32 convolutions as TF32 (~1e-3 off)
        assert not torch.backends.cudnn.allow_tf32
        gpu = gpu_star(*_pair(32, 40, device="cuda"))
    assert torch.backends.cudnn.allow_tf32 == tf32  # the user's setting is back
    for x, y in zip(cpu, gpu):
        assert y.device.type == "cuda" and torch.allclose(x, y.cpu(), atol=1e-4)


def _smooth_pair(h: int, w: int, device: str):
    """Two frames of smooth texture, the second shifted: what a trained model expects (random weights on
    noise amplify rounding without bound, so they say nothing about a precision's drift)."""
    g = torch.Generator().manual_seed(3)
    a = torch.nn.functional.interpolate(torch.rand(1, 3, h // 4 + 3, w // 4 + 3, generator=g), scale_factor=4,
                                        mode="bicubic", align_corners=False)[..., :h, :w + 2].clamp(0, 1)
    return a[..., :w].to(device), a[..., 2:].to(device)


@needs_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast_of_trained_weights_stays_close(dtype):
    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.model import load_model

    star = Star(load_model("star_st_x2")).cuda()
    a, b = _smooth_pair(48, 64, "cuda")
    ff, fb = coarse2fine_flow_batch(a, b), coarse2fine_flow_batch(b, a)
    with exact_float32():
        ref = star(a, b, ff, fb)
    with torch.autocast("cuda", dtype=dtype):
        out = star(a, b, ff, fb)
    for x, y in zip(ref, out):
        assert torch.isfinite(y).all()
        psnr = -10 * torch.log10(((x - y.float().clamp(0, 1)) ** 2).mean().clamp_min(1e-12))
        assert psnr > 40, f"{dtype}: {float(psnr):.1f} dB against float32"


@needs_cuda
def test_load_official_to_cuda():
    path = shared_path("reference/starnet/star_v4_small_x4.pt", ROOT / "data" / "starnet" / "star_v4_small_x4.pt")
    fx = torch.load(path, weights_only=True)
    net = load_official(fx["state_dict"], device="cuda")
    with torch.inference_mode(), exact_float32():
        out = net(*(fx["inputs"][k].cuda() for k in ("im1", "im2", "flow_f", "flow_b")))
    for name, o in zip(("ht", "h1", "h2", "l"), out):
        ref = fx["outputs"][name]
        assert ((o.cpu() - ref).abs().max() / ref.abs().max()).item() < 1e-4


@needs_cuda
def test_benchmark_cuda_path(tmp_path):
    import runpy

    bench = runpy.run_path(str(ROOT.parent / "benchmarks" / "bench_model.py"))
    rc = bench["main"](["--preset", "compact", "--sizes", "32x32", "--device", "cuda", "--dtypes", "fp32,fp16",
                        "--repeat", "1", "--warmup", "1", "--no-baseline", "--json", str(tmp_path / "r.json")])
    assert rc == 0 and (tmp_path / "r.json").exists()


def test_benchmark_runs_on_cpu_with_the_baseline(tmp_path, capsys):
    import json
    import runpy

    bench = runpy.run_path(str(ROOT.parent / "benchmarks" / "bench_model.py"))
    rc = bench["main"](["--preset", "compact", "--no-flow-refine", "--sizes", "8x12", "--repeat", "1",
                        "--threads", "1", "--json", str(tmp_path / "r.json")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "original fp32" in text and "vsstar fp32" in text and "speed-up" in text
    rows = json.loads((tmp_path / "r.json").read_text())
    assert [r["mode"] for r in rows] == ["original", "vsstar"]
    assert all(r["wall_ms"] and r["peak_mb"] > 0 for r in rows)


def test_exact_float32_is_reusable_nested_and_restores_the_users_setting():
    # The switches are process-wide flags: they must come back exactly as the user left them, also when
    # one instance is entered several times (a benchmark's loop) or blocks nest and overlap.
    old = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    try:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = True, True
        ctx = exact_float32()
        for _ in range(3):
            with ctx:
                assert not torch.backends.cudnn.allow_tf32 and not torch.backends.cuda.matmul.allow_tf32
                with exact_float32():
                    pass
                assert not torch.backends.cudnn.allow_tf32  # the inner block's exit must not restore early
            assert torch.backends.cudnn.allow_tf32 and torch.backends.cuda.matmul.allow_tf32
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old
