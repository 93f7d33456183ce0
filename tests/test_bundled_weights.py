"""The bundled weights: model=None finds one at every scale, and it runs (tiny frames, fast flow)."""
from __future__ import annotations

import pytest
import torch

from vsstar.engine import StarEngine, default_model_name
from vsstar.model import bundled_models

torch.set_num_threads(1)
FAST_FLOW = {"n_outer": 2, "n_sor": 4}


@pytest.mark.parametrize("scale", [2, 4, 8])
def test_model_none_picks_a_bundled_model_of_the_scale(scale: int) -> None:
    name = default_model_name(scale, "st")
    info = bundled_models()[name]
    assert info["scale"] == scale and info["objective"] in ("STAR", "STAR-ST")
    # x2: the model with time input (it measured better at factor 2 and at exact in-between times); x4 keeps
    # the t = 1/2 model (its time-input sibling is bundled opt-in); x8 has only the t = 1/2 model.
    assert name == {2: "star_time_x2", 4: "star_st_x4", 8: "star_st_x8"}[scale]
    assert bool(info["config"].get("time_input")) == (scale == 2)
    assert bool(info["config"].get("time_motion")) == (scale == 2)  # Net_M on the flows scaled to t
    eng = StarEngine(None, scale=scale, mode="st", device="cpu", flow_options=FAST_FLOW)
    assert eng.config.scale == scale
    g = torch.Generator().manual_seed(scale)
    a = torch.rand(1, 3, 16, 20, generator=g)
    b = torch.roll(a, 1, dims=-1)
    out = eng.process(a, b)
    for t in (out.sr_first, out.mid, out.sr_second):
        assert t.shape == (1, 3, 16 * scale, 20 * scale)
        assert torch.isfinite(t).all() and 0.0 <= float(t.min()) and float(t.max()) <= 1.0


def test_opt_in_time_model_is_bundled_and_runs_exact_times() -> None:
    from fractions import Fraction as Fr

    info = bundled_models()["star_time_x4"]
    assert info["opt_in"] is True and info["config"]["time_input"] is True and info["scale"] == 4
    eng = StarEngine("star_time_x4", scale=4, mode="st", device="cpu", flow_options=FAST_FLOW, backend="torch")
    assert eng.takes_time
    g = torch.Generator().manual_seed(5)
    a = torch.rand(1, 3, 16, 20, generator=g)
    out = eng.process_times(a, torch.roll(a, 1, dims=-1), [[Fr(2, 5), Fr(4, 5)]], exact_time=True)
    for t in (Fr(2, 5), Fr(4, 5)):
        assert out.mids[0][t].shape == (3, 64, 80) and torch.isfinite(out.mids[0][t]).all()


def test_quality_high_is_the_x4_quality_tier_and_runs() -> None:
    name = default_model_name(4, "st", "high")
    info = bundled_models()[name]
    assert name == "star_st_x4_hq" and info["quality"] == "high" and info["scale"] == 4
    assert default_model_name(4, "st") == "star_st_x4"  # the fast default is unchanged
    eng = StarEngine(None, scale=4, mode="st", device="cpu", flow_options=FAST_FLOW, quality="high", backend="torch")
    assert sum(p.numel() for p in eng.star.parameters()) > 4_000_000  # a few million parameters
    g = torch.Generator().manual_seed(4)
    a = torch.rand(1, 3, 16, 20, generator=g)
    out = eng.process(a, torch.roll(a, 1, dims=-1))
    for t in (out.sr_first, out.mid, out.sr_second):
        assert t.shape == (1, 3, 64, 80) and torch.isfinite(t).all()
