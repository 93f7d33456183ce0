"""starnet: STARnet space-time video super-resolution as a GStreamer element.

Loaded by the gst-python plugin loader (Debian: ``gstreamer1.0-python3-plugin-loader``) from
``$GST_PLUGIN_PATH/python/``. The loader embeds the system Python 3.11, so torch and vsstar come
from a venv made with ``--system-site-packages`` (see ``filters/gstreamer/setup.sh``): this file
adds that venv's site-packages to ``sys.path`` itself (``$VSSTAR_GST_VENV``, else ``.venv-gst`` of
the repository it sits in), and that repository's ``vsstar`` ahead of any installed one, so
``GST_PLUGIN_PATH`` is the only thing a user has to set.

Semantics follow the VapourSynth filter ``vsstar.STAR``:

* ``mode=st``: every input frame k gives its super-resolved frame at k's time, then the frame
  synthesised between k and k+1 at the midpoint time; width and height x ``scale``, frame rate x 2.
* ``mode=s``: super-resolution only, one output per input, same timestamps.
* ``mode=t``: interpolation only at the input size, frame rate x 2 (the input frame, then the
  synthesised one).
* At a scene cut no frame is synthesised across it: the in-between frame repeats the left frame.
* The last frame is flushed at EOS (the in-between slot repeats it, as VapourSynth doublers do);
  a flush or seek drops held frames; new caps mid-stream drain the held frames under the old caps
  and start again.

Inference is :class:`vsstar.engine.StarEngine` (one flow + network pass per frame pair, batched);
nothing of it is duplicated here. This module imports torch and vsstar only when the element
starts, so the plugin scan stays fast and a missing install becomes a clear bus error.

Which pair makes each output frame is decided by :mod:`vsstar.schedule`, as for ``vsstar.STAR``;
:class:`PairScheduler` only buffers and times frames. It has no GStreamer dependency, so it can be
tested on any Python; the element class is defined only where PyGObject with GStreamer is present.
"""
from __future__ import annotations

import glob
import os
import site
import sys
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
import traceback
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

MODES = ("st", "s", "t")
SCALES = (2, 4, 8)
CLOCK_TIME_NONE = 2**64 - 1  # GST_CLOCK_TIME_NONE


# --------------------------------------------------------------------------------------------
# Finding torch and vsstar from the embedded system Python
# --------------------------------------------------------------------------------------------
def _repo_root() -> Optional[Path]:
    """The vsstar checkout this file lives in (filters/gstreamer/python/starnet.py), if any."""
    here = Path(__file__).resolve()
    if len(here.parents) > 3:
        root = here.parents[3]
        if (root / "vsstar" / "__init__.py").is_file():
            return root
    return None


def _add_venv_paths() -> None:
    """Put the element venv's site-packages (and the checkout) on sys.path.

    The plugin loader starts the system Python, which does not see a venv; when the host is
    already a Python (an application using gi), whatever it has wins and this only appends.
    """
    root = _repo_root()
    venvs = []
    if os.environ.get("VSSTAR_GST_VENV"):
        venvs.append(Path(os.environ["VSSTAR_GST_VENV"]))
    if root is not None:
        venvs.append(root / ".venv-gst")
    pyver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    for venv in venvs:
        for sp in sorted(glob.glob(str(venv / "lib" / pyver / "site-packages"))):
            if sp not in sys.path:
                site.addsitedir(sp)
    if root is not None and str(root) not in sys.path:
        # The checkout this file sits in goes first: the element and vsstar (its frame schedule)
        # must be the same version, whatever vsstar the venv has installed.
        sys.path.insert(0, str(root))


_add_venv_paths()

# The frame schedule is vsstar's (pure Python, no torch): the element only buffers and times frames.
# Without vsstar the plugin still registers; starting the element then reports what is missing.
try:
    from vsstar.schedule import FrameSchedule, batches, output_factor
