"""The pair store: frame pairs in, network results out, each pair computed once (no host import here).

Every host asks :mod:`vsstar.schedule` which pair makes each output frame; this module holds the
frames and results in between, runs every pair once, frees it once no output frame needs it, and
owns the two facts hosts used to write themselves: the in-between times a pair makes
(:func:`pair_times`) and the time each output frame covers (:meth:`FrameSchedule.span`, turned
into timestamps here for hosts that count time in integer ticks).

Two interfaces, one for each kind of host:

**Pull** (:class:`PullStore`, the VapourSynth filter): the host asks for output frames in any
order, from many threads. ``get(pair, frames, j)`` returns the pair's :class:`PairParts`,
computing it if needed; ``delivered(j, source)`` says output frame j went out. Pairs are batched
and prefetched ahead by one worker thread per engine (device), all taking their batches from the
one store, so each pair still runs once; at most ``capacity`` pairs are held.

**Push** (:class:`PushStore`, the GStreamer element): frames arrive in order and results leave as
soon as they are decided::

    store = PushStore(run, mode="st", factor=Fraction(5, 2), batch=4, is_cut=my_cut)
    for frame, pts, dur in stream:
        for r in store.push(frame, pts, dur):   # Ready output frames, in output order
            send(r.image, r.pts, r.dur)
    for r in store.finish():                    # end of stream: everything still held
        send(r.image, r.pts, r.dur)

``run(pairs, times)`` is the host's engine call: ``pairs`` is a list of (first, second) frames as
the host pushed them, ``times[i]`` the in-between times pair i must make (:func:`pair_times`); it
returns one :class:`PairParts` per pair. ``is_cut(first, second)`` says whether two consecutive
frames straddle a scene cut (None: never). ``pts``/``dur`` are integer ticks of any unit (GStreamer:
nanoseconds) or None when unknown; output frame j starts at the source timeline's value at the
start of its span and lasts until the next output frame starts (the last one until the clip ends),
so the output durations tile the input's exactly (an output frame whose span reaches past the next
source frame waits for the one after it, whose timestamp ends it). The store holds about
``batch + 1`` frames;
``reset()`` drops everything (flush, seek), ``held`` counts the frames held.
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
from typing import Any, Callable, Generic, Iterator, NamedTuple, Sequence, TypeVar

import torch

from .schedule import PARTS, FrameSchedule, OutputFrame, Pair, batches

__all__ = ["PairParts", "pair_times", "StoreStats", "PullStore", "PushStore", "Ready", "part_of", "pull_limits",
           "DEFAULT_CACHE_MB"]

F = TypeVar("F")  # a host's frame (array, VideoFrame, ...)


class PairParts(NamedTuple):
    """What one network pass gives for one pair: the two frames super-resolved (None in mode "t")
    and the in-between frames it was asked for, by time t in (0, 1)."""

    sr_first: Any
    mids: dict[Fraction, Any]
    sr_second: Any


def part_of(parts: PairParts, o: OutputFrame) -> Any:
    """The image of output frame ``o`` among its pair's parts."""
    return parts.mids[o.t] if o.part == "mid" else parts[PARTS[o.part]]


def pair_times(schedule: FrameSchedule, pair: Pair) -> list[Fraction]:
    """The in-between times t in (0, 1) the pair (a, a+1) makes; none for a frame paired with itself
    or in mode "s"."""
    a, b = pair
    if b != a + 1 or schedule.mode == "s":
        return []
    return [schedule.time_of(j) - a for j in schedule.outputs_at(a, b) if schedule.time_of(j) != a]


# ---------------------------------------------------------------------------------- pull
#: Memory for computed pairs (MiB) where the available memory is not known (else a quarter of it).
DEFAULT_CACHE_MB = 1024


