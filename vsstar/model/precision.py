"""Float32 that is float32 on CUDA.

PyTorch lets cuDNN run float32 convolutions as TF32 on Ampere and later GPUs by default (10-bit
mantissa): the authors' checkpoints then differ from their CPU outputs by about 1e-3 relative, where
true float32 agrees to 1e-6. vsstar's float32 path is exact; float16/bfloat16 autocast is the fast one.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Iterator

import torch

__all__ = ["exact_float32"]

_lock = threading.Lock()
_depth = 0
_saved: tuple[bool, bool] = (True, False)


@contextlib.contextmanager
def exact_float32() -> Iterator[None]:
    """Within the block, float32 convolutions and matrix products on CUDA use no TF32.

    The switches are process-wide, so nested and concurrent blocks (one engine per device, each on its
    own thread) are counted: the first to enter turns TF32 off, the last to leave restores the user's
    settings."""
    global _depth, _saved
    with _lock:
        if _depth == 0:
            _saved = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
            torch.backends.cudnn.allow_tf32 = False
            torch.backends.cuda.matmul.allow_tf32 = False
        _depth += 1
    try:
        yield
    finally:
        with _lock:
            _depth -= 1
            if _depth == 0:
                torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = _saved
