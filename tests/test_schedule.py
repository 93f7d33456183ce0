"""The frame schedule (vsstar.schedule): which pair feeds each output frame, in every mode."""
from __future__ import annotations

from fractions import Fraction

import pytest

from vsstar.schedule import FrameSchedule, batches, no_cuts


def cuts_at(*ks: int):
    return lambda k: k in ks


def table(n: int, mode: str, cut=no_cuts) -> list[tuple]:
    """(pair, part, repeat) of every output frame: a compact picture of the schedule."""
    s = FrameSchedule(n, mode)
    return [(o.pair, o.part, o.repeat) for o in (s.output(j, cut) for j in range(s.num_outputs))]


def passes(n: int, mode: str, cut=no_cuts) -> int:
    s = FrameSchedule(n, mode)
    return len(s.pairs(range(s.num_outputs), cut))


# ------------------------------------------------------------------------------------ mode st
def test_st_plain_clip() -> None:
    assert table(3, "st") == [
        ((0, 1), "first", False), ((0, 1), "mid", False),
        ((1, 2), "first", False), ((1, 2), "mid", False),
        ((1, 2), "second", False), ((1, 2), "second", True),  # last frame from the last pair, repeated
    ]
    s = FrameSchedule(3, "st")
    assert s.num_outputs == 6
    assert [s.time_of(j) for j in range(6)] == [Fraction(j, 2) for j in range(6)]
    assert s.output(3).t == Fraction(1, 2) and s.output(3).synthesised and s.output(3).between


def test_st_cut_in_the_middle_never_crosses_it() -> None:
    # cut between 2 and 3 of 5 frames: frame 2 comes from (1, 2), frame 3 from (3, 4); slot 5 repeats frame 2
    got = table(5, "st", cuts_at(2))
    assert got[4] == ((1, 2), "second", False)
    assert got[5] == ((1, 2), "second", True)
    assert got[6] == ((3, 4), "first", False)
    s = FrameSchedule(5, "st")
    assert s.output(5, cuts_at(2)).cut and not s.output(3, cuts_at(2)).cut
    assert s.pairs(range(10), cuts_at(2)) == [(0, 1), (1, 2), (3, 4)]
    for j in range(10):
        p = s.output(j, cuts_at(2)).pair
        assert not (p[0] <= 2 < p[1])  # no pass straddles the cut


def test_st_cut_after_first_frame_and_before_last_frame() -> None:
    assert table(3, "st", cuts_at(0))[:2] == [((0, 0), "first", False), ((0, 0), "first", True)]
    got = table(3, "st", cuts_at(1))
    assert got[2:] == [((0, 1), "second", False), ((0, 1), "second", True),
                       ((2, 2), "first", False), ((2, 2), "first", True)]


def test_st_adjacent_cuts_isolate_a_frame() -> None:
    got = table(5, "st", cuts_at(1, 2))
    assert got[4:6] == [((2, 2), "first", False), ((2, 2), "first", True)]
    assert passes(5, "st", cuts_at(1, 2)) == 3  # (0, 1), (2, 2), (3, 4)
    # every boundary a cut: every frame alone
    assert passes(4, "st", lambda k: True) == 4


@pytest.mark.parametrize("mode", ["st", "s", "t"])
def test_one_and_two_frame_clips(mode: str) -> None:
    one = table(1, mode)
    if mode == "t":
        assert one == [(None, None, False), (None, None, True)]
    elif mode == "s":
        assert one == [((0, 0), "first", False)]
    else:
        assert one == [((0, 0), "first", False), ((0, 0), "first", True)]
    two = table(2, mode)
    assert len(two) == (2 if mode == "s" else 4)
    assert {p for p, _, _ in two} - {None} == ({(0, 1)} if mode != "t" else {(0, 1)})
    if mode != "t":
        assert two[-1][1] == "second"
    # two frames with a cut between them: each alone
    cut = table(2, mode, cuts_at(0))
    if mode == "t":
        assert all(p is None for p, _, _ in cut)
    else:
        assert {p for p, _, _ in cut} == {(0, 0), (1, 1)}