def pull_limits(engines: Sequence[Any], schedule: FrameSchedule, out_size: tuple[int, int],
                prefetch: int | None, cache_mb: int | None, ram: int | None) -> tuple[int, int, int]:
    """(prefetch, capacity, keep) of a :class:`PullStore`.

    A pair weighs the frames of the outputs its mode keeps, float32 at ``out_size`` (h, w);
    ``capacity`` is what ``cache_mb`` (None: a quarter of ``ram`` bytes, else DEFAULT_CACHE_MB)
    holds, but never less than a batch in flight per engine plus a little room; ``prefetch`` None
    means enough ahead to keep every engine busy.
    """
    mode = schedule.mode
    n_mid = math.ceil(schedule.factor) if mode != "s" else 0
    pair_bytes = 4 * 3 * out_size[0] * out_size[1] * (n_mid + (2 if mode != "t" else 0))
    if cache_mb is None:
        cache_bytes = ram // 4 if ram else DEFAULT_CACHE_MB << 20
    else:
        cache_bytes = cache_mb << 20
    in_flight = sum(e.batch_size for e in engines)
    capacity = max(in_flight + 2, cache_bytes // max(1, pair_bytes))
    if prefetch is None:
        prefetch = 2 * in_flight
    return min(prefetch, capacity), capacity, max(2, in_flight)


@dataclass
class StoreStats:
    """Counters of a pull store, for diagnostics (``STAR(..., stats=...)``).

    computed: network passes run (pairs computed, prefetched ones included); by_engine: how many
    of them each engine ran, in the order of ``device`` (one entry per device); held: pairs in memory
    now (computed or waiting); peak_held: the most ever held at once; freed: pairs dropped because
    every output frame that needs them was delivered.
    """

    computed: int = 0
    by_engine: list[int] = field(default_factory=list)
    held: int = 0
    peak_held: int = 0
    freed: int = 0


@dataclass
class _Entry:
    key: Pair
    future: Future = field(default_factory=Future)
    frames: tuple[Any, Any] | None = None  # the two source frames
    frame_futures: tuple[Future, Future] | None = None  # prefetch: frames still being fetched
    demanded: bool = False
    state: str = "pending"  # pending -> running -> done
    last_used: float = 0.0
    released: bool = False  # every output frame that needs it was delivered

    def ready(self) -> bool:
        if self.frames is not None:
            return True
        return self.frame_futures is not None and all(f.done() for f in self.frame_futures)


class PullStore:
    """Thread-safe store of computed pairs for a host that asks in any order (see the module docstring).

    Args:
        engines: one :class:`vsstar.engine.StarEngine` per device.
        schedule: the clip's frame schedule.
        fetch: ``fetch(k)`` -> a Future of source frame k (for prefetching).
        load: ``load(frame, dst)`` copies a source frame into a (3, H, W) float32 tensor.
        size: (height, width) of the source frames.
        is_cut: ``is_cut(k, frame_k, frame_k1)`` decides boundary k|k+1 from the frames.
        known_cut: what is known of boundary k without frames (None: not decided yet).
        prefetch: pairs computed ahead of the requests; capacity: most pairs held at once (least
            recently used computed pairs go first); keep: delivered pairs kept for hosts that ask twice.
    """

    def __init__(self, engines: Sequence[Any], schedule: FrameSchedule, fetch: Callable[[int], Future],
                 load: Callable[[Any, torch.Tensor], None], size: tuple[int, int],
                 is_cut: Callable[[int, Any, Any], bool], known_cut: Callable[[int], bool | None],
                 prefetch: int, capacity: int, keep: int, stats: StoreStats | None = None,
                 exact_time: bool = False) -> None:
        self.engines = list(engines)
        self.exact_time = exact_time
        self.fetch = fetch
        self.load = load
        self.size = size
        self.schedule = schedule
        self.is_cut = is_cut
        self.known_cut = known_cut
        self.prefetch = prefetch
        self.capacity = capacity
        self.entries: dict[Pair, _Entry] = {}
        self.finished: deque[_Entry] = deque()
        self.keep = keep
        self.delivered_frames = bytearray(schedule.num_outputs or 0)
        self.stats = stats if stats is not None else StoreStats()
        self.stats.by_engine = [0] * len(self.engines)
        self.cond = threading.Condition()
        # One worker thread per engine (device); each takes its batches from the same pending pairs.
        self.workers: list[threading.Thread | None] = [None] * len(self.engines)
        self.closing = False
        self.serving = 0  # host requests inside serve() now
        self.idle_exit_s = 2.0
        self._bufs: list[dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]]] = \
            [{} for _ in self.engines]
        _LIVE_STORES.add(self)

    # -- called from host threads
    def get(self, key: Pair, frames: tuple[Any, Any], j: int) -> PairParts:
        """The parts of pair ``key`` (whose frames are ``frames``) for output frame j, computing it if needed."""
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
        # Ask the host for the frames of the pairs ahead outside our lock: its callbacks take it.
        for p in ahead:
            futs = (self.fetch(p.key[0]), self.fetch(p.key[1]))
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
        """Output frame j (of source frame ``source``) was handed out: free what no frame needs."""
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

    @contextlib.contextmanager
    def serve(self) -> Iterator[None]:
        """Marks a host request in progress (close() waits for them to leave)."""
        with self.cond:
            self.serving += 1
        try:
            yield
        finally:
            with self.cond:
                self.serving -= 1
                self.cond.notify_all()

    def close(self, timeout: float = 30.0) -> None:
        """Stop the workers and wait for the frame requests in flight.

        Run at interpreter exit: a VapourSynth thread that completes a request after Python began
        finalising cannot take the GIL and would abort the process ("terminate called without an
        active exception"), and so would a worker thread torn down inside torch. Requests still
        waiting for a pair fail (nobody will read them), so the threads serving them come free,
        then the workers finish their batch and the prefetch requests complete.
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

    # -- bookkeeping (under the lock)
    def _add(self, key: Pair) -> _Entry:
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

    def _reserve_prefetch(self, j: int, current: Pair) -> list[_Entry]:
        """Entries for the next ``prefetch`` pairs after output frame j's, within the store's capacity."""
        if self.prefetch <= 0:
            return []
        budget = self.capacity - len(self.entries)
        n_out = self.schedule.num_outputs or 0
        # Assume no cut where none is known yet; a prefetched pair found to straddle one is dropped.
        guess = lambda b: bool(self.known_cut(b))  # noqa: E731
        out: list[_Entry] = []
        seen: set[Pair] = set()
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

    def _evict(self) -> None:
        extra = len(self.entries) - self.capacity
        if extra <= 0:
            return
        done = [e for e in self.entries.values() if e.state == "done"]
        for e in sorted(done, key=lambda e: (not e.released, e.last_used))[:extra]:
            self._drop(e)

    # -- worker threads
    def _pick(self, engine: Any) -> list[_Entry]:
        """The next batch for ``engine`` (under the lock): marked running, so no other engine takes it."""
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
            first, second = self._buffers(i, len(todo), *self.size)
            for n, e in enumerate(todo):
                self.load(e.frames[0], first[n])
                self.load(e.frames[1], second[n])
            out = self.engines[i].process_times(first, second, [pair_times(self.schedule, e.key) for e in todo],
                                                exact_time=self.exact_time)
            for n, e in enumerate(todo):
                self._finish(e, out.parts(n), i)
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

    def _buffers(self, i: int, n: int, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Reusable input batches of worker i (pinned on CUDA so the upload can overlap)."""
        key = (n, h, w)
        if key not in self._bufs[i]:
            pin = self.engines[i].device.type == "cuda"
            self._bufs[i] = {key: tuple(
                torch.empty((n, 3, h, w), dtype=torch.float32, pin_memory=pin) for _ in range(2))}
        return self._bufs[i][key]

    def _finish(self, e: _Entry, parts: PairParts | None, engine: int = 0) -> None:
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


