"""The values of the processing options that name a model: scales and quality tiers.

Torch-free, so the command's parser and the GStreamer plugin scan can offer them without loading the engine;
:class:`vsstar.options.StarOptions` and :class:`vsstar.engine.StarEngine` check against the same tuples.
"""
from __future__ import annotations

__all__ = ["SCALES", "QUALITIES"]

#: Upscaling factors of the network (the bundled models and the authors' checkpoints).
SCALES = (2, 4, 8)

#: The tiers of bundled weights: "fast" (the defaults) and "high" (larger, slower, better pictures; metadata
#: ``quality: high``). ``quality=`` picks among them when ``model=None``.
QUALITIES = ("fast", "high")
