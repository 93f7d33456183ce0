"""ONNX export and the OpenVINO backend: round trips against torch, backend choice, disk cache, tiling."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from vsstar import backends
from vsstar.backends import openvino_available, resolve_backend
from vsstar.engine import StarEngine
from vsstar.model import Star, load_official
from vsstar.model.export import (ONNX_OPSET, check_onnx, export_onnx, onnx_min_size, onnx_size_multiple)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import tiny_net  # noqa: E402

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent
needs_ov = pytest.mark.skipif(not openvino_available(), reason="openvino / onnx / onnxscript not installed")
FAST_FLOW = {"n_outer": 1, "n_sor": 2}


def rel_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


# ------------------------------------------------------------------------------ backend choice
def test_resolve_backend_choices(monkeypatch):
    monkeypatch.delenv("VSSTAR_BACKEND", raising=False)
    monkeypatch.setattr(backends, "openvino_available", lambda: True)
    assert resolve_backend("auto", "cpu") == "openvino"
    assert resolve_backend(None, "cpu") == "openvino"
    assert resolve_backend("auto", "cuda") == "torch"
    assert resolve_backend("torch", "cpu") == "torch"
    assert resolve_backend("openvino", "cpu") == "openvino"
    monkeypatch.setenv("VSSTAR_BACKEND", "torch")
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("openvino", "cpu") == "openvino"  # an explicit choice beats the variable
    monkeypatch.setenv("VSSTAR_BACKEND", "tensorrt")
    with pytest.raises(ValueError, match="VSSTAR_BACKEND"):
        resolve_backend("auto", "cpu")


def test_resolve_backend_errors(monkeypatch):
    monkeypatch.delenv("VSSTAR_BACKEND", raising=False)
    with pytest.raises(ValueError, match="backend must be one of"):
        resolve_backend("onnx", "cpu")
    with pytest.raises(ValueError, match="CPU only"):
        resolve_backend("openvino", "cuda")


def test_missing_openvino_falls_back_with_one_line(monkeypatch, capsys):
    monkeypatch.delenv("VSSTAR_BACKEND", raising=False)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    monkeypatch.setattr(backends, "_said_fallback", False)
    assert resolve_backend("auto", "cpu") == "torch"
    assert resolve_backend("auto", "cpu") == "torch"
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "OpenVINO is not installed" in err[0]
    with pytest.raises(ValueError, match="pip install openvino"):
        resolve_backend("openvino", "cpu")


def test_engine_backend_arguments(monkeypatch):
    monkeypatch.delenv("VSSTAR_BACKEND", raising=False)
    monkeypatch.setattr(backends, "openvino_available", lambda: False)
    eng = StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="auto")
    assert eng.backend == "torch" and eng._runner is eng.star
    with pytest.raises(ValueError, match="precision must be one of"):
        StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="torch", precision="fp8")
    with pytest.raises(ValueError, match="OpenVINO setting"):
        StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="torch", precision="bf16")
    with pytest.raises(ValueError, match="backend="):
        StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="openvino")


@needs_ov
def test_bf16_refused_where_unsupported(monkeypatch):
    from vsstar.backends import openvino as ovb

    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: False)
    with pytest.raises(ValueError, match="bfloat16"):
        ovb.OpenVINOStar(Star(tiny_net(4)), precision="bf16", cache_dir=False)


# ------------------------------------------------------------------------------ export
def test_export_argument_errors(tmp_path):
    pytest.importorskip("onnxscript")
    net = tiny_net(2)
    with pytest.raises(ValueError, match="path must end in .onnx"):
        export_onnx(net, tmp_path / "x.bin")
    with pytest.raises(ValueError, match="multiples of 2"):
        export_onnx(net, tmp_path / "x.onnx", shape=(1, 15, 16))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(net, tmp_path / "x.onnx", opset=11)
    with pytest.raises(ValueError, match="model must be"):
        export_onnx(3, tmp_path / "x.onnx")
    assert not list(tmp_path.iterdir())


def test_size_multiples():
    assert onnx_size_multiple(tiny_net(4).config) == 1
    assert onnx_size_multiple(tiny_net(2).config) == 2
    fr = tiny_net(4).config.replace(flow_refine=True, fr_widths=(8, 8, 8))
    assert onnx_size_multiple(fr) == 4 and onnx_min_size(fr) == 4


@needs_ov
def test_export_dynamic_round_trip(tmp_path):
    """A dynamic-size x2 export (size multiple 2), run at two sizes and two batches it was not traced at."""
    import onnx

    net = tiny_net(2)
    path = export_onnx(net, tmp_path / "tiny_x2.onnx")  # checks itself at another size
    model = onnx.load(str(path))
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == ONNX_OPSET
    assert [i.name for i in model.graph.input] == ["im1", "im2", "flow_f", "flow_b"]
    assert [o.name for o in model.graph.output] == ["ht", "h1", "h2", "l"]
    dims = [d.dim_param for d in model.graph.input[0].type.tensor_type.shape.dim]
    assert dims[0] and dims[2] and dims[3], dims  # batch, height and width are symbolic
    assert check_onnx(path, net, size=(10, 26), batch=3) <= 1e-4
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".partial")]
    # x2's 6x6 stride-2 up-projections are exported as phase convolutions + DepthToSpace (the pyramid's
    # 4x4 ones, cheaper as they are, stay transposed convolutions).
    kernels = [[a.ints for a in n.attribute if a.name == "kernel_shape"][0]
               for n in model.graph.node if n.op_type == "ConvTranspose"]
    assert kernels and all(list(k) == [4, 4] for k in kernels), kernels
    assert any(n.op_type == "DepthToSpace" for n in model.graph.node)
    # Nothing the exporter traced leaks into eager code afterwards (a cached tensor made while tracing
    # would be a fake one): bicubic upscaling still gives F.interpolate's numbers.
    from vsstar.model import upscale

    x = torch.rand(1, 3, 6, 9)
    ref = torch.nn.functional.interpolate(x, scale_factor=2, mode="bicubic")
    with torch.no_grad():
        assert float((upscale(x, 2) - ref).abs().max()) < 2e-6


@needs_ov
def test_export_official_fixture(tmp_path):
    """The authors' layout (parity fixture, loaded with load_official) exports and matches torch."""
    fixture = ROOT / "data" / "starnet" / "star_v4_small_x4.pt"
    if not fixture.exists():
        pytest.skip("parity fixture star_v4_small_x4.pt not found")
    net = load_official(fixture)
    path = export_onnx(net, tmp_path / "official_small.onnx", shape=(1, 12, 20), check=False)
    assert check_onnx(path, net, size=(12, 20), batch=1) <= 1e-4


