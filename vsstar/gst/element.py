"""The starnet GObject element: pads, caps, events and queries around :class:`vsstar.pairs.PushStore`.

Imported by the bootstrap ``filters/gstreamer/python/starnet.py`` that gst-python's plugin loader
finds; it needs PyGObject with GStreamer (the system Python the loader embeds) and numpy. torch,
the engine and the pair store are imported only when the element starts, so the plugin scan stays
fast and a missing install becomes a clear bus error. Which pair makes each output frame, and each output frame's
timestamp and duration, are the push store's (:mod:`vsstar.schedule`, :mod:`vsstar.pairs`); the
element maps properties, caps and buffers onto it.

Semantics follow the VapourSynth filter ``vsstar.STAR`` (see docs/gstreamer.md): at a scene cut no
frame is synthesised across it; the last frame is flushed at EOS; a flush or seek drops held frames;
new caps mid-stream drain the held frames under the old caps and start again.
"""
from __future__ import annotations

import sys
import traceback
from fractions import Fraction
from typing import TYPE_CHECKING, Any, List, Optional, Sequence, Tuple

import gi
import numpy as np

gi.require_version("Gst", "1.0")
gi.require_version("GstVideo", "1.0")
from gi.repository import GLib, GObject, Gst, GstVideo  # noqa: E402

from . import frames  # noqa: E402
from .props import (  # noqa: E402
    DEFAULTS, PROPERTIES, debug_detail, normalise, property_words, rate_factor, star_options)

if TYPE_CHECKING:
    from vsstar.pairs import PairParts, PushStore, Ready

__all__ = ["StarNetElement"]

_CAPS = Gst.Caps.from_string(
    f"video/x-raw, format=(string){{ {', '.join(frames.FORMATS)} }}, width=(int)[1, 2147483647], "
    "height=(int)[1, 2147483647], framerate=(fraction)[0/1, 2147483647/1], "
    "interlace-mode=(string)progressive")  # fields would be mistaken for motion: deinterlace first


def _gproperties() -> dict:
    """PROPERTIES as GObject's __gproperties__ (numbers take their range, the rest only a default)."""
    out = {}
    for name, p in PROPERTIES.items():
        rng = () if p.minimum is None else (p.minimum, p.maximum)
        out[name] = (p.type, p.nick, p.blurb, *rng, p.default, GObject.ParamFlags.READWRITE)
    return out


_HALF = Fraction(1, 2)


def _time_or_none(t: int) -> Optional[int]:
    return None if t == Gst.CLOCK_TIME_NONE else int(t)


