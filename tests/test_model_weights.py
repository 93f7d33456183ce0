"""Our safetensors format, load_model's three sources, the bundled registry and the converter."""
from __future__ import annotations

import json
import runpy
import sys
from pathlib import Path

import pytest
import torch

import vsstar.model.weights as weights_mod
from vsstar.flow import FlowSettings
from vsstar.model import (CheckpointError, Star, StarConfig, StarNet, bundled_models, load_model, load_official,
                          read_metadata, save_weights)

from support import shared_path

# One thread: tiny convolutions spend most of their time in OpenMP hand-offs on a busy 2-core machine.
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent
CONVERTER = ROOT.parent / "tools" / "convert_official.py"


def fixture_path(name: str) -> Path:
    return shared_path(f"reference/starnet/{name}", ROOT / "data" / "starnet" / name)


def _compact(**kw) -> StarNet:
    cfg = StarConfig(scale=2, base_filter=8, feat=4, n_resblock=1, s_resblocks=1, down_resblocks=1,
                     motion_resblocks=1, t_lr_resblocks=0, keep_res_feat3=False, **kw)
    torch.manual_seed(0)
    return StarNet(cfg).eval()


def _pair(h=8, w=10):
    g = torch.Generator().manual_seed(1)
    return (torch.rand(1, 3, h, w, generator=g), torch.rand(1, 3, h, w, generator=g),
            torch.randn(1, 2, h, w, generator=g), torch.randn(1, 2, h, w, generator=g))


def test_save_and_load_round_trip(tmp_path):
    net = _compact(global_skip=True, objective="STAR-ST", flow_refine=True, fr_widths=(4, 4, 4))
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    path = tmp_path / "w.safetensors"
    save_weights(net, path, description="test build", steps=12, flow={"alpha": 0.02})
    meta = read_metadata(path)
    assert meta["config"] == net.config.to_dict()
    assert meta["variant"] == "FBPNSR_RBPN_V4_REF" and meta["scale"] == 2
    assert meta["objective"] == "STAR-ST" and meta["global_skip"] is True
    assert meta["description"] == "test build" and meta["steps"] == 12
    assert meta["flow"] == dict(FlowSettings().to_dict(), alpha=0.02)  # every field recorded
    assert meta["config"]["t_lr_resblocks"] == 0 and meta["config"]["keep_res_feat3"] is False
    loaded = load_model(path)
    assert loaded.config == net.config and not loaded.training
    assert loaded.flow_settings == FlowSettings(alpha=0.02)
    a, b = Star(net)(*_pair()), Star(loaded)(*_pair())
    assert all(torch.equal(x, y) for x, y in zip(a, b))


def test_default_flow_parameters_recorded(tmp_path):
    path = tmp_path / "w.safetensors"
    save_weights(_compact(), path)
    assert read_metadata(path)["flow"] == {"alpha": 0.012, "ratio": 0.75, "min_width": 20, "n_outer": 7,
                                           "n_inner": 1, "n_sor": 30, "col_type": 0}


def test_flow_settings_travel_with_the_weights(tmp_path):
    """The settings a net was trained with are written, read back, and checked at load."""
    net = _compact()
    net.flow_settings = FlowSettings(n_outer=3, n_sor=12)
    path = tmp_path / "w.safetensors"
    save_weights(net, path)
    assert load_model(path).flow_settings == FlowSettings(n_outer=3, n_sor=12)
    with pytest.raises(ValueError, match="metadata 'flow': .*speed"):
        save_weights(net, tmp_path / "x.safetensors", flow={"speed": 2})
    # A file whose recorded settings are invalid is refused when loaded, naming the field.
    from safetensors.torch import load_file, save_file
    meta = {k: json.dumps(v) for k, v in read_metadata(path).items()}
    meta["flow"] = json.dumps(dict(FlowSettings().to_dict(), n_sor=-1))
    save_file(load_file(path), tmp_path / "bad.safetensors", metadata=meta)
    with pytest.raises(CheckpointError, match="bad flow settings.*n_sor"):
        load_model(tmp_path / "bad.safetensors")
    # Older files without the entry: STARnet's settings.
    del meta["flow"]
    save_file(load_file(path), tmp_path / "old.safetensors", metadata=meta)
    assert load_model(tmp_path / "old.safetensors").flow_settings == FlowSettings()


