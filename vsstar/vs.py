"""VapourSynth binding: ``vsstar.STAR(clip, ...)``: argument mapping and VapourSynth I/O only.

``STAR`` maps its vs-rife / vs-mlrt style arguments onto :class:`vsstar.options.StarOptions`,
converts the clip (when needed) to a float RGB working clip and back, and renders output frame j
in a Python ``std.ModifyFrame`` from the shared :class:`vsstar.pairs.PullStore` (which computes each
pair once, batched and prefetched, one worker per device). Which pair and which of its outputs make
each frame is :mod:`vsstar.schedule`'s decision; the frame's duration is the source time its span
covers. Source frame floor(j / factor) reaches output frame j through ``std.FrameEval``, so
building the clip takes the same time and memory at any factor.
"""
from __future__ import annotations

import math
import threading
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np
import torch
import vapoursynth as vs

from .engine import StarEngine, available_ram
from .options import StarOptions
from .pairs import PullStore, StoreStats, part_of, pull_limits
from .scene import DEFAULT_SC_THRESHOLD, scene_score
from .schedule import DEFAULT_DEPTH, FrameSchedule, max_time_error, output_factor

__all__ = ["STAR", "StoreStats"]

core = vs.core

#: VapourSynth counts frames in a C int.
MAX_FRAMES = 2**31 - 1
#: VapourSynth keeps the frame rate as a fraction of int64.
MAX_FPS_TERM = 2**63 - 1


def _err(msg: str) -> vs.Error:
    return vs.Error(f"STAR: {msg}")


def _frame_into(frame: vs.VideoFrame, dst: torch.Tensor) -> None:
    """Copy the three planes of a float RGB frame into dst (3, H, W) (numpy views, one copy)."""
    for p in range(3):
        np.copyto(dst[p].numpy(), np.asarray(frame[p]))


def _frame_array(frame: vs.VideoFrame) -> np.ndarray:
    """(3, H, W) float32 array of a float RGB frame (for the scene detector)."""
    return np.stack([np.asarray(frame[p], dtype=np.float32) for p in range(3)])


def _write(frame: vs.VideoFrame, data: torch.Tensor) -> None:
    """Fill a writable float RGB frame from a (3, H, W) float32 tensor."""
    src = data.numpy()
    for p in range(3):
        np.copyto(np.asarray(frame[p]), src[p], casting="same_kind")


# ---------------------------------------------------------------------------------- helpers
def _matrix_of(props: Any) -> int:
    m = props.get("_Matrix", 2)
    m = int(m)
    # 0 = RGB, 2 = unspecified, 3 = reserved: none is a usable YUV matrix -> BT.709.
    return 1 if m in (0, 2, 3) else m


def _range_of(props: Any) -> str | None:
    if "_Range" in props:  # R74+: 0 = limited, 1 = full
        return "full" if int(props["_Range"]) == 1 else "limited"
    if "_ColorRange" in props:  # older name: 0 = full, 1 = limited
        return "full" if int(props["_ColorRange"]) == 0 else "limited"
    return None


def _devices(device: Any, device_index: Any) -> list[Any]:
    """The device of each engine, from ``device`` (one or a list) or ``device_index`` (int or list)."""
    if device_index is not None:
        if device is not None:
            raise _err(f"pass device or device_index, not both (got device={device!r}, device_index={device_index!r})")
        idx = [device_index] if isinstance(device_index, int) and not isinstance(device_index, bool) \
            else device_index
        if not isinstance(idx, (list, tuple)) or not idx or any(
                isinstance(i, bool) or not isinstance(i, int) or i < 0 for i in idx):
            raise _err(f"device_index must be an int >= 0 or a non-empty list of them, got {device_index!r}")
        return [f"cuda:{i}" for i in idx]
    if isinstance(device, (list, tuple)):
        if not device:
            raise _err("device must be None, a device name or a non-empty list of them, got []")
        return list(device)
    return [device]


