"""vsstar.STAR at any output rate: frame count, fps, durations, props, pairs and times, cuts, VFR, errors."""
from __future__ import annotations

from fractions import Fraction as Fr

import numpy as np
import pytest

vs = pytest.importorskip("vapoursynth")

from vsstar.engine import StarEngine  # noqa: E402
from vsstar.schedule import dyadic_time  # noqa: E402
from vsstar.vs import STAR  # noqa: E402

from support import tiny_net  # noqa: E402
from test_vs import CUT_ARRAYS, CountingEngine, all_frames, arr, make_clip, pattern  # noqa: E402

FAST_FLOW = {"n_outer": 2, "n_sor": 4}


@pytest.fixture(scope="module")
def net():
    return tiny_net()


class Counting(CountingEngine):
    """CountingEngine that counts every network pass (the recursive ones too); an input that is no
    source frame (a synthesised LR middle frame) has index -1."""

    def process(self, first, second):
        return StarEngine.process(self, first, second)

    def _process_batch(self, a, b, lr_mid=False):
        with self.lock:
            for x, y in zip(a, b):
                key = (self._index(x), self._index(y))
                self.counts[key] = self.counts.get(key, 0) + 1
        return super()._process_batch(a, b, lr_mid)

    def _index(self, x) -> int:
        try:
            return super()._index(x)
        except StopIteration:
            return -1


def durations(clip) -> list[Fr]:
    return [Fr(f.props["_DurationNum"], f.props["_DurationDen"]) for f in clip.frames()]


