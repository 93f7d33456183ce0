"""The starnet GStreamer element's logic (the file GStreamer loads is a bootstrap importing it).

* :mod:`vsstar.gst.props`: the property table and how properties map onto vsstar's arguments;
* :mod:`vsstar.gst.scheduler`: input frames in stream order, timed output frames out;
* :mod:`vsstar.gst.frames`: raw video rows <-> RGB frames;
* :mod:`vsstar.gst.element`: the GObject element (needs PyGObject with GStreamer).

This package runs under the system Python 3.11 the plugin loader embeds, and nothing here but
``element`` imports gi, so the pure-Python parts re-exported below work (and are tested) anywhere.
"""
from __future__ import annotations

from .props import parse_fraction, rate_factor, validate_settings
from .scheduler import InFrame, OutFrame, PairResult, PairScheduler

__all__ = ["InFrame", "OutFrame", "PairResult", "PairScheduler", "parse_fraction", "rate_factor",
           "validate_settings"]