# Stores whose workers or frame requests may be alive, closed at interpreter exit (see close()).
_LIVE_STORES: "weakref.WeakSet[PullStore]" = weakref.WeakSet()


@atexit.register
def _close_stores() -> None:
    for store in list(_LIVE_STORES):
        store.close()


# ---------------------------------------------------------------------------------- push
@dataclass
class Ready(Generic[F]):
    """An output frame of a push store, in output order.

    frame: the schedule's decision (index, source frame, pair, part, t, repeat, cut...).
    image: the pair's part, or the source frame itself where nothing is computed (mode "t").
    pts / dur: start and duration in the ticks of the pushed frames (None when unknown).
    """

    frame: OutputFrame
    image: Any
    pts: int | None
    dur: int | None

    @property
    def interpolated(self) -> bool:
        """Synthesised between two source frames (not a source frame, not a repeat)."""
        return self.frame.synthesised


@dataclass
class _In:
    image: Any
    pts: int | None
    dur: int | None


RunPairs = Callable[[list[tuple[Any, Any]], list[list[Fraction]]], Sequence[PairParts]]


class PushStore(Generic[F]):
    """Frames in, in order; decided output frames out, with their timestamps (see the module docstring).

    Args:
        run: ``run(pairs, times)`` -> one :class:`PairParts` per pair (the host's engine call).
        mode, factor: as :class:`vsstar.schedule.FrameSchedule` (factor None = the mode's default).
        batch: pairs per ``run`` call; the store holds about ``batch + 1`` frames.
        is_cut: ``is_cut(first, second)`` for consecutive frames; None = no scene cuts.
        frame_duration: ticks of one source frame where neither a duration nor the next timestamp says.
    """

    def __init__(self, run: RunPairs, mode: str = "st", factor: Any = None, batch: int = 1,
                 is_cut: Callable[[Any, Any], bool] | None = None, frame_duration: int | None = None) -> None:
        if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
            raise ValueError(f"batch must be an int >= 1, got {batch!r}")
        self.run = run
        self.mode = FrameSchedule(None, mode, factor).mode
        self.factor = FrameSchedule(None, mode, factor).factor
        self.batch = batch
        self.is_cut = is_cut
        self.frame_duration = frame_duration
        self.reset()

    def reset(self) -> None:
        """Drop held frames and results (flush, seek, stop); frame numbers start again from 0."""
        self.frames: dict[int, _In] = {}
        self.count = 0
        self.next_out = 0
        self.results: dict[Pair, PairParts] = {}
        self.cuts: dict[int, bool] = {}
        self._last_interval: int | None = None

    @property
    def held(self) -> int:
        """Source frames held now."""
        return len(self.frames)

    def push(self, image: F, pts: int | None = None, dur: int | None = None) -> list[Ready]:
        """Add the next source frame; returns the output frames that became ready (possibly none)."""
        self.frames[self.count] = _In(image, pts, dur)
        self.count += 1
        if len(self.frames) < self.batch + 1:
            return []
        return self._process(final=False)

    def finish(self) -> list[Ready]:
        """The stream ended (EOS, caps change): every output frame still due; the store is empty afterwards."""
        out = self._process(final=True) if self.frames else []
        self.reset()
        return out

    # -- internals
    def _cut(self, k: int) -> bool:
        if self.is_cut is None:
            return False
        if k not in self.cuts:
            self.cuts[k] = bool(self.is_cut(self.frames[k].image, self.frames[k + 1].image))
        return self.cuts[k]

    def _known_cut(self, k: int) -> bool | None:
        return False if self.is_cut is None else self.cuts.get(k)

    def _process(self, final: bool) -> list[Ready]:
        """Every output frame that can be decided now (all of them when ``final``)."""
        sched = FrameSchedule(self.count if final else None, self.mode, self.factor)
        js = []
        j = self.next_out
        while True:
            k = math.floor(sched.time_of(j))
            # A frame's outputs are decided once its right neighbour arrived (or the stream ended);
            # one whose span ends past that neighbour also waits for the frame after it (its time).
            if k >= self.count or (not final and (k + 1 >= self.count or sched.time_of(j + 1) > k + 1
                                                  and k + 2 >= self.count)):
                break
            js.append(j)
            j += 1
        todo = [p for p in sched.pairs(js, self._cut) if p not in self.results]
        for chunk in batches(todo, self.batch):
            res = self.run([(self.frames[a].image, self.frames[b].image) for a, b in chunk],
                           [pair_times(sched, p) for p in chunk])
            if len(res) != len(chunk):
                raise RuntimeError(f"run returned {len(res)} results for {len(chunk)} pairs")
            self.results.update(zip(chunk, res))
        out = [self._emit(sched, sched.output(j, self._cut)) for j in js]
        if js:
            self.next_out = js[-1] + 1
        self._forget(sched)
        return out

    def _forget(self, sched: FrameSchedule) -> None:
        """Drop the results and frames no later output frame can need (the stream may go on or end)."""
        scheds = (sched, FrameSchedule(self.count, self.mode, self.factor))
        done = [p for p in self.results
                if all(j < self.next_out for s in scheds for j in s.outputs_of(p, self._known_cut))]
        for p in done:
            del self.results[p]
        k = math.floor(sched.time_of(self.next_out))
        keep = k
        if k > 0 and self._known_cut(k - 1) is None:
            keep = k - 1  # the cut before frame k may still decide its pair
        for s in scheds:
            for j in s.outputs_at(k, k + 1):
                for a, _b in s.candidate_pairs(j, self._known_cut) - set(self.results):
                    keep = min(keep, a)
        for i in [i for i in self.frames if i < keep]:
            del self.frames[i]

    def _ticks(self, i: int) -> int | None:
        """Ticks of source interval i: to the next frame's timestamp, else frame i's duration, else
        the frame duration given, else the last interval seen."""
        a, b = self.frames[i], self.frames.get(i + 1)
        if b is not None and a.pts is not None and b.pts is not None and b.pts >= a.pts:
            self._last_interval = b.pts - a.pts
            return b.pts - a.pts
        if a.dur is not None:
            return a.dur
        return self.frame_duration or self._last_interval

    def _emit(self, sched: FrameSchedule, o: OutputFrame) -> Ready:
        k = o.source
        a = self.frames[k]
        img = a.image if o.pair is None else part_of(self.results[o.pair], o)
        step = self._ticks(k)
        if self.mode == "s":
            return Ready(o, img, a.pts, a.dur if a.dur is not None else step)
        if step is None:
            return Ready(o, img, a.pts, None)  # no way to know when it is due
        # Both ends of the frame's span, as ticks after frame k; one formula for the end of frame j
        # and the start of frame j + 1, so the durations tile the stream.
        x0, x1 = (x - k for x in sched.span(o.index))
        start = int(x0 * step)
        if x1 <= 1:
            end = int(x1 * step)
        else:  # the span reaches into the next interval (its frame k + 2 is here, see _process)
            nxt = self._ticks(k + 1)
            end = step + int((x1 - 1) * (step if nxt is None else nxt))
        return Ready(o, img, None if a.pts is None else a.pts + start, end - start)
