"""precision="int8": NNCF post-training quantization of the network for OpenVINO's CPU plugin."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest
import torch

from vsstar.backends import openvino_available
from vsstar.engine import StarEngine
from vsstar.model import Star

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import tiny_net  # noqa: E402

torch.set_num_threads(1)
try:
    from vsstar.backends.openvino import int8_available
    _REASON = None if openvino_available() and int8_available() else "openvino or nncf not installed"
except ImportError:  # pragma: no cover - openvino missing altogether
    _REASON = "openvino not installed"
needs_int8 = pytest.mark.skipif(_REASON is not None, reason=_REASON or "")
FAST_FLOW = {"n_outer": 1, "n_sor": 2}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return 10 * math.log10(1.0 / float(((a - b) ** 2).mean()))


@pytest.fixture(scope="module")
def frames():
    """Two pairs of smooth, slightly moving frames (a quantized network is judged on pictures, not noise)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")
    def frame(shift: float) -> torch.Tensor:
        return torch.stack([0.5 + 0.4 * torch.sin(6 * (x + shift) + c) * torch.cos(4 * y + c) for c in range(3)])
    a = torch.stack([frame(0.0), frame(0.05)])
    b = torch.stack([frame(0.02), frame(0.07)])
    return a, b


def _net():
    """One tiny model with time input serves every quantized test: NNCF's input is a dynamic-shape ONNX
    export, which takes tens of seconds even for a tiny network."""
    return tiny_net(4, objective="STAR", time_input=True)


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("int8cache")


def test_int8_needs_nncf(monkeypatch):
    if not openvino_available():
        pytest.skip("openvino not installed")
    from vsstar.backends import openvino as ovb

    monkeypatch.setattr(ovb, "int8_available", lambda: False)
    with pytest.raises(ValueError, match="precision='int8' needs the nncf package"):
        ovb.OpenVINOStar(Star(tiny_net(4)), precision="int8", cache_dir=False)


def test_int8_with_torch_is_refused():
    with pytest.raises(ValueError, match="OpenVINO setting"):
        StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="torch", precision="int8")


def test_calibration_file_is_safetensors():
    """The bundled calibration frames are safetensors (no code runs on reading): uint8 pairs of one size."""
    import numpy as np
    from safetensors.numpy import load_file

    from vsstar.backends.openvino import CALIBRATION_FILE

    data = load_file(CALIBRATION_FILE)
    first, second = data["first"], data["second"]
    assert first.dtype == second.dtype == np.uint8
    assert first.shape == second.shape and first.shape[0] >= 8 and first.shape[1] == 3


@needs_int8
def test_int8_engine_close_to_f32_and_cached(cache, frames, monkeypatch, capfd):
    from vsstar.backends import openvino as ovb

    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(cache))
    ref = StarEngine(Star(_net()), scale=4, device="cpu", backend="torch", flow_options=FAST_FLOW)
    eng = StarEngine(Star(_net()), scale=4, device="cpu", backend="openvino", precision="int8",
                     flow_options=FAST_FLOW)
    runner = eng._runner
    assert isinstance(runner, ovb.OpenVINOStar) and runner.precision == "int8"
    out_t, out_q = ref.process(*frames), eng.process(*frames)
    for t, q in zip(out_t, out_q):
        assert q.shape == t.shape and q.dtype == torch.float32
        assert psnr(q, t) >= 40.0  # 8-bit weights and activations: close, not equal
    assert any(not torch.equal(q, t) for t, q in zip(out_t, out_q))  # it did run quantized
    assert runner.stats["quantized"] == 1
    # NNCF's progress bars must not reach stdout (vspipe streams the video there).
    assert capfd.readouterr().out == ""

    # The first and the reconstruction convolutions stay float32: no quantizer feeds them.
    model = runner.quantized_model()
    kept = ovb._float_convolutions(model)
    assert kept
    for op in kept:
        assert op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"
    assert any(op.get_type_name() == "FakeQuantize" for op in model.get_ordered_ops())
    # Nothing that feeds the flow-compensated blend's sampling grid, and no bicubic baseline (the grouped
    # phase convolutions), is quantized: 8-bit sampling coordinates cost 2.5 dB on fast motion.
    warp = ovb._warp_path(model)
    assert warp
    ops = {op.get_friendly_name(): op for op in model.get_ordered_ops()}
    for name in warp:
        for inp in ops[name].inputs():
            assert inp.get_source_output().get_node().get_type_name() != "FakeQuantize", name
    for op in model.get_ordered_ops():
        if op.get_type_name() == "GroupConvolution":
            assert op.input(0).get_source_output().get_node().get_type_name() != "FakeQuantize"

    # Several times of one pair: the whole quantized graph once per t, each as when asked alone.
    a, b = frames[0][:1], frames[1][:1]
    flow = torch.zeros(1, 2, *a.shape[2:])
    runs = runner.stats["runs"]
    several = runner.times(a, b, flow, flow, [0.25, 0.5])
    assert runner.stats["runs"] == runs + 2
    assert all(torch.equal(x, y) for x, y in zip(several[0], runner(a, b, flow, flow, 0.25)))
    assert not torch.equal(several[0].ht, several[1].ht)

    # A new runner (another process) loads the quantized model and the compiled shape from the disk cache.
    again = StarEngine(Star(_net()), scale=4, device="cpu", backend="openvino", precision="int8",
                       flow_options=FAST_FLOW)
    out_again = again.process(*frames)
    assert "quantized" not in again._runner.stats and again._runner.stats["disk_hits"] == 1
    assert all(torch.equal(x, y) for x, y in zip(out_again, out_q))


@needs_int8
def test_int8_damaged_model_entry_is_dropped(cache, monkeypatch):
    from vsstar.backends import openvino as ovb

    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(cache))
    runner = ovb.OpenVINOStar(Star(_net()), precision="int8", verbose=False)
    path = runner._int8_path()
    assert path.is_file() and path.read_bytes().startswith(ovb.INT8_MAGIC)  # written by the test above
    assert runner._read_int8(path) is not None and runner.stats["corrupt"] == 0
    path.write_bytes(path.read_bytes()[:-100])  # a crash mid-write elsewhere, a full disk
    assert runner._read_int8(path) is None
    assert runner.stats["corrupt"] == 1 and not path.exists()  # removed: the next run quantizes again
    # Another model's entry is another file.
    other = ovb.OpenVINOStar(Star(tiny_net(4, objective="STAR", seed=1)), precision="int8", verbose=False)
    assert other._int8_path() != path


def test_cli_and_gstreamer_accept_int8():
    from vsstar.cli import build_parser

    args = build_parser().parse_args(["enhance", "a.mp4", "b.mp4", "--precision", "int8"])
    assert args.precision == "int8"
    gst = pytest.importorskip("test_gstreamer", reason="GStreamer test helpers not importable")
    if gst._REASON is not None:
        pytest.skip(gst._REASON)
    import subprocess

    res = subprocess.run(["gst-inspect-1.0", "starnet"], capture_output=True, text=True, env=gst._env(), timeout=120)
    assert "  precision " in res.stdout
    res = gst.launch(f"{gst.source(3, 32, 24, 'RGB')} ! starnet device=cpu backend=torch precision=int8 ! fakesink",
                     timeout=120)
    out = res.stdout + res.stderr
    assert res.returncode != 0 and "OpenVINO setting" in out and "Traceback" not in out
