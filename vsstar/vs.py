"""VapourSynth binding: ``vsstar.STAR(clip, ...)``.

Pipeline: the source clip is converted (when needed) to a float RGB working clip; one Python
``std.ModifyFrame`` clip of ``ceil(N * factor)`` frames renders output frame j (source frame
floor(j / factor), reached through ``std.Interleave`` + ``std.SelectEvery``, which also set the
clip's fps) from a shared, thread-safe pair store and sets its exact duration; a final resize brings
the result back to the input's colour family (mode "t" passes the source frames through untouched).

Which pair and which of its outputs make each output frame is :mod:`vsstar.schedule`'s decision; this
module only moves frames. The pair store computes every pair once, whichever VapourSynth thread asks
first, and frees it once every output frame that needs it was delivered. Pairs are batched and
prefetched ahead by one background worker thread per device (``device=["cuda:0", "cuda:1"]``: one
engine each, all taking their batches from the one store, so each pair still runs once); frames reach
them as numpy views of the VapourSynth planes.
"""
from __future__ import annotations

import atexit
import contextlib
import math
import threading
import time
import weakref
from collections import deque
from concurrent.futures import Future
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch
import vapoursynth as vs

from .engine import MODES, StarEngine, _available_ram, check_quality
from .scene import DEFAULT_SC_THRESHOLD, scene_score
from .schedule import DEFAULT_DEPTH, PARTS, FrameSchedule, max_time_error, output_factor

__all__ = ["STAR", "StoreStats"]

core = vs.core

#: Memory for computed pairs (MiB) where the available memory cannot be read (else a quarter of it).
DEFAULT_CACHE_MB = 1024


def _err(msg: str) -> vs.Error:
    return vs.Error(f"STAR: {msg}")


# ---------------------------------------------------------------------------------- pair store
@dataclass
class StoreStats:
    """Counters of a clip's pair store, for diagnostics: pass one as ``STAR(..., stats=...)``.

    computed: network passes run (pairs computed, prefetched ones included); by_engine: how many
    of them each engine ran, in the order of ``device`` (one entry per device); held: pairs in memory
    now (computed or waiting); peak_held: the most ever held at once; freed: pairs dropped because
    every output frame that needs them was delivered.
    """

    computed: int = 0
    by_engine: list[int] = field(default_factory=list)  # pairs computed by each engine (device), in order
    held: int = 0
    peak_held: int = 0
    freed: int = 0


@dataclass
class _Entry:
    key: tuple[int, int]
    future: Future = field(default_factory=Future)
    frames: tuple[Any, Any] | None = None  # the two working-format VideoFrames
    frame_futures: tuple[Future, Future] | None = None  # prefetch: frames still being fetched
    demanded: bool = False
    state: str = "pending"  # pending -> running -> done
    last_used: float = 0.0
    released: bool = False  # every output frame that needs it was delivered

    def ready(self) -> bool:
        if self.frames is not None:
            return True
        return self.frame_futures is not None and all(f.done() for f in self.frame_futures)


