"""The frame schedule: which network pass makes each output frame (no VapourSynth / GStreamer here).

Every host (the VapourSynth filter, the GStreamer element, training validation) asks this module
which frame pair (k, k+1) feeds an output frame, and does only the I/O around it. The rules:

* Output frame j shows source time ``j * factor_den / factor_num`` (default factor 2/1: output 2k
  is source frame k, output 2k+1 lies halfway between k and k+1). Mode "s" keeps the source rate
  (factor 1/1): output k is source frame k super-resolved.
* A frame at a source time is super-resolved (mode "st", "s") from a pair that contains it and does
  not cross a scene cut: in modes "st"/"t" its right pair (k, k+1), else its left pair (k-1, k),
  else the frame paired with itself (k, k). Mode "s" prefers the disjoint pairs (2i, 2i+1), so a
  clip of N frames needs about N/2 network passes instead of N-1; a frame whose disjoint partner is
  across a cut (or missing, at the end of an odd-length clip) takes its other neighbour, then itself.
  Mode "t" passes the source frame through.
* A frame between k and k+1 is synthesised from the pair (k, k+1) at the fraction t of the way.
  Across a scene cut, and after the last frame, it repeats the left frame k instead (super-resolved
  in mode "st", the source frame in mode "t"): the SR frame never sees the other scene.

Scene cuts are asked for lazily through a callable ``cut(k) -> bool`` (is there a cut between
frames k and k+1?), only for the boundaries a decision depends on, so hosts that detect cuts from
pixels do so only when needed. Where a host does not know a cut yet it may answer ``None``; the
functions that plan ahead (:meth:`FrameSchedule.outputs_of`, :meth:`FrameSchedule.candidate_pairs`)
then consider both answers.
"""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from math import ceil, floor
from typing import Callable, Iterable, Iterator, Sequence

__all__ = ["MODES", "PARTS", "Pair", "OutputFrame", "FrameSchedule", "batches", "no_cuts", "output_factor",
           "dyadic_time", "dyadic_path", "max_time_error", "DEFAULT_DEPTH", "MAX_FACTOR"]

#: Deepest midpoint recursion for models that synthesise only t = 1/2: times are rounded to
#: multiples of 1 / 2**DEFAULT_DEPTH (worst error 1/16 of a source frame interval).
DEFAULT_DEPTH = 3

#: Largest output/source frame-rate factor :func:`output_factor` accepts. Why 1024: output frames
#: are counted in 32-bit ints by VapourSynth (a clip has at most 2**31 - 1 frames), so at 1024 a
#: source of up to 2**21 frames (9.7 hours at 60 fps) still fits; and output timestamps are in
#: nanoseconds (GStreamer, the command's Matroska pipe), so at 1024 even a 1000 fps source gets
#: output frames 977 ns apart instead of colliding on one tick. Beyond it no model gains anything:
#: the in-between times are the same few fractions of a frame interval.
MAX_FACTOR = 1024

#: Output modes: space-time ("st"), space only ("s"), time only ("t").
MODES = ("st", "s", "t")
#: Index of each pair output in an engine result (sr_first, mid, sr_second).
PARTS = {"first": 0, "mid": 1, "second": 2}

Pair = tuple[int, int]
CutFn = Callable[[int], "bool | None"]


def no_cuts(_k: int) -> bool:
    """A cut oracle for clips without scene cuts."""
    return False


@dataclass(frozen=True)
class OutputFrame:
    """How output frame ``index`` is made.

    time: the source time it shows (``index * factor_den / factor_num``).
    source: the source frame at or before ``time``; its properties go on the output frame.
    pair: the pair (a, b) whose network pass makes it, or None when source frame ``source`` passes
        through untouched (mode "t").
    part: which output of that pass: "first" (a super-resolved), "second" (b super-resolved) or
        "mid" (synthesised between a and b); None when ``pair`` is None.
    t: for "mid", the fraction of the way from a to b, in (0, 1); 0 otherwise.
    between: ``time`` lies strictly between two source frames (an in-between slot).
    repeat: an in-between slot that repeats the left frame (scene cut or end of the clip).
    cut: a scene cut follows ``source`` (known for in-between slots; False otherwise).
    """

    index: int
    time: Fraction
    source: int
    pair: Pair | None
    part: str | None
    t: Fraction = Fraction(0)
    between: bool = False
    repeat: bool = False
    cut: bool = False

    @property
    def synthesised(self) -> bool:
        """A frame the network made between two source frames (not a repeat)."""
        return self.part == "mid"


