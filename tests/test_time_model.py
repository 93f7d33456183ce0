"""Models with time input: t-conditioned synthesis, the t-independent parts once per pair, every host path."""
from __future__ import annotations

from fractions import Fraction as Fr

import pytest
import torch

from vsstar.engine import StarEngine
from vsstar.model import Star, StarConfig, StarNet, blend_middle
from vsstar.model.baseline import blend_at

from support import tiny_net

FAST_FLOW = {"n_outer": 2, "n_sor": 4}


def _inputs(n: int = 2, h: int = 12, w: int = 16, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    im1, im2 = torch.randn(n, 3, h, w, generator=g), torch.randn(n, 3, h, w, generator=g)
    ff, fb = torch.randn(n, 2, h, w, generator=g) * 0.02, torch.randn(n, 2, h, w, generator=g) * 0.02
    return im1, im2, ff, fb


def test_blend_at_half_is_blend_middle_and_ends_are_the_inputs():
    im1, im2, ff, fb = _inputs()
    torch.testing.assert_close(blend_at(im1, im2, ff, fb, torch.full((2,), 0.5)), blend_middle(im1, im2, ff, fb),
                               rtol=0, atol=0)
    # At t -> 0 the blend is im1 itself (warped by a vanishing flow), at t -> 1 it is im2.
    torch.testing.assert_close(blend_at(im1, im2, ff, fb, torch.zeros(2)), im1, rtol=0, atol=1e-5)
    torch.testing.assert_close(blend_at(im1, im2, ff, fb, torch.ones(2)), im2, rtol=0, atol=1e-5)


@torch.no_grad()
def test_encode_synthesize_equals_forward_and_t_matters():
    net = tiny_net(4, time_input=True)
    x = _inputs()
    full = net(*x, torch.tensor([0.25, 0.6]))
    feat = net.encode(*x)
    parts = net.synthesize(feat, torch.tensor([0.25, 0.6]))  # not consumed: feat stays usable
    again = net.synthesize(feat, torch.tensor([0.25, 0.6]), consume=True)
    for a, b, c in zip(full, parts, again):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    default = net(*x)
    torch.testing.assert_close(default[0], net(*x, 0.5)[0], rtol=0, atol=0)
    other = net(*x, 0.25)
    assert float((other[0] - default[0]).abs().max()) > 1e-3  # the in-between frame depends on t


@torch.no_grad()
def test_fresh_time_modulation_is_the_identity():
    """A time model built from t = 1/2 weights (fresh modulation) gives their outputs at t = 1/2."""
    old = tiny_net(4)
    new = StarNet(old.config.replace(time_input=True)).eval()
    missing, unexpected = new.load_state_dict(old.state_dict(), strict=False)
    assert sorted(missing) == sorted(f"time_mod.{k}" for k in ("fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"))
    assert not unexpected
    x = _inputs()
    for a, b in zip(old(*x), new(*x, 0.5)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # At another t only the baseline moves: the SR outputs are untouched.
    o = new(*x, 0.3)
    torch.testing.assert_close(o[1], old(*x)[1], rtol=0, atol=0)


@torch.no_grad()
def test_time_motion_is_the_time_model_at_one_half():
    """config.time_motion feeds Net_M's second pass the flows scaled to t: the same weights give the same
    outputs at t = 1/2 and others elsewhere; encode + synthesize is still the whole network."""
    timed = tiny_net(4, time_input=True)
    for conv in (timed.rec_h.conv, timed.rec_l.conv):  # zero at init (global skip): the features would not show
        conv.weight.normal_(0.0, 0.1)
    moving = StarNet(timed.config.replace(time_motion=True)).eval()
    moving.load_state_dict(timed.state_dict())  # no new weights
    x = _inputs()
    for a, b in zip(timed(*x, 0.5), moving(*x, 0.5)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    t = torch.tensor([0.25, 0.8])
    assert float((timed(*x, t)[0] - moving(*x, t)[0]).abs().max()) > 1e-4
    feat = moving.encode(*x)
    assert not {"M", "M_half"} & set(feat) and {"motion_ff", "motion_fb"} <= set(feat)
    for a, b in zip(moving(*x, t), moving.synthesize(feat, t)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    with pytest.raises(ValueError, match="time_motion needs time_input"):
        StarConfig(time_motion=True)


def test_bad_times_are_refused():
    timed, plain = tiny_net(2, time_input=True), tiny_net(2)
    x = _inputs()
    with torch.no_grad():
        for bad in (0.0, 1.0, -0.5, float("nan"), torch.tensor([0.5, 1.5])):
            with pytest.raises(ValueError, match="t must lie strictly between 0 and 1"):
                timed(*x, bad)
        with pytest.raises(ValueError, match=r"t must be a number or an \(2,\) tensor"):
            timed(*x, torch.tensor([0.5, 0.5, 0.5]))
        with pytest.raises(ValueError, match="synthesises only t = 1/2"):
            plain(*x, 0.25)
        plain(*x, 0.5)  # allowed: it is what the model does
    with pytest.raises(ValueError, match="time_input must be a bool"):
        StarConfig(time_input=1)


def _count_calls(net: StarNet) -> dict[str, int]:
    counts = {"sr": 0, "motion_head": 0, "interp": 0}
    for name in counts:
        getattr(net, name).register_forward_hook(lambda *_, n=name: counts.__setitem__(n, counts[n] + 1))
    return counts


@pytest.mark.parametrize("time_motion", [False, True])
def test_t_independent_parts_run_once_per_pair(one_torch_thread, time_motion):
    net = tiny_net(2, time_input=True, time_motion=time_motion)
    counts = _count_calls(net)
    eng = StarEngine(net, scale=2, mode="st", device="cpu", backend="torch", flow_options=FAST_FLOW, batch_size=4)
    g = torch.Generator().manual_seed(1)
    a = torch.rand(3, 3, 16, 16, generator=g)
    b = a.roll(1, 3)
    times = [[Fr(1, 4), Fr(1, 2), Fr(3, 4)], [Fr(2, 5), Fr(4, 5)], [Fr(1, 3)]]
    out = eng.process_times(a, b, times)
    # Net_S twice per pair (one per frame) and Net_M twice (flows and halved flows), in one batched call;
    # the t-dependent interpolation once per column of times (3: the longest list). With time_motion the
    # Net_M passes (on the flows scaled to t) are t-dependent: twice per column.
    assert counts == {"sr": 2, "motion_head": 2 * 3 if time_motion else 2, "interp": 3}
    assert eng.stats.pairs == 3 and eng.stats.calls == 1
    # Each frame is the network at its exact t (no dyadic rounding).
    from vsstar.flow import coarse2fine_flow_batch
    flows = coarse2fine_flow_batch(torch.cat([a, b]), torch.cat([b, a]), **eng.flow.to_dict())
    star = Star(net, channels_last=False)
    for i, ts in enumerate(times):
        assert set(out.mids[i]) == set(ts)
        for t in ts:
            ref = star(a[i:i + 1], b[i:i + 1], flows[i:i + 1], flows[3 + i:4 + i], float(t))
            torch.testing.assert_close(out.mids[i][t], ref.ht[0].clamp(0, 1), rtol=0, atol=1e-5)
        first = star(a[i:i + 1], b[i:i + 1], flows[i:i + 1], flows[3 + i:4 + i], float(ts[0]))
        torch.testing.assert_close(out.sr_first[i], first.h1[0], rtol=0, atol=1e-5)
    # Factor 2 (t = 1/2 only) is the plain pass.
    plain = eng.process(a, b)
    torch.testing.assert_close(out.mids[0][Fr(1, 2)], plain.mid[0], rtol=0, atol=1e-6)


def test_exact_time_is_allowed_and_mode_t_and_tiles(one_torch_thread):
    net = tiny_net(2, time_input=True)
    a = torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(2))
    b = a.roll(2, 2)
    eng = StarEngine(net, scale=2, mode="t", device="cpu", backend="torch", flow_options=FAST_FLOW)
    out = eng.process_times(a, b, [[Fr(2, 5)]], exact_time=True)  # not dyadic: fine for a time model
    assert out.sr_first is None and out.mids[0][Fr(2, 5)].shape == (3, 24, 24)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        eng.process_times(a, b, [[Fr(1)]])
    whole = StarEngine(net, scale=2, mode="st", device="cpu", backend="torch", flow_options=FAST_FLOW, tile=0)
    tiled = StarEngine(net, scale=2, mode="st", device="cpu", backend="torch", flow_options=FAST_FLOW, tile=16,
                       tile_overlap=8)
    o1 = whole.process_times(a, b, [[Fr(1, 3), Fr(2, 3)]])
    o2 = tiled.process_times(a, b, [[Fr(1, 3), Fr(2, 3)]])
    assert tiled.stats.tiles == 4
    for t in (Fr(1, 3), Fr(2, 3)):
        assert float((o1.mids[0][t] - o2.mids[0][t]).abs().mean()) < 0.02  # tiles blend like the t = 1/2 path


def test_training_samples_with_gaps():
    import numpy as np
    from training.data import Clip, TripletDataset, cut_triplets
    from training.train import parse_gaps

    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(7)]
    clip = Clip("c", frames)
    spans = cut_triplets([clip], stride=1, gaps=(2, 4))
    assert [(s.start, s.gap) for s in spans] == [(0, 2), (1, 2), (2, 2), (3, 2), (4, 2), (0, 4), (1, 4), (2, 4)]
    ds = TripletDataset([clip], 2, crop=None, augment=False, flow_cache=None, gaps=(4,))
    seen = set()
    for i in range(len(ds)):
        for epoch in range(6):
            s = ds.get(epoch, i)
            j = round(float(s.t) * 4)
            assert j in (1, 2, 3) and float(s.t) == j / 4
            start = ds.triplets[i].start
            from training.imaging import to_tensor
            torch.testing.assert_close(s.hr_mid, to_tensor(ds.hr(0, start + j)))
            torch.testing.assert_close(s.lr2, to_tensor(ds.lr(0, start + 4)))
            seen.add(j)
    assert seen == {1, 2, 3}
    # Temporal reversal maps t to 1 - t.
    from training.data import augment
    s = ds.get(0, 0)
    assert float(augment(s, False, False, False, True).t) == pytest.approx(1 - float(s.t))
    assert ds.batch(0, [0, 1])["t"].shape == (2,)
    assert parse_gaps("2,2,3") == (2, 2, 3)
    for bad in ("1", "2,x", ""):
        with pytest.raises(ValueError, match="gaps"):
            parse_gaps(bad)


def _ov_available() -> bool:
    from vsstar.backends import openvino_available
    return openvino_available()


@pytest.mark.skipif(not _ov_available(), reason="openvino / onnx / onnxscript not installed")
@pytest.mark.parametrize("time_motion", [False, True])
def test_openvino_time_model_matches_torch(tmp_path, monkeypatch, one_torch_thread, time_motion):
    """One t: the whole graph with its t input; several: the encode graph once, synthesize per t."""
    monkeypatch.setenv("VSSTAR_CACHE_DIR", str(tmp_path))
    net = tiny_net(2, time_input=True, time_motion=time_motion)
    g = torch.Generator().manual_seed(4)
    a = torch.rand(1, 3, 14, 18, generator=g)  # odd-ish size: padded to the x2 multiple
    b = (a + 0.05 * torch.rand(1, 3, 14, 18, generator=g)).clamp(0, 1)
    ref = StarEngine(net, scale=2, device="cpu", backend="torch", flow_options=FAST_FLOW)
    ov = StarEngine(net, scale=2, device="cpu", backend="openvino", precision="f32", flow_options=FAST_FLOW)
    times = [[Fr(1, 5), Fr(1, 2), Fr(7, 8)]]
    o_t, o_v = ref.process_times(a, b, times), ov.process_times(a, b, times)
    for t in times[0]:
        assert float((o_t.mids[0][t] - o_v.mids[0][t]).abs().max()) <= 1e-4
    assert float((o_t.sr_first - o_v.sr_first).abs().max()) <= 1e-4
    p_t, p_v = ref.process(a, b), ov.process(a, b)
    assert float((p_t.mid - p_v.mid).abs().max()) <= 1e-4
    runner = ov._runner
    assert runner.stats["exports"] == 3  # encode, synthesize and the whole graph, once each
    assert runner.stats["runs"] == 4  # 3 synthesize runs (the encode run is not an output) + 1 whole


def test_export_parts_need_a_time_model(tmp_path):
    from vsstar.model.export import export_onnx, graph_inputs, graph_outputs
    with pytest.raises(ValueError, match="part must be one of"):
        export_onnx(tiny_net(2), tmp_path / "x.onnx", part="middle")
    with pytest.raises(ValueError, match="splits a model with time input"):
        export_onnx(tiny_net(2), tmp_path / "x.onnx", part="encode")
    cfg = tiny_net(2, time_input=True).config
    assert graph_inputs(cfg) == ("im1", "im2", "flow_f", "flow_b", "t")
    assert graph_inputs(cfg, "synthesize")[-1] == "t" and graph_inputs(tiny_net(2).config) [-1] == "flow_b"
    moving = tiny_net(2, time_motion=True).config
    assert graph_inputs(moving, "synthesize")[-3:] == ("motion_ff", "motion_fb", "t")
    assert graph_outputs(moving, "encode") == ("H1", "H2", "L1", "L2", "motion_ff", "motion_fb")


@pytest.mark.skipif(not _ov_available(), reason="openvino / onnx / onnxscript not installed")
def test_cli_export_onnx_parts(tmp_path, capsys):
    from vsstar.cli import main
    from vsstar.model import save_weights

    weights = tmp_path / "timed.safetensors"
    save_weights(tiny_net(4, time_input=True), weights)
    assert main(["export-onnx", str(weights), str(tmp_path / "enc.onnx"), "--shape", "1x12x16", "--part", "encode"]) == 0
    err = capsys.readouterr().err
    assert "time input t" in err and "encode part" in err
    plain = tmp_path / "plain.safetensors"
    save_weights(tiny_net(4), plain)
    assert main(["export-onnx", str(plain), str(tmp_path / "x.onnx"), "--part", "synthesize"]) == 2
    assert "splits a model with time input" in capsys.readouterr().err


@pytest.mark.skipif(not _ov_available(), reason="openvino / onnx / onnxscript not installed")
def test_dynamic_synthesize_graph_of_a_time_motion_model(tmp_path):
    """The synthesize half with dynamic batch and size: named inputs in feature order, H1/H2 at the scale's
    size, t per batch item; export_onnx runs it at a size other than the traced one against torch."""
    import onnx
    from vsstar.model.export import export_onnx, graph_inputs

    net = tiny_net(2, time_motion=True)
    path = export_onnx(net, tmp_path / "syn.onnx", part="synthesize")
    graph = onnx.load(str(path)).graph
    dims = {i.name: [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim] for i in graph.input}
    assert tuple(dims) == graph_inputs(net.config, "synthesize")
    assert dims["t"] == ["batch"] and dims["motion_ff"][:2] == ["batch", 2]
    assert dims["H1"][2:] == ["4*height_units", "4*width_units"] and dims["im1"][2:] == ["2*height_units",
                                                                                        "2*width_units"]


def test_default_model_prefers_time_input_unless_opt_in(monkeypatch):
    from vsstar import engine

    def fake(records):
        monkeypatch.setattr(engine, "_bundled", lambda: records)

    plain = {"scale": 4, "objective": "STAR", "config": {"time_input": False}}
    timed = {"scale": 4, "objective": "STAR", "config": {"time_input": True}}
    fake({"a_plain": plain, "b_timed": timed})
    assert engine.default_model_name(4) == "b_timed"
    fake({"a_plain": plain, "b_timed": {**timed, "opt_in": True}})
    assert engine.default_model_name(4) == "a_plain"
    fake({"b_timed": {**timed, "opt_in": True}})  # an opt-in file is still picked when nothing else fits
    assert engine.default_model_name(4) == "b_timed"
