"""The flow's memory cap: fewer images at once (exact), then row strips (within a measured error)."""
from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from vsstar.flow import coarse2fine_flow_batch
from vsstar.flow.batch import plan_for
from vsstar.flow.cpu import HAVE_NUMBA
from vsstar.flow.memory import plan_flow

from support import tiny_net

ROOT = Path(__file__).resolve().parent.parent
needs_numba = pytest.mark.skipif(not HAVE_NUMBA, reason="numba not installed (strips are the compiled CPU path's)")
UNCAPPED = 1 << 50
# Strips against the whole frame (docs/flow.md, bench_flow.py --strip-error): measured 0 on the
# fixture pairs and up to 2e-3 px on Sintel; a generous bound, still far below a pixel.
MAX_EPE = 1e-2


def _pair(name: str = "bikes_020") -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions of a fixture pair, float32 (N=2), as the engine calls the flow."""
    d = np.load(ROOT / "tests" / "data" / "flow" / f"{name}.npz")
    a, b = (torch.from_numpy(np.ascontiguousarray(d[k].transpose(2, 0, 1)))[None].float() for k in ("im0", "im1"))
    return torch.cat([a, b]), torch.cat([b, a])


def _need(x: torch.Tensor) -> int:
    return plan_for(x.shape, max_bytes=UNCAPPED).estimate


@needs_numba
def test_strips_under_a_small_cap_stay_close_to_the_whole_flow(caplog, monkeypatch):
    """Under half the need, the full-size level is solved in strips no taller than planned, the
    log says so, and the flow stays within MAX_EPE of the whole-frame flow."""
    from vsstar.flow import cpu

    seen = []
    real = cpu._level_group

    def spy(f1, f2, w2, u, v, *args):
        seen.append((f1.shape[-2], f2.shape[-2], f1.shape[0]))
        return real(f1, f2, w2, u, v, *args)

    x, y = _pair("bbb_100_gap2")
    assert not plan_for(x.shape).tiled  # a small frame fits the default cap: unchanged
    whole = coarse2fine_flow_batch(x, y)
    cap = _need(x) // 2
    plan = plan_for(x.shape, max_bytes=cap)
    assert plan.tiled and plan.fits and plan.estimate <= cap
    monkeypatch.setattr(cpu, "_level_group", spy)
    with caplog.at_level(logging.DEBUG, logger="vsstar.flow"):
        out = coarse2fine_flow_batch(x, y, max_bytes=cap)
    assert "row strips" in caplog.text and "level(s) 0" in caplog.text
    finest = [s for s in seen if s[1] == x.shape[-2]]
    strips = plan.strips(0, x.shape[-2])
    assert len(strips) > 1 and len(finest) == 2 * len(strips)  # each image, each strip
    assert all(n == 1 for _, _, n in seen)  # one image at a time
    assert max(rows for rows, _, _ in finest) <= plan.strip_rows[0] + 2 * plan.overlap < x.shape[-2]
    assert out.dtype == whole.dtype and out.shape == whole.shape
    assert float((out - whole).norm(dim=1).max()) < MAX_EPE


@needs_numba
@pytest.mark.parametrize("col_type", [0, 1])
def test_strips_covering_the_frame_give_the_whole_flow_exactly(col_type):
    """The strip machinery alone (features of a crop, the warp of a strip from the whole frame, the
    copy back) changes nothing: strips grown to the whole frame reproduce the flow bit for bit."""
    from vsstar.flow.cpu import flow_group_numpy
    from vsstar.flow.memory import FlowPlan

    x, y = _pair("bikes_120_small")
    a, b = x[:1].double().numpy(), y[:1].double().numpy()
    if col_type == 1:
        a, b = a[:, :1].copy(), b[:, :1].copy()
    h, w = a.shape[-2:]
    args = (0.012, 0.75, 20, 3, 1, 10, col_type)
    whole = flow_group_numpy(a, b, *args)
    plan = FlowPlan(1, h, w, 1, 1, (h // 3, h // 4) + (0,) * 8, h, 0, None)
    assert len(plan.strips(0, h)) == 3
    assert np.array_equal(flow_group_numpy(a, b, *args, plan), whole)
    # A real overlap of a few rows does change the flow: the strips were really solved apart.
    near = FlowPlan(1, h, w, 1, 1, (h // 3,) + (0,) * 9, 4, 0, None)
    assert not np.array_equal(flow_group_numpy(a, b, *args, near), whole)


@needs_numba
def test_peak_memory_follows_the_cap():
    """Peak RSS increase of one call capped into strips, in a fresh process: within the cap (with
    slack for the allocator). Measured: 137 MB under a 155 MB cap; 330 MB without the cap."""
    script = r"""