@pytest.mark.parametrize("kw, factor", [
    ({}, Fr(2)), ({"factor_num": 5, "factor_den": 2}, Fr(5, 2)), ({"factor_num": 3}, Fr(3)),
    ({"factor_num": 4}, Fr(4)), ({"fps_num": 60000, "fps_den": 1001}, Fr(5, 2)),
], ids=["2", "5/2", "3", "4", "fps60000/1001"])
def test_rates_with_cut(net, kw: dict, factor: Fr) -> None:
    arrays = CUT_ARRAYS  # a cut between frames 2 and 3
    eng = Counting(net, arrays, "st", batch_size=2)
    out = STAR(make_clip(arrays, 24000, 1001), scale=2, engine=eng, **kw)
    n_out = -(-6 * factor.numerator // factor.denominator)
    assert out.num_frames == n_out
    assert Fr(out.fps.numerator, out.fps.denominator) == Fr(24000, 1001) * factor
    frames = list(out.frames())  # once: a second pass would recompute freed pairs
    assert [Fr(f.props["_DurationNum"], f.props["_DurationDen"]) for f in frames] == [Fr(1001, 24000) / factor] * n_out
    for j, f in enumerate(frames):
        time = Fr(j) / factor
        k = int(time)
        assert f.props["SourceIndex"] == k
        synth = time != k and k + 1 < 6 and k != 2
        assert f.props.get("STAR_Interpolated", 0) == int(time != k)
        if synth:  # the time actually made: this model knows only t = 1/2, so the rounded one
            assert f.props["STAR_Time"] == float(dyadic_time(time - k))
        else:
            assert "STAR_Time" not in f.props
        if time != k and k == 2:
            assert f.props["_SceneChangeNext"] == 1 and f.props["STAR_Repeat"] == 1
    # Every source pair across no cut runs once, the cut pair never (-1: a synthesised LR middle frame
    # as an input of a deeper midpoint pass).
    src_pairs = {p: v for p, v in eng.counts.items() if min(p) >= 0}
    assert set(src_pairs) == {(0, 1), (1, 2), (3, 4), (4, 5)} and all(v == 1 for v in src_pairs.values())


def test_repeats_across_the_cut_show_the_left_frame(net) -> None:
    eng = StarEngine(net, scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    out = STAR(make_clip(CUT_ARRAYS), scale=2, engine=eng, factor_num=3)
    got = all_frames(out)
    np.testing.assert_array_equal(got[7], got[6])  # time 7/3 and 8/3 repeat frame 2 (output 6)
    np.testing.assert_array_equal(got[8], got[6])
    assert not np.array_equal(got[9], got[6])


def test_half_time_equals_factor_two(net) -> None:
    arrays = [pattern(k) for k in range(3)]
    eng = StarEngine(net, scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    two = all_frames(STAR(make_clip(arrays), scale=2, engine=eng))
    four = all_frames(STAR(make_clip(arrays), scale=2, engine=eng, factor_num=4))
    for k in range(3):
        np.testing.assert_allclose(four[4 * k], two[2 * k], atol=1e-6)
    np.testing.assert_allclose(four[2], two[1], atol=1e-6)
    np.testing.assert_allclose(four[6], two[3], atol=1e-6)
    assert not np.allclose(four[1], four[2]) and not np.allclose(four[1], four[0])


def test_mode_t_factor_four_passes_sources_through(net) -> None:
    arrays = [pattern(k) for k in range(3)]
    eng = StarEngine(net, scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    out = STAR(make_clip(arrays, 30, 1), scale=2, mode="t", engine=eng, factor_num=4)
    assert out.num_frames == 12 and (out.fps.numerator, out.fps.denominator) == (120, 1)
    got = all_frames(out)
    for k in range(3):
        np.testing.assert_array_equal(got[4 * k], arrays[k])
    assert out.get_frame(3).props["STAR_Time"] == 0.75
    assert durations(out) == [Fr(1, 120)] * 12


def test_variable_rate_durations(net) -> None:
    arrays = [pattern(k) for k in range(3)]
    props = [{"_DurationNum": 1, "_DurationDen": 10}, {"_DurationNum": 1, "_DurationDen": 20},
             {"_DurationNum": 1, "_DurationDen": 5}]
    clip = make_clip(arrays, 0, 1, props)
    eng = StarEngine(net, scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    out = STAR(clip, scale=2, mode="t", engine=eng, factor_num=5, factor_den=2)
    assert out.num_frames == 8 and out.fps.numerator == 0
    d = durations(out)
    # Output j covers source time [0.4 j, min(0.4 (j+1), 3)); frame durations 1/10, 1/20, 1/5.
    src = [Fr(1, 10), Fr(1, 20), Fr(1, 5)]

    def at(x: Fr) -> Fr:
        k = min(int(x), 2)
        return sum(src[:k], Fr(0)) + (x - k) * src[k]

    assert d == [at(min(Fr(2, 5) * (j + 1), Fr(3))) - at(Fr(2, 5) * j) for j in range(8)]
    assert sum(d) == sum(src)  # the last frame ends with the clip
    assert sum(d[:5]) == Fr(1, 10) + Fr(1, 20)
    with pytest.raises(vs.Error, match="variable"):
        STAR(clip, scale=2, mode="t", engine=eng, fps_num=60)


@pytest.mark.parametrize("kw, word", [
    ({"factor_num": 0}, "factor_num"), ({"factor_den": -1}, "factor_den"), ({"factor_num": 2.5}, "factor_num"),
    ({"factor_num": 1, "factor_den": 2}, "at least 1"), ({"fps_num": 10}, "fps_num"),
    ({"fps_num": 60, "fps_den": 0}, "fps_den"), ({"factor_num": 5, "factor_den": 2, "exact_time": True}, "exact_time"),
])
def test_bad_rate_arguments(net, kw: dict, word: str) -> None:
    eng = StarEngine(net, scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    with pytest.raises(vs.Error, match=word):
        STAR(make_clip([pattern(0), pattern(1)]), scale=2, engine=eng, **kw)


def test_mode_s_keeps_the_rate(net) -> None:
    eng = StarEngine(net, scale=2, mode="s", device="cpu", flow_options=FAST_FLOW)
    with pytest.raises(vs.Error, match="mode 's'"):
        STAR(make_clip([pattern(0), pattern(1)]), scale=2, mode="s", engine=eng, factor_num=3)


def test_exact_time_accepts_dyadic_factors(net) -> None:
    eng = StarEngine(net, scale=2, mode="st", device="cpu", flow_options=FAST_FLOW)
    out = STAR(make_clip([pattern(0), pattern(1)]), scale=2, engine=eng, factor_num=4, exact_time=True)
    assert out.num_frames == 8 and out.get_frame(1).props["STAR_Time"] == 0.25


def test_time_model_synthesises_exact_times() -> None:
    """A model with time input: exact_time holds at any factor, each frame is the network at its own t,
    and every pair's t-independent work runs once."""
    timed = tiny_net(time_input=True)
    eng = StarEngine(timed, scale=2, mode="st", device="cpu", backend="torch", flow_options=FAST_FLOW)
    frames = [pattern(k) for k in range(3)]
    out = STAR(make_clip(frames), scale=2, engine=eng, factor_num=5, factor_den=2, exact_time=True,
               scene_change=False)
    assert out.num_frames == 8
    got = [(j, f.props.get("STAR_Time")) for j, f in enumerate(out.frames())]
    assert got == [(0, None), (1, 0.4), (2, 0.8), (3, 0.2), (4, 0.6), (5, None), (6, None), (7, None)]
    assert eng.stats.pairs == 2 and eng.stats.calls == 2  # pairs (0, 1) and (1, 2), once each
    # Frame 1 is the network at t = 2/5 exactly (not at a rounded 3/8).
    ref = eng.process_times(np.stack(frames[:1]), np.stack(frames[1:2]), [[Fr(2, 5)]])
    np.testing.assert_allclose(arr(out.get_frame(1)), ref.mids[0][Fr(2, 5)].numpy(), atol=1e-5)


# ------------------------------------------------------------------------------------ durations and the bound
@pytest.mark.parametrize("variable", [False, True], ids=["25fps", "vfr"])
def test_durations_add_up_to_the_clip(net, variable: bool) -> None:
    # 10 frames at 25 fps x 7/3 = 23.33 output frames: 24, the last one shorter, ending with the clip.
    arrays = [pattern(k) for k in range(10)]
    src = [Fr(1, 25)] * 10 if not variable else [Fr(1, 25 + 5 * (k % 3)) for k in range(10)]
    # A cut after every frame: every in-between frame repeats its left one, no network pass is needed.
    props = [{"_DurationNum": d.numerator, "_DurationDen": d.denominator, "_SceneChangeNext": 1} for d in src]
    clip = make_clip(arrays, 0 if variable else 25, 1, props)
    eng = StarEngine(net, scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    out = STAR(clip, scale=2, mode="t", engine=eng, factor_num=7, factor_den=3)
    assert out.num_frames == 24
    d = durations(out)
    assert sum(d) == sum(src) and (variable or sum(d) == Fr(70, 175))
    assert d[-1] == src[-1] * (10 - Fr(69, 7))  # a third of the interval of a whole output frame
    assert all(x > 0 for x in d)


def test_a_huge_allowed_factor_builds_quickly_and_a_larger_one_is_refused(net) -> None:
    import time

    clip = make_clip([pattern(k) for k in range(3)], 25, 1)
    eng = StarEngine(net, scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    t0 = time.perf_counter()
    # Factor 1023.999: a numerator of a million, which a clip list as long as the numerator could not build.
    out = STAR(clip, scale=2, mode="t", engine=eng, factor_num=1_023_999, factor_den=1000)
    built = time.perf_counter() - t0
    assert out.num_frames == -(-3 * 1_023_999 // 1000)
    assert Fr(out.fps.numerator, out.fps.denominator) == 25 * Fr(1_023_999, 1000)
    # About 1 ms here; a clip list as long as the numerator took 5 s and 283 MiB (and grows with it).
    assert built < 1.0, f"building took {built:.1f} s"
    f = out.get_frame(out.num_frames - 1)  # the last frame repeats the last source frame
    assert f.props["SourceIndex"] == 2 and f.props["STAR_Repeat"] == 1
    for kw in ({"factor_num": 1025}, {"fps_num": 10**9}, {"factor_num": 10**9}):
        with pytest.raises(vs.Error, match=r"^STAR: (factor_num/factor_den|fps_num/fps_den) .*at most 1024[^\n]*$"):
            STAR(clip, scale=2, mode="t", engine=eng, **kw)


def test_more_output_frames_than_vapoursynth_counts_is_refused(net) -> None:
    blank = vs.core.std.BlankClip(width=16, height=16, format=vs.RGBS, length=2**21 + 1, fpsnum=25)
    eng = StarEngine(net, scale=2, mode="t", device="cpu", flow_options=FAST_FLOW)
    with pytest.raises(vs.Error, match="more than VapourSynth can count"):
        STAR(blank, scale=2, mode="t", engine=eng, factor_num=1024)
    assert STAR(blank, scale=2, mode="t", engine=eng, factor_num=1023).num_frames == (2**21 + 1) * 1023