def _check_int(name: str, value: Any, lo: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(f"{name} must be an int >= {lo}{' or None' if allow_none else ''}, got {value!r}")


def _working(clip: vs.VideoNode) -> tuple[vs.VideoNode, Callable[[vs.VideoNode], vs.VideoNode]]:
    """The float RGB working clip and the way back to the input's format (matrix and range from frame 0)."""
    fmt = clip.format
    if fmt.id in (vs.RGBS, vs.RGBH):
        return clip, lambda c: c
    if fmt.color_family == vs.RGB:
        return core.resize.Point(clip, format=vs.RGBS), lambda c: core.resize.Point(c, format=fmt.id)
    props0 = clip.get_frame(0).props
    rng = _range_of(props0)
    kw = {"range_s": rng} if rng else {}
    if fmt.color_family == vs.GRAY:
        return (core.resize.Point(clip, format=vs.RGBS),
                lambda c: core.resize.Bicubic(c, format=fmt.id, matrix=1, **kw))
    matrix = _matrix_of(props0)
    work = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=matrix, **({"range_in_s": rng} if rng else {}))
    return work, lambda c: core.resize.Bicubic(c, format=fmt.id, matrix=matrix, **kw)


def _output_rate(clip: vs.VideoNode, schedule: FrameSchedule) -> tuple[int, tuple[int, int]]:
    """(frames, (fps_num, fps_den)) of the output clip; vs.Error where VapourSynth cannot hold them."""
    n_out = schedule.num_outputs
    if n_out > MAX_FRAMES:
        raise _err(f"factor: {clip.num_frames} frames x {schedule.factor} = {n_out} output frames, more than "
                   f"VapourSynth can count ({MAX_FRAMES}); use a smaller factor or a shorter clip")
    if not clip.fps.denominator:
        return n_out, (0, 1)
    fps = Fraction(clip.fps.numerator, clip.fps.denominator) * schedule.factor
    if max(fps.numerator, fps.denominator) > MAX_FPS_TERM:
        raise _err(f"factor: the output rate {fps} does not fit VapourSynth's 64-bit fps fraction")
    return n_out, (fps.numerator, fps.denominator)


def _spread(c: vs.VideoNode, schedule: FrameSchedule, fps: tuple[int, int]) -> vs.VideoNode:
    """The output clip's length and rate, frame j being c's frame floor(j / factor) (props kept)."""
    if schedule.factor == 1:
        return c
    base = core.std.BlankClip(c, length=schedule.num_outputs, fpsnum=fps[0], fpsden=fps[1], keep=True)
    return core.std.FrameEval(base, lambda n: c[math.floor(schedule.time_of(n))], clip_src=[c])


class _Cuts:
    """Scene cuts of the working clip, decided once per boundary (k, k+1) and remembered."""

    def __init__(self, enabled: bool, threshold: float, nframes: int) -> None:
        self.enabled = enabled
        self.threshold = threshold
        self.nframes = nframes
        self.known: dict[int, bool] = {}
        self.lock = threading.Lock()

    def decide(self, k: int, fa: vs.VideoFrame, fb: vs.VideoFrame) -> bool:
        """Cut between frames k and k+1 (their frames fa, fb): scene-change props, else the detector."""
        if not self.enabled or k + 1 >= self.nframes:
            return False
        with self.lock:
            if k in self.known:
                return self.known[k]
        pa, pb = fa.props, fb.props
        if "_SceneChangeNext" in pa or "_SceneChangePrev" in pb:
            cut = bool(pa.get("_SceneChangeNext", 0)) or bool(pb.get("_SceneChangePrev", 0))
        else:
            cut = scene_score(_frame_array(fa), _frame_array(fb)) > self.threshold
        with self.lock:
            self.known[k] = cut
        return cut

    def known_cut(self, k: int) -> bool | None:
        """What is known of boundary k|k+1 without looking at frames (None: not decided yet)."""
        if not self.enabled:
            return False
        with self.lock:
            return self.known.get(k)


