"""Frame scheduling of the starnet GStreamer element: vsstar.pairs.PushStore, which vsstar.gst.element
feeds, and the element's property mapping (vsstar.gst.props).

The store decides which frame pairs reach the engine and the timestamps of every output frame; it has
no GStreamer dependency, so these tests run everywhere. The engine here is a stand-in that tags its
outputs with the frame numbers it was given, which lets the tests check which pair produced which
output frame. Pipelines with the real engine: test_gstreamer.py.
"""
from __future__ import annotations

from fractions import Fraction
from types import SimpleNamespace
from typing import Any, NamedTuple

import numpy as np
import pytest

from vsstar import gst
from vsstar.pairs import PairParts, PushStore, Ready

NS = 1_000_000_000


class InFrame(NamedTuple):
    """A pushed frame: RGB (H, W, 3) uint8 and its pts/duration in ns (None if unknown)."""

    rgb: Any
    pts: int | None
    dur: int | None


class OutFrame(NamedTuple):
    """An output frame as the element writes it into a buffer."""

    rgb: Any
    pts: int | None
    dur: int | None
    interpolated: bool


class Store:
    """The element's use of PushStore: push(frame) and drain() at EOS, frames and results as above."""

    def __init__(self, run_pairs, mode: str = "st", batch: int = 1, is_cut=None, frame_duration=None,
                 factor=None) -> None:
        self.store = PushStore(run_pairs, mode, factor, batch, is_cut, frame_duration)

    @staticmethod
    def _out(rs: list[Ready]) -> list[OutFrame]:
        return [OutFrame(r.image, r.pts, r.dur, r.interpolated) for r in rs]

    def push(self, f: InFrame) -> list[OutFrame]:
        return self._out(self.store.push(f.rgb, f.pts, f.dur))

    def drain(self) -> list[OutFrame]:
        return self._out(self.store.finish())

    def reset(self) -> None:
        self.store.reset()

    @property
    def held(self) -> int:
        return self.store.held

    @property
    def results(self) -> dict:
        return self.store.results


def validate_settings(scale: int, mode: str, batch: int, thr: float) -> None:
    """The element's start-up check (properties onto vsstar.options.StarOptions) of these four properties."""
    gst.star_options({**gst.props.DEFAULTS, "scale": scale, "mode": mode, "batch-size": batch, "sc-threshold": thr})


sn = SimpleNamespace(InFrame=InFrame, PairScheduler=Store, PairResult=PairParts,
                     validate_settings=validate_settings, rate_factor=gst.rate_factor)


def frame(k: int) -> np.ndarray:
    """A 2x2 RGB frame whose pixels hold the frame number k."""
    return np.full((2, 2, 3), k, np.uint8)


class TagEngine:
    """Stand-in for the engine call: SR of frame k is filled with 10+k, the in-between of (a, b) with
    100 + 10*a + b; records every call so tests can count network passes."""

    def __init__(self, mode: str = "st") -> None:
        self.mode = mode
        self.calls: list[list[tuple[int, int]]] = []

    def __call__(self, pairs, times):
        ids = [(int(a[0, 0, 0]), int(b[0, 0, 0])) for a, b in pairs]
        self.calls.append(ids)
        out = []
        for (a, b), ts in zip(ids, times):
            sr = (lambda v: np.full((4, 4, 3), 10 + v, np.uint8)) if self.mode != "t" else None
            mid_shape = (2, 2, 3) if self.mode == "t" else (4, 4, 3)
            out.append(sn.PairResult(sr(a) if sr else None,
                                     {t: np.full(mid_shape, 100 + 10 * a + b, np.uint8) for t in ts},
                                     sr(b) if sr else None))
        return out

    @property
    def pairs(self):
        return [p for call in self.calls for p in call]


def feed(sched, n: int, fps: int = 30, with_dur: bool = True):
    """Push n frames with videotestsrc-style timestamps (floor of k/fps s); return all outputs."""
    out = []
    for k in range(n):
        pts = k * NS // fps
        dur = (k + 1) * NS // fps - pts if with_dur else None
        out += sched.push(sn.InFrame(frame(k), pts, dur))
    out += sched.drain()
    return out


