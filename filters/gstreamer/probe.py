"""Run a GStreamer pipeline that ends in ``appsink name=sink`` and report what came out, as JSON.

Used by tests/test_gstreamer*.py (which run under a Python without PyGObject) and handy for
checking the element by hand. Run it with the element's venv so the starnet element imports::

    GST_PLUGIN_PATH=filters/gstreamer .venv-gst/bin/python filters/gstreamer/probe.py \\
        "videotestsrc num-buffers=4 ! video/x-raw,width=32,height=24 ! starnet scale=2 ! appsink name=sink"

Prints one JSON object: ``buffers`` (pts, duration, size, width, height, format, flags of every
buffer), ``eos`` (bool), ``error`` (text, debug, source of the first bus error, or null) and
``seeked_at`` (index of the first buffer after a seek, when --seek-after is used) and
``arrivals`` (pts of every buffer that reached the sink pad, before the sink clips to the
segment, with "flush" where a flush ended), and ``latency`` (live, min, max in ns, as the
sink's upstream answers the latency query once the first buffer arrived).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, Dict, List, Optional

import gi

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # noqa: E402


def _buffer_record(sample: Gst.Sample) -> Dict[str, Any]:
    buf = sample.get_buffer()
    s = sample.get_caps().get_structure(0)
    none = Gst.CLOCK_TIME_NONE
    return {
        "pts": None if buf.pts == none else int(buf.pts),
        "duration": None if buf.duration == none else int(buf.duration),
        "size": buf.get_size(),
        "width": s.get_value("width"),
        "height": s.get_value("height"),
        "format": s.get_value("format"),
        "framerate": list(s.get_fraction("framerate")[1:]),
        "discont": bool(buf.has_flags(Gst.BufferFlags.DISCONT)),
    }


def run(description: str, timeout: float = 120.0, seek_after: Optional[int] = None,
        seek_to: int = 0, seek_stop: Optional[int] = None, dump: Optional[str] = None) -> Dict[str, Any]:
    """Play the pipeline to EOS or error; after ``seek_after`` buffers, flush-seek to
    [``seek_to``, ``seek_stop``) ns."""
    Gst.init(None)
    result: Dict[str, Any] = {"buffers": [], "eos": False, "error": None, "seeked_at": None,
                              "state_change": None}
    try:
        pipeline = Gst.parse_launch(description)
    except GLib.Error as e:
        result["error"] = {"text": str(e), "debug": None, "source": "parse"}
        return result
    sink = pipeline.get_by_name("sink")
    arrivals: List[Any] = []
    result["arrivals"] = arrivals
    if sink is not None:
        sink.set_property("sync", False)
        # Every buffer that reaches the sink, before it clips to the segment, and the flushes.
        def on_pad(pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
            if info.type & Gst.PadProbeType.BUFFER:
                pts = info.get_buffer().pts
                arrivals.append(None if pts == Gst.CLOCK_TIME_NONE else int(pts))
            else:
                ev = info.get_event()
                if ev is not None and ev.type == Gst.EventType.FLUSH_STOP:
                    arrivals.append("flush")
            return Gst.PadProbeReturn.OK

        sink.get_static_pad("sink").add_probe(
            Gst.PadProbeType.BUFFER | Gst.PadProbeType.EVENT_FLUSH, on_pad)
    bus = pipeline.get_bus()
    ret = pipeline.set_state(Gst.State.PLAYING)
    result["state_change"] = ret.value_nick
    if ret == Gst.StateChangeReturn.FAILURE:
        # an element refused to start: its error message is already on the bus
        msg = bus.pop_filtered(Gst.MessageType.ERROR)
        if msg is not None:
            err, debug = msg.parse_error()
            result["error"] = {"text": err.message, "debug": debug,
                               "source": msg.src.get_name() if msg.src else None}
        pipeline.set_state(Gst.State.NULL)
        return result
    buffers: List[Dict[str, Any]] = result["buffers"]
    deadline = time.monotonic() + timeout
    seeked = False
    while time.monotonic() < deadline:
        msg = bus.timed_pop_filtered(10 * Gst.MSECOND, Gst.MessageType.ERROR | Gst.MessageType.EOS)
        if msg is not None:
            if msg.type == Gst.MessageType.ERROR:
                err, debug = msg.parse_error()
                result["error"] = {"text": err.message, "debug": debug,
                                   "source": msg.src.get_name() if msg.src else None}
                break
            if msg.type == Gst.MessageType.EOS:
                # appsink may still hold samples queued before the EOS
                while sink is not None:
                    sample = sink.emit("try-pull-sample", 0)
                    if sample is None:
                        break
                    _take(sample, buffers, dump)
                result["eos"] = True
                break
        if sink is None:
            continue
        sample = sink.emit("try-pull-sample", 10 * Gst.MSECOND)
        if sample is None:
            continue
        _take(sample, buffers, dump)
        if "latency" not in result:
            # what the elements upstream of the sink add up to, once data flows
            q = Gst.Query.new_latency()
            if sink.get_static_pad("sink").peer_query(q):
                live, lo, hi = q.parse_latency()
                result["latency"] = [bool(live), int(lo), None if hi == Gst.CLOCK_TIME_NONE else int(hi)]
            else:
                result["latency"] = None
        if seek_after is not None and not seeked and len(buffers) >= seek_after:
            seeked = True
            ok = pipeline.seek(1.0, Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.ACCURATE,
                               Gst.SeekType.SET, seek_to,
                               Gst.SeekType.NONE if seek_stop is None else Gst.SeekType.SET,
                               -1 if seek_stop is None else seek_stop)
            result["seek_ok"] = bool(ok)
            result["seeked_at"] = len(buffers)
    else:
        result["timeout"] = True
    pipeline.set_state(Gst.State.NULL)
    return result


def _take(sample: Gst.Sample, buffers: List[Dict[str, Any]], dump: Optional[str]) -> None:
    rec = _buffer_record(sample)
    if dump:
        buf = sample.get_buffer()
        ok, m = buf.map(Gst.MapFlags.READ)
        try:
            path = os.path.join(dump, f"{len(buffers):04d}.raw")
            with open(path, "wb") as fh:
                fh.write(bytes(m.data))
        finally:
            buf.unmap(m)
        rec["file"] = path
    buffers.append(rec)


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("pipeline", help="gst-launch style description with 'appsink name=sink'")
    ap.add_argument("--timeout", type=float, default=120.0)
    ap.add_argument("--seek-after", type=int, default=None, help="seek after this many buffers")
    ap.add_argument("--seek-to", type=int, default=0, help="seek target in ns")
    ap.add_argument("--seek-stop", type=int, default=None, help="seek stop position in ns")
    ap.add_argument("--dump", default=None, help="folder to write each buffer's bytes to")
    a = ap.parse_args(argv)
    res = run(a.pipeline, a.timeout, a.seek_after, a.seek_to, a.seek_stop, a.dump)
    json.dump(res, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