class _Unknown(Exception):
    def __init__(self, k: int) -> None:
        super().__init__(k)
        self.k = k


class FrameSchedule:
    """The output frames of a clip of ``num_frames`` source frames in ``mode``.

    Args:
        num_frames: source frames; None for a stream whose end is not known yet (every frame the
            schedule refers to is then taken to exist; build a new schedule with the count at EOS).
        mode: "st", "s" or "t" (see the module docstring).
        factor: output frame rate / source frame rate as (num, den) or a Fraction; default 2/1 in
            modes "st" and "t" (any positive factor up to :data:`MAX_FACTOR` here; the hosts accept
            factors >= 1, see :func:`output_factor`); mode "s" keeps the rate (1/1).
    """

    def __init__(self, num_frames: int | None, mode: str = "st",
                 factor: tuple[int, int] | Fraction | None = None) -> None:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if num_frames is not None and (isinstance(num_frames, bool) or not isinstance(num_frames, int)
                                       or num_frames < 0):
            raise ValueError(f"num_frames must be an int >= 0 or None, got {num_frames!r}")
        if factor is None:
            factor = Fraction(1) if mode == "s" else Fraction(2)
        try:
            f = Fraction(*factor) if isinstance(factor, tuple) else Fraction(factor)
        except (TypeError, ValueError, ZeroDivisionError) as exc:
            raise ValueError(f"factor must be a positive (num, den) or Fraction, got {factor!r}") from exc
        if f <= 0:
            raise ValueError(f"factor must be positive, got {factor!r}")
        if f > MAX_FACTOR:
            raise ValueError(f"factor must be at most {MAX_FACTOR} (see vsstar.schedule.MAX_FACTOR), got {f}")
        if mode == "s" and f != 1:
            raise ValueError(f"factor must be 1 in mode 's' (super-resolution keeps the rate), got {f}")
        self.num_frames = num_frames
        self.mode = mode
        self.factor = f

    def __repr__(self) -> str:
        return f"FrameSchedule(num_frames={self.num_frames}, mode={self.mode!r}, factor={self.factor})"

    # ------------------------------------------------------------------ sizes and times
    @property
    def num_outputs(self) -> int | None:
        """Output frames: every j whose time ``j / factor`` lies before the end of the clip."""
        if self.num_frames is None:
            return None
        return ceil(self.num_frames * self.factor)

    def time_of(self, j: int) -> Fraction:
        """Source time shown by output frame j."""
        return Fraction(j) / self.factor

    def span(self, j: int) -> tuple[Fraction, Fraction]:
        """The source interval [start, end) output frame j covers, in source-frame units.

        ``[j / factor, min((j + 1) / factor, num_frames))``: the output frames tile the clip's
        time exactly (the last one ends with the clip), so a host gets each output frame's duration
        by mapping both ends through its own timeline. The one duration formula of the package.
        """
        self._check_output(j)
        start, end = Fraction(j) / self.factor, Fraction(j + 1) / self.factor
        if self.num_frames is not None:
            end = min(end, Fraction(self.num_frames))
        return start, end

    def outputs_at(self, start: Fraction | int, stop: Fraction | int) -> range:
        """Output frames whose time lies in [start, stop)."""
        lo = max(0, ceil(Fraction(start) * self.factor))
        hi = ceil(Fraction(stop) * self.factor)
        if self.num_outputs is not None:
            hi = min(hi, self.num_outputs)
        return range(lo, max(lo, hi))

    def _exists(self, k: int) -> bool:
        return k >= 0 and (self.num_frames is None or k < self.num_frames)

    # ------------------------------------------------------------------ the pair rule
    def sr_pair(self, k: int, cut: CutFn) -> tuple[Pair, str]:
        """The pair and its part ("first"/"second") that super-resolve source frame k."""
        if not self._exists(k):
            raise ValueError(f"k must be a source frame in [0, {self.num_frames}), got {k}")
        if self.mode == "s":
            partner = k + 1 if k % 2 == 0 else k - 1
            order = (partner, 2 * k - partner)  # the disjoint partner, then the other neighbour
        else:
            order = (k + 1, k - 1)
        for m in order:
            if self._exists(m):
                lo = min(k, m)
                if not cut(lo):
                    return (lo, lo + 1), ("first" if lo == k else "second")
        return (k, k), "first"  # alone in its scene: paired with itself

    def _check_output(self, j: object) -> None:
        if isinstance(j, bool) or not isinstance(j, int) or j < 0 or (
                self.num_outputs is not None and j >= self.num_outputs):
            raise ValueError(f"j must be an output frame in [0, {self.num_outputs}), got {j!r}")

    def output(self, j: int, cut: CutFn = no_cuts) -> OutputFrame:
        """How output frame j is made; ``cut(k)`` is asked only for the boundaries that matter."""
        self._check_output(j)
        time = self.time_of(j)
        k = floor(time)
        t = time - k
        if t == 0:
            if self.mode == "t":
                return OutputFrame(j, time, k, None, None)
            pair, part = self.sr_pair(k, cut)
            return OutputFrame(j, time, k, pair, part)
        is_cut = bool(self._exists(k + 1) and cut(k))
        if not self._exists(k + 1) or is_cut:
            if self.mode == "t":
                return OutputFrame(j, time, k, None, None, between=True, repeat=True, cut=is_cut)
            pair, part = self.sr_pair(k, cut)
            return OutputFrame(j, time, k, pair, part, between=True, repeat=True, cut=is_cut)
        return OutputFrame(j, time, k, (k, k + 1), "mid", t=t, between=True)

    # ------------------------------------------------------------------ planning
    def pairs(self, outputs: Iterable[int], cut: CutFn = no_cuts) -> list[Pair]:
        """The distinct pairs the given output frames need, in order of first use."""
        seen: dict[Pair, None] = {}
        for j in outputs:
            p = self.output(j, cut).pair
            if p is not None:
                seen.setdefault(p, None)
        return list(seen)

    def outputs_of(self, pair: Pair, cut: CutFn = no_cuts) -> frozenset[int]:
        """Output frames that need ``pair`` (for freeing it once they were delivered).

        Where ``cut`` answers None (not known yet) both answers are considered, so the set is then
        every output frame that might need the pair.
        """
        a, b = pair
        out = set()
        for j in self.outputs_at(a, b + 1):
            if pair in _possible(lambda c, j=j: self.output(j, c).pair, cut):
                out.add(j)
        return frozenset(out)

    def candidate_pairs(self, j: int, cut: CutFn = no_cuts) -> frozenset[Pair]:
        """Every pair output frame j might need given what ``cut`` knows (None = unknown)."""
        return frozenset(p for p in _possible(lambda c: self.output(j, c).pair, cut) if p is not None)


