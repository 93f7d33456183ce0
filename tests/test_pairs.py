"""The pair store's push interface (vsstar.pairs.PushStore) and the pair times, with a stand-in engine.

The stand-in tags its outputs with the frame numbers and times it was given, so the tests can check
which pair made which output frame, that every pair runs once, and the output timestamps. The pull
interface (random order, prefetch, several devices) is tested through the VapourSynth filter
(test_vs*.py).
"""
from __future__ import annotations

from fractions import Fraction as Fr

import pytest

from vsstar.pairs import PairParts, PushStore, pair_times
from vsstar.schedule import FrameSchedule

NS = 1_000_000_000


class Tags:
    """run(pairs, times): SR of frame k is ("sr", k), the in-between of (a, b) at t is ("mid", a, t)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[tuple[int, int]], list[list[Fr]]]] = []

    def __call__(self, pairs, times):
        self.calls.append((list(pairs), [list(t) for t in times]))
        return [PairParts(("sr", a), {t: ("mid", a, t) for t in ts}, ("sr", b)) for (a, b), ts in zip(pairs, times)]

    @property
    def pairs(self):
        return [p for ps, _ in self.calls for p in ps]


def feed(store, n: int, fps: Fr = Fr(30), with_dur: bool = True):
    out = []
    for k in range(n):
        pts = int(k / fps * NS)
        dur = int((k + 1) / fps * NS) - pts if with_dur else None
        out += store.push(k, pts, dur)
    return out + store.finish()


def test_pair_times() -> None:
    s = FrameSchedule(5, "st", (5, 2))
    assert pair_times(s, (0, 1)) == [Fr(2, 5), Fr(4, 5)]
    assert pair_times(s, (1, 2)) == [Fr(1, 5), Fr(3, 5)]
    assert pair_times(s, (2, 2)) == []
    assert pair_times(FrameSchedule(4, "s"), (0, 1)) == []
    assert pair_times(FrameSchedule(4, "st"), (2, 3)) == [Fr(1, 2)]


@pytest.mark.parametrize("factor", [Fr(2), Fr(5, 2), Fr(7, 3), Fr(3, 2), Fr(4)], ids=str)
@pytest.mark.parametrize("cuts", [(), (0,), (3,), (1, 5)], ids=str)
@pytest.mark.parametrize("batch", [1, 3])
def test_push_frames_times_and_cuts(factor: Fr, cuts: tuple[int, ...], batch: int) -> None:
    n = 7
    eng = Tags()
    store = PushStore(eng, "st", factor, batch, is_cut=lambda a, b: a in cuts)
    fps = Fr(24000, 1001)
    out = feed(store, n, fps)
    sched = FrameSchedule(n, "st", factor)
    assert [r.frame.index for r in out] == list(range(sched.num_outputs))
    src = [int(k / fps * NS) for k in range(n + 1)]
    for j, r in enumerate(out):
        x = Fr(j) / factor
        k = int(x)
        assert r.pts == src[k] + int((x - k) * (src[k + 1] - src[k]))
        if j + 1 < len(out):
            assert r.pts + r.dur == out[j + 1].pts  # durations tile the stream
        if x == k:
            assert r.image == ("sr", k) and not r.interpolated
        elif k + 1 < n and k not in cuts:
            assert r.image == ("mid", k, x - k) and r.interpolated
        else:
            assert r.image == ("sr", k) and r.frame.repeat
    # The last frame ends with the clip, never after it (N x factor not whole included).
    assert out[-1].pts + out[-1].dur == src[n]
    assert len(eng.pairs) == len(set(eng.pairs))  # every pair once
    assert all((k, k + 1) not in eng.pairs for k in cuts)
    assert all(len(ps) <= batch for ps, _ in eng.calls)
    for ps, times in eng.calls:
        assert times == [pair_times(sched, p) for p in ps]
    assert store.held == 0


def test_push_holds_at_most_batch_plus_one_frames_on_long_streams() -> None:
    eng = Tags()
    store = PushStore(eng, "st", None, 2, is_cut=lambda a, b: a % 7 == 3)
    n = 0
    for k in range(300):
        n += len(store.push(k, k, 1))
        assert store.held <= 3 and len(store.results) <= 3
    assert n + len(store.finish()) == 600


def test_push_mode_t_passes_frames_and_mode_s_keeps_times() -> None:
    eng = Tags()
    out = feed(PushStore(eng, "t", None, 2, is_cut=lambda a, b: a == 1), 4)
    assert [r.image for r in out] == [0, ("mid", 0, Fr(1, 2)), 1, 1, 2, ("mid", 2, Fr(1, 2)), 3, 3]
    assert eng.pairs == [(0, 1), (2, 3)]
    eng = Tags()
    out = feed(PushStore(eng, "s", None, 1), 5)
    assert [r.image for r in out] == [("sr", k) for k in range(5)]
    assert [r.pts for r in out] == [k * NS // 30 for k in range(5)]
    assert eng.pairs == [(0, 1), (2, 3), (3, 4)]


def test_push_reset_and_unknown_times() -> None:
    store = PushStore(Tags(), "st", None, 1)
    assert store.push(0, 0, 10) == []
    store.reset()
    out = store.push(7, 70, 10) + store.push(8, 80, 10) + store.finish()
    assert [r.pts for r in out] == [70, 75, 80, 85] and out[-1].dur == 5
    lone = PushStore(Tags(), "st", None, 1)
    out = lone.push(0) + lone.finish()
    assert len(out) == 2 and all(r.pts is None and r.dur is None for r in out)
    out = feed(PushStore(Tags(), "st", None, 1, frame_duration=40), 2, with_dur=False)
    assert out[-1].pts == NS // 30 + 20 and out[-1].dur == 20


def test_push_refuses_bad_arguments_and_short_results() -> None:
    with pytest.raises(ValueError, match="batch"):
        PushStore(Tags(), "st", None, 0)
    with pytest.raises(ValueError, match="mode"):
        PushStore(Tags(), "x")
    with pytest.raises(ValueError, match="factor"):
        PushStore(Tags(), "st", 5000)
    store = PushStore(lambda pairs, times: [], "st", None, 1)
    with pytest.raises(RuntimeError, match="0 results for 1 pairs"):
        store.push(0, 0, 1), store.push(1, 1, 1)


def test_pull_limits() -> None:
    from vsstar.pairs import DEFAULT_CACHE_MB, pull_limits

    class E:
        batch_size = 2

    st = FrameSchedule(10, "st", (5, 2))  # a pair keeps 2 SR frames and up to 3 in-between frames
    pair = 4 * 3 * 100 * 200 * 5
    assert pull_limits([E()], st, (100, 200), None, 1, None) == (4, max(4, (1 << 20) // pair), 2)
    assert pull_limits([E(), E()], st, (100, 200), 3, None, 400 * pair) == (3, 100, 4)
    assert pull_limits([E()], FrameSchedule(10, "s"), (10, 10), 50, None, None) == (
        50, (DEFAULT_CACHE_MB << 20) // (4 * 3 * 100 * 2), 2)
    # However small the budget, a batch in flight and a little room fit.
    assert pull_limits([E()], st, (1000, 1000), None, 1, None) == (4, 4, 2)
