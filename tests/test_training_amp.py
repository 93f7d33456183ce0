"""training --amp: the precision choice (CPU flags faked), a bfloat16 CPU step, resume and DDP with it."""
from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("cv2")

import training.amp as amp
from training.amp import choose_amp, cpu_bf16_native
from training.checkpoint import load_checkpoint
from training.train import main as train_main

from test_training_run import ENV, ROOT, _args, _losses, _same_weights, footage  # noqa: F401 - the fixture

torch.set_num_threads(1)


@pytest.mark.parametrize("mode,native,dtype", [
    ("auto", True, torch.bfloat16), ("on", True, torch.bfloat16), ("auto", False, None),
    ("off", True, None), ("off", False, None)])
def test_cpu_choice(mode, native, dtype):
    p = choose_amp(mode, "cpu", bf16_native=native)
    assert p.dtype is dtype and p.device_type == "cpu"
    assert not p.uses_scaler  # bfloat16 has float32's range: no loss scaling
    assert p.name == ("bfloat16" if dtype else "float32")


def test_cuda_choice_is_float16_with_a_scaler():
    for mode in ("auto", "on"):
        p = choose_amp(mode, "cuda:1", bf16_native=False)
        assert p.dtype is torch.float16 and p.uses_scaler and p.device_type == "cuda"
    assert choose_amp("off", "cuda").dtype is None


def test_refusals_name_the_parameter():
    with pytest.raises(ValueError, match=r"^amp: --amp on needs a CUDA device or a CPU with native bfloat16"):
        choose_amp("on", "cpu", bf16_native=False)
    with pytest.raises(ValueError, match=r"^amp: expected one of auto, on, off, got 'yes'"):
        choose_amp("yes", "cpu")
    with pytest.raises(ValueError, match=r"^amp: --amp on needs a CUDA device or a CPU, got device 'meta'"):
        choose_amp("on", "meta")
    assert choose_amp("auto", "meta").dtype is None


def test_native_bf16_is_read_from_torch_cpuinfo_once(monkeypatch):
    calls = []

    def fake(avx, amx):
        def avx512():
            calls.append("avx512")
            if isinstance(avx, Exception):
                raise avx
            return avx
        return avx512, (lambda: amx)

    for avx, amx, want in ((False, False, False), (True, False, True), (False, True, True),
                           (RuntimeError("cpuinfo"), False, False)):
        a, b = fake(avx, amx)
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", a)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", b)
        cpu_bf16_native.cache_clear()
        try:
            assert cpu_bf16_native() is want
            n = len(calls)
            cpu_bf16_native()
            assert len(calls) == n  # cached: the flags are read once per process
            assert (choose_amp("auto", "cpu").dtype is torch.bfloat16) is want
        finally:
            cpu_bf16_native.cache_clear()


def test_amp_on_without_native_bf16_is_refused_before_anything_is_written(footage, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(amp, "cpu_bf16_native", lambda: False)
    run = tmp_path / "r"
    assert train_main(_args(footage, run, 1, "--device", "cpu", "--amp", "on")) == 2
    assert "amp: --amp on needs a CUDA device or a CPU with native bfloat16" in capsys.readouterr().err
    assert not run.exists()
    # auto falls back to float32 there
    assert train_main(_args(footage, run, 1, "--device", "cpu")) == 0
    assert load_checkpoint(run / "last.pt")["precision"] == "float32"
    assert "precision: float32 (--amp auto: float32 (the CPU has no native bfloat16))" in (run / "train.log").read_text()


def test_bf16_cpu_steps_are_finite_close_to_float32_and_resume_exactly(footage, tmp_path, monkeypatch):
    # Faked native support: on a CPU without it torch still computes bfloat16 (emulated), so this runs anywhere.
    monkeypatch.setattr(amp, "cpu_bf16_native", lambda: True)
    f32, bf = tmp_path / "f32", tmp_path / "bf16"
    assert train_main(_args(footage, f32, 6, "--amp", "off")) == 0
    assert train_main(_args(footage, bf, 6, "--amp", "auto")) == 0
    st = load_checkpoint(bf / "last.pt")
    assert st["precision"] == "bfloat16" and st["scaler"] is None
    assert "precision: bfloat16" in (bf / "train.log").read_text()
    l32, l16 = _losses(f32), _losses(bf)
    assert sorted(l16) == list(range(1, 7)) and all(math.isfinite(v) for v in l16.values())
    assert all(torch.isfinite(v).all() for v in st["model"].values())
    # Step 1 is the classical answer in both (the output convolutions start at zero); after it the same
    # batches give losses that bfloat16 rounding moves a little, not a lot.
    assert l16[1] == l32[1]
    assert any(l16[s] != l32[s] for s in range(2, 7)), "the steps did not run in bfloat16"
    assert all(l16[s] == pytest.approx(l32[s], rel=2e-2) for s in range(2, 7))
    # Stopped and resumed with bfloat16: bit-identical to the uninterrupted bfloat16 run.
    half = tmp_path / "half"
    assert train_main(_args(footage, half, 6, "--stop-at", "3")) == 0
    assert train_main(_args(footage, half, 6, "--resume")) == 0
    assert _same_weights(bf / "last.pt", half / "last.pt")
    # A bfloat16 checkpoint resumed in float32 goes on, and says so.
    assert train_main(_args(footage, half, 8, "--resume", "--amp", "off")) == 0
    assert load_checkpoint(half / "last.pt")["precision"] == "float32"
    assert "resume: the checkpoint trained in bfloat16, this part runs in float32" in (half / "train.log").read_text()


@pytest.mark.skipif(not amp.cpu_bf16_native(), reason="needs a CPU with native bfloat16 (a torchrun subprocess "
                    "cannot fake the flags)")
def test_ddp_two_gloo_processes_in_bf16_match_one_process(footage, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    if not torchrun.exists():
        pytest.skip("torchrun not installed")
    one, two = tmp_path / "one", tmp_path / "two"
    assert train_main(_args(footage, one, 3, "--amp", "on")) == 0
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "training.train",
           *_args(footage, two, 3, "--amp", "on")]
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    assert load_checkpoint(two / "last.pt")["precision"] == "bfloat16"
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3]
    for s in l1:  # each process rounds its own half-batch in bfloat16
        assert l2[s] == pytest.approx(l1[s], rel=1e-2)
