"""vsstar: space-time video super-resolution (STARnet) for VapourSynth and GStreamer.

The VapourSynth entry point is :func:`vsstar.STAR`. It is imported lazily so that the
torch-only parts (``vsstar.model``, ``vsstar.flow``, ``vsstar.engine``) work on Pythons
and hosts without VapourSynth (the GStreamer element runs under the system Python).
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["STAR", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "STAR":
        from .vs import STAR

        return STAR
    raise AttributeError(f"module 'vsstar' has no attribute {name!r}")
