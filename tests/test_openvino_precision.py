"""precision="auto" and the mixed bf16 of the OpenVINO backend; cache entries that are read-only, of the wrong
shape or written under a umask; where the ONNX export reports an unwritable output."""
from __future__ import annotations

import math
import os
import shutil
import sys
from pathlib import Path

import pytest
import torch

from vsstar.backends import DEFAULT_PRECISION, PRECISIONS, openvino_available
from vsstar.engine import StarEngine
from vsstar.model import Star

sys.path.insert(0, str(Path(__file__).resolve().parent))
from support import tiny_net  # noqa: E402

torch.set_num_threads(1)
needs_ov = pytest.mark.skipif(not openvino_available(), reason="openvino / onnx / onnxscript not installed")
FAST_FLOW = {"n_outer": 1, "n_sor": 2}


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


@pytest.fixture(scope="module")
def smooth():
    """One pair of smooth frames moving by a pixel, with their flows (the network is judged on pictures)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 24), torch.linspace(0, 1, 32), indexing="ij")

    def frame(shift: float) -> torch.Tensor:
        return torch.stack([0.5 + 0.4 * torch.sin(6 * (x + shift) + c) * torch.cos(4 * y + c) for c in range(3)])

    a, b = frame(0.0)[None], frame(1 / 31)[None]
    ff = torch.zeros(1, 2, 24, 32)
    ff[:, 0] = 1.0
    return a, b, ff, -ff


def _runner(precision="auto", **kw):
    from vsstar.backends.openvino import OpenVINOStar

    kw.setdefault("verbose", False)
    return OpenVINOStar(Star(tiny_net(4, objective="STAR")), precision=precision, **kw)


def test_auto_is_the_default_everywhere():
    from vsstar.cli import build_parser

    assert DEFAULT_PRECISION == "auto" and "auto" in PRECISIONS
    assert build_parser().parse_args(["enhance", "a.mp4", "b.mp4"]).precision == DEFAULT_PRECISION
    # With torch, "auto" is float32; the engine reports what runs.
    eng = StarEngine(Star(tiny_net(4)), scale=4, device="cpu", backend="torch")
    assert eng.precision == "f32"


# ------------------------------------------------------------------------------ the choice
@needs_ov
def test_auto_without_native_bf16_is_f32_without_a_check(monkeypatch, tmp_path):
    from vsstar.backends import openvino as ovb

    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: False)
    monkeypatch.setattr(ovb.OpenVINOStar, "bf16_agreement", lambda self: pytest.fail("no check without bf16"))
    r = _runner(cache_dir=tmp_path)
    assert r.precision == "f32" and "no native bfloat16" in r.precision_reason
    assert "f32" in ovb.auto_precision_note() and "no native bfloat16" in ovb.auto_precision_note()


@needs_ov
def test_auto_bf16_when_the_check_agrees_and_the_decision_is_cached(monkeypatch, tmp_path, capfd):
    from vsstar.backends import openvino as ovb

    calls = []
    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: True)
    monkeypatch.setattr(ovb.OpenVINOStar, "bf16_agreement", lambda self: calls.append(1) or 61.5)
    r = _runner(cache_dir=tmp_path, verbose=True)
    assert r.precision == "bf16" and "61.5 dB" in r.precision_reason and len(calls) == 1
    assert "OpenVINO precision bf16 (auto:" in capfd.readouterr().err
    entries = list(tmp_path.glob("*-precision-*.json"))
    assert len(entries) == 1 and entries[0].read_bytes().startswith(ovb.DECISION_MAGIC)
    # Another process, same model and CPU: the cached decision, no second check.
    again = _runner(cache_dir=tmp_path)
    assert again.precision == "bf16" and len(calls) == 1
    # Other weights are checked for themselves.
    from vsstar.backends.openvino import OpenVINOStar

    OpenVINOStar(Star(tiny_net(4, objective="STAR", seed=1)), cache_dir=tmp_path, verbose=False)
    assert len(calls) == 2
    # Without a disk cache the check runs each time.
    _runner(cache_dir=False)
    assert len(calls) == 3


@needs_ov
def test_auto_falls_back_to_f32_when_bf16_drifts(monkeypatch, tmp_path):
    from vsstar.backends import openvino as ovb

    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: True)
    monkeypatch.setattr(ovb.OpenVINOStar, "bf16_agreement", lambda self: ovb.BF16_MIN_AGREEMENT_DB - 8)
    r = _runner(cache_dir=tmp_path)
    assert r.precision == "f32" and f"{ovb.BF16_MIN_AGREEMENT_DB - 8:.1f} dB" in r.precision_reason
    # The engine runs (and reports) what the runner chose.
    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(tmp_path.parent / (tmp_path.name + "-engine")))
    eng = StarEngine(Star(tiny_net(4, objective="STAR")), scale=4, device="cpu", backend="openvino",
                     flow_options=FAST_FLOW)
    assert eng.precision == "f32" == eng._runner.precision


@needs_ov
def test_auto_falls_back_when_the_check_cannot_run(monkeypatch, tmp_path):
    from vsstar.backends import openvino as ovb

    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: True)
    monkeypatch.setattr(ovb, "CALIBRATION_FILE", tmp_path / "missing.safetensors")
    r = _runner(cache_dir=tmp_path)
    assert r.precision == "f32" and "could not run" in r.precision_reason and "missing.safetensors" in \
        r.precision_reason
    assert not list(tmp_path.glob("*-precision-*"))  # a failed check is not remembered


@needs_ov
def test_damaged_decision_entry_is_checked_again(monkeypatch, tmp_path):
    from vsstar.backends import openvino as ovb

    calls = []
    monkeypatch.setattr(ovb, "bf16_supported", lambda core=None: True)
    monkeypatch.setattr(ovb.OpenVINOStar, "bf16_agreement", lambda self: calls.append(1) or 70.0)
    _runner(cache_dir=tmp_path)
    entry, = tmp_path.glob("*-precision-*.json")
    entry.write_bytes(entry.read_bytes()[:-3])
    r = _runner(cache_dir=tmp_path)
    assert r.precision == "bf16" and len(calls) == 2 and r.stats["corrupt"] == 1


# ------------------------------------------------------------------------------ mixed bf16
@needs_ov
def test_keep_float32_marks_the_warp_path_and_the_plugin_honours_it(tmp_path, monkeypatch):
    import openvino as ov

    from vsstar.backends import openvino as ovb
    from vsstar.model.export import export_onnx

    if not ovb.bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    onnx = export_onnx(tiny_net(4, objective="STAR"), tmp_path / "t.onnx", shape=(1, 12, 16), check=False)
    core = ov.Core()
    model = core.read_model(str(onnx))
    warp = ovb._warp_path(model)
    grids = [op for op in model.get_ordered_ops() if op.get_type_name() == "GridSample"]
    assert grids and warp
    # Mark one convolution the plugin would run in bf16 too, through the same mechanism: it must stay float32.
    convs = [op for op in model.get_ordered_ops() if op.get_type_name() == "Convolution"
             and op.get_friendly_name() not in warp]
    marked, plain = convs[len(convs) // 2], convs[len(convs) // 2 + 1]
    monkeypatch.setattr(ovb, "_warp_path", lambda m: warp | {marked.get_friendly_name()})
    model = ovb.keep_float32(model, core)
    tagged = {op.get_friendly_name() for op in model.get_ordered_ops()
              if any(k.startswith(ovb._KEEP_PRECISION_ATTR) for k in op.get_rt_info().keys())}
    assert tagged == warp | {marked.get_friendly_name()}
    compiled = core.compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "bf16"})
    prec = {}
    for op in compiled.get_runtime_model().get_ordered_ops():
        info = op.get_rt_info()
        for name in info["originalLayersNames"].astype(str).split(","):
            prec.setdefault(name, info["runtimePrecision"].astype(str))
    assert prec[marked.get_friendly_name()] == "f32"
    assert prec[plain.get_friendly_name()] == "bf16"
    assert all(prec[g.get_friendly_name()] == "f32" for g in grids)


@needs_ov
def test_bf16_drift_on_a_tiny_model(smooth, tmp_path):
    """Mixed bf16 against f32 on smooth moving frames, and the real precision="auto" check end to end."""
    from vsstar.backends import openvino as ovb

    if not ovb.bf16_supported():
        pytest.skip("this CPU has no native bfloat16")
    f32, bf16 = _runner("f32", cache_dir=False), _runner("bf16", cache_dir=False)
    out32, out16 = f32(*smooth), bf16(*smooth)
    for name in ("ht", "h1", "h2"):
        agree = psnr(getattr(out16, name), getattr(out32, name))
        assert 35 < agree < math.inf, (name, agree)  # bf16 did run, and stayed close
    agreement = bf16.bf16_agreement()
    assert 35 < agreement < math.inf
    auto = _runner(cache_dir=tmp_path)
    assert auto.precision == ("bf16" if agreement >= ovb.BF16_MIN_AGREEMENT_DB else "f32")


# ------------------------------------------------------------------------------ cache entries
def _fill(tmp_path, smooth):
    r = _runner("f32", cache_dir=tmp_path)
    ref = r(*smooth)
    path = tmp_path / r.cache_key(r.padded_shape(1, 24, 32))
    assert path.is_file()
    return ref, path


@needs_ov
def test_read_only_cache_entry_is_used(smooth, tmp_path, monkeypatch, capfd):
    ref, path = _fill(tmp_path, smooth)

    def read_only(*args, **kwargs):
        raise PermissionError(30, "Read-only file system")

    monkeypatch.setattr(os, "utime", read_only)
    r = _runner("f32", cache_dir=tmp_path, verbose=True)
    out = r(*smooth)
    assert r.stats["disk_hits"] == 1 and r.stats["corrupt"] == 0 and r.stats["exports"] == 0
    assert "damaged" not in capfd.readouterr().err and path.is_file()
    assert all(torch.equal(x, y) for x, y in zip(out, ref))


@needs_ov
def test_wrong_shaped_entry_is_dropped_and_rebuilt(smooth, tmp_path):
    ref, path = _fill(tmp_path, smooth)
    r = _runner("f32", cache_dir=tmp_path)
    a, b, ff, fb = (x[..., :20, :28] for x in smooth)
    other = tmp_path / r.cache_key(r.padded_shape(1, 20, 28))
    shutil.copyfile(path, other)  # a valid entry, but compiled for 24x32
    out = r(a, b, ff, fb)
    assert r.stats["corrupt"] == 1 and r.stats["exports"] == 1 and out.ht.shape[-2:] == (80, 112)
    again = _runner("f32", cache_dir=tmp_path)
    again(a, b, ff, fb)
    assert again.stats["disk_hits"] == 1 and again.stats["corrupt"] == 0


@needs_ov
@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_cache_entries_and_onnx_files_follow_the_umask(smooth, tmp_path, umask):
    from vsstar.model.export import export_onnx

    old = os.umask(umask)
    try:
        _, path = _fill(tmp_path, smooth)
        onnx = export_onnx(tiny_net(4), tmp_path / "m.onnx", shape=(1, 12, 16), check=False)
    finally:
        os.umask(old)
    for p in (path, onnx):
        assert p.stat().st_mode & 0o777 == 0o666 & ~umask, p.name


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc (a folder no one can write)")
def test_export_to_an_unwritable_place_names_the_output(capsys):
    pytest.importorskip("onnxscript")
    from vsstar.cli import main
    from vsstar.model.export import export_onnx

    with pytest.raises(OSError) as err:
        export_onnx(tiny_net(2), "/proc/vsstar-test.onnx", shape=(1, 12, 16), check=False)
    assert str(err.value).startswith("cannot write /proc/vsstar-test.onnx:") and ".partial" not in str(err.value)
    assert main(["export-onnx", "star_st_x2", "/proc/vsstar-test.onnx", "--shape", "1x12x16", "--no-check"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "cannot write /proc/vsstar-test.onnx" in lines[0] and ".partial" not in lines[0]
