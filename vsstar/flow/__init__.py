"""Coarse-to-fine variational optical flow (Ce Liu) on torch, as STARnet was trained with.

`FlowSettings` holds the solver parameters (STARnet's by default); `coarse2fine_flow_batch` is the
batched torch API (any device); `coarse2fine_flow` is a numpy drop-in for the `pyflow` wrapper's call.
"""
from .batch import coarse2fine_flow_batch
from .compat import coarse2fine_flow, warp_bicubic
from .pyramid import level_sizes
from .settings import FlowSettings

__all__ = ["FlowSettings", "coarse2fine_flow_batch", "coarse2fine_flow", "warp_bicubic", "level_sizes"]
