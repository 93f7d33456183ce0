"""Replaying fixed-shape CUDA work from captured CUDA graphs.

On a GPU the flow is bound by launch latency, not arithmetic: one 270x480 call issues ~25k small
kernels for the data terms plus ~12k SOR half-sweeps, each costing several microseconds of
Python and driver time when launched eagerly. The work of a call depends only on the input shape
and the parameters, so it is captured once per shape and replayed as one graph.

`VSSTAR_FLOW_CUDA_GRAPHS=0` turns graphs off (everything is launched eagerly). A capture that
fails (an unsupported driver, another thread capturing) warns once and falls back to eager
launches for the rest of the process.
"""
from __future__ import annotations

import os
import threading
import warnings
from collections import OrderedDict
from contextlib import nullcontext
from typing import Callable, Hashable

import torch

ENV = "VSSTAR_FLOW_CUDA_GRAPHS"


def enabled(t: torch.Tensor) -> bool:
    """Whether work on `t` should go through a graph: CUDA, not disabled, and not already being
    captured by the caller (then the work is simply part of the caller's graph)."""
    return (t.is_cuda and os.environ.get(ENV, "1") != "0"
            and not torch.cuda.is_current_stream_capturing())


class GraphCache:
    """CUDA graphs of a function of fixed-shape tensors, one per key, least recently used evicted.

    The function must be pure: it must not modify its inputs, must return a tensor or a tuple of
    tensors, and must not synchronise with the host (no .item(), no host-to-device copies of
    new data; constants must be built on the device). Each graph keeps its own memory pool (the
    peak working memory of one call), hence the small `max_entries`.
    """

    def __init__(self, name: str, max_entries: int):
        self.name = name
        self.max_entries = max_entries
        self._entries: OrderedDict = OrderedDict()
        self._lock = threading.Lock()
        self.broken = False

    def __len__(self) -> int:
        return len(self._entries)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def run(self, key: Hashable, fn: Callable[..., torch.Tensor | tuple[torch.Tensor, ...]],
            *inputs: torch.Tensor) -> tuple[torch.Tensor, ...] | None:
        """fn(*inputs) through the graph for `key` (captured on first use); None when graphs are
        unavailable, in which case the caller runs fn eagerly."""
        if self.broken:
            return None
        # The device guard matters for cuda:N != current device: the capture stream, the graph and
        # Triton's launches all follow the current device, not the tensors'.
        dev = inputs[0].device
        with self._lock, (torch.cuda.device(dev) if dev.type == "cuda" else nullcontext()):
            try:
                entry = self._entries.get(key)
                if entry is None:
                    entry = self._capture(fn, inputs)
                    while len(self._entries) >= self.max_entries:
                        self._entries.popitem(last=False)
                    self._entries[key] = entry
                else:
                    self._entries.move_to_end(key)
                graph, static_in, static_out = entry
                for s, x in zip(static_in, inputs):
                    s.copy_(x)
                graph.replay()
                # The outputs live in the graph's pool and are overwritten by the next replay.
                return tuple(o.clone() for o in static_out)
            except Exception as e:  # noqa: BLE001 - any capture or replay failure means: run eagerly
                self.broken = True
                self._entries.clear()
                warnings.warn(f"vsstar.flow: the CUDA graph of the {self.name} failed ({e}); "
                              f"launching kernels directly from now on", RuntimeWarning, stacklevel=3)
                return None

    @staticmethod
    def _capture(fn, inputs):
        device = inputs[0].device
        static_in = tuple(x.detach().clone() for x in inputs)
        current = torch.cuda.current_stream(device)
        side = torch.cuda.Stream(device=device)
        side.wait_stream(current)
        with torch.cuda.stream(side):
            fn(*static_in)  # warm-up outside the capture: compiles Triton kernels, lazy inits
        current.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # thread_local: other threads may keep using CUDA (e.g. a network on another stream).
        with torch.cuda.graph(graph, capture_error_mode="thread_local"):
            out = fn(*static_in)
        static_out = out if isinstance(out, tuple) else (out,)
        return graph, static_in, static_out
