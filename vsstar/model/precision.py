"""Float32 that is float32 on CUDA.

PyTorch lets cuDNN run float32 convolutions as TF32 on Ampere and later GPUs by default (10-bit
mantissa): the authors' checkpoints then differ from their CPU outputs far beyond float32 rounding, where
true float32 agrees to rounding. vsstar's float32 path is exact; float16/bfloat16 autocast is
the fast one.
"""
from __future__ import annotations

import threading

import torch

__all__ = ["exact_float32", "ExactFloat32"]


class ExactFloat32:
    """Context manager: within it, float32 convolutions and matrix products on CUDA use no TF32.

    The switches are process-wide, so blocks are counted across nesting, reuse of one instance and
    threads (one engine per device, each on its own thread): the first to enter turns TF32 off, the last
    to leave restores the user's settings."""

    _lock = threading.Lock()
    _depth = 0
    _saved: tuple[bool, bool] = (True, False)

    def __enter__(self) -> "ExactFloat32":
        cls = ExactFloat32
        with cls._lock:
            if cls._depth == 0:
                cls._saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
                torch.backends.cudnn.allow_tf32 = False
                torch.backends.cuda.matmul.allow_tf32 = False
            cls._depth += 1
        return self

    def __exit__(self, *exc: object) -> None:
        cls = ExactFloat32
        with cls._lock:
            cls._depth -= 1
            if cls._depth == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = cls._saved


def exact_float32() -> ExactFloat32:
    """A context manager (reusable, re-entrant, thread-safe) in which CUDA float32 is exact float32."""
    return ExactFloat32()