import json, resource, sys, torch
sys.path.insert(0, sys.argv[1])
from bench_flow import _frames
from vsstar.flow import coarse2fine_flow_batch
from vsstar.flow.batch import plan_for
torch.set_num_threads(1)
t1, t2 = _frames(2, 32, 48)
coarse2fine_flow_batch(t1.float(), t2.float())
a, b = _frames(1, 480, 640)
x, y = torch.cat([a, b]).float(), torch.cat([b, a]).float()
cap = int(plan_for(x.shape, max_bytes=1 << 50).estimate * 0.42)
assert plan_for(x.shape, max_bytes=cap).tiled
r0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
coarse2fine_flow_batch(x, y, max_bytes=cap)
r1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"cap": cap, "need": plan_for(x.shape, max_bytes=1 << 50).estimate, "rss": (r1 - r0) * 1024}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    res = subprocess.run([sys.executable, "-c", script, str(ROOT / "benchmarks")], capture_output=True,
                         text=True, env=env, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    r = json.loads(res.stdout.strip().splitlines()[-1])
    assert r["need"] > 2 * r["cap"]
    # The uncapped call measured 0.9 of the need: this fails without the cap.
    assert r["rss"] <= 1.15 * r["cap"] + (32 << 20), r


@needs_numba
def test_fewer_images_at_once_is_exact():
    x, y = _pair("carphone_010")
    whole = coarse2fine_flow_batch(x, y)
    assert plan_for(x.shape).in_flight == 2
    one = plan_for(x.shape, max_bytes=UNCAPPED).estimate * 3 // 4  # room for one image, not two
    plan = plan_for(x.shape, max_bytes=one)
    assert plan.in_flight == 1 and not plan.tiled
    assert torch.equal(coarse2fine_flow_batch(x, y, max_bytes=one), whole)


def test_torch_path_runs_the_batch_in_chunks_exactly():
    torch.manual_seed(0)
    x = torch.rand(3, 3, 40, 56, dtype=torch.float64)
    y = torch.roll(x, 1, dims=3)
    kw = dict(n_outer=2, n_sor=4, ordering="redblack")
    whole = coarse2fine_flow_batch(x, y, **kw)
    per_image = plan_for((1, 3, 40, 56), dtype=torch.float64, ordering="redblack", max_bytes=UNCAPPED).estimate
    plan = plan_for(x.shape, dtype=torch.float64, ordering="redblack", max_bytes=per_image)
    assert plan.in_flight == 1
    assert torch.equal(coarse2fine_flow_batch(x, y, **kw, max_bytes=per_image), whole)


@pytest.mark.parametrize("bad", [0, -5, 1.5, True, "1G"])
def test_bad_max_bytes_names_the_parameter(bad):
    x = torch.rand(1, 3, 24, 32)
    with pytest.raises(ValueError, match="^max_bytes: expected None or an int > 0"):
        coarse2fine_flow_batch(x, x, max_bytes=bad)


@pytest.mark.parametrize("size", [(136, 320), (540, 960), (1080, 1920), (2160, 3840), (720, 4096)])
@pytest.mark.parametrize("threads", [1, 2, 8])
def test_the_plan_keeps_under_the_cap(size, threads):
    """Wherever the smallest strips fit, the planned peak is under the cap; above the need nothing
    changes."""
    h, w = size
    kw = dict(ratio=0.75, min_width=20, col_type=0, threads=threads)
    need = plan_flow(2, 3, h, w, max_bytes=None, **kw)
    assert not plan_flow(2, 3, h, w, max_bytes=need.estimate, **kw).tiled
    for frac in (0.9, 0.6, 0.4, 0.25, 0.15, 0.1, 0.05):
        cap = int(need.estimate * frac)
        plan = plan_flow(2, 3, h, w, max_bytes=cap, **kw)
        if plan.fits:
            assert plan.estimate <= cap
            assert all(r == 0 or r >= 16 for r in plan.strip_rows)
        if plan.tiled and plan.in_flight > 1:  # several images at once only with tall strips
            assert all(r == 0 or r >= 4 * plan.overlap for r in plan.strip_rows)


def test_4k_pair_fits_the_default_cap():
    from vsstar.flow.memory import DEFAULT_MAX_BYTES

    plan = plan_flow(2, 3, 2160, 3840, ratio=0.75, min_width=20, col_type=0, threads=2,
                     max_bytes=DEFAULT_MAX_BYTES)
    assert plan.fits and plan.tiled and plan.estimate <= 3 << 30 and plan.in_flight == 1
    # With room for two tall strips, both cores work on the strips of one image.
    wider = plan_flow(2, 3, 2160, 3840, ratio=0.75, min_width=20, col_type=0, threads=2, max_bytes=4 << 30)
    assert wider.in_flight == 1 and wider.strip_threads == 2 and wider.estimate <= 4 << 30


@needs_numba
def test_strips_on_several_threads_equal_strips_on_one():
    from vsstar.flow.cpu import flow_group_numpy
    from vsstar.flow.memory import FlowPlan

    x, y = _pair("bikes_120_small")
    a, b = x[:1].double().numpy(), y[:1].double().numpy()
    h, w = a.shape[-2:]
    args = (0.012, 0.75, 20, 3, 1, 10, 0)
    one = FlowPlan(1, h, w, 1, 1, (h // 4,) + (0,) * 9, 6, 0, None)
    three = FlowPlan(1, h, w, 1, 1, (h // 4,) + (0,) * 9, 6, 0, None, strip_threads=3)
    assert np.array_equal(flow_group_numpy(a, b, *args, three), flow_group_numpy(a, b, *args, one))


@needs_numba
def test_engine_logs_what_the_flow_tiles(caplog, monkeypatch):
    from vsstar.engine import StarEngine
    from vsstar.flow import batch

    x, y = _pair("bbb_100_gap2")
    a, b = x[:1], y[:1]
    eng = StarEngine(tiny_net(2), scale=2, flow_options={"n_outer": 2, "n_sor": 4})
    monkeypatch.setattr(batch, "DEFAULT_MAX_BYTES", _need(torch.cat([a, b])) // 2)
    with caplog.at_level(logging.INFO, logger="vsstar.engine"):
        eng.process(a, b)
        eng.process(a, b)
    lines = [r for r in caplog.records if r.name == "vsstar.engine" and "row strips" in r.getMessage()]
    assert len(lines) == 1 and lines[0].levelno == logging.INFO  # once per plan, not per batch
    assert "480x270" in lines[0].getMessage()
