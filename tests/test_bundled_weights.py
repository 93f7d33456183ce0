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
    assert name == f"star_st_x{scale}"
    eng = StarEngine(None, scale=scale, mode="st", device="cpu", flow_options=FAST_FLOW)
    assert eng.config.scale == scale
    g = torch.Generator().manual_seed(scale)
    a = torch.rand(1, 3, 16, 20, generator=g)
    b = torch.roll(a, 1, dims=-1)
    out = eng.process(a, b)
    for t in (out.sr_first, out.mid, out.sr_second):
        assert t.shape == (1, 3, 16 * scale, 20 * scale)
        assert torch.isfinite(t).all() and 0.0 <= float(t.min()) and float(t.max()) <= 1.0