def tags(outs):
    return [int(o.rgb[0, 0, 0]) for o in outs]


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("batch", [1, 3])
def test_st_mode_frames_timestamps_and_one_pass_per_pair(n, batch):
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", batch)
    outs = feed(sched, n)
    assert len(outs) == 2 * n
    # even outputs: SR of frame k; odd: in-between of (k, k+1), the last one repeats the last frame
    expect = []
    for k in range(n):
        expect += [10 + k, 100 + 10 * k + k + 1 if k < n - 1 else 10 + k]
    assert tags(outs) == expect
    assert [o.interpolated for o in outs] == [i % 2 == 1 and i < 2 * n - 1 for i in range(2 * n)]
    # each consecutive pair runs exactly once; a lone frame runs as the pair (0, 0)
    assert eng.pairs == ([(k, k + 1) for k in range(n - 1)] if n > 1 else [(0, 0)])
    assert all(len(c) <= batch for c in eng.calls)
    # timestamps: frame k keeps its time, the in-between sits at the (floored) midpoint, and the
    # durations tile the input's timeline without gaps or overlaps
    for k in range(n):
        pts_k, pts_next = k * NS // 30, (k + 1) * NS // 30
        assert outs[2 * k].pts == pts_k
        assert outs[2 * k + 1].pts == pts_k + (pts_next - pts_k) // 2
    for a, b in zip(outs, outs[1:]):
        assert a.pts + a.dur == b.pts
    assert outs[-1].pts + outs[-1].dur == n * NS // 30
    assert sched.held == 0


def test_batching_holds_at_most_batch_plus_one_frames():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", batch=4)
    released = []
    for k in range(9):
        released.append(len(sched.push(sn.InFrame(frame(k), k * 1000, 1000))))
        assert sched.held <= 5
    assert released == [0, 0, 0, 0, 8, 0, 0, 0, 8]
    assert eng.calls == [[(0, 1), (1, 2), (2, 3), (3, 4)], [(4, 5), (5, 6), (6, 7), (7, 8)]]
    tail = sched.drain()
    assert tags(tail) == [18, 18] and len(eng.calls) == 2  # SR of 8 reused, no new pass


def test_scene_cut_runs_self_pair_and_repeats_left_frame():
    eng = TagEngine()
    cut_between = {2}  # cut between frames 2 and 3
    sched = sn.PairScheduler(eng, "st", 1, is_cut=lambda a, b: int(a[0, 0, 0]) in cut_between)
    outs = feed(sched, 5)
    assert tags(outs) == [10, 101, 11, 112, 12, 12, 13, 134, 14, 14]
    assert outs[5].interpolated is False
    # frame 2 is super-resolved from the pair (1, 2): it never sees the other scene
    assert eng.pairs == [(0, 1), (1, 2), (3, 4)]


def test_scene_cut_before_last_frame_does_not_reuse_cross_cut_sr():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", 1, is_cut=lambda a, b: int(a[0, 0, 0]) == 1)
    outs = feed(sched, 3)
    assert tags(outs) == [10, 101, 11, 11, 12, 12]
    assert eng.pairs == [(0, 1), (2, 2)]


@pytest.mark.parametrize("batch", [1, 2, 4])
def test_frame_between_two_cuts_pairs_with_itself(batch):
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", batch, is_cut=lambda a, b: int(a[0, 0, 0]) in (1, 2))
    outs = feed(sched, 5)
    assert tags(outs) == [10, 101, 11, 11, 12, 12, 13, 134, 14, 14]
    assert sorted(eng.pairs) == [(0, 1), (2, 2), (3, 4)]


def test_mode_t_passes_input_frames_and_skips_cut_pairs():
    eng = TagEngine("t")
    sched = sn.PairScheduler(eng, "t", 2, is_cut=lambda a, b: int(a[0, 0, 0]) == 1)
    outs = feed(sched, 4)
    assert tags(outs) == [0, 101, 1, 1, 2, 123, 3, 3]
    assert eng.pairs == [(0, 1), (2, 3)]
    assert all(o.rgb.shape == (2, 2, 3) for o in outs)