# ------------------------------------------------------------------------------ engine with OpenVINO
@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("ovcache")


@pytest.fixture(scope="module")
def frames():
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 3, 20, 28, generator=g)
    b = (a + 0.03 * torch.rand(2, 3, 20, 28, generator=g)).clamp(0, 1)
    return a, b


def _engines(cache_dir, monkeypatch, **kw):
    from vsstar.backends import openvino as ovb

    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(cache_dir))
    ref = StarEngine(Star(tiny_net(4, objective="STAR")), scale=4, device="cpu", backend="torch",
                     flow_options=FAST_FLOW, **kw)
    eng = StarEngine(Star(tiny_net(4, objective="STAR")), scale=4, device="cpu", backend="openvino",
                     precision="f32", flow_options=FAST_FLOW, **kw)
    assert isinstance(eng._runner, ovb.OpenVINOStar)
    return ref, eng


@needs_ov
def test_engine_openvino_matches_torch(cache_dir, frames, monkeypatch):
    ref, eng = _engines(cache_dir, monkeypatch, batch_size=2)
    out_t, out_o = ref.process(*frames), eng.process(*frames)
    for t, o in zip(out_t, out_o):
        assert o.shape == t.shape and o.dtype == torch.float32
        assert rel_diff(o, t) <= 1e-4
    assert eng._runner.stats["exports"] + eng._runner.stats["disk_hits"] == 1
    # Same shape again: served from memory, no new compilation.
    eng.process(*frames)
    assert eng._runner.stats["exports"] + eng._runner.stats["disk_hits"] == 1


@needs_ov
def test_engine_openvino_tiles(cache_dir, frames, monkeypatch):
    ref, eng = _engines(cache_dir, monkeypatch, tile=16, tile_overlap=4, mode="st")
    out_t, out_o = ref.process(*frames), eng.process(*frames)
    assert eng.stats.tiles == 8  # 2 pairs x (2 x 2) tiles of 16x16
    for t, o in zip(out_t, out_o):
        assert rel_diff(o, t) <= 1e-4
    st = eng._runner.stats
    assert st["exports"] + st["disk_hits"] == 1  # every tile has the same shape: one compiled model


@needs_ov
def test_disk_cache_hit_and_corrupt_entry(cache_dir, frames, monkeypatch):
    from vsstar.backends.openvino import CACHE_MAGIC, OpenVINOStar

    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(cache_dir))
    # The tiling test's shape: its entry is on disk already when the tests run in order.
    a, b = frames[0][:1, :, :16, :16], frames[1][:1, :, :16, :16]
    flow = torch.zeros(1, 2, 16, 16)
    first = OpenVINOStar(Star(tiny_net(4, objective="STAR")), precision="f32", verbose=False)
    ref = first(a, b, flow, flow)
    path = first.cache_dir / first.cache_key(first.padded_shape(1, 16, 16))
    assert path.is_file() and path.read_bytes().startswith(CACHE_MAGIC)

    again = OpenVINOStar(Star(tiny_net(4, objective="STAR")), precision="f32", verbose=False)
    out = again(a, b, flow, flow)
    assert again.stats == {"exports": 0, "disk_hits": 1, "corrupt": 0, "runs": 1}
    assert all(torch.equal(x, y) for x, y in zip(out, ref))

    # A truncated entry (a crash mid-write elsewhere, a full disk) is detected, removed and rebuilt.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    fixed = OpenVINOStar(Star(tiny_net(4, objective="STAR")), precision="f32", verbose=False)
    out = fixed(a, b, flow, flow)
    assert fixed.stats["corrupt"] == 1 and fixed.stats["exports"] == 1
    assert all(torch.equal(x, y) for x, y in zip(out, ref))
    assert path.read_bytes().startswith(CACHE_MAGIC) and path.stat().st_size > len(data) // 2
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".partial")]

    # Other weights never share an entry.
    other = OpenVINOStar(Star(tiny_net(4, objective="STAR", seed=1)), precision="f32", verbose=False)
    assert other.cache_key((1, 20, 28)) != first.cache_key((1, 20, 28))


