"""The element's frame store: input frames in stream order, timed output frames out (no GStreamer).

Which pair makes each output frame is :class:`vsstar.schedule.FrameSchedule`'s decision, as for
``vsstar.STAR``; :class:`PairScheduler` only buffers frames, batches the pairs for the engine and
times the output frames in nanoseconds from the input buffers' timestamps.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Callable, Dict, List, Optional, Tuple

from vsstar.schedule import MODES, FrameSchedule, batches

__all__ = ["InFrame", "OutFrame", "PairResult", "PairScheduler", "RunPairs", "IsCut"]


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