def test_refuses_non_finite_weights(tmp_path):
    """All-NaN (or partly inf) weights would make every output frame NaN: refused at load, naming the key."""
    net = _compact()
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(float("nan"))
    path = tmp_path / "nan.safetensors"
    save_weights(net, path)
    with pytest.raises(CheckpointError, match=r"nan.safetensors: weight '[\w.]+' has \d+ non-finite value"):
        load_model(path)
    net = _compact()
    with torch.no_grad():
        next(net.parameters()).view(-1)[0] = float("inf")
    save_weights(net.half(), tmp_path / "inf.safetensors")
    with pytest.raises(CheckpointError, match="1 non-finite value"):
        load_model(tmp_path / "inf.safetensors")
    from vsstar.engine import StarEngine
    with pytest.raises(ValueError, match="^model=.*non-finite"):
        StarEngine(str(path), scale=2)


def test_load_model_reads_official_checkpoints():
    net = load_model(fixture_path("star_v4_small_x4.pt"), objective="STAR-S")
    assert net.config.base_filter == 32 and net.config.objective == "STAR-S"


def test_bundled_registry(tmp_path, monkeypatch):
    monkeypatch.setattr(weights_mod, "BUNDLED_DIR", tmp_path)
    save_weights(_compact(), tmp_path / "tiny_x2.safetensors", description="tiny")
    (tmp_path / "junk.safetensors").write_bytes(b"garbage")
    models = bundled_models()
    assert list(models) == ["tiny_x2"] and models["tiny_x2"]["description"] == "tiny"
    assert load_model("tiny_x2").config.scale == 2
    with pytest.raises(ValueError, match=r"bundled model \(tiny_x2\)"):
        load_model("nonexistent")


def test_save_rejects_bad_metadata(tmp_path):
    with pytest.raises(ValueError, match="JSON"):
        save_weights(_compact(), tmp_path / "x.safetensors", bad=object())
    with pytest.raises(ValueError, match="reserved"):
        save_weights(_compact(), tmp_path / "x.safetensors", config={})
    with pytest.raises(ValueError, match="net must be a StarNet"):
        save_weights(torch.nn.Linear(1, 1), tmp_path / "x.safetensors")


def test_weights_errors(tmp_path):
    good = tmp_path / "good.safetensors"
    save_weights(_compact(), good)
    data = good.read_bytes()
    cut = tmp_path / "cut.safetensors"
    cut.write_bytes(data[: len(data) - 100])
    with pytest.raises(CheckpointError, match="truncated"):
        load_model(cut)
    text = tmp_path / "notes.safetensors"
    text.write_text("hello world, not weights")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_model(text)
    from safetensors.torch import save_file

    plain = tmp_path / "plain.safetensors"
    save_file({"a": torch.zeros(2)}, plain)
    with pytest.raises(CheckpointError, match="without vsstar metadata"):
        load_model(plain)
    other = tmp_path / "other.safetensors"
    save_file({"a": torch.zeros(2)}, other, metadata={"format": json.dumps("something-else")})
    with pytest.raises(CheckpointError, match="unsupported weights format"):
        load_model(other)
    # Keys that do not match the recorded config.
    net = _compact()
    sd = net.state_dict()
    sd.pop("rec_h.conv.bias")
    meta = {k: json.dumps(v) for k, v in read_metadata(good).items()}
    broken = tmp_path / "broken.safetensors"
    save_file({k: v.contiguous() for k, v in sd.items()}, broken, metadata=meta)
    with pytest.raises(CheckpointError, match="missing, e.g. 'rec_h.conv.bias'"):
        load_model(broken)
    with pytest.raises(ValueError, match="name_or_path"):
        load_model(3)


