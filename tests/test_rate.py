"""Any output frame rate: the factor arguments, the schedule's times and the recursive midpoints."""
from __future__ import annotations

from fractions import Fraction as Fr

import pytest
import torch

from vsstar.engine import StarEngine
from vsstar.schedule import (FrameSchedule, dyadic_path, dyadic_time, max_time_error, no_cuts,
                             output_factor)

from support import tiny_net

FAST_FLOW = {"n_outer": 2, "n_sor": 4}
MAX_F = 1024  # vsstar.schedule.MAX_FACTOR, written out so a change of the bound is seen here
FACTORS = [Fr(2), Fr(5, 2), Fr(3), Fr(4), Fr(60000, 1001) / Fr(24000, 1001)]


@pytest.mark.parametrize("factor", FACTORS, ids=str)
@pytest.mark.parametrize("cuts", [(), (0,), (3,), (2, 6), (7,)], ids=str)
def test_times_pairs_and_cuts(factor: Fr, cuts: tuple[int, ...]) -> None:
    n = 9
    s = FrameSchedule(n, "st", factor)
    cut = lambda k: k in cuts  # noqa: E731
    assert s.num_outputs == -(-n * factor.numerator // factor.denominator)
    seen_t = set()
    for j in range(s.num_outputs):
        o = s.output(j, cut)
        time = Fr(j) / factor
        k = int(time)
        assert o.time == time and o.source == k
        if time == k:
            assert not o.between and o.part in ("first", "second") and k in o.pair
        elif k + 1 < n and k not in cuts:
            assert o.pair == (k, k + 1) and o.part == "mid" and o.t == time - k
            seen_t.add(o.t)
        else:  # across a cut or after the last frame: the left frame repeats
            assert o.repeat and o.part in ("first", "second") and k in o.pair and o.cut == (k in cuts)
            assert all(not cut(p) for p in range(o.pair[0], o.pair[1]))
    # The times that occur are exactly the fractional parts of j / factor.
    assert seen_t <= {Fr(j) / factor % 1 for j in range(factor.numerator)}


def test_five_halves_layout() -> None:
    s = FrameSchedule(4, "st", (5, 2))
    got = [(o.source, o.part, o.t) for o in map(s.output, range(s.num_outputs))]
    assert got == [(0, "first", 0), (0, "mid", Fr(2, 5)), (0, "mid", Fr(4, 5)), (1, "mid", Fr(1, 5)),
                   (1, "mid", Fr(3, 5)), (2, "first", 0), (2, "mid", Fr(2, 5)), (2, "mid", Fr(4, 5)),
                   (3, "second", 0), (3, "second", 0)]
    assert s.num_outputs == 10
    # After the last frame the slots repeat it.
    assert s.output(9).repeat and s.output(8).repeat


def test_factor_two_unchanged() -> None:
    s = FrameSchedule(5, "st")
    assert s.num_outputs == 10
    assert [s.output(j).part for j in range(4)] == ["first", "mid", "first", "mid"]
    assert s.output(1).t == Fr(1, 2)


@pytest.mark.parametrize("kw, name", [
    ({"factor_num": 0}, "factor_num"), ({"factor_num": -2}, "factor_num"), ({"factor_den": 0}, "factor_den"),
    ({"factor_num": 2.5}, "factor_num"), ({"factor_num": 1, "factor_den": 2}, "factor_num/factor_den"),
    ({"fps_num": 0, "source_fps": Fr(24)}, "fps_num"), ({"fps_num": 60, "fps_den": -1, "source_fps": Fr(24)}, "fps_den"),
    ({"fps_num": 60, "source_fps": None}, "variable"), ({"fps_num": 60, "source_fps": Fr(0)}, "variable"),
    ({"fps_num": 12, "source_fps": Fr(24)}, "fps_num/fps_den"), ({"fps_den": 1}, "fps_num"),
])
def test_bad_factor_arguments(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        output_factor(**kw)


def test_output_factor() -> None:
    assert output_factor() == 2
    assert output_factor(5, 2) == Fr(5, 2)
    assert output_factor(fps_num=60000, fps_den=1001, source_fps=Fr(24000, 1001)) == Fr(5, 2)
    assert output_factor(3, 1, fps_num=120, source_fps=Fr(30)) == 4  # fps overrides the factor


def test_schedule_rejects_rate_change_in_mode_s() -> None:
    with pytest.raises(ValueError, match="factor"):
        FrameSchedule(4, "s", (2, 1))


def test_dyadic_rounding() -> None:
    assert dyadic_time(Fr(1, 2)) == Fr(1, 2)
    assert dyadic_time(Fr(2, 5)) == Fr(3, 8)
    assert dyadic_time(Fr(1, 5), 2) == Fr(1, 4)
    assert dyadic_time(Fr(1, 100)) == Fr(1, 8)  # stays a synthesised frame
    assert dyadic_path(Fr(3, 8)) == [(0, 1), (0, Fr(1, 2)), (Fr(1, 4), Fr(1, 2))]
    assert max_time_error(2) == 0 and max_time_error(4) == 0
    assert max_time_error(3) == abs(Fr(1, 3) - Fr(3, 8))
    assert max_time_error(Fr(5, 2)) == Fr(1, 20)
    assert max_time_error(Fr(5, 2), 2) == Fr(1, 10)  # 2/5 -> 1/2


def test_recursive_midpoints_run_each_pass_once() -> None:
    eng = StarEngine(tiny_net(2), scale=2, mode="st", device="cpu", flow_options=FAST_FLOW, batch_size=4)
    g = torch.Generator().manual_seed(0)
    a = torch.rand(2, 3, 16, 16, generator=g)
    b = a.roll(1, 3)
    out = eng.process_times(a, b, [[Fr(1, 4), Fr(1, 2), Fr(3, 4)], [Fr(2, 5), Fr(4, 5)]])
    # pair 0: (0,1), (0,1/2), (1/2,1); pair 1: 2/5 -> 3/8: (0,1), (0,1/2), (1/4,1/2); 4/5 -> 3/4: (1/2,1)
    assert eng.stats.pairs == 3 + 4
    assert eng.stats.calls == 3  # one batched call per recursion level
    assert set(out.mids[0]) == {Fr(1, 4), Fr(1, 2), Fr(3, 4)} and set(out.mids[1]) == {Fr(2, 5), Fr(4, 5)}
    assert out.sr_first.shape == (2, 3, 32, 32) and out.mids[1][Fr(2, 5)].shape == (3, 32, 32)
    # t = 1/2 is the plain pass's middle frame; the recursion uses the pass's LR middle frame.
    plain = eng.process(a, b)
    torch.testing.assert_close(out.mids[0][Fr(1, 2)], plain.mid[0])
    torch.testing.assert_close(out.sr_first, plain.sr_first)
    lr_mid = eng.process_times(a[:1], b[:1], [[]])  # no times: just the pair
    assert lr_mid.mids == [{}]


def test_exact_time_refuses_non_dyadic() -> None:
    eng = StarEngine(tiny_net(2), scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    a = torch.rand(1, 3, 16, 16)
    out = eng.process_times(a, a, [[Fr(1, 4)]], exact_time=True)
    assert out.mids[0][Fr(1, 4)].shape == (3, 16, 16) and out.sr_first is None
    with pytest.raises(ValueError, match="exact_time"):
        eng.process_times(a, a, [[Fr(2, 5)]], exact_time=True)


# ------------------------------------------------------------------------------------ the rate bound
def test_factor_bound() -> None:
    from vsstar.schedule import MAX_FACTOR

    assert output_factor(MAX_FACTOR, 1) == MAX_FACTOR
    assert output_factor(MAX_FACTOR * 1000 - 17, 1000) == Fr(MAX_FACTOR * 1000 - 17, 1000)  # a huge numerator
    assert output_factor(fps_num=MAX_FACTOR * 25, source_fps=Fr(25)) == MAX_FACTOR
    assert FrameSchedule(3, "st", MAX_FACTOR).num_outputs == 3 * MAX_FACTOR


@pytest.mark.parametrize("kw, name", [
    ({"factor_num": 1025}, "factor_num/factor_den"),
    ({"factor_num": 10**9}, "factor_num/factor_den"),
    ({"factor_num": MAX_F * 1000 + 1, "factor_den": 1000}, "factor_num/factor_den"),
    ({"fps_num": 10**9, "source_fps": Fr(25)}, "fps_num/fps_den"),  # `--fps 1e9` on a 25 fps clip
    ({"fps_num": 25 * MAX_F + 1, "source_fps": Fr(25)}, "fps_num/fps_den"),
])
def test_rates_beyond_the_bound_get_one_line(kw: dict, name: str) -> None:
    with pytest.raises(ValueError, match=f"{name}.*at most 1024") as info:
        output_factor(**kw)
    assert "\n" not in str(info.value)


def test_schedule_refuses_a_factor_beyond_the_bound() -> None:
    with pytest.raises(ValueError, match="factor must be at most 1024"):
        FrameSchedule(3, "st", 1025)


def test_made_time_is_what_process_times_synthesises() -> None:
    half = StarEngine(tiny_net(2), scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    timed = StarEngine(tiny_net(2, time_input=True), scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    assert half.made_time(Fr(2, 5)) == Fr(3, 8) and half.made_time(Fr(1, 3)) == Fr(3, 8)
    assert half.made_time(Fr(1, 2)) == Fr(1, 2) and half.made_time(Fr(2, 5), 2) == Fr(1, 2)
    assert timed.made_time(Fr(2, 5)) == Fr(2, 5)
    # The rounded time's frame is the one process_times hands back for the time asked.
    a = torch.rand(1, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    b = a.roll(2, 3)
    asked = half.process_times(a, b, [[Fr(2, 5)]]).mids[0][Fr(2, 5)]
    made = half.process_times(a, b, [[Fr(3, 8)]]).mids[0][Fr(3, 8)]
    torch.testing.assert_close(asked, made)
