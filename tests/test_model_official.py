"""Authors' checkpoints: configuration inference, key mapping, parameter counts, strict loading, errors."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from vsstar.model import (CheckpointError, StarConfig, StarNet, infer_official_config, load_official,
                          official_to_ours, ours_to_official)

from support import shared_path

# One thread: tiny convolutions spend most of their time in OpenMP hand-offs on a busy 2-core machine.
torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parent


def fixture_path(name: str) -> Path:
    # The shared data keeps the key lists in a keys/ subfolder.
    sub = "keys/" if name.startswith("keys_") else ""
    return shared_path(f"reference/starnet/{sub}{name}", ROOT / "data" / "starnet" / name)


def key_list(name: str, prefix: str = "module.", device: str = "meta") -> dict[str, torch.Tensor]:
    """A state dict with the official keys and shapes (meta tensors, or stride-0 zeros on CPU)."""
    sd = {}
    for line in fixture_path(f"keys_FBPNSR_RBPN_{name}.txt").read_text().splitlines():
        key, shape = line.split(" ", 1)
        shape = tuple(int(x) for x in shape.strip().strip("()").split(",") if x.strip())
        dtype = torch.long if key.endswith("num_batches_tracked") else torch.float32
        sd[prefix + key] = torch.zeros((), dtype=dtype, device=device).expand(shape)
    return sd


def x8_from_x4(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The x8 layout differs from x4 only in the projection kernels (8 -> 12)."""
    return {k: (torch.empty(v.shape[:-2] + (12, 12), device=v.device) if v.dim() == 4 and v.shape[-1] == 8 else v)
            for k, v in sd.items()}


OFFICIAL_COUNTS = {(2, False): 53_504_749, (2, True): 107_023_343, (4, False): 58_092_269,
                   (4, True): 111_610_863, (8, False): 71_199_469, (8, True): 124_718_063}


@pytest.mark.parametrize("scale,flow_refine", sorted(OFFICIAL_COUNTS))
def test_official_parameter_counts(scale, flow_refine):
    with torch.device("meta"):
        net = StarNet(StarConfig.official(scale, flow_refine))
    assert sum(p.numel() for p in net.parameters()) == OFFICIAL_COUNTS[(scale, flow_refine)]
    bn_values = sum(b.numel() for b in net.buffers())
    assert bn_values == (16150 if flow_refine else 0)


@pytest.mark.parametrize("name,scale,fr", [("V4_x2", 2, False), ("V4_x4", 4, False), ("V4_REF_x2", 2, True),
                                           ("V4_REF_x4", 4, True)])
@pytest.mark.parametrize("prefix", ["module.", ""])
def test_key_lists_load_strictly(name, scale, fr, prefix):
    sd = key_list(name, prefix)
    cfg = infer_official_config(sd)
    assert cfg == StarConfig.official(scale, fr)
    net = load_official(sd, device="meta")
    assert net.config == cfg and not net.training
    # The mapping is a bijection between the authors' keys and ours.
    ours, _ = official_to_ours(sd)
    assert set(ours) == set(net.state_dict())
    back = ours_to_official(ours, cfg, prefix=prefix)
    assert list(back) == list(sd)


def test_x8_layout_is_inferred():
    for name, fr in (("V4_x4", False), ("V4_REF_x4", True)):
        sd = x8_from_x4(key_list(name))
        net = load_official(sd, device="meta")
        assert net.config == StarConfig.official(8, fr)
        assert sum(p.numel() for p in net.parameters()) == OFFICIAL_COUNTS[(8, fr)]


def test_full_size_state_dict_loads_on_cpu():
    sd = key_list("V4_x2", device="cpu")
    sd = {k: torch.full(v.shape, 0.5) if k.endswith("RBPN.output.conv.bias") else v for k, v in sd.items()}
    net = load_official(sd)
    assert net.sr.to_rgb.conv.bias.device.type == "cpu"
    assert torch.equal(net.sr.to_rgb.conv.bias, torch.full((3,), 0.5))
    assert net.sr.dbpn.ups[0].expand.conv.weight.shape == (64, 64, 6, 6)


def test_fixture_file_loads_by_path_with_weights_only():
    net = load_official(fixture_path("star_v4_small_x4.pt"))
    assert net.config.base_filter == 32 and net.config.feat == 16 and net.config.n_resblock == 2
    assert net.config.scale == 4 and not net.config.flow_refine