# ------------------------------------------------------------------------------ CLI
@needs_ov
def test_cli_export_onnx(tmp_path, capsys):
    from vsstar.cli import main
    from vsstar.model import save_weights

    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny_net(4), weights)
    out = tmp_path / "tiny.onnx"
    assert main(["export-onnx", str(weights), str(out), "--shape", "1x12x16"]) == 0
    assert out.is_file() and "opset 18" in capsys.readouterr().err
    assert main(["export-onnx", str(weights), str(tmp_path / "b.onnx"), "--shape", "12x16"]) == 2
    assert "--shape must be NxHxW" in capsys.readouterr().err
    assert main(["export-onnx", str(tmp_path / "missing.safetensors"), str(tmp_path / "c.onnx")]) == 2
    assert "error" in capsys.readouterr().err


def test_vs_star_passes_backend():
    vs = pytest.importorskip("vapoursynth")
    from vsstar.vs import STAR

    clip = vs.core.std.BlankClip(format=vs.RGBS, width=32, height=24, length=3)
    with pytest.raises(vs.Error, match="backend must be one of"):
        STAR(clip, device="cpu", backend="tensorrt")
    with pytest.raises(vs.Error, match="OpenVINO setting"):
        STAR(clip, device="cpu", backend="torch", precision="bf16")


def test_cli_backend_options():
    from vsstar.cli import build_parser

    args = build_parser().parse_args(["enhance", "a.mp4", "b.mp4"])
    assert (args.backend, args.precision) == ("auto", "auto")
    args = build_parser().parse_args(["enhance", "a.mp4", "b.mp4", "--backend", "openvino", "--precision", "bf16"])
    assert (args.backend, args.precision) == ("openvino", "bf16")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["enhance", "a.mp4", "b.mp4", "--backend", "onnx"])


def test_gstreamer_backend_property():
    gst = pytest.importorskip("test_gstreamer", reason="GStreamer test helpers not importable")
    if gst._REASON is not None:
        pytest.skip(gst._REASON)
    res = gst.launch(f"{gst.source(3, 32, 24, 'RGB')} ! starnet device=cpu backend=tensorrt ! fakesink", timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "backend must be one of" in out and "Traceback" not in out
    res = subprocess.run(["gst-inspect-1.0", "starnet"], capture_output=True, text=True, env=gst._env(), timeout=120)
    assert "  backend " in res.stdout


def test_prune_cache_drops_least_recently_used(tmp_path):
    import os

    from vsstar.backends.openvino import prune_cache

    files = []
    for i in range(4):
        p = tmp_path / f"e{i}.blob"
        p.write_bytes(b"x" * 100)
        os.utime(p, (1000 + i, 1000 + i))
        files.append(p)
    (tmp_path / "other.txt").write_bytes(b"y" * 1000)  # not ours: never touched
    assert prune_cache(tmp_path, limit=250, keep=files[0]) == 2
    assert [p.exists() for p in files] == [True, False, False, True]
    assert (tmp_path / "other.txt").exists()


def test_transposed_convolution_as_phase_convolutions():
    from vsstar.model.blocks import conv_transpose_subpixel, subpixel_plan

    g = torch.Generator().manual_seed(0)
    w, b = torch.randn(5, 3, 6, 6, generator=g), torch.randn(3, generator=g)
    for h, wd in ((7, 9), (1, 1), (2, 5)):
        x = torch.randn(2, 5, h, wd, generator=g)
        ref = torch.nn.functional.conv_transpose2d(x, w, b, stride=2, padding=2)
        out = conv_transpose_subpixel(x, w, b, 2, 2)
        assert out.shape == ref.shape and float((out - ref).abs().max()) < 1e-5
    assert subpixel_plan(6, 2, 2) is not None
    # Not cheaper (x4's 8x8/4, x8's 12x12/8, the pyramid's 4x4/2) or not the same output size.
    assert [subpixel_plan(*g) for g in ((8, 4, 2), (12, 8, 2), (4, 2, 1), (5, 2, 2))] == [None] * 4
    with pytest.raises(ValueError, match="kernel 8, stride 4, padding 2"):
        conv_transpose_subpixel(torch.zeros(1, 5, 3, 3), torch.zeros(5, 3, 8, 8), None, 4, 2)