def _duration(schedule: FrameSchedule, j: int, cur: Any, nxt: Any) -> Fraction | None:
    """Output frame j's duration in seconds: its span mapped through the durations of the source
    frames it covers (``cur`` = props of source frame floor(j / factor), ``nxt`` = of the one after)."""
    k = math.floor(schedule.time_of(j))
    x0, x1 = schedule.span(j)
    d = []
    for p in (cur, nxt):
        if "_DurationNum" not in p or not p.get("_DurationDen"):
            return None
        d.append(Fraction(p["_DurationNum"], p["_DurationDen"]))
    # A span is at most one source frame long (factor >= 1): it covers frame k, maybe some of k+1.
    return d[0] * (min(x1, k + 1) - x0) + d[1] * max(Fraction(0), x1 - (k + 1))


def _set_duration(props: Any, dur: Fraction | None) -> None:
    if dur is not None:
        props["_DurationNum"] = dur.numerator
        props["_DurationDen"] = dur.denominator


# ---------------------------------------------------------------------------------- the filter
def STAR(
    clip: vs.VideoNode,
    scale: int = 4,
    mode: str = "st",
    model: Any = None,
    device: str | Sequence[str] | None = None,
    fp16: bool | None = None,
    batch_size: int | None = None,
    tile: int | Sequence[int] | None = None,
    tile_overlap: int = 16,
    scene_change: bool = True,
    sc_threshold: float = DEFAULT_SC_THRESHOLD,
    prefetch: int | None = None,
    cache_mb: int | None = None,
    flow_options: dict[str, Any] | None = None,
    engine: StarEngine | Sequence[StarEngine] | None = None,
    stats: StoreStats | None = None,
    backend: str = "auto",
    precision: str | None = None,
    device_index: int | Sequence[int] | None = None,
    factor_num: int = 2,
    factor_den: int = 1,
    fps_num: int | None = None,
    fps_den: int | None = None,
    exact_time: bool = False,
    quality: str = "fast",
) -> vs.VideoNode:
    """Space-time video super-resolution (STARnet).

    Args:
        clip: constant format and size. RGBS/RGBH are processed directly; YUV, GRAY and integer
            formats are converted to float RGB inside (matrix from ``_Matrix``, BT.709 when
            unspecified) and the result comes back in the input's format family and bit depth.
        scale: 2, 4 or 8 (must match the model). Ignored for the size in mode "t".
        mode: "st": width/height x scale and frame rate x factor (at the default 2: frame 2k = frame
            k super-resolved, 2k+1 = synthesised between k and k+1, the last one repeats the last frame);
            "s": super-resolution only (N frames, from the disjoint pairs (0, 1), (2, 3), ...: about N/2
            network passes); "t": interpolation only at the input size (N x factor frames).
            vsstar.schedule decides which pair makes each frame.
        model: bundled weights name, .safetensors path or official .pth checkpoint; None = the
            bundled weights for ``scale``.
        device: None (CUDA if available, else CPU), "cpu", "cuda", "cuda:N", or a list of them
            (``["cuda:0", "cuda:1"]``): one engine per entry, all fed from the one frame schedule, each
            pair computed once on whichever device is free; the output is the same as on one device.
        fp16: float16 autocast (default True on CUDA, False on CPU).
        batch_size: pairs per network call (default 1 on CPU, 4 on CUDA).
        tile: LR tile size (int or [h, w]); None = automatic when memory would not suffice; 0 = off.
        tile_overlap: LR pixels shared by neighbouring tiles (blended).
        scene_change: no synthesis across cuts (``_SceneChangeNext``/``_SceneChangePrev`` when
            present, else the built-in detector); the in-between frame repeats the left frame.
        sc_threshold: threshold of the built-in detector (see vsstar.scene), in [0, 1].
        prefetch: pairs computed ahead of the host's requests (default 2 x batch_size).
        cache_mb: most memory for computed pairs waiting for the host (MiB); None = a quarter of the
            available memory. A pair is freed as soon as every output frame that needs it was delivered.
        flow_options: overrides for the optical flow (e.g. ``{"n_outer": 3}`` for speed).
        engine: a prebuilt :class:`vsstar.engine.StarEngine` (or a list, one per device) to share a
            loaded model between clips (then model/scale/device/fp16/batch_size/tile/tile_overlap/
            flow_options are taken from it).
        stats: a :class:`StoreStats` the clip's pair store keeps its counters in (diagnostics).
        backend: "auto" (OpenVINO on the CPU when installed, else torch), "torch" or "openvino" (CPU).
        precision: OpenVINO precision (see docs/openvino.md for the values and their speed and drift);
            None = the backend's default.
        device_index: CUDA device number(s), as in vs-rife and other VapourSynth filters: ``0`` is
            ``device="cuda:0"``, ``[0, 1]`` is ``device=["cuda:0", "cuda:1"]``. Not with ``device``.
        factor_num, factor_den: output frame rate / input frame rate (modes "st" and "t"; at least
            1; default 2/1). Output frame j shows source time j * factor_den / factor_num: on a
            source frame it is that frame (super-resolved in mode "st"), otherwise it is synthesised
            at its fraction t of the way between frames k and k+1 (props STAR_Interpolated=1,
            STAR_Time: the t actually synthesised, see exact_time). Output frame j lasts the source
            time it covers (:meth:`vsstar.schedule.FrameSchedule.span`), so the durations add up to
            the clip's exactly, variable-rate clips included. At most vsstar.schedule.MAX_FACTOR.
        fps_num, fps_den: the output frame rate instead of the factor (overrides factor_*); needs a
            clip with a constant rate.
        exact_time: models with time input (the bundled x2 and x4 ones) synthesise every t exactly.
            Models that know only t = 1/2 (the x8 one, the authors' checkpoints) reach other times by
            recursive midpoints, rounded to the nearest multiple of 1/8 (worst error 1/16 of a frame
            interval; none for factors 2, 4, 8); True raises vs.Error instead when a needed t is not
            reachable exactly.
        quality: with ``model=None``, the tier of bundled weights: "fast" (default) or "high" (larger,
            slower, better pictures; scale 4 only; docs/vapoursynth.md has the figures). Not with
            ``model`` or ``engine``.
    """
    if not isinstance(clip, vs.VideoNode):
        raise _err(f"clip must be a vapoursynth.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.width == 0 or clip.height == 0:
        raise _err("clip must have a constant format and size (variable format/size clips are not supported)")
    _check_int("prefetch", prefetch, 0, allow_none=True)
    _check_int("cache_mb", cache_mb, 1, allow_none=True)
    if stats is not None and not isinstance(stats, StoreStats):
        raise _err(f"stats must be a vsstar.vs.StoreStats or None, got {type(stats).__name__}")
    if clip.format.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise _err(f"clip format {clip.format.name} is not supported (RGB, YUV or GRAY expected)")
    if clip.num_frames < 1:
        raise _err("clip must have at least one frame")
    try:
        if mode == "s":
            if (factor_num, factor_den, fps_num, fps_den) != (2, 1, None, None):
                raise ValueError("factor_num/factor_den/fps_num/fps_den: mode 's' keeps the frame rate")
            factor = Fraction(1)
        else:
            src_fps = Fraction(clip.fps.numerator, clip.fps.denominator) if clip.fps.denominator else None
            factor = output_factor(factor_num, factor_den, fps_num, fps_den, src_fps) \
                if mode in ("st", "t") else Fraction(2)
        opts = StarOptions(scale=scale, mode=mode, factor=factor, model=model, quality=quality,
                           devices=tuple(_devices(device, device_index)) if engine is None else (None,),
                           backend=backend, precision=precision, fp16=fp16, batch_size=batch_size, tile=tile,
                           tile_overlap=tile_overlap, flow_options=flow_options, scene_change=scene_change,
                           sc_threshold=sc_threshold, exact_time=exact_time)
        if engine is None:
            engines = opts.engines()
        else:
            if quality != "fast":
                raise ValueError(f"quality={quality!r} picks bundled weights; it cannot go with engine= (build "
                                 "the engine with quality= instead)")
            engines = StarOptions.check_engines(engine, mode)
    except ValueError as exc:
        raise _err(str(exc)) from exc
    return _build(clip, opts, engines, prefetch, cache_mb, stats)


def _build(clip: vs.VideoNode, opts: StarOptions, engines: list[StarEngine], prefetch: int | None,
           cache_mb: int | None, stats: StoreStats | None) -> vs.VideoNode:
    """The output clip of STAR (arguments checked)."""
    mode, factor, engine = opts.mode, opts.factor, engines[0]
    if opts.exact_time and mode != "s" and not engine.takes_time and max_time_error(factor, DEFAULT_DEPTH):
        raise _err(f"exact_time: the factor {factor} needs in-between times that a model which knows only "
                   f"t = 1/2 cannot synthesise exactly (worst rounding {float(max_time_error(factor)):.4f} "
                   "of a frame interval); use exact_time=False, a factor 2, 4 or 8, or a model with time input")
    min_side = max(8, getattr(engine.config, "min_size", 1))
    if clip.width < min_side or clip.height < min_side:
        raise _err(f"clip is {clip.width}x{clip.height}; at least {min_side}x{min_side} pixels are needed")
    schedule = FrameSchedule(clip.num_frames, mode, factor)
    n_out, fps = _output_rate(clip, schedule)

    work, back = _working(clip)
    nframes = clip.num_frames
    w, h = work.width, work.height
    hr_w, hr_h = (w, h) if mode == "t" else (w * engine.scale, h * engine.scale)
    cuts = _Cuts(bool(opts.scene_change), opts.sc_threshold, nframes)

    ahead, capacity, keep = pull_limits(engines, schedule, (hr_h, hr_w), prefetch, cache_mb,
                                        None if cache_mb is not None else available_ram())
    store = PullStore(engines, schedule, work.get_frame_async, _frame_into, (h, w), cuts.decide, cuts.known_cut,
                      ahead, capacity, keep, stats=stats, exact_time=bool(opts.exact_time))

    prev = work[0] + work[:-1] if nframes > 1 else work
    nxt = work[1:] + work[-1] if nframes > 1 else work
    nxt_src = clip[1:] + clip[-1] if nframes > 1 else clip
    base = core.std.BlankClip(work, width=hr_w, height=hr_h, length=n_out, fpsnum=fps[0], fpsden=fps[1],
                              keep=True)

    def render(j: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            with store.serve():
                return _render(j, f)
        except vs.Error:
            raise
        except Exception as exc:
            raise _err(f"frame {j}: {type(exc).__name__}: {exc}") from exc

    def _render(j: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        """Output frame j as the schedule says; f = [blank HR, prev, cur, next] of its source frame n."""
        n = math.floor(schedule.time_of(j))
        near = {n - 1: f[1], n: f[2], n + 1: f[3]}
        o = schedule.output(j, lambda b: cuts.decide(b, near[b], near[b + 1]))
        props = dict(f[2].props)
        if o.pair is None:
            out = f[2].copy()  # mode "t": the source frame passes through (or is repeated)
        else:
            a, b = o.pair
            out = f[0].copy()
            _write(out, part_of(store.get(o.pair, (near[a], near[b]), j), o))
        out.props.clear()
        out.props.update(props)
        _set_duration(out.props, _duration(schedule, j, f[2].props, f[3].props))
        if o.between:
            out.props["STAR_Interpolated"] = 1
            out.props["STAR_Repeat"] = int(o.repeat)
            if o.synthesised:
                out.props["STAR_Time"] = float(engine.made_time(o.t))
            out.props["_SceneChangePrev"] = 0
            out.props["_SceneChangeNext"] = int(o.cut)
        elif mode != "s":
            out.props["_SceneChangeNext"] = 0
        store.delivered(j, n)
        return out

    inputs = [base] + [_spread(c, schedule, fps) for c in (prev, work, nxt)]
    res = back(core.std.ModifyFrame(base, inputs, lambda n, f: render(n, f)))
    if mode == "t":
        # Source frames pass through in the input's own format (no round trip to float RGB).
        src = _spread(clip, schedule, fps)

        def pick(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
            if f[1].props.get("STAR_Interpolated", 0):
                return f[1]
            out = f[0].copy()
            out.props["_SceneChangeNext"] = 0
            _set_duration(out.props, _duration(schedule, n, f[0].props, f[2].props))
            return out

        res = core.std.ModifyFrame(src, [src, res, _spread(nxt_src, schedule, fps)], pick)
    return res
