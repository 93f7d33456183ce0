"""VapourSynth binding: ``vsstar.STAR(clip, ...)``.

Pipeline: the source clip is converted (when needed) to a float RGB working clip; two Python
``std.ModifyFrame`` clips produce the super-resolved frames and the in-between frames from a
shared, thread-safe pair store; ``std.Interleave`` puts them in output order (and halves the frame
durations); a final resize brings the result back to the input's colour family.

The pair store computes every frame pair (k, k+1) once: output frames 2k (super-resolved frame k)
and 2k+1 (in-between) read the same pair, whichever VapourSynth thread asks first. Pairs are
batched and prefetched ahead by one background worker thread that owns the device; frames reach
it as numpy views of the VapourSynth planes.
"""
from __future__ import annotations

import threading
import time
import weakref
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import vapoursynth as vs

from .engine import MODES, StarEngine
from .scene import DEFAULT_SC_THRESHOLD, scene_score

__all__ = ["STAR"]

core = vs.core

#: Default memory for computed pairs kept for later requests (MiB).
DEFAULT_CACHE_MB = 1024


def _err(msg: str) -> vs.Error:
    return vs.Error(f"STAR: {msg}")


# ---------------------------------------------------------------------------------- pair store
@dataclass
class _Entry:
    key: tuple[int, int]
    future: Future = field(default_factory=Future)
    frames: tuple[Any, Any] | None = None  # the two working-format VideoFrames
    frame_futures: tuple[Future, Future] | None = None  # prefetch: frames still being fetched
    demanded: bool = False
    state: str = "pending"  # pending -> running -> done
    last_used: float = 0.0
    nbytes: int = 0

    def ready(self) -> bool:
        if self.frames is not None:
            return True
        return self.frame_futures is not None and all(f.done() for f in self.frame_futures)