def test_empty_clip_has_no_outputs() -> None:
    assert FrameSchedule(0, "st").num_outputs == 0
    with pytest.raises(ValueError, match="j must be"):
        FrameSchedule(0, "st").output(0)


# ------------------------------------------------------------------------------------ mode t
def test_t_passes_sources_and_repeats_at_cuts() -> None:
    got = table(4, "t", cuts_at(1))
    assert got == [(None, None, False), ((0, 1), "mid", False), (None, None, False), (None, None, True),
                   (None, None, False), ((2, 3), "mid", False), (None, None, False), (None, None, True)]
    s = FrameSchedule(4, "t")
    assert [s.output(j).source for j in range(8)] == [0, 0, 1, 1, 2, 2, 3, 3]


# ------------------------------------------------------------------------------------ mode s
def test_s_runs_disjoint_pairs() -> None:
    assert table(4, "s") == [((0, 1), "first", False), ((0, 1), "second", False),
                             ((2, 3), "first", False), ((2, 3), "second", False)]
    # odd length: the last frame takes its other neighbour
    assert table(5, "s")[4] == ((3, 4), "second", False)
    for n in (1, 2, 3, 10, 11, 100):
        assert passes(n, "s") == (n + 1) // 2
        assert passes(n, "st") == max(1, n - 1)


def test_s_partner_across_a_cut_takes_the_other_neighbour_or_itself() -> None:
    got = table(6, "s", cuts_at(2))  # disjoint pair (2, 3) straddles the cut
    assert got[2] == ((1, 2), "second", False)
    assert got[3] == ((3, 4), "first", False)
    got = table(6, "s", cuts_at(1, 2))  # frame 2 alone; 3 takes (3, 4)
    assert got[2] == ((2, 2), "first", False)
    got = table(3, "s", cuts_at(0, 1))
    assert [p for p, _, _ in got] == [(0, 0), (1, 1), (2, 2)]
    assert passes(6, "s", cuts_at(4)) == 4  # (0, 1), (2, 3), (3, 4), (5, 5)
    s = FrameSchedule(8, "s")
    for cut in (cuts_at(0), cuts_at(3), cuts_at(6), cuts_at(2, 3, 4)):
        for j in range(8):
            p = s.output(j, cut).pair
            assert j in p and not any(p[0] <= c < p[1] for c in range(8) if cut(c))


def test_s_has_no_in_between_frames() -> None:
    s = FrameSchedule(5, "s")
    assert s.num_outputs == 5 and not any(s.output(j).between for j in range(5))


# ------------------------------------------------------------------------------------ planning
@pytest.mark.parametrize("mode", ["st", "s", "t"])
def test_outputs_of_is_the_inverse_of_output(mode: str) -> None:
    for cut in (no_cuts, cuts_at(0), cuts_at(3), cuts_at(2, 3), cuts_at(6), lambda k: True):
        s = FrameSchedule(7, mode)
        users: dict = {}
        for j in range(s.num_outputs):
            p = s.output(j, cut).pair
            if p is not None:
                users.setdefault(p, set()).add(j)
        for p, js in users.items():
            assert s.outputs_of(p, cut) == js


def test_outputs_of_with_unknown_cuts_is_a_superset() -> None:
    s = FrameSchedule(10, "st")
    unknown = lambda k: None  # noqa: E731
    got = s.outputs_of((3, 4), unknown)
    assert got == {6, 7, 8, 9}
    for cut in (no_cuts, cuts_at(4), cuts_at(2, 4)):
        assert s.outputs_of((3, 4), cut) <= got
    assert s.candidate_pairs(8, unknown) == {(4, 5), (3, 4), (4, 4)}
    assert s.candidate_pairs(8, lambda k: {3: True}.get(k)) == {(4, 5), (4, 4)}