except ImportError:
    FrameSchedule = batches = output_factor = None  # type: ignore[assignment,misc]

try:
    import numpy as np
except ImportError:  # reported as a bus error when the element starts
    np = None  # type: ignore[assignment]


# --------------------------------------------------------------------------------------------
# Scheduling: frames in, timed output frames out (no GStreamer here)
# --------------------------------------------------------------------------------------------
@dataclass
class InFrame:
    """One input frame: RGB (H, W, 3) uint8, its timestamp and duration in ns (None if unknown)."""

    rgb: Any
    pts: Optional[int]
    dur: Optional[int]


@dataclass
class OutFrame:
    """One output frame: RGB (H', W', 3) uint8 with its timestamp and duration in ns."""

    rgb: Any
    pts: Optional[int]
    dur: Optional[int]
    interpolated: bool


@dataclass
class PairResult:
    """What the engine gives for one pair, as uint8 HWC arrays (sr_* None in mode t).

    mid: the in-between frame at t = 1/2, or a dict {t: frame} of the times the scheduler asked for.
    """

    sr_first: Any
    mid: Any
    sr_second: Any


# run_pairs(pairs) or, at factors other than 2, run_pairs(pairs, times) with the in-between times of each pair.
RunPairs = Callable[..., List[PairResult]]
IsCut = Callable[[Any, Any], bool]