@pytest.mark.parametrize("batch", [1, 2])
def test_mode_s_keeps_input_timestamps_and_runs_disjoint_pairs(batch):
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "s", batch)
    outs = feed(sched, 5)
    assert tags(outs) == [10, 11, 12, 13, 14]
    assert [o.pts for o in outs] == [k * NS // 30 for k in range(5)]
    assert [o.dur for o in outs] == [(k + 1) * NS // 30 - k * NS // 30 for k in range(5)]
    assert eng.pairs == [(0, 1), (2, 3), (3, 4)]  # about half the passes; the odd last frame takes (3, 4)


def test_mode_s_cut_between_disjoint_partners():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "s", 1, is_cut=lambda a, b: int(a[0, 0, 0]) == 2)
    outs = feed(sched, 6)
    assert tags(outs) == [10, 11, 12, 13, 14, 15]
    assert sorted(eng.pairs) == [(0, 1), (1, 2), (3, 4), (4, 5)]  # 2 takes its left neighbour, 3 its right one
    assert sched.held == 0


def test_results_and_frames_are_freed_on_long_streams():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", 2, is_cut=lambda a, b: int(a[0, 0, 0]) % 7 == 3)
    n = 0
    for k in range(200):
        n += len(sched.push(sn.InFrame(frame(k % 10), k, 1)))
        assert sched.held <= 3 and len(sched.results) <= 3
    assert n + len(sched.drain()) == 400


def test_reset_drops_held_frames():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", 1)
    assert sched.push(sn.InFrame(frame(0), 0, 10)) == []
    sched.reset()  # a flushing seek
    outs = sched.push(sn.InFrame(frame(7), 70, 10)) + sched.push(sn.InFrame(frame(8), 80, 10))
    outs += sched.drain()
    assert tags(outs) == [17, 178, 18, 18]
    assert [o.pts for o in outs] == [70, 75, 80, 85]
    assert all(0 not in p for p in eng.pairs)


def test_unknown_durations_fall_back_to_frame_rate_then_interval():
    eng = TagEngine()
    outs = feed(sn.PairScheduler(eng, "st", 1, frame_duration=40), 2, with_dur=False)
    assert outs[-1].pts == NS // 30 + 20 and outs[-1].dur == 20
    outs = feed(sn.PairScheduler(TagEngine(), "st", 1), 3, with_dur=False)
    step = 2 * NS // 30 - NS // 30
    assert outs[-1].pts == 2 * NS // 30 + step // 2
    lone = sn.PairScheduler(TagEngine(), "st", 1)
    outs = lone.push(sn.InFrame(frame(0), None, None)) + lone.drain()
    assert len(outs) == 2 and all(o.pts is None for o in outs)


@pytest.mark.parametrize("kw, word", [({"mode": "x"}, "mode"), ({"batch": 0}, "batch")])
def test_scheduler_rejects_bad_arguments(kw, word):
    args = {"run_pairs": TagEngine(), "mode": "st", "batch": 1}
    args.update(kw)
    with pytest.raises(ValueError, match=word):
        sn.PairScheduler(**args)


@pytest.mark.parametrize("scale, mode, batch, thr, word", [
    (3, "st", 1, -1.0, "'scale'"), (4, "slow", 1, -1.0, "'mode'"), (4, "st", 0, -1.0, "'batch-size'"),
    (4, "st", 65, -1.0, "'batch-size'"), (4, "st", 1, 1.5, "'sc-threshold'"),
])
def test_property_validation_names_the_property(scale, mode, batch, thr, word):
    with pytest.raises(ValueError, match=word):
        sn.validate_settings(scale, mode, batch, thr)
    sn.validate_settings(2, "t", 64, 0.3)  # and good values pass


# ------------------------------------------------------------------------------------------ any factor
class TimeEngine:
    """Stand-in for run_pairs at any factor: results are tags ("sr", k) and ("mid", a, t)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], list]] = []

    def __call__(self, pairs, times=None):
        ids = [(int(a[0, 0, 0]), int(b[0, 0, 0])) for a, b in pairs]
        self.calls.append((ids, times))
        return [sn.PairResult(("sr", a), {t: ("mid", a, t) for t in ts}, ("sr", b))
                for (a, b), ts in zip(ids, times)]


@pytest.mark.parametrize("factor", [Fraction(5, 2), Fraction(3), Fraction(4), Fraction(60000, 24000)], ids=str)
@pytest.mark.parametrize("cuts", [(), (0,), (3,), (1, 5)], ids=str)
@pytest.mark.parametrize("batch", [1, 2])
def test_any_factor_frames_timestamps_and_cuts(factor, cuts, batch):
    n = 7
    eng = TimeEngine()
    is_cut = lambda a, b: int(a[0, 0, 0]) in cuts  # noqa: E731
    sched = sn.PairScheduler(eng, "st", batch, is_cut, factor=factor)
    fps = Fraction(24000, 1001)
    out = []
    for k in range(n):
        pts = int(k / fps * NS)
        out += sched.push(sn.InFrame(frame(k), pts, int((k + 1) / fps * NS) - pts))
    out += sched.drain()
    assert len(out) == -(-n * factor.numerator // factor.denominator)
    src = [int(k / fps * NS) for k in range(n + 1)]
    for j, o in enumerate(out):
        x = Fraction(j) / factor
        k = int(x)
        assert o.pts == src[k] + int((x - k) * (src[k + 1] - src[k]))
        if j + 1 < len(out):
            assert o.pts + o.dur == out[j + 1].pts  # durations tile the stream exactly
        if x == k:
            assert o.rgb == ("sr", k) and not o.interpolated
        elif k + 1 < n and k not in cuts:
            assert o.rgb == ("mid", k, x - k) and o.interpolated
        else:
            assert o.rgb == ("sr", k) and not o.interpolated  # a repeat of the left frame
    pairs = [p for ids, _ in eng.calls for p in ids]
    assert len(pairs) == len(set(pairs))  # every pair once
    assert all((k, k + 1) not in pairs for k in cuts)
    for ids, times in eng.calls:
        for (a, b), ts in zip(ids, times):
            assert ts == ([Fraction(j) / factor - a for j in range(len(out)) if a < Fraction(j) / factor < b]
                          if b == a + 1 else [])


def test_factor_two_keeps_the_midpoint_call():
    eng = TagEngine()
    sched = sn.PairScheduler(eng, "st", 1, factor=Fraction(2))
    assert len(feed(sched, 3)) == 6


@pytest.mark.parametrize("args, word", [
    (("st", "0", "", None), "factor"), (("st", "1/2", "", None), "factor"), (("st", "x", "", None), "factor"),
    (("st", "", "60", None), "fps"), (("st", "", "60", Fraction(0)), "fps"), (("st", "", "10", Fraction(25)), "fps"),
    (("st", "", "-1", Fraction(25)), "fps"), (("s", "3", "", Fraction(25)), "factor"),
])
def test_rate_properties_errors(args, word):
    with pytest.raises(ValueError, match=word):
        sn.rate_factor(*args)


def test_rate_properties():
    assert sn.rate_factor("st", "2/1", "", None) == 2
    assert sn.rate_factor("st", "5/2", "", None) == Fraction(5, 2)
    assert sn.rate_factor("t", "2", "60000/1001", Fraction(24000, 1001)) == Fraction(5, 2)
    assert sn.rate_factor("s", "2/1", "", Fraction(25)) == 1  # the default factor does not apply to mode s


@pytest.mark.parametrize("factor", [Fraction(7, 3), Fraction(5, 2), Fraction(4)], ids=str)
@pytest.mark.parametrize("n", [1, 4, 10])
def test_durations_end_with_the_source(factor, n):
    """The last output frame ends where the last input frame ends, also where n x factor is not whole
    (the element used to let it run on by a frame interval's fraction)."""
    out = feed(sn.PairScheduler(TimeEngine(), "st", 2, factor=factor), n, fps=25)
    assert out[-1].pts + out[-1].dur == n * NS // 25
    assert sum(o.dur for o in out) == n * NS // 25


def test_rate_beyond_the_bound_names_the_property():
    from vsstar.schedule import MAX_FACTOR

    with pytest.raises(ValueError, match=r"property 'factor' .*at most"):
        sn.rate_factor("st", "1000000000", "", None)
    with pytest.raises(ValueError, match=r"property 'fps' .*at most"):
        sn.rate_factor("st", "", "1e9", Fraction(30))
    assert sn.rate_factor("st", str(MAX_FACTOR), "", None) == MAX_FACTOR  # the bound itself is fine
    # within the bound, but the output rate does not fit GStreamer's 32-bit framerate fraction
    with pytest.raises(ValueError, match=r"property 'factor'.*framerate"):
        sn.rate_factor("st", "2", "", Fraction(2**31 - 1))
    with pytest.raises(ValueError, match=r"property 'fps'.*framerate"):
        sn.rate_factor("t", "", "4294967296/4294967295", Fraction(1))


@pytest.mark.parametrize("fmt", ["RGB", "RGBx", "BGRx"])
def test_raw_rows_round_trip_with_padded_stride(fmt):
    """vsstar.gst.frames: a plane with padded rows (GStreamer's 4-byte alignment) -> RGB -> the same plane,
    channels in the format's order, padding 0 and the x byte 255."""
    from vsstar.gst import frames

    w, h = 3, 2
    bpp = frames.bytes_per_pixel(fmt)
    stride = (w * bpp + 3) // 4 * 4 + 4  # padded beyond the alignment too
    rgb = np.arange(h * w * 3, dtype=np.uint8).reshape(h, w, 3) + 1
    plane = bytearray(b"\xaa" * (stride * h))  # not zero: the padding must be written
    frames.write_rgb(memoryview(plane), fmt, w, h, stride, rgb)
    rows = np.frombuffer(bytes(plane), np.uint8).reshape(h, stride)
    px = rows[:, : w * bpp].reshape(h, w, bpp)
    assert np.array_equal(px[..., [2, 1, 0]] if fmt == "BGRx" else px[..., :3], rgb)
    if bpp == 4:
        assert (px[..., 3] == 255).all()
    assert (rows[:, w * bpp:] == 0).all()
    assert np.array_equal(frames.read_rgb(bytes(plane), fmt, w, h, stride), rgb)
    with pytest.raises(RuntimeError, match="caps say 3x2"):
        frames.write_rgb(memoryview(plane), fmt, w, h, stride, rgb[:, :2])