def _small(fr: bool, scale: int = 4) -> StarNet:
    cfg = StarConfig(scale=scale, base_filter=8, feat=4, n_resblock=1, s_resblocks=1, flow_refine=fr,
                     fr_widths=(4, 8, 8))
    torch.manual_seed(3)
    net = StarNet(cfg)
    with torch.no_grad():  # non-trivial BatchNorm statistics
        for m in net.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
    return net.eval()


def _pair(h=32, w=32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(1, 3, h, w, generator=g), torch.randn(1, 3, h, w, generator=g),
            0.05 * torch.randn(1, 2, h, w, generator=g), 0.05 * torch.randn(1, 2, h, w, generator=g))


def test_flow_refinement_variant_round_trip_and_semantics():
    """V4_REF = V4 fed with flow + U(cat(flow, frames)) (sigmoid-bounded correction)."""
    net = _small(fr=True)
    official = ours_to_official(net.state_dict(), net.config)
    assert any(k.startswith("module.flow_net.inc.conv.conv.1.running_mean") for k in official)
    assert all(k.startswith(("module.model.", "module.flow_net.")) for k in official)
    loaded = load_official(official)
    assert loaded.config == net.config
    im1, im2, ff, fb = _pair(8, 12)
    with torch.inference_mode():
        a = net(im1, im2, ff, fb)
        b = loaded(im1, im2, ff, fb)
        rf = ff + net.flow_refiner(torch.cat((ff, im1, im2), 1))
        rb = fb + net.flow_refiner(torch.cat((fb, im2, im1), 1))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    assert ((rf - ff) > 0).all() and ((rf - ff) < 1).all()
    plain = StarNet(net.config.replace(flow_refine=False)).eval()
    plain.load_state_dict({k: v for k, v in net.state_dict().items() if not k.startswith("flow_refiner.")})
    with torch.inference_mode():
        c = plain(im1, im2, rf, rb)
    assert all(torch.allclose(x, y, atol=1e-5 * y.abs().max().item()) for x, y in zip(a, c))


@pytest.mark.parametrize("objective,outputs", [("STAR", ("ht", "h1", "h2", "l")), ("STAR-ST", ("ht", "h1", "h2")),
                                               ("STAR-S", ("h1", "h2")), ("STAR-T_LR", ("l",)),
                                               ("STAR-T_HR", ("l",))])
def test_every_paper_variant(objective, outputs):
    """Each paper model is the same network; the objective decides which outputs are read (and the input)."""
    net = _small(fr=objective.endswith("HR"))
    official = ours_to_official(net.state_dict(), net.config)
    loaded = load_official(official, objective=objective)
    assert loaded.config.objective == objective and loaded.config.outputs == outputs
    assert loaded.config.hr_input == (objective == "STAR-T_HR")
    im1, im2, ff, fb = _pair(8, 12)
    with torch.inference_mode():
        out = dict(zip(("ht", "h1", "h2", "l"), loaded(im1, im2, ff, fb)))
    for name in outputs:
        size = (8, 12) if name == "l" else (32, 48)
        assert out[name].shape[-2:] == size and torch.isfinite(out[name]).all()


# ----------------------------------------------------------------------------------------- errors
def _fixture_sd():
    return torch.load(fixture_path("star_v4_small_x4.pt"), weights_only=True)["state_dict"]


def test_error_wrong_file_type(tmp_path):
    p = tmp_path / "notes.pth"
    p.write_text("this is not a checkpoint\n")
    with pytest.raises(CheckpointError, match="not a PyTorch checkpoint"):
        load_official(p)


def test_error_truncated_file(tmp_path):
    data = fixture_path("star_v4_small_x4.pt").read_bytes()
    p = tmp_path / "cut.pth"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated"):
        load_official(p)


def test_error_missing_file(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        load_official(tmp_path / "nope.pth")


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_refuses_pickled_code(tmp_path, capsys):
    p = tmp_path / "evil.pth"
    torch.save({"state_dict": _Evil()}, p)
    with pytest.raises(CheckpointError, match=r"refused unsafe or invalid pickle \(it calls [\w.]*print\)"):
        load_official(p)
    assert "pickled code ran" not in capsys.readouterr().out


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_refuses_non_finite_weights(tmp_path, bad):
    sd = dict(_fixture_sd())
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.numel() > 4)
    sd[key] = sd[key].clone()
    sd[key].view(-1)[3] = bad
    with pytest.raises(CheckpointError, match=rf"weight '{key.removeprefix('module.')}' has 1 non-finite value\(s\)"):
        load_official(sd)
    path = tmp_path / "FBPNSR_RBPN_V4_Lf_STAR.pth"
    torch.save({"state_dict": sd}, path)
    with pytest.raises(CheckpointError, match=rf"{path}: weight .* non-finite"):
        load_official(path)
    from vsstar.model import load_model
    with pytest.raises(CheckpointError, match="non-finite"):
        load_model(path)