class PairScheduler:
    """Turns a frame stream into timed output frames, batching frame pairs for the engine.

    ``run_pairs`` runs flow + network on a list of (first, second) uint8 frames at once;
    ``is_cut`` says whether two consecutive frames straddle a scene cut (None: never).
    Which pair makes each output frame is :class:`vsstar.schedule.FrameSchedule`'s decision, the
    same as in ``vsstar.STAR`` (the SR frame never sees the other scene; the in-between frame at a
    cut repeats the left frame; mode s runs disjoint pairs). This class only buffers: it holds
    about ``batch + 1`` frames, runs every pair once, and keeps a pair's result until every output
    frame that needs it went out.
    """

    def __init__(self, run_pairs: RunPairs, mode: str = "st", batch: int = 1,
                 is_cut: Optional[IsCut] = None, frame_duration: Optional[int] = None,
                 factor: Any = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if batch < 1:
            raise ValueError(f"batch must be >= 1, got {batch!r}")
        if FrameSchedule is None:
            raise ImportError("vsstar is not importable: the scheduler needs vsstar.schedule")
        self.run_pairs = run_pairs
        self.mode = mode
        self.batch = batch
        self.is_cut = is_cut
        self.frame_duration = frame_duration
        # Output frames per input frame (vsstar.schedule); at 2 the engine is asked for midpoints only.
        self.factor = FrameSchedule(None, mode, factor).factor
        self.reset()

    def reset(self) -> None:
        """Drop held frames (flush, seek, stop); frame numbers start again from 0."""
        self.frames: Dict[int, InFrame] = {}  # held input frames by number since the last reset
        self.count = 0  # frames received since the last reset
        self.next_out = 0  # the next output frame number
        self.results: Dict[Tuple[int, int], PairResult] = {}
        self.cuts: Dict[int, bool] = {}
        self._last_interval: Optional[int] = None

    @property
    def held(self) -> int:
        return len(self.frames)

    def push(self, frame: InFrame) -> List[OutFrame]:
        """Add a frame; returns the output frames that became ready (possibly none)."""
        self.frames[self.count] = frame
        self.count += 1
        if len(self.frames) < self.batch + 1:
            return []
        return self._process(final=False)

    def drain(self) -> List[OutFrame]:
        """Output everything held (EOS, caps change); the scheduler is empty afterwards."""
        out = self._process(final=True) if self.frames else []
        self.reset()
        return out

    # -- internals ---------------------------------------------------------------------------
    def _cut(self, k: int) -> bool:
        if self.is_cut is None:
            return False
        if k not in self.cuts:
            self.cuts[k] = bool(self.is_cut(self.frames[k].rgb, self.frames[k + 1].rgb))
        return self.cuts[k]

    def _known_cut(self, k: int) -> Optional[bool]:
        return False if self.is_cut is None else self.cuts.get(k)

    def _process(self, final: bool) -> List[OutFrame]:
        """Emit every output frame that can be decided now (all of them when ``final``)."""
        sched = FrameSchedule(self.count if final else None, self.mode, self.factor)
        js = []
        j = self.next_out
        while True:
            k = int(sched.time_of(j))
            # A frame's outputs are decided once its right neighbour arrived (or the stream ended).
            if k >= self.count or (not final and k + 1 >= self.count):
                break
            js.append(j)
            j += 1
        todo = [p for p in sched.pairs(js, self._cut) if p not in self.results]
        for chunk in batches(todo, self.batch):
            pairs = [(self.frames[a].rgb, self.frames[b].rgb) for a, b in chunk]
            if self.mode == "s" or self.factor == 2:
                res = self.run_pairs(pairs)
            else:
                res = self.run_pairs(pairs, [self._times(sched, p) for p in chunk])
            if len(res) != len(chunk):
                raise RuntimeError(f"engine returned {len(res)} results for {len(chunk)} pairs")
            self.results.update(zip(chunk, res))
        out = [self._emit(sched.output(j, self._cut)) for j in js]
        if js:
            self.next_out = js[-1] + 1
        self._forget(sched)
        return out

    @staticmethod
    def _times(sched: Any, pair: Tuple[int, int]) -> List[Any]:
        """The in-between times pair (a, a+1) makes (none for a frame paired with itself)."""
        a, b = pair
        if b != a + 1:
            return []
        return [sched.time_of(j) - a for j in sched.outputs_at(a, b) if sched.time_of(j) != a]

    def _forget(self, sched: FrameSchedule) -> None:
        """Drop the results and frames no later output frame can need.

        The stream may go on or end after the frames received so far: both are considered.
        """
        scheds = (sched, FrameSchedule(self.count, self.mode, self.factor))
        done = [p for p in self.results
                if all(j < self.next_out for s in scheds for j in s.outputs_of(p, self._known_cut))]
        for p in done:
            del self.results[p]
        k = int(sched.time_of(self.next_out))
        keep = k
        if k > 0 and self._known_cut(k - 1) is None:
            keep = k - 1  # the cut before frame k may still decide its pair
        for s in scheds:
            for j in s.outputs_at(k, k + 1):
                for a, _b in s.candidate_pairs(j, self._known_cut) - set(self.results):
                    keep = min(keep, a)
        for i in [i for i in self.frames if i < keep]:
            del self.frames[i]

    def _emit(self, o: Any) -> OutFrame:
        k = o.source
        a = self.frames[k]
        b = self.frames.get(k + 1) if k + 1 < self.count else None
        if o.pair is None:
            img = a.rgb
        else:
            img = getattr(self.results[o.pair], _PART_FIELDS[o.part])
        if b is not None and a.pts is not None and b.pts is not None and b.pts >= a.pts:
            self._last_interval = b.pts - a.pts
        if self.mode == "s":
            if a.dur is not None:
                dur = a.dur
            elif b is not None:
                dur = self._interval(a, b)
            else:
                dur = self.frame_duration or self._last_interval
            return OutFrame(img, a.pts, dur, False)
        if o.part == "mid" and isinstance(img, dict):
            img = img[o.t]
        # Output j shows source time x = j / factor, t = x - k of the way through pair k; its
        # duration runs to the next output frame's time (both in ns, rounded down).
        if b is not None:
            span = self._interval(a, b) if a.pts is not None and b.pts is not None and b.pts >= a.pts else (
                a.dur if a.dur is not None else self.frame_duration)
        else:
            span = a.dur if a.dur is not None else (self.frame_duration or self._last_interval)
        if span is None:
            return OutFrame(img, a.pts, None, o.synthesised)  # no way to know when it is due
        x0 = Fraction(o.index) / self.factor - k
        x1 = Fraction(o.index + 1) / self.factor - k
        start = int(x0 * span)
        if x1 <= 1:
            end = int(x1 * span)
        else:  # the next output frame lies in the next pair: its interval where known
            c = self.frames.get(k + 2)
            nxt = c.pts - b.pts if (b is not None and c is not None and c.pts is not None and b.pts is not None
                                    and c.pts >= b.pts) else span
            end = span + int((x1 - 1) * nxt)
        return OutFrame(img, None if a.pts is None else a.pts + start, end - start, o.synthesised)

    def _interval(self, a: InFrame, b: InFrame) -> Optional[int]:
        if a.pts is not None and b.pts is not None and b.pts >= a.pts:
            return b.pts - a.pts
        return self.frame_duration


_PART_FIELDS = {"first": "sr_first", "mid": "mid", "second": "sr_second"}


def _debug_detail(exc: BaseException) -> str:
    """Debug text of a refused setting: the chain of causes for a ValueError (the user's input was
    wrong, the message says how), the whole traceback for anything else."""
    if isinstance(exc, ValueError):
        chain = []
        e: Optional[BaseException] = exc
        while e is not None and len(chain) < 8:
            chain.append(f"{type(e).__name__}: {e}")
            e = e.__cause__ or e.__context__
        return "\n  caused by ".join(chain)
    return "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))


def parse_fraction(name: str, text: str) -> Optional[Fraction]:
    """A property holding a fraction ("5/2", "2.5", "60000/1001"); None when empty."""
    text = (text or "").strip()
    if not text:
        return None
    try:
        v = Fraction(text)
    except (ValueError, ZeroDivisionError) as exc:
        raise ValueError(f"property '{name}' must be a fraction like 5/2 or 60000/1001, got {text!r}") from exc
    if v <= 0:
        raise ValueError(f"property '{name}' must be positive, got {text!r}")
    return v


def rate_factor(mode: str, factor: str, fps: str, in_fps: Optional[Fraction]) -> Fraction:
    """Output frames per input frame from the 'factor' and 'fps' properties ('fps' wins; it needs a
    constant input rate ``in_fps``, None or 0 = variable). ValueError naming the property."""
    f = parse_fraction("factor", factor)
    r = parse_fraction("fps", fps)
    if mode == "s":
        if f not in (None, 1, 2) or r is not None:  # 2: the property's default, meaning "unset" here
            raise ValueError("properties 'factor'/'fps': mode s keeps the frame rate")
        return Fraction(1)
    if r is not None:
        if not in_fps:
            raise ValueError("property 'fps' needs a constant input frame rate; this stream is variable "
                             "(framerate 0/1): set 'factor' instead")
        f = r / in_fps
        if f < 1:
            raise ValueError(f"property 'fps' ({r}) must be at least the input rate ({in_fps})")
        return f
    f = Fraction(2) if f is None else f
    if f < 1:
        raise ValueError(f"property 'factor' must be at least 1, got {f}")
    return f


def validate_settings(scale: int, mode: str, batch_size: int, sc_threshold: float) -> None:
    """Raise ValueError naming the property when a setting is out of range."""
    if scale not in SCALES:
        raise ValueError(f"property 'scale' must be 2, 4 or 8, got {scale}")
    if mode not in MODES:
        raise ValueError(f"property 'mode' must be one of st, s, t, got {mode!r}")
    if batch_size < 1 or batch_size > 64:
        raise ValueError(f"property 'batch-size' must be in 1..64, got {batch_size}")
    if not (sc_threshold < 0 or 0.0 <= sc_threshold <= 1.0):
        raise ValueError(f"property 'sc-threshold' must be in [0, 1] (or -1 for the default), "
                         f"got {sc_threshold}")


# --------------------------------------------------------------------------------------------
# The GStreamer element
# --------------------------------------------------------------------------------------------
try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstVideo", "1.0")
    from gi.repository import GLib, GObject, Gst, GstVideo
except (ImportError, ValueError):  # plain Python: only the scheduler above is usable
    Gst = None  # type: ignore[assignment]


if Gst is not None:
    _FORMATS = "{ RGB, RGBx, BGRx }"
    _CAPS = Gst.Caps.from_string(
        f"video/x-raw, format=(string){_FORMATS}, width=(int)[1, 2147483647], "
        "height=(int)[1, 2147483647], framerate=(fraction)[0/1, 2147483647/1], "
        "interlace-mode=(string)progressive")  # fields would be mistaken for motion: deinterlace first
    _INT_MIN, _INT_MAX = -(2**31), 2**31 - 1
    _RW = GObject.ParamFlags.READWRITE

    def _time_or_none(t: int) -> Optional[int]:
        return None if t == Gst.CLOCK_TIME_NONE else int(t)

    class StarNetElement(Gst.Element):
        """STARnet space-time super-resolution (see the module docstring)."""

        __gtype_name__ = "GstStarnet"  # default instance names: starnet0, starnet1, ...

        __gstmetadata__ = (
            "STARnet space-time video super-resolution",
            "Filter/Effect/Video",
            "Upscales video x2/x4/x8 and doubles its frame rate with STARnet (vsstar)",
            "vsstar",
        )
        __gsttemplates__ = (
            Gst.PadTemplate.new("sink", Gst.PadDirection.SINK, Gst.PadPresence.ALWAYS, _CAPS),
            Gst.PadTemplate.new("src", Gst.PadDirection.SRC, Gst.PadPresence.ALWAYS, _CAPS),
        )
        # Ranges are deliberately wide: GLib would silently ignore an out-of-range value with a
        # warning, so the element checks values itself and stops with a bus error instead.
        __gproperties__ = {
            "scale": (int, "Scale", "Upscaling factor: 2, 4 or 8 (must match the model)",
                      _INT_MIN, _INT_MAX, 4, _RW),
            "mode": (str, "Mode", "st: upscale + double the frame rate; s: upscale only; "
                     "t: double the frame rate at the input size", "st", _RW),
            "model": (str, "Model", "Bundled weights name, path to vsstar safetensors or an "
                      "official checkpoint; empty: the bundled weights for the scale", "", _RW),
            "quality": (str, "Quality", "Tier of the bundled weights when 'model' is empty: fast or high "
                        "(larger, about 4x slower, better pictures; scale 4 only)", "fast", _RW),
            "device": (str, "Device", "torch device (cpu, cuda, cuda:1); empty: CUDA when "
                       "available, else CPU", "", _RW),
            "backend": (str, "Backend", "Network backend: auto (OpenVINO on the CPU when installed, "
                        "else torch), torch or openvino", "auto", _RW),
            "precision": (str, "Precision", "OpenVINO precision: f32 (default), bf16 (CPUs with bfloat16) "
                          "or int8 (about 1.6x faster than f32, < 0.1 dB drift; needs nncf)", "f32", _RW),
            "batch-size": (int, "Batch size", "Frame pairs run through the network at once "
                           "(adds as many frames of latency), 1..64", _INT_MIN, _INT_MAX, 1, _RW),
            "scene-change": (bool, "Scene change", "Do not synthesise frames across scene cuts",
                             True, _RW),
            "sc-threshold": (float, "Scene-change threshold", "Cut score threshold in [0, 1]; "
                             "-1: the vsstar.scene default", -1e9, 1e9, -1.0, _RW),
            "factor": (str, "Factor", "Output frames per input frame (modes st, t), a fraction >= 1 "
                       "such as 2, 5/2 or 4", "2/1", _RW),
            "fps": (str, "Output rate", "Output frame rate instead of 'factor', e.g. 60000/1001 "
                    "(constant-rate input); empty: use 'factor'", "", _RW),
            "exact-time": (bool, "Exact time", "Refuse in-between times the model cannot synthesise "
                           "exactly instead of rounding them to the nearest 1/8", False, _RW),
        }

        def __init__(self) -> None:
            super().__init__()
            self.props_store = {"scale": 4, "mode": "st", "model": "", "quality": "fast", "device": "",
                                "backend": "auto", "precision": "f32", "batch-size": 1, "scene-change": True,
                                "sc-threshold": -1.0, "factor": "2/1", "fps": "", "exact-time": False}
            self.sinkpad = Gst.Pad.new_from_template(self.__gsttemplates__[0], "sink")
            self.sinkpad.set_chain_function_full(self._chain, None)
            self.sinkpad.set_event_function_full(self._sink_event, None)
            self.sinkpad.set_query_function_full(self._sink_query, None)
            self.add_pad(self.sinkpad)
            self.srcpad = Gst.Pad.new_from_template(self.__gsttemplates__[1], "src")
            self.srcpad.set_query_function_full(self._src_query, None)
            self.add_pad(self.srcpad)
            self.engine: Any = None
            self.sched: Optional[PairScheduler] = None
            self.in_info: Any = None
            self.out_info: Any = None
            self.in_caps: Any = None
            self.discont = True
            self.failed = False

        # -- properties ----------------------------------------------------------------------
        def do_get_property(self, prop: GObject.ParamSpec) -> Any:
            return self.props_store[prop.name]

        def do_set_property(self, prop: GObject.ParamSpec, value: Any) -> None:
            if prop.name in ("mode", "model", "quality", "device", "backend", "precision", "factor", "fps"):
                value = (value or "").strip()
                if prop.name in ("mode", "quality", "precision"):
                    value = value.lower()
            self.props_store[prop.name] = value

        # -- errors --------------------------------------------------------------------------
        def _error(self, text: str, debug: Optional[str] = None,
                   domain: Any = None, code: Any = None) -> None:
            """Post a GStreamer error message (gst-launch prints it and stops)."""
            if domain is None:
                domain, code = Gst.LibraryError, Gst.LibraryError.SETTINGS
            err = GLib.Error.new_literal(domain.quark(), text, int(code))
            self.post_message(Gst.Message.new_error(self, err, debug or text))
            self.failed = True

        # -- state ---------------------------------------------------------------------------
        def do_change_state(self, transition: Gst.StateChange) -> Gst.StateChangeReturn:
            if transition == Gst.StateChange.NULL_TO_READY:
                if not self._start():
                    return Gst.StateChangeReturn.FAILURE
            ret = Gst.Element.do_change_state(self, transition)
            if transition == Gst.StateChange.PAUSED_TO_READY:
                if self.sched is not None:
                    self.sched.reset()
                self.sched, self.in_info, self.out_info, self.in_caps = None, None, None, None
                self.discont = True
            elif transition == Gst.StateChange.READY_TO_NULL:
                self.engine = None
            return ret

        def _start(self) -> bool:
            """Check the properties and build the engine; posts an error and returns False."""
            p = self.props_store
            self.failed = False
            try:
                validate_settings(p["scale"], p["mode"], p["batch-size"], p["sc-threshold"])
                rate_factor(p["mode"], p["factor"], "", None)  # 'fps' is checked against the caps
                parse_fraction("fps", p["fps"])
            except ValueError as e:
                self._error(f"starnet: {e}")
                return False
            try:
                global np
                import numpy as np  # noqa: F811  (re-import after a late venv)
                from vsstar.engine import StarEngine
            except ImportError as e:
                self._error(
                    "starnet: cannot import vsstar/torch in the plugin loader's Python "
                    f"({sys.executable or 'embedded'} {sys.version.split()[0]}): {e}. Run "
                    "filters/gstreamer/setup.sh, or set VSSTAR_GST_VENV to a venv made with "
                    "--system-site-packages that holds torch and vsstar.",
                    debug=f"sys.path={sys.path}", domain=Gst.CoreError, code=Gst.CoreError.MISSING_PLUGIN)
                return False
            if p["scene-change"]:
                from vsstar import scene
                thr = p["sc-threshold"] if p["sc-threshold"] >= 0 else scene.DEFAULT_SC_THRESHOLD
                self._cut = lambda a, b: scene.scene_change(
                    a.astype(np.float32) / 255.0, b.astype(np.float32) / 255.0, thr)
            else:
                self._cut = None
            try:
                self.engine = StarEngine(
                    p["model"] or None, scale=p["scale"], mode=p["mode"],
                    device=p["device"] or None, batch_size=p["batch-size"],
                    backend=p["backend"].lower() or "auto", precision=p["precision"] or "f32",
                    quality=p["quality"] or "fast")
            except Exception as e:  # unknown model, unreadable weights, no CUDA, bad values
                self._error(f"starnet: {e}", debug=_debug_detail(e))
                return False
            return True

        # -- frames --------------------------------------------------------------------------
        def _run_pairs(self, pairs: Sequence[Tuple[Any, Any]], times: Any = None) -> List[PairResult]:
            """Engine call on uint8 HWC pairs -> uint8 HWC results."""
            import torch

            n = len(pairs)
            h, w = pairs[0][0].shape[:2]
            frames = torch.from_numpy(np.stack([a for a, _ in pairs] + [b for _, b in pairs]))
            # One conversion pass into the engine's reusable host buffer (pinned on CUDA).
            buf = self.engine.host_buffer(2 * n, h, w)
            buf.copy_(frames.permute(0, 3, 1, 2)).mul_(1.0 / 255.0)
            def u8(t: Any) -> List[Any]:
                if t is None:
                    return [None] * n
                q = t.mul(255.0).add_(0.5).clamp_(0, 255).to(torch.uint8)
                if q.dim() == 3:  # one frame (3, H, W) -> (H, W, 3)
                    return q.permute(1, 2, 0).contiguous().numpy()
                return list(q.permute(0, 2, 3, 1).contiguous().numpy())

            if times is None:
                res = self.engine.process(buf[:n], buf[n:])
                return [PairResult(a, m, b) for a, m, b in zip(u8(res.sr_first), u8(res.mid), u8(res.sr_second))]
            out = self.engine.process_times(buf[:n], buf[n:], times, exact_time=self.props_store["exact-time"])
            mids = [{t: u8(m) for t, m in d.items()} for d in out.mids]
            return [PairResult(a, m, b) for a, m, b in zip(u8(out.sr_first), mids, u8(out.sr_second))]

        def _read(self, buf: Gst.Buffer) -> Any:
            """Input buffer -> dense RGB (H, W, 3) uint8 copy (honours the row stride)."""
            info = self.in_info
            w, h, stride = info.width, info.height, info.stride[0]
            bpp = 3 if info.finfo.format == GstVideo.VideoFormat.RGB else 4
            ok, m = buf.map(Gst.MapFlags.READ)
            if not ok:
                raise RuntimeError("cannot map input buffer")
            try:
                rows = np.frombuffer(m.data, np.uint8, count=stride * h).reshape(h, stride)
                px = rows[:, : w * bpp].reshape(h, w, bpp)
                if info.finfo.format == GstVideo.VideoFormat.BGRX:
                    rgb = px[..., 2::-1].copy()
                else:
                    rgb = px[..., :3].copy()
                del rows, px
            finally:
                buf.unmap(m)
            return rgb

        def _write(self, f: OutFrame) -> Gst.Buffer:
            """Output frame -> a new buffer in the output format and stride (one copy)."""
            info = self.out_info
            w, h, stride = info.width, info.height, info.stride[0]
            if f.rgb.shape != (h, w, 3):
                raise RuntimeError(f"engine gave a {f.rgb.shape[1]}x{f.rgb.shape[0]} frame, "
                                   f"caps say {w}x{h}")
            bpp = 3 if info.finfo.format == GstVideo.VideoFormat.RGB else 4
            buf = Gst.Buffer.new_allocate(None, info.size, None)
            ok, m = buf.map(Gst.MapFlags.WRITE)
            if not ok:
                raise RuntimeError("cannot map output buffer")
            try:
                rows = np.frombuffer(m.data, np.uint8, count=stride * h).reshape(h, stride)
                px = rows[:, : w * bpp].reshape(h, w, bpp)
                if info.finfo.format == GstVideo.VideoFormat.BGRX:
                    px[..., 2::-1] = f.rgb
                else:
                    px[..., :3] = f.rgb
                if bpp == 4:
                    px[..., 3] = 255
                if stride > w * bpp:
                    rows[:, w * bpp:] = 0
                del rows, px  # no numpy view may outlive the mapping
            finally:
                buf.unmap(m)
            buf.pts = Gst.CLOCK_TIME_NONE if f.pts is None else f.pts
            buf.duration = Gst.CLOCK_TIME_NONE if f.dur is None else f.dur
            if self.discont:
                buf.set_flags(Gst.BufferFlags.DISCONT)
                self.discont = False
            return buf

        def _push(self, frames: List[OutFrame]) -> Gst.FlowReturn:
            ret = Gst.FlowReturn.OK
            for f in frames:
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
                frame = InFrame(self._read(buf), _time_or_none(buf.pts),
                                _time_or_none(buf.duration))
                return self._push(self.sched.push(frame))
            except Exception as e:
                self._error(f"starnet: processing failed: {e}", debug=traceback.format_exc(),
                            domain=Gst.StreamError, code=Gst.StreamError.FAILED)
                return Gst.FlowReturn.ERROR

        def _drain(self) -> Gst.FlowReturn:
            if self.sched is None or self.sched.held == 0 or self.failed:
                return Gst.FlowReturn.OK
            try:
                return self._push(self.sched.drain())
            except Exception as e:
                self._error(f"starnet: processing failed: {e}", debug=traceback.format_exc(),
                            domain=Gst.StreamError, code=Gst.StreamError.FAILED)
                return Gst.FlowReturn.ERROR

        # -- caps ----------------------------------------------------------------------------
        def _out_caps(self, caps: Gst.Caps) -> Gst.Caps:
            """Output caps for fixed input caps."""
            p = self.props_store
            s = caps.get_structure(0).copy()
            if p["mode"] in ("st", "s"):
                info = GstVideo.VideoInfo.new_from_caps(caps)
                s.set_value("width", info.width * p["scale"])
                s.set_value("height", info.height * p["scale"])
            if p["mode"] in ("st", "t"):
                f = self._factor(caps)
                for field in ("framerate", "max-framerate"):
                    ok, n, d = s.get_fraction(field)
                    if ok and n > 0:
                        r = Fraction(n, d) * f
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
                self._error(f"starnet: {e}")
                return False
            out = self._out_caps(caps)
            out_info = GstVideo.VideoInfo.new_from_caps(out)
            if not self.srcpad.push_event(Gst.Event.new_caps(out)):
                return False
            self.in_caps, self.in_info, self.out_info = caps, info, out_info
            fd = None
            if info.fps_n > 0:
                fd = Gst.util_uint64_scale_int(Gst.SECOND, info.fps_d, info.fps_n)
            p = self.props_store
            self.sched = PairScheduler(self._run_pairs, p["mode"], p["batch-size"],
                                       self._cut, fd, factor)
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
                    caps = self._out_caps(self.in_caps)
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
                        Gst.SECOND * self.props_store["batch-size"], self.in_info.fps_d,
                        self.in_info.fps_n)
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
    __gstelementfactory__ = ("starnet", Gst.Rank.NONE, StarNetElement)