class _PairStore:
    """Thread-safe, memory-bounded cache of computed pairs with batching and prefetch."""

    def __init__(self, engine: StarEngine, clip: vs.VideoNode, is_cut: Callable[[int, Any, Any], bool],
                 prefetch: int, cache_bytes: int, pair_bytes: int) -> None:
        self.engine = engine
        self.clip = clip
        self.n = clip.num_frames
        self.is_cut = is_cut
        self.prefetch = prefetch
        self.capacity = max(2 * (prefetch + engine.batch_size) + 4, cache_bytes // max(1, pair_bytes))
        self.entries: dict[tuple[int, int], _Entry] = {}
        self.cond = threading.Condition()
        self.worker: threading.Thread | None = None
        self.computed: dict[tuple[int, int], int] = {}  # how many times each pair ran (tests)
        self.idle_exit_s = 2.0
        self._bufs: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}

    # -- called from VapourSynth threads
    def get(self, key: tuple[int, int], frames: tuple[Any, Any]) -> tuple[torch.Tensor | None, ...]:
        """Outputs (sr_first, mid, sr_second) of pair `key`, each (3, H, W), computing it if needed."""
        with self.cond:
            e = self.entries.get(key)
            if e is None:
                e = _Entry(key)
                self.entries[key] = e
            if e.state == "pending":
                if e.frames is None:
                    e.frames = frames
                    e.frame_futures = None
                e.demanded = True
            e.last_used = time.monotonic()
            ahead = self._reserve_prefetch(key[0]) if key[1] == key[0] + 1 else []
            self._ensure_worker()
            self.cond.notify_all()
        # Ask VapourSynth for the frames of the pairs ahead outside our lock: its callbacks take it.
        for p in ahead:
            futs = (self.clip.get_frame_async(p.key[0]), self.clip.get_frame_async(p.key[1]))
            with self.cond:
                if p.state == "pending" and p.frames is None:
                    p.frame_futures = futs
            for f in futs:
                f.add_done_callback(self._notify)
        result = e.future.result()
        if result is None:
            # A prefetched pair found to straddle a cut was dropped; the caller's own view of the
            # cut disagrees only if props changed between requests, so compute it on demand.
            with self.cond:
                if self.entries.get(key) is e:
                    del self.entries[key]
            return self.get(key, frames)
        return result

    def _reserve_prefetch(self, a: int) -> list[_Entry]:
        """Entries for the pairs after pair (a, a+1), within the prefetch distance and the cache size."""
        budget = self.capacity - len(self.entries)
        out = []
        for j in range(a + 1, min(a + 1 + self.prefetch, self.n - 1)):
            if budget <= 0:
                break
            key = (j, j + 1)
            if key in self.entries:
                continue
            e = _Entry(key)
            e.last_used = time.monotonic()
            self.entries[key] = e
            out.append(e)
            budget -= 1
        return out

    def _notify(self, _fut: Future) -> None:
        with self.cond:
            self.cond.notify_all()

    def _ensure_worker(self) -> None:
        if self.worker is None or not self.worker.is_alive():
            self.worker = threading.Thread(target=self._run, name="vsstar-worker", daemon=True)
            self.worker.start()

    # -- worker thread
    def _pick(self) -> list[_Entry]:
        pending = [e for e in self.entries.values() if e.state == "pending"]
        demanded = sorted((e for e in pending if e.demanded), key=lambda e: e.key)
        ready_pf = sorted((e for e in pending if not e.demanded and e.ready()), key=lambda e: e.key)
        # Prefetched pairs join a batch only if nothing demanded waits, or to fill a demanded batch.
        batch = (demanded + ready_pf)[: self.engine.batch_size]
        for e in batch:
            e.state = "running"
        return batch

    def _run(self) -> None:
        while True:
            with self.cond:
                deadline = time.monotonic() + self.idle_exit_s
                while True:
                    batch = self._pick()
                    if batch:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.worker = None
                        return
                    self.cond.wait(min(left, 0.5))
            self._compute(batch)

    def _compute(self, batch: list[_Entry]) -> None:
        try:
            todo: list[_Entry] = []
            for e in batch:
                if e.frames is None:
                    e.frames = (e.frame_futures[0].result(), e.frame_futures[1].result())
                    e.frame_futures = None
                    a, b = e.key
                    if not e.demanded and self.is_cut(a, e.frames[0], e.frames[1]):
                        # Prefetched pair across a cut: nobody will ask for it.
                        self._finish(e, None)
                        continue
                todo.append(e)
            if not todo:
                return
            f0 = todo[0].frames[0]
            first, second = self._buffers(len(todo), f0.height, f0.width)
            for i, e in enumerate(todo):
                _frame_into(e.frames[0], first[i])
                _frame_into(e.frames[1], second[i])
            out = self.engine.process(first, second)
            for i, e in enumerate(todo):
                parts = tuple(None if t is None else t[i] for t in out)
                self.computed[e.key] = self.computed.get(e.key, 0) + 1
                self._finish(e, parts)
        except BaseException as exc:  # report to every waiter instead of hanging the host
            for e in batch:
                if not e.future.done():
                    with self.cond:
                        e.state = "done"
                        e.frames = None
                        if self.entries.get(e.key) is e:
                            del self.entries[e.key]
                    e.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _buffers(self, n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable input batches (pinned on CUDA so the upload can overlap); worker thread only."""
        key = (n, h, w)
        if key not in self._bufs:
            pin = self.engine.device.type == "cuda"
            self._bufs = {key: tuple(
                torch.empty((n, 3, h, w), dtype=torch.float32, pin_memory=pin) for _ in range(2))}
        return self._bufs[key]

    def _finish(self, e: _Entry, parts: tuple[torch.Tensor | None, ...] | None) -> None:
        with self.cond:
            e.frames = None
            e.state = "done"
            if parts is None:
                if self.entries.get(e.key) is e and not e.demanded:
                    del self.entries[e.key]
            else:
                e.nbytes = sum(t.numel() * 4 for t in parts if t is not None)
                self._evict()
        e.future.set_result(parts)

    def _evict(self) -> None:
        done = [e for e in self.entries.values() if e.state == "done"]
        extra = len(self.entries) - self.capacity
        if extra <= 0:
            return
        for e in sorted(done, key=lambda e: e.last_used)[:extra]:
            del self.entries[e.key]


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


def _check_int(name: str, value: Any, lo: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise _err(f"{name} must be an int >= {lo}{' or None' if allow_none else ''}, got {value!r}")


# ---------------------------------------------------------------------------------- the filter
def STAR(
    clip: vs.VideoNode,
    scale: int = 4,
    mode: str = "st",
    model: Any = None,
    device: str | None = None,
    fp16: bool | None = None,
    batch_size: int | None = None,
    tile: int | Sequence[int] | None = None,
    tile_overlap: int = 16,
    scene_change: bool = True,
    sc_threshold: float = DEFAULT_SC_THRESHOLD,
    prefetch: int | None = None,
    cache_mb: int = DEFAULT_CACHE_MB,
    flow_options: dict[str, Any] | None = None,
    engine: StarEngine | None = None,
    backend: str = "auto",
    precision: str = "f32",
) -> vs.VideoNode:
    """Space-time video super-resolution (STARnet).

    Args:
        clip: constant format and size. RGBS/RGBH are processed directly; YUV, GRAY and integer
            formats are converted to float RGB inside (matrix from ``_Matrix``, BT.709 when
            unspecified) and the result comes back in the input's format family and bit depth.
        scale: 2, 4 or 8 (must match the model). Ignored for the size in mode "t".
        mode: "st": width/height x scale and frame rate x2 (frame 2k = frame k super-resolved,
            2k+1 = synthesised between k and k+1, the last one repeats the last frame);
            "s": super-resolution only (N frames); "t": interpolation only at the input size (2N frames).
        model: bundled weights name, .safetensors path or official .pth checkpoint; None = the
            bundled weights for ``scale``.
        device: None (CUDA if available, else CPU), "cpu", "cuda", "cuda:N".
        fp16: float16 autocast (default True on CUDA, False on CPU).
        batch_size: pairs per network call (default 1 on CPU, 4 on CUDA).
        tile: LR tile size (int or [h, w]); None = automatic when memory would not suffice; 0 = off.
        tile_overlap: LR pixels shared by neighbouring tiles (blended).
        scene_change: no synthesis across cuts (``_SceneChangeNext``/``_SceneChangePrev`` when
            present, else the built-in detector); the in-between frame repeats the left frame.
        sc_threshold: threshold of the built-in detector (see vsstar.scene), in [0, 1].
        prefetch: pairs computed ahead of the host's requests (default 2 x batch_size).
        cache_mb: memory for computed pairs kept until the host asks for them (MiB).
        flow_options: overrides for the optical flow (e.g. ``{"n_outer": 3}`` for speed).
        engine: a prebuilt :class:`vsstar.engine.StarEngine` to share a loaded model between clips
            (then model/scale/device/fp16/batch_size/tile/tile_overlap/flow_options are taken from it).
        backend: "auto" (OpenVINO on the CPU when installed, else torch), "torch" or "openvino" (CPU).
        precision: OpenVINO precision, "f32" (default) or "bf16" (faster, small drift; CPUs with bfloat16).
    """
    if not isinstance(clip, vs.VideoNode):
        raise _err(f"clip must be a vapoursynth.VideoNode, got {type(clip).__name__}")
    if clip.format is None or clip.width == 0 or clip.height == 0:
        raise _err("clip must have a constant format and size (variable format/size clips are not supported)")
    if mode not in MODES:
        raise _err(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if not isinstance(scene_change, (bool, int)):
        raise _err(f"scene_change must be a bool, got {scene_change!r}")
    try:
        sc_threshold = float(sc_threshold)
    except (TypeError, ValueError):
        raise _err(f"sc_threshold must be a number in [0, 1], got {sc_threshold!r}") from None
    if not 0.0 <= sc_threshold <= 1.0:
        raise _err(f"sc_threshold must be in [0, 1], got {sc_threshold!r}")
    _check_int("prefetch", prefetch, 0, allow_none=True)
    _check_int("cache_mb", cache_mb, 1)
    fmt = clip.format
    if fmt.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise _err(f"clip format {fmt.name} is not supported (RGB, YUV or GRAY expected)")
    if clip.num_frames < 1:
        raise _err("clip must have at least one frame")

    if engine is None:
        try:
            engine = StarEngine(model, scale=scale, mode=mode, device=device, fp16=fp16, batch_size=batch_size,
                                tile=tile, tile_overlap=tile_overlap, flow_options=flow_options,
                                backend=backend, precision=precision)
        except ValueError as exc:
            raise _err(str(exc)) from None
    else:
        if not isinstance(engine, StarEngine):
            raise _err(f"engine must be a vsstar.engine.StarEngine, got {type(engine).__name__}")
        if engine.mode != mode:
            raise _err(f"mode={mode!r} but the engine was built for mode={engine.mode!r}")
    scale = engine.scale
    min_side = max(8, getattr(engine.config, "min_size", 1))
    if clip.width < min_side or clip.height < min_side:
        raise _err(f"clip is {clip.width}x{clip.height}; at least {min_side}x{min_side} pixels are needed")
    if prefetch is None:
        prefetch = 2 * engine.batch_size

    # ---- working clip (float RGB) and the way back to the input's family
    direct = fmt.id in (vs.RGBS, vs.RGBH)
    props0 = clip.get_frame(0).props if not direct else {}
    if direct:
        work = clip
        back: Callable[[vs.VideoNode], vs.VideoNode] = lambda c: c
    elif fmt.color_family == vs.RGB:
        work = core.resize.Point(clip, format=vs.RGBS)
        back = lambda c: core.resize.Point(c, format=fmt.id)
    elif fmt.color_family == vs.GRAY:
        work = core.resize.Point(clip, format=vs.RGBS)
        rng = _range_of(props0)
        kw = {"range_s": rng} if rng else {}
        back = lambda c: core.resize.Bicubic(c, format=fmt.id, matrix=1, **kw)
    else:
        matrix = _matrix_of(props0)
        rng = _range_of(props0)
        kw = {"range_s": rng} if rng else {}
        work = core.resize.Bicubic(clip, format=vs.RGBS, matrix_in=matrix, **({"range_in_s": rng} if rng else {}))
        back = lambda c: core.resize.Bicubic(c, format=fmt.id, matrix=matrix, **kw)

    nframes = clip.num_frames
    w, h = work.width, work.height
    hr_w, hr_h = (w, h) if mode == "t" else (w * scale, h * scale)
    blank = core.std.BlankClip(work, width=hr_w, height=hr_h, length=nframes, keep=True)

    # ---- scene cuts, decided once per boundary (k, k+1) and remembered
    cuts: dict[int, bool] = {}
    cut_lock = threading.Lock()

    def is_cut(k: int, fa: vs.VideoFrame, fb: vs.VideoFrame) -> bool:
        if not scene_change or k + 1 >= nframes:
            return False
        with cut_lock:
            if k in cuts:
                return cuts[k]
        pa, pb = fa.props, fb.props
        if "_SceneChangeNext" in pa or "_SceneChangePrev" in pb:
            cut = bool(pa.get("_SceneChangeNext", 0)) or bool(pb.get("_SceneChangePrev", 0))
        else:
            cut = scene_score(_frame_array(fa), _frame_array(fb)) > sc_threshold
        with cut_lock:
            cuts[k] = cut
        return cut

    pair_bytes = 4 * 3 * (hr_w * hr_h * (3 if mode == "st" else 2) if mode != "t" else w * h)
    store = _PairStore(engine, work, is_cut, prefetch, cache_mb << 20, pair_bytes)

    prev = work[0] + work[:-1] if nframes > 1 else work
    nxt = work[1:] + work[-1] if nframes > 1 else work

    def sr_of(k: int, fp: vs.VideoFrame, fc: vs.VideoFrame, fn: vs.VideoFrame) -> torch.Tensor:
        """Super-resolved frame k from the pair that contains it without crossing a cut."""
        if k + 1 < nframes and not is_cut(k, fc, fn):
            return store.get((k, k + 1), (fc, fn))[0]
        if k > 0 and not is_cut(k - 1, fp, fc):
            return store.get((k - 1, k), (fp, fc))[2]
        return store.get((k, k), (fc, fc))[0]  # isolated frame: pair it with itself

    def sr_frame(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            out = f[0].copy()
            _write(out, sr_of(n, f[1], f[2], f[3]))
            props = dict(f[2].props)
            out.props.clear()
            out.props.update(props)
            if mode != "s":
                out.props["_SceneChangeNext"] = 0
            return out
        except vs.Error:
            raise
        except Exception as exc:
            raise _err(f"frame {n}: {type(exc).__name__}: {exc}") from None

    def mid_frame(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            fp, fc, fn = f[1], f[2], f[3]
            props = dict(fc.props)
            cut = n + 1 < nframes and is_cut(n, fc, fn)
            repeat = n + 1 >= nframes or cut
            if repeat:
                if mode == "t":
                    out = fc.copy()
                else:
                    out = f[0].copy()
                    _write(out, sr_of(n, fp, fc, fn))
            else:
                out = f[0].copy()
                _write(out, store.get((n, n + 1), (fc, fn))[1])
            out.props.clear()
            out.props.update(props)
            out.props["STAR_Interpolated"] = 1
            out.props["STAR_Repeat"] = int(repeat)
            out.props["_SceneChangePrev"] = 0
            out.props["_SceneChangeNext"] = int(cut)
            return out
        except vs.Error:
            raise
        except Exception as exc:
            raise _err(f"frame {2 * n + 1}: {type(exc).__name__}: {exc}") from None

    inputs = [blank, prev, work, nxt]
    if mode == "s":
        res = back(core.std.ModifyFrame(blank, inputs, sr_frame))
    elif mode == "st":
        sr = core.std.ModifyFrame(blank, inputs, sr_frame)
        mid = core.std.ModifyFrame(blank, inputs, mid_frame)
        res = back(core.std.Interleave([sr, mid]))
    else:
        mid = back(core.std.ModifyFrame(blank, inputs, mid_frame))
        src = core.std.SetFrameProps(clip, _SceneChangeNext=0)
        res = core.std.Interleave([src, mid])
    # Keep the store reachable for tests and the benchmark (counts of computed pairs).
    _STORES[id(res)] = store
    return res


# Stores of the clips built in this process, by id(output clip); weak, so a store lives exactly as
# long as the callbacks of its clip. Used by `pair_counts`.
_STORES: "weakref.WeakValueDictionary[int, _PairStore]" = weakref.WeakValueDictionary()


def pair_counts(clip: vs.VideoNode) -> dict[tuple[int, int], int]:
    """How many times each pair was computed for a clip returned by STAR (diagnostics/tests)."""
    store = _STORES.get(id(clip))
    if store is None:
        raise ValueError("clip was not returned by vsstar.STAR in this process")
    return dict(store.computed)