def test_error_unknown_layout():
    with pytest.raises(CheckpointError, match="unknown checkpoint layout"):
        load_official({"conv1.weight": torch.zeros(3, 3, 3, 3)})
    with pytest.raises(CheckpointError, match="expected a state dict"):
        load_official({"state_dict": {}})
    with pytest.raises(CheckpointError, match="not a tensor"):
        load_official({"a": torch.zeros(1), "b": 3})


def test_error_missing_key():
    sd = _fixture_sd()
    del sd["module.motion_up_b.1.conv2.bias"]
    with pytest.raises(CheckpointError, match=r"missing, e.g. 'motion_up_b.1.conv2.bias'"):
        load_official(sd)


def test_error_extra_key():
    sd = _fixture_sd()
    sd["module.motion_up_b.9.conv2.bias"] = torch.zeros(80)
    with pytest.raises(CheckpointError, match=r"unexpected key\(s\).*'motion_up_b.9.conv2.bias'"):
        load_official(sd)


def test_error_wrong_shape():
    sd = _fixture_sd()
    sd["module.reconstruction_l.conv.weight"] = torch.zeros(3, 31, 3, 3)
    with pytest.raises(CheckpointError, match=r"'reconstruction_l.conv.weight' has shape \(3, 31, 3, 3\), "
                                              r"expected \(3, 32, 3, 3\)"):
        load_official(sd)
    sd = _fixture_sd()
    sd["module.reconstruction_h.conv.bias"] = torch.zeros(4)
    with pytest.raises(CheckpointError, match=r"'reconstruction_h.conv.bias' has shape \(4,\), expected \(3,\)"):
        load_official(sd)


def test_error_half_ref_layout():
    sd = {"model." + k[len("module."):]: v for k, v in _fixture_sd().items()}
    with pytest.raises(CheckpointError, match="V4_REF needs both"):
        load_official(sd)


def test_error_bad_argument():
    with pytest.raises(ValueError, match="path_or_state_dict"):
        load_official(42)


def test_loaded_module_cannot_be_a_pickle_of_module(tmp_path):
    """A whole pickled nn.Module (not a state dict) is refused by weights_only."""
    p = tmp_path / "module.pth"
    torch.save(torch.nn.Linear(2, 2), p)
    with pytest.raises(CheckpointError):
        load_official(p)


def test_error_bad_objective():
    with pytest.raises(ValueError, match="objective must be one of"):
        load_official(_fixture_sd(), objective="STAR-X")


@pytest.mark.parametrize("name, objective", [
    ("FBPNSR_RBPN_V4_REF_Lr_STAR_ST.pth", "STAR-ST"), ("FBPNSR_RBPN_V4_REF_Lf_STAR_T_HR.pth", "STAR-T_HR"),
    ("FBPNSR_RBPN_V4_Lf_STAR.pth", "STAR"), ("FBPNSR_RBPN_V4_REF_Lf_STAR.pth", "STAR"),
    ("/some/dir/x_star_t_lr.pth", "STAR-T_LR"), ("x_STAR_S.pth", "STAR-S"), ("STAR-ST.pt", "STAR-ST"),
    ("weights.pth", None), ("mystar.pth", None), ("STAR_ST_copy.pth", None),
])
def test_objective_from_filename(name, objective):
    from vsstar.model import objective_from_filename

    assert objective_from_filename(name) == objective


def test_load_official_takes_the_objective_from_the_file_name(tmp_path):
    import shutil

    path = tmp_path / "FBPNSR_RBPN_V4_Lf_STAR_T_LR.pth"
    shutil.copy(fixture_path("star_v4_small_x4.pt"), path)
    assert load_official(path).config.objective == "STAR-T_LR"
    assert load_official(path, objective="STAR").config.objective == "STAR"
    from vsstar.model import load_model
    assert load_model(path).config.objective == "STAR-T_LR"
    assert load_official(fixture_path("star_v4_small_x4.pt")).config.objective == "STAR"
