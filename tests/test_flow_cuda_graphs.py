"""CUDA graphs of the flow (vsstar/flow/cuda_graphs.py).

Capture itself needs a GPU. What can be checked without one is checked here: the flow issues no
host synchronisation and no host-to-device copy once running (the condition for a capture; run on
the meta device, where such a copy or read-back shows up as an op on a CPU tensor), and the
cache's bookkeeping (replay into static buffers, eviction, fallback) with a stand-in graph.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from vsstar.flow import coarse2fine_flow_batch, cuda_graphs
from vsstar.flow.batch import _flow_core
from vsstar.flow.solver import sor_redblack

needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA device not available")

# Ops that stall or break a capture: reading a value back, or making a tensor from host data.
HOST_OPS = {"aten._local_scalar_dense.default", "aten.item.default", "aten.nonzero.default",
            "aten.lift_fresh.default", "aten.lift_fresh_copy.default"}


class HostTraffic(TorchDispatchMode):
    """Records ops that read back or copy host data while the work runs on a device."""

    def __init__(self):
        super().__init__()
        self.bad: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = str(func)
        if name in HOST_OPS:
            self.bad.append(name)
        elif name.startswith(("aten._to_copy", "aten.copy_")):
            tensors = [a for a in list(args) + list(kwargs.values()) if isinstance(a, torch.Tensor)]
            # A dim-0 CPU tensor is a wrapped Python scalar (a kernel argument, not a copy).
            if any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
                self.bad.append(name)
        return func(*args, **kwargs)


def _meta_core():
    a = torch.empty(2, 3, 64, 112, device="meta")
    return _flow_core(a, a.clone(), 0.012, 0.75, 20, 2, 1, 3, 0, sor_redblack)


def test_flow_issues_no_host_traffic():
    """The whole pyramid/warp/data-term/SOR pipeline stays on the device (capturable)."""
    mode = HostTraffic()
    with mode:
        out = _meta_core()
    assert out.shape == (2, 2, 64, 112) and out.device.type == "meta"
    assert mode.bad == []


def test_host_traffic_detector_catches_a_copy():
    """The check above can fail: a constant made on the host and moved over is reported."""
    mode = HostTraffic()
    with mode:
        x = torch.from_numpy(np.arange(4.0)).to("meta")
        _ = torch.tensor([1.0, 2.0, 3.0, 4.0]).to("meta") + x
    assert mode.bad


def test_triton_sor_arguments_stay_on_device(monkeypatch):
    """The Triton SOR wrapper builds its buffers with device ops only (the kernel is stubbed)."""
    from vsstar.flow import triton_sor

    class Kernel:  # stands in for the compiled kernel: kernel[grid](du, dv, a12, b1, ...)
        def __getitem__(self, grid):
            return lambda du, dv, a12, b1, *rest, **kw: du.add_(b1)

    monkeypatch.setattr(triton_sor, "_rb_half_sweep", Kernel(), raising=False)
    t = [torch.empty(2, 9, 13, device="meta") for _ in range(6)]
    mode = HostTraffic()
    with mode:
        du, dv = triton_sor.sor_redblack_triton(*t, 0.012, 4)
    assert du.shape == (2, 9, 13) and mode.bad == []


class _FakeGraph:
    """Stands in for torch.cuda.CUDAGraph: replay re-runs the function on the static inputs."""

    def __init__(self, fn, static_in, static_out):
        self.fn, self.static_in, self.static_out = fn, static_in, static_out
        self.replays = 0

    def replay(self):
        self.replays += 1
        for o, n in zip(self.static_out, (self.fn(*self.static_in),)):
            o.copy_(n)


def _fake_capture(fn, inputs):
    static_in = tuple(x.clone() for x in inputs)
    out = fn(*static_in)
    static_out = (out,)
    return _FakeGraph(fn, static_in, static_out), static_in, static_out


def test_graph_cache_replays_with_new_inputs_and_evicts(monkeypatch):
    cache = cuda_graphs.GraphCache("test", max_entries=2)
    monkeypatch.setattr(cache, "_capture", _fake_capture)
    fn = lambda a, b: a * 2 + b  # noqa: E731
    x, y = torch.ones(3), torch.arange(3.0)
    (r1,) = cache.run("k1", fn, x, y)
    (r2,) = cache.run("k1", fn, x * 5, y)  # same graph, new data copied into its static inputs
    assert torch.equal(r1, x * 2 + y) and torch.equal(r2, x * 10 + y)
    assert len(cache) == 1 and cache._entries["k1"][0].replays == 2
    r1[0] = 99.0  # results are copies, not views of the graph's static output
    (r3,) = cache.run("k1", fn, x, y)
    assert r3[0] == 2.0
    cache.run("k2", fn, x, y)
    cache.run("k1", fn, x, y)  # k1 most recently used, so k2 goes first
    cache.run("k3", fn, x, y)
    assert list(cache._entries) == ["k1", "k3"]


def test_graph_cache_falls_back_once_with_a_warning(monkeypatch):
    cache = cuda_graphs.GraphCache("test", max_entries=2)

    def broken(fn, inputs):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(cache, "_capture", broken)
    with pytest.warns(RuntimeWarning, match="CUDA graph of the test failed"):
        assert cache.run("k", lambda a: a, torch.ones(1)) is None
    assert cache.broken
    assert cache.run("k", lambda a: a, torch.ones(1)) is None  # no second attempt, no second warning


def test_graphs_only_for_cuda_and_can_be_disabled(monkeypatch):
    assert not cuda_graphs.enabled(torch.ones(1))
    if torch.cuda.is_available():
        t = torch.ones(1, device="cuda")
        assert cuda_graphs.enabled(t)
        monkeypatch.setenv("VSSTAR_FLOW_CUDA_GRAPHS", "0")
        assert not cuda_graphs.enabled(t)


@needs_cuda
def test_cuda_graph_flow_matches_eager(monkeypatch):
    """Replayed graphs give the eager result, for new data and for a second shape."""
    from vsstar.flow.batch import _FLOW_GRAPHS

    g = torch.Generator().manual_seed(1)
    base = torch.rand(2, 3, 48, 112, generator=g)
    shifted = torch.roll(base, shifts=(1, 2), dims=(2, 3))
    runs = []
    for env in ("0", "1"):
        monkeypatch.setenv("VSSTAR_FLOW_CUDA_GRAPHS", env)
        res = []
        for a, b in ((base, shifted), (shifted, base), (base[:1, :, :40, :90], shifted[:1, :, :40, :90])):
            res.append(coarse2fine_flow_batch(a.cuda(), b.cuda()).cpu())
        runs.append(res)
    assert len(_FLOW_GRAPHS) >= 2 and not _FLOW_GRAPHS.broken
    for eager, graphed in zip(*runs):
        assert eager.abs().max() > 0.1
        assert (eager - graphed).abs().max() < 1e-5