def test_converter_writes_our_format(tmp_path, monkeypatch, capsys):
    out = tmp_path / "small.safetensors"
    monkeypatch.setattr(sys, "argv", ["convert_official.py", str(fixture_path("star_v4_small_x4.pt")), str(out),
                                      "--objective", "STAR-T_LR", "--description", "fixture"])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(CONVERTER), run_name="__main__")
    assert exit_info.value.code == 0
    assert "FBPNSR_RBPN_V4 x4 objective=STAR-T_LR" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["objective"] == "STAR-T_LR" and meta["source"] == "star_v4_small_x4.pt"
    ours = load_model(out)
    ref = load_official(fixture_path("star_v4_small_x4.pt"))
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), ref.state_dict().values()))


def test_converter_reports_bad_input(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "bad.pth"
    bad.write_text("nope")
    monkeypatch.setattr(sys, "argv", ["convert_official.py", str(bad), str(tmp_path / "o.safetensors")])
    with pytest.raises(SystemExit) as exit_info:
        runpy.run_path(str(CONVERTER), run_name="__main__")
    assert exit_info.value.code == 2
    assert "error:" in capsys.readouterr().err and not (tmp_path / "o.safetensors").exists()


def test_converter_guesses_objective_from_the_authors_file_names():
    guess = runpy.run_path(str(CONVERTER))["guess_objective"]
    assert guess("FBPNSR_RBPN_V4_REF_Lr_STAR_ST.pth") == "STAR-ST"
    assert guess("FBPNSR_RBPN_V4_REF_Lf_STAR_T_HR.pth") == "STAR-T_HR"
    assert guess("FBPNSR_RBPN_V4_Lf_STAR.pth") == "STAR"
    assert guess("whatever.pth") == "STAR"


def test_load_model_sniffs_safetensors_whose_header_length_starts_with_0x80(tmp_path):
    """A safetensors header length with low byte 0x80 must not be taken for a pickle."""
    from safetensors.torch import save_file

    net = _compact()
    path = tmp_path / "w.safetensors"
    ref = tmp_path / "ref.safetensors"
    save_weights(net, ref)
    meta = {k: json.dumps(v) for k, v in read_metadata(ref).items()}
    tensors = {k: v.contiguous() for k, v in net.state_dict().items()}
    for pad in range(300):  # grow the header until its length's low byte is 0x80
        meta["description"] = json.dumps("x" * pad)
        save_file(tensors, path, metadata=meta)
        if path.read_bytes()[0] == 0x80:
            break
    assert path.read_bytes()[0] == 0x80
    loaded = load_model(path)
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)
    # The training loader (--init, evaluate) sniffs the same way: it once took such files for pickles, which
    # made a test fail on the days the metadata's length happened to land there.
    from training.checkpoint import load_net

    loaded, ckpt = load_net(path, what="init")
    assert ckpt is None
    for k, v in net.state_dict().items():
        assert torch.equal(loaded.state_dict()[k], v)


def test_errors_keep_their_cause(tmp_path):
    """Load errors are one clear line, with the underlying exception kept as __cause__ for debugging."""
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="header is not JSON") as info:
        load_model(junk)
    assert isinstance(info.value.__cause__, ValueError)
    trunc = tmp_path / "trunc.safetensors"
    save_weights(_compact(), trunc)
    trunc.write_bytes(trunc.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="unreadable or truncated") as info:
        load_model(trunc)
    assert info.value.__cause__ is not None
    pth = tmp_path / "trunc.pth"
    torch.save({"a": torch.zeros(3)}, pth)
    pth.write_bytes(pth.read_bytes()[:60])
    with pytest.raises(CheckpointError, match="trunc.pth") as info:
        load_official(pth)
    assert info.value.__cause__ is not None
    from vsstar.engine import StarEngine
    with pytest.raises(ValueError, match="model=") as info:
        StarEngine(str(junk), scale=2)
    assert isinstance(info.value.__cause__, CheckpointError)