def _positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def output_factor(factor_num: int = 2, factor_den: int = 1, fps_num: int | None = None,
                  fps_den: int | None = None, source_fps: Fraction | tuple[int, int] | None = None) -> Fraction:
    """The output/source frame-rate factor from vs-rife style arguments (ValueError naming the bad one).

    ``fps_num/fps_den`` (the output rate) overrides ``factor_num/factor_den``; it needs a constant
    source rate ``source_fps`` (None or 0 = variable rate, which needs the factor). The factor must be
    at least 1 and at most :data:`MAX_FACTOR`.
    """
    _positive_int("factor_num", factor_num)
    _positive_int("factor_den", factor_den)
    if fps_num is None and fps_den is None:
        f = Fraction(factor_num, factor_den)
        if f < 1:
            raise ValueError(f"factor_num/factor_den must be at least 1, got {factor_num}/{factor_den}")
        return _bounded(f, f"factor_num/factor_den ({factor_num}/{factor_den})")
    if fps_num is None:
        raise ValueError("fps_num must be given with fps_den")
    _positive_int("fps_num", fps_num)
    fps_den = 1 if fps_den is None else _positive_int("fps_den", fps_den)
    src = Fraction(0) if source_fps is None else (
        Fraction(*source_fps) if isinstance(source_fps, tuple) and source_fps[1] != 0 else
        Fraction(0) if isinstance(source_fps, tuple) else Fraction(source_fps))
    if src <= 0:
        raise ValueError("fps_num/fps_den needs a clip with a constant frame rate; this one is variable "
                         "(fps 0/1): give factor_num/factor_den instead")
    f = Fraction(fps_num, fps_den) / src
    if f < 1:
        raise ValueError(f"fps_num/fps_den ({fps_num}/{fps_den}) must be at least the clip's rate ({src})")
    return _bounded(f, f"fps_num/fps_den ({fps_num}/{fps_den})", f" the clip's rate ({src})")