class StarNetElement(Gst.Element):
    """STARnet space-time super-resolution (see the module docstring)."""

    __gtype_name__ = "GstStarnet"  # default instance names: starnet0, starnet1, ...

    __gstmetadata__ = (
        "STARnet space-time video super-resolution",
        "Filter/Effect/Video",
        "Upscales video x2/x4/x8 and raises its frame rate with STARnet (vsstar)",
        "vsstar",
    )
    __gsttemplates__ = (
        Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
        Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
    )
    __gproperties__ = _gproperties()

    def __init__(self) -> None:
        super().__init__()
        self.props_store = dict(DEFAULTS)
        self.sinkpad = Gst.Pad.new_from_template(self.__gsttemplates__[0], "sink")
        self.sinkpad.set_chain_function_full(self._chain, None)
        self.sinkpad.set_event_function_full(self._sink_event, None)
        self.sinkpad.set_query_function_full(self._sink_query, None)
        self.add_pad(self.sinkpad)
        self.srcpad = Gst.Pad.new_from_template(self.__gsttemplates__[1], "src")
        self.srcpad.set_query_function_full(self._src_query, None)
        self.add_pad(self.srcpad)
        self.engine: Any = None
        self._store: Any = None  # vsstar.pairs.PushStore, imported at start (torch)
        self._cut: Any = None
        self.sched: Optional[PushStore] = None
        self.in_info: Any = None
        self.out_info: Any = None
        self.in_caps: Any = None
        self.factor: Optional[Fraction] = None  # output frames per input frame under in_caps
        self.discont = True
        self.failed = False
        self._again: Optional[GLib.Source] = None  # posts a streaming error again: see _post_again

    # -- properties ----------------------------------------------------------------------
    def do_get_property(self, prop: GObject.ParamSpec) -> Any:
        return self.props_store[prop.name]

    def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
        self.props_store[prop.name] = normalise(prop.name, value)

    # -- errors --------------------------------------------------------------------------
    def _error(self, text: str, debug: Optional[str] = None, domain: Any = None, code: Any = None,
               streaming: bool = False) -> None:
        """Post a GStreamer error message (gst-launch prints it and stops); ``streaming``: posted from a
        streaming thread (caps, buffers), which may be before the application runs its main loop."""
        if domain is None:
            domain, code = Gst.LibraryError, Gst.LibraryError.SETTINGS
        err = GLib.Error.new_literal(domain.quark(), text, int(code))
        again = streaming and self._again is None and self._no_main_loop()
        self.post_message(Gst.Message.new_error(self, err, debug or text))
        self.failed = True
        if again:
            self._post_again(err, debug or text)

    @staticmethod
    def _no_main_loop() -> bool:
        """True when no thread runs the default GLib main context (g_main_loop_run owns it while it runs)."""
        ctx = GLib.MainContext.default()
        if not ctx.acquire():
            return False
        ctx.release()
        return True

    def _post_again(self, err: GLib.Error, debug: str) -> None:
        """Post the error once more when a main loop starts on the default context, unless the element has
        stopped or flushed by then.

        gst-launch-1.0 (1.22, and GStreamer's main branch) quits its main loop from the bus's sync handler,
        in the thread that posts the error. An error posted while the pipeline prerolls can come before
        gst-launch enters g_main_loop_run, which sets the loop running again: the quit is lost. GstBin
        aborts the preroll on the error, so no state change or EOS follows, and gst-launch waited forever
        (4 of 20 runs with an 'fps' refused when the caps arrive; docs/gstreamer.md). The error is posted
        at once for applications that poll the bus, and again from an idle source on the default context,
        which runs only once gst-launch's loop does (an application that never runs that context never
        sees it)."""
        def again(*_: Any) -> bool:  # Source.set_callback passes its user data
            self._again = None
            if self.failed:
                self.post_message(Gst.Message.new_error(self, err, debug))
            return GLib.SOURCE_REMOVE

        src = GLib.idle_source_new()
        src.set_callback(again)
        self._again = src
        src.attach(GLib.MainContext.default())

    # -- state ---------------------------------------------------------------------------
    def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
        if transition == Gst.StateChange.NULL_TO_READY:
            if not self._start():
                return Gst.StateChangeReturn.FAILURE
        ret = Gst.Element.do_change_state(self, transition)
        if transition == Gst.StateChange.PAUSED_TO_READY:
            if self._again is not None:  # stopped: the application has seen the error
                self._again.destroy()
                self._again = None
            if self.sched is not None:
                self.sched.reset()
            self.sched, self.in_info, self.out_info, self.in_caps = None, None, None, None
            self.discont = True
        elif transition == Gst.StateChange.READY_TO_NULL:
            self.engine = None
        return ret

    def _start(self) -> bool:
        """Map the properties onto vsstar.options.StarOptions (checked there) and build the engine;
        posts an error and returns False."""
        p = self.props_store
        self.failed = False
        try:
            import vsstar.engine  # noqa: F401  (torch: its absence is told apart from a bad property)
            from vsstar.pairs import PushStore
        except ImportError as e:
            self._error(
                "starnet: cannot import vsstar/torch in the plugin loader's Python "
                f"({sys.executable or 'embedded'} {sys.version.split()[0]}): {e}. Run "
                "filters/gstreamer/setup.sh, or set VSSTAR_GST_VENV to a venv made with "
                "--system-site-packages that holds torch and vsstar.",
                debug=f"sys.path={sys.path}", domain=Gst.CoreError, code=Gst.CoreError.MISSING_PLUGIN)
            return False
        try:
            options = star_options(p)  # 'fps' is checked against the caps
        except ValueError as e:
            self._error(f"starnet: {e}", debug=debug_detail(e))
            return False
        self._store = PushStore
        if options.scene_change:
            from vsstar import scene

            thr = options.sc_threshold
            self._cut = lambda a, b: scene.scene_change(
                a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0, thr)
        else:
            self._cut = None
        try:
            self.engine = options.engines()[0]
        except Exception as e:  # unknown model, unreadable weights, no CUDA, bad values
            self._error(f"starnet: {property_words(str(e))}", debug=debug_detail(e))
            return False
        return True

    # -- frames --------------------------------------------------------------------------
    def _run_pairs(self, pairs: Sequence[Tuple[Any, Any]], times: Sequence[Sequence[Fraction]]) -> List[PairParts]:
        """Engine call on uint8 HWC pairs -> uint8 HWC results, with the in-between times each pair makes."""
        import torch

        from vsstar.pairs import PairParts

        n = len(pairs)
        h, w = pairs[0][0].shape[:2]
        stacked = torch.from_numpy(np.stack([a for a, _ in pairs] + [b for _, b in pairs]))
        # One conversion pass into the engine's reusable host buffer (pinned on CUDA).
        buf = self.engine.host_buffer(2 * n, h, w)
        buf.copy_(stacked.permute(0, 3, 1, 2)).mul_(1.0 / 255.0)

        def u8(t: Any) -> List[Any]:
            if t is None:
                return [None] * n
            q = t.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
            if q.dim() == 3:  # one frame (3, H, W) -> (H, W, 3)
                return q.permute(1, 2, 0).contiguous().numpy()
            return list(q.permute(0, 2, 3, 1).contiguous().numpy())

        if all(list(ts) in ([], [_HALF]) for ts in times):  # the midpoint call (factor 2, mode s)
            res = self.engine.process(buf[:n], buf[n:])
            mids = [{_HALF: m} if ts else {} for ts, m in zip(times, u8(res.mid))]
            return [PairParts(a, m, b) for a, m, b in zip(u8(res.sr_first), mids, u8(res.sr_second))]
        out = self.engine.process_times(buf[:n], buf[n:], times, exact_time=self.props_store["exact-time"])
        mids = [{t: u8(m) for t, m in d.items()} for d in out.mids]
        return [PairParts(a, m, b) for a, m, b in zip(u8(out.sr_first), mids, u8(out.sr_second))]

    @staticmethod
    def _geometry(info: Any) -> Tuple[str, int, int, int]:
        return info.finfo.name, info.width, info.height, info.stride[0]

    def _read(self, buf: Gst.Buffer) -> Any:
        """Input buffer -> dense RGB (H, W, 3) uint8 copy."""
        ok, m = buf.map(Gst.MapFlags.READ)
        if not ok:
            raise RuntimeError("cannot map input buffer")
        try:
            return frames.read_rgb(m.data, *self._geometry(self.in_info))
        finally:
            buf.unmap(m)

    def _write(self, f: Ready) -> Gst.Buffer:
        """Output frame -> a new buffer in the output format and stride (one copy)."""
        buf = Gst.Buffer.new_allocate(None, self.out_info.size, None)
        ok, m = buf.map(Gst.MapFlags.WRITE)
        if not ok:
            raise RuntimeError("cannot map output buffer")
        try:
            frames.write_rgb(m.data, *self._geometry(self.out_info), f.image)
        finally:
            buf.unmap(m)
        buf.pts = Gst.CLOCK_TIME_NONE if f.pts is None else f.pts
        buf.duration = Gst.CLOCK_TIME_NONE if f.dur is None else f.dur
        if self.discont:
            buf.set_flags(Gst.BufferFlags.DISCONT)
            self.discont = False
        return buf

    def _push(self, ready: List[Ready]) -> Gst.FlowReturn:
        ret = Gst.FlowReturn.OK
        for f in ready:
            r = self.srcpad.push(self._write(f))
            if r != Gst.FlowReturn.OK and ret == Gst.FlowReturn.OK:
                ret = r
            if r not in (Gst.FlowReturn.OK, Gst.FlowReturn.NOT_LINKED):
                break
        return ret

    def _chain(self, pad: Gst.Pad, parent: Any, buf: Gst.Buffer) -> Gst.FlowReturn:
        if self.failed:
            return Gst.FlowReturn.ERROR
        if self.sched is None or self.out_info is None:
            return Gst.FlowReturn.NOT_NEGOTIATED
        if buf.has_flags(Gst.BufferFlags.DISCONT):
            self.discont = True
        try:
            return self._push(self.sched.push(self._read(buf), _time_or_none(buf.pts),
                                              _time_or_none(buf.duration)))
        except Exception as e:
            self._error(f"starnet: processing failed: {e}", debug=traceback.format_exc(),
                        domain=Gst.StreamError, code=Gst.StreamError.FAILED, streaming=True)
            return Gst.FlowReturn.ERROR

    def _drain(self) -> Gst.FlowReturn:
        if self.sched is None or self.sched.held == 0 or self.failed:
            return Gst.FlowReturn.OK
        try:
            return self._push(self.sched.finish())
        except Exception as e:
            self._error(f"starnet: processing failed: {e}", debug=traceback.format_exc(),
                        domain=Gst.StreamError, code=Gst.StreamError.FAILED, streaming=True)
            return Gst.FlowReturn.ERROR

    # -- caps ----------------------------------------------------------------------------
    def _out_caps(self, caps: Gst.Caps, factor: Fraction) -> Gst.Caps:
        """Output caps for fixed input caps at ``factor`` output frames per input frame."""
        p = self.props_store
        s = caps.get_structure(0).copy()
        if p["mode"] in ("st", "s"):
            info = GstVideo.VideoInfo.new_from_caps(caps)
            s.set_value("width", info.width * p["scale"])
            s.set_value("height", info.height * p["scale"])
        if p["mode"] in ("st", "t"):
            for field in ("framerate", "max-framerate"):
                ok, n, d = s.get_fraction(field)
                if ok and n > 0:
                    r = Fraction(n, d) * factor
                    s.set_value(field, Gst.Fraction(r.numerator, r.denominator))
        out = Gst.Caps.new_empty()
        out.append_structure(s)
        return out

    def _factor(self, caps: Gst.Caps) -> Fraction:
        """Output frames per input frame for these input caps (ValueError naming the property)."""
        p = self.props_store
        ok, n, d = caps.get_structure(0).get_fraction("framerate")
        return rate_factor(p["mode"], p["factor"], p["fps"], Fraction(n, d) if ok and n > 0 else None)

    def _set_caps(self, caps: Gst.Caps) -> bool:
        if self.in_caps is not None and caps.is_equal(self.in_caps):
            return True
        if self._drain() != Gst.FlowReturn.OK and self.failed:
            return False
        info = GstVideo.VideoInfo.new_from_caps(caps)
        if info is None:
            return False
        try:
            factor = self._factor(caps)
        except ValueError as e:
            if not self.failed:  # upstream may offer the same caps again: one error is enough
                self._error(f"starnet: {e}", debug=debug_detail(e), streaming=True)
            return False
        out = self._out_caps(caps, factor)
        out_info = GstVideo.VideoInfo.new_from_caps(out)
        if not self.srcpad.push_event(Gst.Event.new_caps(out)):
            return False
        self.in_caps, self.in_info, self.out_info, self.factor = caps, info, out_info, factor
        fd = None
        if info.fps_n > 0:
            fd = Gst.util_uint64_scale_int(Gst.SECOND, info.fps_d, info.fps_n)
        p = self.props_store
        self.sched = self._store(self._run_pairs, p["mode"], factor, p["batch-size"], self._cut, fd)
        return True

    def _upstream_caps(self, caps: Gst.Caps) -> Gst.Caps:
        """Caps downstream accepts, mapped to the sink side: size and rate are ours to set."""
        up = Gst.Caps.new_empty()
        for i in range(caps.get_size()):
            s = caps.get_structure(i).copy()
            for field in ("width", "height", "framerate", "max-framerate"):
                s.remove_field(field)
            up.append_structure(s)
        return up

    def _sink_query(self, pad: Gst.Pad, parent: Any, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            tmpl = pad.get_pad_template_caps()
            peer = self.srcpad.peer_query_caps(None)
            caps = tmpl
            if peer is not None and not peer.is_any():
                caps = self._upstream_caps(peer).intersect(tmpl)
            filt = query.parse_caps()
            if filt is not None:
                caps = filt.intersect_full(caps, Gst.CapsIntersectMode.FIRST)
            query.set_caps_result(caps)
            return True
        if query.type == Gst.QueryType.ACCEPT_CAPS:
            caps = query.parse_accept_caps()
            query.set_accept_caps_result(caps.can_intersect(pad.get_pad_template_caps()))
            return True
        if query.type == Gst.QueryType.ALLOCATION:
            return False  # our output has another size: upstream allocates its own
        return pad.query_default(parent, query)

    def _src_query(self, pad: Gst.Pad, parent: Any, query: Gst.Query) -> bool:
        if query.type == Gst.QueryType.CAPS:
            caps = pad.get_pad_template_caps()
            if self.in_caps is not None:
                caps = self._out_caps(self.in_caps, self.factor)
            filt = query.parse_caps()
            if filt is not None:
                caps = filt.intersect_full(caps, Gst.CapsIntersectMode.FIRST)
            query.set_caps_result(caps)
            return True
        if query.type == Gst.QueryType.LATENCY:
            # We hold batch-size frames before the first pair can run.
            if not self.sinkpad.peer_query(query):
                return False
            live, lo, hi = query.parse_latency()
            extra = 0
            if self.in_info is not None and self.in_info.fps_n > 0:
                extra = Gst.util_uint64_scale_int(
                    Gst.SECOND * self.props_store["batch-size"], self.in_info.fps_d, self.in_info.fps_n)
            hi = hi if hi == Gst.CLOCK_TIME_NONE else hi + extra
            query.set_latency(live, lo + extra, hi)
            return True
        return pad.query_default(parent, query)

    # -- events --------------------------------------------------------------------------
    def _sink_event(self, pad: Gst.Pad, parent: Any, event: Gst.Event) -> bool:
        t = event.type
        if t == Gst.EventType.CAPS:
            return self._set_caps(event.parse_caps())
        if t == Gst.EventType.FLUSH_STOP:
            if self.sched is not None:
                self.sched.reset()  # a seek: the held frames belong to the old position
            self.discont = True
            self.failed = False
        elif t == Gst.EventType.EOS:
            self._drain()
        elif t == Gst.EventType.SEGMENT and self.sched is not None and self.sched.held:
            self._drain()  # new segment without a flush: finish the old one first
        return pad.event_default(parent, event)


GObject.type_register(StarNetElement)
