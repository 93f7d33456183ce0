"""The starnet GStreamer element's logic (the file GStreamer loads is a bootstrap importing it).

* :mod:`vsstar.gst.props`: the property table and how properties map onto :class:`vsstar.options.StarOptions`;
* :mod:`vsstar.gst.frames`: raw video rows <-> RGB frames;
* :mod:`vsstar.gst.element`: the GObject element (needs PyGObject with GStreamer), feeding
  :class:`vsstar.pairs.PushStore` (which pair makes each output frame, and its timestamps).

This package runs under the system Python 3.11 the plugin loader embeds. Only ``element`` imports
gi, and torch is imported when the element starts, so the plugin scan stays fast and ``props`` and
``frames`` work (and are tested) on any Python.
"""
from __future__ import annotations

from .props import parse_fraction, rate_factor, star_options

__all__ = ["parse_fraction", "rate_factor", "star_options"]