class _PairStore:
    """Thread-safe store of computed pairs with batching, prefetch and freeing after delivery.

    The pairs come from ``schedule``; a pair is freed once every output frame that needs it was
    delivered (``delivered``), keeping the last ``keep`` such pairs for hosts that ask twice, and
    at most ``capacity`` pairs are held at once (least recently used computed pairs go first).
    """

    def __init__(self, engines: Sequence[StarEngine], clip: vs.VideoNode, schedule: FrameSchedule,
                 is_cut: Callable[[int, Any, Any], bool], known_cut: Callable[[int], bool | None],
                 prefetch: int, capacity: int, keep: int, stats: StoreStats | None,
                 exact_time: bool = False) -> None:
        self.engines = list(engines)
        self.exact_time = exact_time
        self.clip = clip
        self.schedule = schedule
        self.is_cut = is_cut
        self.known_cut = known_cut
        self.prefetch = prefetch
        self.capacity = capacity
        self.entries: dict[tuple[int, int], _Entry] = {}
        self.finished: deque[_Entry] = deque()
        self.keep = keep
        self.delivered_frames = bytearray(schedule.num_outputs or 0)
        self.stats = stats if stats is not None else StoreStats()
        self.stats.by_engine = [0] * len(self.engines)
        self.cond = threading.Condition()
        # One worker thread per engine (device); each takes its batches from the same pending pairs.
        self.workers: list[threading.Thread | None] = [None] * len(self.engines)
        self.closing = False
        self.serving = 0  # VapourSynth requests inside render() now
        self.idle_exit_s = 2.0
        self._bufs: list[dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]]] = \
            [{} for _ in self.engines]
        _LIVE_STORES.add(self)

    # -- called from VapourSynth threads
    def get(self, key: tuple[int, int], frames: tuple[Any, Any], j: int) -> tuple[Any, ...]:
        """Outputs (sr_first, {t: mid}, sr_second) of pair `key` for output frame j, computing it if needed."""
        with self.cond:
            if self.closing:
                raise RuntimeError("the Python interpreter is shutting down")
            e = self.entries.get(key)
            if e is None:
                e = self._add(key)
            if e.state == "pending":
                if e.frames is None:
                    e.frames = frames
                    e.frame_futures = None
                e.demanded = True
            e.last_used = time.monotonic()
            ahead = self._reserve_prefetch(j, key)
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
                    self._drop(e)
            return self.get(key, frames, j)
        return result

    def delivered(self, j: int, source: int) -> None:
        """Output frame j (of source frame `source`) was handed to the host: free what no frame needs."""
        with self.cond:
            if j < len(self.delivered_frames):
                self.delivered_frames[j] = 1
            for a in range(source - 2, source + 2):
                for key in ((a, a + 1), (a, a)):
                    e = self.entries.get(key)
                    if e is None or e.state != "done" or e.released:
                        continue
                    need = self.schedule.outputs_of(key, self.known_cut)
                    if all(self.delivered_frames[i] for i in need):
                        e.released = True
                        self.finished.append(e)
            while len(self.finished) > self.keep:
                old = self.finished.popleft()
                if self.entries.get(old.key) is old:
                    self._drop(old)
                    self.stats.freed += 1

    def _add(self, key: tuple[int, int]) -> _Entry:
        e = _Entry(key, last_used=time.monotonic())
        self.entries[key] = e
        self._evict()
        st = self.stats
        st.held = len(self.entries)
        st.peak_held = max(st.peak_held, st.held)
        return e

    def _drop(self, e: _Entry) -> None:
        del self.entries[e.key]
        self.stats.held = len(self.entries)

    def _reserve_prefetch(self, j: int, current: tuple[int, int]) -> list[_Entry]:
        """Entries for the next `prefetch` pairs after output frame j's, within the store's capacity."""
        if self.prefetch <= 0:
            return []
        budget = self.capacity - len(self.entries)
        n_out = self.schedule.num_outputs or 0
        # Assume no cut where none is known yet; a prefetched pair found to straddle one is dropped.
        guess = lambda b: bool(self.known_cut(b))  # noqa: E731
        out: list[_Entry] = []
        seen: set[tuple[int, int]] = set()
        i = j + 1
        # Mode "t" across cuts needs no pairs at all; a higher factor has more output frames per pair.
        per_pair = max(2, math.ceil(self.schedule.factor))
        stop = min(n_out, j + 1 + 2 * per_pair * (self.prefetch + 1))
        while i < stop and len(seen) < self.prefetch and budget > 0:
            key = self.schedule.output(i, guess).pair
            i += 1
            if key is None or key in seen or key == current:
                continue
            seen.add(key)
            if key in self.entries or all(self.delivered_frames[x] for x in self.schedule.outputs_of(key, guess)):
                continue
            e = self._add(key)
            out.append(e)
            budget -= 1
        return out

    def _notify(self, _fut: Future) -> None:
        with self.cond:
            self.cond.notify_all()

    def _ensure_worker(self) -> None:
        for i, w in enumerate(self.workers):
            if w is None or not w.is_alive():
                # Daemon, so an idle store never delays exit; close() (at interpreter exit) stops it.
                w = threading.Thread(target=self._run, args=(i,), name=f"vsstar-worker-{i}", daemon=True)
                self.workers[i] = w
                w.start()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the worker and wait for the frame requests in flight.

        Run at interpreter exit: a VapourSynth thread that completes a request after Python began
        finalising cannot take the GIL and would abort the process ("terminate called without an
        active exception"), and so would the worker thread torn down inside torch. Requests still
        waiting for a pair fail (nobody will read them), so the VapourSynth threads serving them
        come free, then the worker finishes its batch and the prefetch requests complete.
        """
        gone = RuntimeError("the Python interpreter is shutting down")
        with self.cond:
            self.closing = True
            workers = [w for w in self.workers if w is not None]
            waiting = [f for e in self.entries.values() if e.frame_futures for f in e.frame_futures]
            pending = [e for e in self.entries.values() if e.state == "pending"]
            for e in pending:
                e.state = "done"
            self.cond.notify_all()
        for e in pending:
            if not e.future.done():
                e.future.set_exception(gone)
        for worker in workers:
            if worker is not threading.current_thread():
                worker.join(timeout)
        for f in waiting:
            try:
                f.result(timeout)
            except Exception:  # noqa: BLE001 - a failed prefetch matters to nobody now
                pass
        with self.cond:
            self.cond.wait_for(lambda: self.serving == 0, timeout)
            self.entries.clear()
            self.finished.clear()
            self.stats.held = 0

    @contextlib.contextmanager
    def serve(self) -> Iterator[None]:
        """Marks a VapourSynth request in progress (close() waits for them to leave)."""
        with self.cond:
            self.serving += 1
        try:
            yield
        finally:
            with self.cond:
                self.serving -= 1
                self.cond.notify_all()

    # -- worker thread
    def _pick(self, engine: StarEngine) -> list[_Entry]:
        """The next batch for `engine` (under the lock): marked running, so no other engine takes it."""
        pending = [e for e in self.entries.values() if e.state == "pending"]
        demanded = sorted((e for e in pending if e.demanded), key=lambda e: e.key)
        ready_pf = sorted((e for e in pending if not e.demanded and e.ready()), key=lambda e: e.key)
        # Prefetched pairs join a batch only if nothing demanded waits, or to fill a demanded batch.
        batch = (demanded + ready_pf)[: engine.batch_size]
        for e in batch:
            e.state = "running"
        return batch

    def _run(self, i: int) -> None:
        engine = self.engines[i]
        while True:
            with self.cond:
                deadline = time.monotonic() + self.idle_exit_s
                while True:
                    if self.closing:
                        self.workers[i] = None
                        return
                    batch = self._pick(engine)
                    if batch:
                        break
                    left = deadline - time.monotonic()
                    if left <= 0:
                        self.workers[i] = None
                        return
                    self.cond.wait(min(left, 0.5))
            self._compute(batch, i)

    def _compute(self, batch: list[_Entry], i: int = 0) -> None:
        try:
            todo: list[_Entry] = []
            for e in batch:
                if e.frames is None:
                    e.frames = (e.frame_futures[0].result(), e.frame_futures[1].result())
                    e.frame_futures = None
                    a, b = e.key
                    if not e.demanded and b == a + 1 and self.is_cut(a, e.frames[0], e.frames[1]):
                        # Prefetched pair across a cut: nobody will ask for it.
                        self._finish(e, None)
                        continue
                todo.append(e)
            if not todo:
                return
            f0 = todo[0].frames[0]
            engine = self.engines[i]
            first, second = self._buffers(i, len(todo), f0.height, f0.width)
            for n, e in enumerate(todo):
                _frame_into(e.frames[0], first[n])
                _frame_into(e.frames[1], second[n])
            out = engine.process_times(first, second, [self._times(e.key) for e in todo],
                                       exact_time=self.exact_time)
            for n, e in enumerate(todo):
                parts = (None if out.sr_first is None else out.sr_first[n], out.mids[n],
                         None if out.sr_second is None else out.sr_second[n])
                self._finish(e, parts, i)
        except BaseException as exc:  # report to every waiter instead of hanging the host
            for e in batch:
                if not e.future.done():
                    with self.cond:
                        e.state = "done"
                        e.frames = None
                        if self.entries.get(e.key) is e:
                            self._drop(e)
                    e.future.set_exception(exc)
            if not isinstance(exc, Exception):
                raise

    def _times(self, key: tuple[int, int]) -> list[Fraction]:
        """The in-between times the pair (a, a+1) makes (none for a frame paired with itself)."""
        a, b = key
        if b != a + 1 or self.schedule.mode == "s":
            return []
        sched = self.schedule
        return [sched.time_of(j) - a for j in sched.outputs_at(a, b) if sched.time_of(j) != a]

    def _buffers(self, i: int, n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable input batches of worker i (pinned on CUDA so the upload can overlap)."""
        key = (n, h, w)
        if key not in self._bufs[i]:
            pin = self.engines[i].device.type == "cuda"
            self._bufs[i] = {key: tuple(
                torch.empty((n, 3, h, w), dtype=torch.float32, pin_memory=pin) for _ in range(2))}
        return self._bufs[i][key]

    def _finish(self, e: _Entry, parts: tuple[torch.Tensor | None, ...] | None, engine: int = 0) -> None:
        with self.cond:
            e.frames = None
            e.state = "done"
            if parts is None:
                if self.entries.get(e.key) is e and not e.demanded:
                    self._drop(e)
            else:
                self.stats.computed += 1
                self.stats.by_engine[engine] += 1
                self._evict()
        e.future.set_result(parts)

    def _evict(self) -> None:
        extra = len(self.entries) - self.capacity
        if extra <= 0:
            return
        done = [e for e in self.entries.values() if e.state == "done"]
        for e in sorted(done, key=lambda e: (not e.released, e.last_used))[:extra]:
            self._drop(e)


# Stores whose worker or frame requests may be alive, closed at interpreter exit (see close()).
_LIVE_STORES: "weakref.WeakSet[_PairStore]" = weakref.WeakSet()


@atexit.register
def _close_stores() -> None:
    for store in list(_LIVE_STORES):
        store.close()


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
    precision: str = "f32",
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
        precision: OpenVINO precision, "f32" (default), "bf16" (small drift; CPUs with bfloat16) or "int8"
            (quantized once per model with NNCF; about 1.6x faster than f32, < 0.1 dB drift).
        device_index: CUDA device number(s), as in vs-rife and other VapourSynth filters: ``0`` is
            ``device="cuda:0"``, ``[0, 1]`` is ``device=["cuda:0", "cuda:1"]``. Not with ``device``.
        factor_num, factor_den: output frame rate / input frame rate (modes "st" and "t"; at least
            1; default 2/1). Output frame j shows source time j * factor_den / factor_num: on a
            source frame it is that frame (super-resolved in mode "st"), otherwise it is synthesised
            at its fraction t of the way between frames k and k+1 (props STAR_Interpolated=1,
            STAR_Time=t). Frame durations follow the source's, so variable-rate clips work.
        fps_num, fps_den: the output frame rate instead of the factor (overrides factor_*); needs a
            clip with a constant rate.
        exact_time: models with time input (the bundled x2 and x4 ones) synthesise every t exactly.
            Models that know only t = 1/2 (the x8 one, the authors' checkpoints) reach other times by
            recursive midpoints, rounded to the nearest multiple of 1/8 (worst error 1/16 of a frame
            interval; none for factors 2, 4, 8); True raises vs.Error instead when a needed t is not
            reachable exactly.
        quality: with ``model=None``, the tier of bundled weights: "fast" (default) or "high" (larger, about
            4x slower, better pictures; scale 4 only). Not with ``model`` or ``engine``.
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
    except (TypeError, ValueError) as exc:
        raise _err(f"sc_threshold must be a number in [0, 1], got {sc_threshold!r}") from exc
    if not 0.0 <= sc_threshold <= 1.0:
        raise _err(f"sc_threshold must be in [0, 1], got {sc_threshold!r}")
    _check_int("prefetch", prefetch, 0, allow_none=True)
    _check_int("cache_mb", cache_mb, 1, allow_none=True)
    if stats is not None and not isinstance(stats, StoreStats):
        raise _err(f"stats must be a vsstar.vs.StoreStats or None, got {type(stats).__name__}")
    fmt = clip.format
    if fmt.color_family not in (vs.RGB, vs.YUV, vs.GRAY):
        raise _err(f"clip format {fmt.name} is not supported (RGB, YUV or GRAY expected)")
    if clip.num_frames < 1:
        raise _err("clip must have at least one frame")
    if not isinstance(exact_time, (bool, int)):
        raise _err(f"exact_time must be a bool, got {exact_time!r}")
    if mode == "s":
        if (factor_num, factor_den, fps_num, fps_den) != (2, 1, None, None):
            raise _err("factor_num/factor_den/fps_num/fps_den: mode 's' keeps the frame rate")
        factor = Fraction(1)
    else:
        try:
            factor = output_factor(factor_num, factor_den, fps_num, fps_den,
                                   Fraction(clip.fps.numerator, clip.fps.denominator) if clip.fps.denominator else None)
        except ValueError as exc:
            raise _err(str(exc)) from exc

    if engine is None:
        devices = _devices(device, device_index)
        try:
            engines = [StarEngine(model, scale=scale, mode=mode, device=d, fp16=fp16, batch_size=batch_size,
                                  tile=tile, tile_overlap=tile_overlap, flow_options=flow_options,
                                  backend=backend, precision=precision, quality=quality) for d in devices]
        except ValueError as exc:
            raise _err(str(exc)) from exc
    else:
        try:
            check_quality(quality)
        except ValueError as exc:
            raise _err(str(exc)) from exc
        if quality != "fast":
            raise _err(f"quality={quality!r} picks bundled weights; it cannot go with engine= (build the engine "
                       "with quality= instead)")
        engines = [engine] if isinstance(engine, StarEngine) else \
            list(engine) if isinstance(engine, (list, tuple)) else [engine]
        if not engines:
            raise _err("engine must be a vsstar.engine.StarEngine or a non-empty list of them, got []")
        for e in engines:
            if not isinstance(e, StarEngine):
                raise _err(f"engine must be a vsstar.engine.StarEngine or a list of them, got {type(e).__name__}")
            if e.mode != mode:
                raise _err(f"mode={mode!r} but the engine was built for mode={e.mode!r}")
        if len({(e.scale, e.mode) for e in engines}) > 1:
            raise _err("engine: the engines of a list must share scale and mode")
    engine = engines[0]
    scale = engine.scale
    if exact_time and mode != "s" and not engine.takes_time and max_time_error(factor, DEFAULT_DEPTH):
        raise _err(f"exact_time: the factor {factor} needs in-between times that a model which knows only "
                   f"t = 1/2 cannot synthesise exactly (worst rounding {float(max_time_error(factor)):.4f} "
                   "of a frame interval); use exact_time=False, a factor 2, 4 or 8, or a model with time input")
    min_side = max(8, getattr(engine.config, "min_size", 1))
    if clip.width < min_side or clip.height < min_side:
        raise _err(f"clip is {clip.width}x{clip.height}; at least {min_side}x{min_side} pixels are needed")
    if prefetch is None:
        # Enough ahead to keep every device busy.
        prefetch = 2 * sum(e.batch_size for e in engines)

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
    num, den = factor.numerator, factor.denominator

    def spread(c: vs.VideoNode) -> vs.VideoNode:
        """c's frame floor(j * den / num) at output frame j (fps x factor, durations / factor)."""
        if num == den == 1:
            return c
        c = core.std.Interleave([c] * num) if num > 1 else c
        return core.std.SelectEvery(c, den, [0]) if den > 1 else c

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

    def known_cut(k: int) -> bool | None:
        """What is known of boundary k|k+1 without looking at frames (None: not decided yet)."""
        if not scene_change:
            return False
        with cut_lock:
            return cuts.get(k)

    schedule = FrameSchedule(nframes, mode, factor)
    # Memory of one computed pair: the frames of the outputs the mode keeps, float32.
    n_mid = math.ceil(factor) if mode != "s" else 0
    pair_bytes = 4 * 3 * hr_w * hr_h * (n_mid + (2 if mode != "t" else 0))
    if cache_mb is None:
        avail = _available_ram()
        cache_bytes = avail // 4 if avail else DEFAULT_CACHE_MB << 20
    else:
        cache_bytes = cache_mb << 20
    # A batch in flight plus a little room is the least that works, whatever the budget says.
    in_flight = sum(e.batch_size for e in engines)
    capacity = max(in_flight + 2, cache_bytes // max(1, pair_bytes))
    store = _PairStore(engines, work, schedule, is_cut, known_cut, min(prefetch, capacity),
                       capacity, keep=max(2, in_flight), stats=stats, exact_time=bool(exact_time))

    prev = work[0] + work[:-1] if nframes > 1 else work
    nxt = work[1:] + work[-1] if nframes > 1 else work
    nxt_src = clip[1:] + clip[-1] if nframes > 1 else clip
    blank = core.std.BlankClip(work, width=hr_w, height=hr_h, length=nframes, keep=True)

    def render(j: int, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        try:
            with store.serve():
                return _render(j, n, f)
        except vs.Error:
            raise
        except Exception as exc:
            raise _err(f"frame {j}: {type(exc).__name__}: {exc}") from exc

    def duration(j: int, n: int, f: list[vs.VideoFrame]) -> Fraction | None:
        """Output frame j's duration: the source time it covers, [j, j+1) / factor, in seconds."""
        d = []
        for fr in (f[2], f[3]):
            p = fr.props
            if "_DurationNum" not in p or not p.get("_DurationDen"):
                return None
            # spread() divided the source durations by the factor.
            d.append(Fraction(p["_DurationNum"], p["_DurationDen"]) * factor)
        x0, x1 = Fraction(j) / factor, Fraction(j + 1) / factor
        nxt_d = d[1] if n + 1 < nframes else d[0]  # past the end: the last frame's duration
        return d[0] * (min(x1, n + 1) - x0) + nxt_d * max(Fraction(0), x1 - (n + 1))

    def set_duration(props: Any, dur: Fraction | None) -> None:
        if dur is not None:
            props["_DurationNum"] = dur.numerator
            props["_DurationDen"] = dur.denominator

    def _render(j: int, n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
        """Output frame j (source frame n) as the schedule says; f = [blank HR, prev, cur, next]."""
        near = {n - 1: f[1], n: f[2], n + 1: f[3]}
        o = schedule.output(j, lambda b: is_cut(b, near[b], near[b + 1]))
        props = dict(f[2].props)
        if o.pair is None:
            out = f[2].copy()  # mode "t": the source frame passes through (or is repeated)
        else:
            a, b = o.pair
            out = f[0].copy()
            parts = store.get(o.pair, (near[a], near[b]), j)
            _write(out, parts[1][o.t] if o.part == "mid" else parts[PARTS[o.part]])
        out.props.clear()
        out.props.update(props)
        set_duration(out.props, duration(j, n, f))
        if o.between:
            out.props["STAR_Interpolated"] = 1
            out.props["STAR_Repeat"] = int(o.repeat)
            if o.synthesised:
                out.props["STAR_Time"] = float(o.t)
            out.props["_SceneChangePrev"] = 0
            out.props["_SceneChangeNext"] = int(o.cut)
        elif mode != "s":
            out.props["_SceneChangeNext"] = 0
        store.delivered(j, n)
        return out

    inputs = [spread(c) for c in (blank, prev, work, nxt)]
    res = back(core.std.ModifyFrame(inputs[0], inputs, lambda n, f: render(n, math.floor(schedule.time_of(n)), f)))
    if mode == "t":
        # Source frames pass through in the input's own format (no round trip to float RGB).
        src = spread(clip)

        def pick(n: int, f: list[vs.VideoFrame]) -> vs.VideoFrame:
            if f[1].props.get("STAR_Interpolated", 0):
                return f[1]
            out = f[0].copy()
            out.props["_SceneChangeNext"] = 0
            set_duration(out.props, duration(n, math.floor(schedule.time_of(n)), [None, None, f[0], f[2]]))
            return out

        res = core.std.ModifyFrame(src, [src, res, spread(core.std.SetFrameProps(nxt_src, _SceneChangeNext=0))], pick)
    return res
