"""Coarse-to-fine variational optical flow (Ce Liu) on torch, as STARnet was trained with."""
from .batch import coarse2fine_flow_batch

__all__ = ["coarse2fine_flow_batch"]