def test_streams_without_a_known_end() -> None:
    s = FrameSchedule(None, "st")
    assert s.num_outputs is None
    assert s.output(201).pair == (100, 101)
    assert FrameSchedule(101, "st").output(201).repeat


def test_factor_is_the_output_rate() -> None:
    s = FrameSchedule(4, "st", factor=(2, 3))  # 2 outputs per 3 source frames: times 0, 1.5, 3
    assert s.num_outputs == 3
    assert [s.time_of(j) for j in range(3)] == [0, Fraction(3, 2), 3]
    assert s.output(1).pair == (1, 2) and s.output(1).part == "mid"
    assert FrameSchedule(4, "t", factor=(1, 1)).num_outputs == 4


@pytest.mark.parametrize("kw, word", [
    ({"num_frames": -1}, "num_frames"), ({"num_frames": 3, "mode": "x"}, "mode"),
    ({"num_frames": 3, "factor": (1, 0)}, "factor"), ({"num_frames": 3, "factor": (0, 1)}, "factor"),
    ({"num_frames": 3, "mode": "s", "factor": (2, 1)}, "factor"), ({"num_frames": 3, "factor": "x"}, "factor"),
])
def test_bad_arguments(kw, word) -> None:
    with pytest.raises(ValueError, match=word):
        FrameSchedule(**kw)


def test_cuts_are_asked_only_where_they_matter() -> None:
    asked = []

    def cut(k):
        asked.append(k)
        return False

    s = FrameSchedule(10, "st")
    s.output(6, cut)
    assert asked == [3]  # SR of frame 3 from (3, 4): only the boundary 3|4
    asked.clear()
    s.output(19, cut)  # the last slot: no boundary after the last frame
    assert 9 not in asked


def test_batches() -> None:
    assert list(batches([(0, 1), (1, 2), (2, 3)], 2)) == [[(0, 1), (1, 2)], [(2, 3)]]
    with pytest.raises(ValueError, match="size"):
        list(batches([], 0))


# ------------------------------------------------------------------------------------ spans (durations)
@pytest.mark.parametrize("n, factor", [(10, Fraction(7, 3)), (4, Fraction(4)), (9, Fraction(5, 2)), (1, Fraction(2)),
                                       (7, Fraction(1)), (3, Fraction(1001, 1000)), (10, Fraction(1024))])
def test_spans_tile_the_clip_exactly(n: int, factor: Fraction) -> None:
    s = FrameSchedule(n, "s" if factor == 1 else "st", factor)
    spans = [s.span(j) for j in range(s.num_outputs)]
    assert spans[0][0] == 0 and spans[-1][1] == n  # the last frame ends with the clip, not after it
    for (a0, a1), (b0, b1) in zip(spans, spans[1:]):
        assert a1 == b0  # no gap, no overlap
    assert all(lo < hi for lo, hi in spans)
    assert sum(hi - lo for lo, hi in spans) == n
    assert all(lo == s.time_of(j) for j, (lo, _) in enumerate(spans))


def test_span_of_seven_thirds() -> None:
    # 10 frames x 7/3 = 23.33: 24 output frames, the last one covers a third of a frame interval
    s = FrameSchedule(10, "st", (7, 3))
    assert s.num_outputs == 24
    assert s.span(0) == (0, Fraction(3, 7))
    assert s.span(23) == (Fraction(69, 7), 10) and 10 - Fraction(69, 7) == Fraction(1, 7)


def test_span_of_an_open_stream_and_bad_j() -> None:
    s = FrameSchedule(None, "st", (5, 2))
    assert s.span(10**6) == (Fraction(4 * 10**5), Fraction(10**6 + 1) * Fraction(2, 5))
    with pytest.raises(ValueError, match="j must be"):
        FrameSchedule(3, "st").span(6)
    with pytest.raises(ValueError, match="j must be"):
        s.span(-1)