def _bounded(f: Fraction, name: str, of: str = " the source rate") -> Fraction:
    if f > MAX_FACTOR:
        raise ValueError(f"{name} must be at most {MAX_FACTOR} times{of} (output frame counters and "
                         f"nanosecond timestamps), got a factor of {float(f):.6g}")
    return f


def dyadic_time(t: Fraction, depth: int = DEFAULT_DEPTH) -> Fraction:
    """The multiple of 1/2**depth nearest t, kept inside (0, 1) (ties go to the smaller denominator).

    Models that synthesise only the midpoint reach it by recursive midpoints (:func:`dyadic_path`).
    """
    t = Fraction(t)
    if not 0 < t < 1:
        raise ValueError(f"t must be in (0, 1), got {t}")
    if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
        raise ValueError(f"depth must be an int >= 1, got {depth!r}")
    q = 2 ** depth
    best = min(range(1, q), key=lambda i: (abs(Fraction(i, q) - t), Fraction(i, q).denominator))
    return Fraction(best, q)


def dyadic_path(t: Fraction) -> list[tuple[Fraction, Fraction]]:
    """The intervals (lo, hi) whose midpoints lead to the dyadic time t, from (0, 1) down to the one
    whose midpoint is t. Each is one network pass on the (LR) frames at lo and hi."""
    t = Fraction(t)
    if not 0 < t < 1 or t.denominator & (t.denominator - 1):
        raise ValueError(f"t must be a dyadic fraction in (0, 1), got {t}")
    lo, hi = Fraction(0), Fraction(1)
    path = []
    while True:
        path.append((lo, hi))
        mid = (lo + hi) / 2
        if mid == t:
            return path
        lo, hi = (lo, mid) if t < mid else (mid, hi)


def max_time_error(factor: Fraction | tuple[int, int], depth: int = DEFAULT_DEPTH) -> Fraction:
    """Worst |t - dyadic_time(t)| over the in-between frames of ``factor`` (in source frame intervals)."""
    f = Fraction(*factor) if isinstance(factor, tuple) else Fraction(factor)
    worst = Fraction(0)
    for j in range(f.numerator):  # the times repeat every f.numerator output frames
        t = Fraction(j) / f % 1
        if t:
            worst = max(worst, abs(t - dyadic_time(t, depth)))
    return worst


def _possible(decide: Callable[[Callable[[int], bool]], object], cut: CutFn) -> set:
    """Results of ``decide`` over every answer to the cuts ``cut`` does not know (None)."""
    results: set = set()

    def explore(assumed: dict[int, bool]) -> None:
        def c(k: int) -> bool:
            if k in assumed:
                return assumed[k]
            v = cut(k)
            if v is None:
                raise _Unknown(k)
            return bool(v)

        try:
            results.add(decide(c))
        except _Unknown as u:
            explore({**assumed, u.k: False})
            explore({**assumed, u.k: True})

    explore({})
    return results


def batches(pairs: Sequence[Pair], size: int) -> Iterator[list[Pair]]:
    """Split pairs, in order, into network calls of at most ``size`` pairs."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    for i in range(0, len(pairs), size):
        yield list(pairs[i:i + size])
