"""vsstar.STAR at clip level with a tiny random-weight model: frame mapping, formats, props, cuts, caching."""
from __future__ import annotations

import random
import threading

import numpy as np
import pytest
import torch

vs = pytest.importorskip("vapoursynth")

from vsstar.engine import StarEngine  # noqa: E402
from vsstar.model import StarNet, save_weights  # noqa: E402
from vsstar.vs import STAR, StoreStats  # noqa: E402

from support import tiny_net  # noqa: E402

core = vs.core
FAST_FLOW = {"n_outer": 2, "n_sor": 4}
H, W = 24, 32


@pytest.fixture(scope="module")
def net() -> StarNet:
    return tiny_net()


def engine(net: StarNet, mode: str = "st", **kw) -> StarEngine:
    return StarEngine(net, scale=2, mode=mode, device="cpu", flow_options=FAST_FLOW, **kw)


class CountingEngine(StarEngine):
    """An engine that records which source frames each network pass was given (by content)."""

    def __init__(self, net: StarNet, arrays: list[np.ndarray], mode: str = "st", **kw) -> None:
        super().__init__(net, scale=2, mode=mode, device="cpu", flow_options=FAST_FLOW, **kw)
        self.arrays = arrays
        self.batches: list[int] = []
        self.lock = threading.Lock()
        self.counts: dict[tuple[int, int], int] = {}

    def _index(self, x) -> int:
        x = np.asarray(x)
        return next(k for k, a in enumerate(self.arrays) if np.array_equal(a, x))

    def process(self, first, second):
        with self.lock:
            self.batches.append(len(first))
            for a, b in zip(first, second):
                key = (self._index(a), self._index(b))
                self.counts[key] = self.counts.get(key, 0) + 1
        return super().process(first, second)


def pattern(k: int, scene: int = 0) -> np.ndarray:
    """Frame k of a smooth moving pattern (3, H, W) float32; scene 1 is a different, darker picture."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    if scene == 0:
        base = [np.sin((xx - k) / 3.0), np.cos((yy + k) / 4.0), np.sin((xx + yy - k) / 5.0)]
        return (0.35 * np.stack(base) + 0.5).astype(np.float32)
    base = [np.cos(xx / 2.0 + k), np.sin(yy / 2.0), np.cos((xx - yy) / 3.0)]
    return (0.08 * np.stack(base) + 0.12).astype(np.float32)


def make_clip(arrays: list[np.ndarray], fpsnum: int = 25, fpsden: int = 1, props: list[dict] | None = None):
    """An RGBS clip whose frames are the given (3, H, W) arrays (and extra per-frame props)."""
    blank = core.std.BlankClip(width=arrays[0].shape[2], height=arrays[0].shape[1], format=vs.RGBS,
                               length=len(arrays), fpsnum=fpsnum, fpsden=fpsden)

    def fill(n, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), arrays[n][p])
        out.props["SourceIndex"] = n
        for k, v in (props[n] if props else {}).items():
            out.props[k] = v
        return out

    return core.std.ModifyFrame(blank, blank, fill)


def arr(frame) -> np.ndarray:
    return np.stack([np.asarray(frame[p], dtype=np.float32) for p in range(frame.format.num_planes)])


def all_frames(clip) -> list[np.ndarray]:
    return [arr(clip.get_frame(i)) for i in range(clip.num_frames)]


@pytest.fixture(scope="module")
def five(net):
    """Source, reference engine outputs per pair, and the st output of a 5-frame clip."""
    src_arrays = [pattern(k) for k in range(5)]
    eng = engine(net)
    ref = [eng.process(src_arrays[k][None], src_arrays[k + 1][None]) for k in range(4)]
    return src_arrays, ref


# ------------------------------------------------------------------------------------------ mapping
def test_st_length_size_rate_props_and_content(net, five) -> None:
    src_arrays, ref = five
    clip = make_clip(src_arrays, props=[{"Foo": 10 + k} for k in range(5)])
    eng = CountingEngine(net, src_arrays)
    out = STAR(clip, scale=2, engine=eng)
    assert (out.num_frames, out.width, out.height, out.format.id) == (10, 2 * W, 2 * H, vs.RGBS)
    assert (out.fps.numerator, out.fps.denominator) == (50, 1)
    frames = [out.get_frame(i) for i in range(10)]
    for i, f in enumerate(frames):
        assert (f.props["_DurationNum"], f.props["_DurationDen"]) == (1, 50)
        assert f.props["Foo"] == 10 + i // 2 and f.props["SourceIndex"] == i // 2
        assert f.props.get("STAR_Interpolated", 0) == i % 2
    # frame 2k = frame k super-resolved, 2k+1 = the in-between frame of pair (k, k+1)
    for k in range(4):
        np.testing.assert_allclose(arr(frames[2 * k]), ref[k].sr_first[0].numpy(), atol=1e-5)
        np.testing.assert_allclose(arr(frames[2 * k + 1]), ref[k].mid[0].numpy(), atol=1e-5)
    # the last frame comes from the last pair, and the last in-between frame repeats it
    np.testing.assert_allclose(arr(frames[8]), ref[3].sr_second[0].numpy(), atol=1e-5)
    np.testing.assert_array_equal(arr(frames[9]), arr(frames[8]))
    assert frames[9].props["STAR_Repeat"] == 1 and frames[7].props["STAR_Repeat"] == 0
    assert eng.counts == {(k, k + 1): 1 for k in range(4)}


def test_mode_s(net, five) -> None:
    src_arrays, ref = five
    eng = CountingEngine(net, src_arrays, "s")
    out = STAR(make_clip(src_arrays), scale=2, mode="s", engine=eng)
    assert (out.num_frames, out.width, out.height) == (5, 2 * W, 2 * H)
    assert (out.fps.numerator, out.fps.denominator) == (25, 1)
    got = all_frames(out)
    # disjoint pairs (0, 1), (2, 3); the odd last frame takes its left neighbour
    expect = [ref[0].sr_first, ref[0].sr_second, ref[2].sr_first, ref[2].sr_second, ref[3].sr_second]
    for k in range(5):
        np.testing.assert_allclose(got[k], expect[k][0].numpy(), atol=1e-5)
    assert eng.counts == {(0, 1): 1, (2, 3): 1, (3, 4): 1}
    assert "STAR_Interpolated" not in out.get_frame(1).props


def test_mode_t(net) -> None:
    src_arrays = [pattern(k) for k in range(3)]
    eng = engine(net, "t")
    out = STAR(make_clip(src_arrays, 30000, 1001), scale=2, mode="t", engine=eng)
    assert (out.num_frames, out.width, out.height) == (6, W, H)
    assert (out.fps.numerator, out.fps.denominator) == (60000, 1001)
    got = all_frames(out)
    for k in range(3):
        np.testing.assert_array_equal(got[2 * k], src_arrays[k])  # originals pass through untouched
    mid = eng.process(src_arrays[0][None], src_arrays[1][None]).mid[0].numpy()
    np.testing.assert_allclose(got[1], mid, atol=1e-5)
    np.testing.assert_array_equal(got[5], got[4])
    f = out.get_frame(3)
    assert (f.props["_DurationNum"], f.props["_DurationDen"]) == (1001, 60000)


@pytest.mark.parametrize("mode, length", [("st", 2), ("s", 1), ("t", 2)])
def test_one_frame_clip(net, mode: str, length: int) -> None:
    eng = CountingEngine(net, [pattern(0)], mode)
    out = STAR(make_clip([pattern(0)]), scale=2, mode=mode, engine=eng)
    assert out.num_frames == length
    got = all_frames(out)
    assert all(np.isfinite(g).all() for g in got)
    if length == 2:
        np.testing.assert_array_equal(got[1], got[0])
    assert set(eng.counts) <= {(0, 0)}


# ------------------------------------------------------------------------------------------ scene cuts
CUT_ARRAYS = [pattern(0), pattern(1), pattern(2), pattern(0, 1), pattern(1, 1), pattern(2, 1)]


def cut_clip(props=None):
    return make_clip(CUT_ARRAYS, props=props)


def test_scene_cut_detected(net) -> None:
    eng = CountingEngine(net, CUT_ARRAYS)
    out = STAR(cut_clip(), scale=2, engine=eng)
    got = all_frames(out)
    np.testing.assert_array_equal(got[5], got[4])  # no synthesis across the cut: left frame repeated
    f5, f4, f6 = out.get_frame(5), out.get_frame(4), out.get_frame(6)
    assert f5.props["STAR_Repeat"] == 1 and f5.props["_SceneChangeNext"] == 1
    assert f4.props["_SceneChangeNext"] == 0
    counts = eng.counts
    assert (2, 3) not in counts  # frames 2 and 3 come from pairs inside their own scenes
    assert all(v == 1 for v in counts.values())
    assert not np.array_equal(got[3], got[2])  # ordinary in-between frames are synthesised


def test_scene_change_off_interpolates_across_cuts(net) -> None:
    eng = CountingEngine(net, CUT_ARRAYS)
    out = STAR(cut_clip(), scale=2, scene_change=False, engine=eng)
    assert out.get_frame(5).props["STAR_Repeat"] == 0
    assert (2, 3) in eng.counts


def test_scene_cut_from_props(net) -> None:
    # Identical content, but the source says frame 1 ends a scene; frame 3 says the detector's cut is not one.
    props = [{}, {"_SceneChangeNext": 1}, {"_SceneChangePrev": 1}, {"_SceneChangePrev": 0}, {}, {}]
    arrays = [pattern(0), pattern(1), pattern(2), pattern(0, 1), pattern(1, 1), pattern(2, 1)]
    out = STAR(make_clip(arrays, props=props), scale=2, engine=engine(net))
    assert out.get_frame(3).props["STAR_Repeat"] == 1  # cut between 1 and 2 from props
    assert out.get_frame(5).props["STAR_Repeat"] == 0  # _SceneChangePrev=0 on frame 3 overrides the detector


def test_sc_threshold_is_used(net) -> None:
    out = STAR(cut_clip(), scale=2, sc_threshold=1.0, engine=engine(net))
    assert out.get_frame(5).props["STAR_Repeat"] == 0


# ------------------------------------------------------------------------------------------ formats
def yuv_clip(fmt=vs.YUV420P8, n: int = 3):
    rgb = make_clip([pattern(k) for k in range(n)])
    return core.resize.Bicubic(rgb, format=fmt, matrix_s="709")


@pytest.mark.parametrize("fmt", [vs.YUV420P8, vs.YUV444P16, vs.GRAY8, vs.RGB24, vs.RGBH, vs.YUV422P10])
def test_formats_come_back_in_the_input_family(net, fmt) -> None:
    clip = yuv_clip(vs.YUV444PS) if fmt in (vs.YUV420P8, vs.YUV444P16, vs.YUV422P10, vs.GRAY8) else None
    if fmt in (vs.RGB24, vs.RGBH):
        src = core.resize.Point(make_clip([pattern(k) for k in range(3)]), format=fmt)
    elif fmt == vs.GRAY8:
        src = core.resize.Bicubic(clip, format=fmt)
    else:
        src = core.resize.Bicubic(clip, format=fmt)
    out = STAR(src, scale=2, engine=engine(net))
    assert out.format.id == fmt
    assert (out.width, out.height, out.num_frames) == (2 * W, 2 * H, 6)
    # content is the source's, upscaled: compare the mean of plane 0 with the source's
    a = np.asarray(src.get_frame(1)[0], dtype=np.float64).mean()
    b = np.asarray(out.get_frame(2)[0], dtype=np.float64).mean()
    peak = 1.0 if src.format.sample_type == vs.FLOAT else (1 << src.format.bits_per_sample) - 1
    assert abs(a - b) < 0.03 * peak


def test_yuv_round_trip_mode_t_keeps_originals(net) -> None:
    src = yuv_clip(vs.YUV420P8)
    out = STAR(src, scale=2, mode="t", engine=engine(net, "t"))
    assert out.format.id == vs.YUV420P8 and (out.width, out.height) == (W, H)
    for k in range(3):
        a, b = src.get_frame(k), out.get_frame(2 * k)
        for p in range(3):
            np.testing.assert_array_equal(np.asarray(a[p]), np.asarray(b[p]))
    f = out.get_frame(1)
    assert f.props["_Matrix"] == 1 and f.props["STAR_Interpolated"] == 1


def test_yuv_matrix_from_props(net) -> None:
    rgb = make_clip([pattern(k) for k in range(2)])
    src = core.resize.Bicubic(rgb, format=vs.YUV444P16, matrix_s="170m")  # _Matrix = 6
    out = STAR(src, scale=2, mode="s", engine=engine(net, "s"))
    assert out.get_frame(0).props["_Matrix"] == 6
    back = core.resize.Bicubic(out, format=vs.RGBS, matrix_in_s="170m")
    direct = STAR(rgb, scale=2, mode="s", engine=engine(net, "s"))
    # the same picture whichever way it came in (16-bit rounding only)
    np.testing.assert_allclose(arr(back.get_frame(0)), arr(direct.get_frame(0)), atol=5e-3)


# ------------------------------------------------------------------------------------------ caching
def test_batch_and_prefetch_match_one_by_one(net) -> None:
    arrays = [pattern(k) for k in range(7)]
    plain = STAR(make_clip(arrays), scale=2, prefetch=0, engine=engine(net, batch_size=1))
    eng = CountingEngine(net, arrays, batch_size=3)
    fast = STAR(make_clip(arrays), scale=2, prefetch=6, engine=eng)
    a, b = all_frames(plain), all_frames(fast)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x, y, atol=2e-5)
    assert all(v == 1 for v in eng.counts.values()) and len(eng.counts) == 6
    assert max(eng.batches) > 1  # prefetched pairs really were batched


def test_random_order_and_threads_compute_each_pair_once(net) -> None:
    arrays = [pattern(k) for k in range(7)]
    ref = all_frames(STAR(make_clip(arrays), scale=2, engine=engine(net)))
    eng = CountingEngine(net, arrays)
    out = STAR(make_clip(arrays), scale=2, engine=eng)
    order = list(range(out.num_frames))
    random.Random(5).shuffle(order)
    got: dict[int, np.ndarray] = {}
    errors: list[BaseException] = []

    def worker(items):
        try:
            for i in items:
                got[i] = arr(out.get_frame(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(order[i::4],)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors and not any(t.is_alive() for t in threads)
    assert eng.counts == {(k, k + 1): 1 for k in range(6)}
    for i in range(out.num_frames):
        np.testing.assert_allclose(got[i], ref[i], atol=2e-5)


def test_async_requests_from_vapoursynth(net) -> None:
    arrays = [pattern(k) for k in range(4)]
    eng = CountingEngine(net, arrays)
    out = STAR(make_clip(arrays), scale=2, engine=eng)
    futures = [out.get_frame_async(i) for i in reversed(range(out.num_frames))]
    frames = [f.result(timeout=120) for f in futures]
    assert len(frames) == 8
    assert eng.counts == {(0, 1): 1, (1, 2): 1, (2, 3): 1}


# ------------------------------------------------------------------------------------------ errors
def test_errors_name_the_argument(net, tmp_path) -> None:
    clip = make_clip([pattern(k) for k in range(2)])
    cases = [
        (dict(clip="not a clip"), "clip"),
        (dict(mode="x"), "mode"),
        (dict(scale=3), "scale"),
        (dict(scale=4), "scale"),  # x2 model
        (dict(batch_size=0), "batch_size"),
        (dict(tile=3), "tile"),
        (dict(sc_threshold=2), "sc_threshold"),
        (dict(prefetch=-1), "prefetch"),
        (dict(model="definitely-not-a-model"), "model"),
    ]
    for kw, name in cases:
        args = {"clip": clip, "scale": 2, "model": net, "flow_options": FAST_FLOW, **kw}
        with pytest.raises(vs.Error, match=name):
            STAR(**args)
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    with pytest.raises(vs.Error, match="model"):
        STAR(clip, scale=2, model=str(bad))
    if not torch.cuda.is_available():
        with pytest.raises(vs.Error, match="device"):
            STAR(clip, scale=2, model=net, device="cuda")


def test_variable_format_and_tiny_clips(net) -> None:
    a = core.std.BlankClip(width=32, height=24, format=vs.RGBS, length=2)
    b = core.std.BlankClip(width=40, height=24, format=vs.RGBS, length=2)
    with pytest.raises(vs.Error, match="clip.*constant"):
        STAR(core.std.Splice([a, b], mismatch=True), scale=2, engine=engine(net))
    with pytest.raises(vs.Error, match="at least"):
        STAR(core.std.BlankClip(width=4, height=4, format=vs.RGBS, length=2), scale=2, engine=engine(net))


def test_failure_inside_the_network_is_reported_not_hung(net, monkeypatch) -> None:
    eng = engine(net)

    def boom(*a, **k):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(eng, "process", boom)
    out = STAR(make_clip([pattern(k) for k in range(3)]), scale=2, engine=eng)
    with pytest.raises(vs.Error, match="simulated device failure"):
        out.get_frame(0)
    with pytest.raises(vs.Error, match="simulated device failure"):
        out.get_frame(3)


def test_model_path_argument(net, tmp_path) -> None:
    path = tmp_path / "tiny.safetensors"
    save_weights(net, path)
    clip = make_clip([pattern(k) for k in range(2)])
    a = STAR(clip, scale=2, model=str(path), flow_options=FAST_FLOW)
    b = STAR(clip, scale=2, engine=engine(net))
    np.testing.assert_allclose(arr(a.get_frame(1)), arr(b.get_frame(1)), atol=1e-6)


def test_default_model_is_the_bundled_one_for_the_scale() -> None:
    from vsstar.model import bundled_models

    models = bundled_models()
    scales = sorted({m.get("scale") for m in models.values()})
    if not scales:
        pytest.skip("no bundled weights in vsstar/weights/")
    scale = scales[0]
    out = STAR(make_clip([pattern(k) for k in range(2)]), scale=scale, flow_options=FAST_FLOW, device="cpu")
    assert (out.width, out.height, out.num_frames) == (W * scale, H * scale, 4)
    got = arr(out.get_frame(1))
    assert np.isfinite(got).all() and 0.0 <= got.min() and got.max() <= 1.0


# ------------------------------------------------------------------------------------------ memory
def test_memory_stays_flat_on_a_long_clip(net, one_torch_thread) -> None:
    n = 400
    base = core.std.BlankClip(width=8, height=8, format=vs.RGBS, length=n, color=[0.2, 0.5, 0.7])
    eng = StarEngine(net, scale=2, device="cpu", batch_size=2, flow_options={"n_outer": 1, "n_sor": 1})
    stats = StoreStats()
    out = STAR(base, scale=2, engine=eng, scene_change=False, stats=stats)
    for j in range(out.num_frames):
        out.get_frame(j)
    # prefetch (2 x batch) + the pair in use + the window kept for hosts that ask twice, never the whole clip
    assert stats.computed == n - 1
    assert stats.peak_held <= 2 * 2 + 1 + 2 + 2, stats
    assert stats.freed >= n - 1 - 8
    before = eng.stats.pairs
    out.get_frame(out.num_frames - 3)  # asked again right away: still in the window
    assert eng.stats.pairs == before


def test_mode_s_runs_about_half_the_passes(net, one_torch_thread) -> None:
    n = 9
    base = make_clip([pattern(k) for k in range(n)])
    eng = engine(net, "s")
    out = STAR(base, scale=2, mode="s", engine=eng)
    all_frames(out)
    assert eng.stats.pairs == (n + 1) // 2
    st = engine(net)
    all_frames(STAR(base, scale=2, engine=st))
    assert st.stats.pairs == n - 1


def test_cache_mb_bounds_the_store_for_random_access(net, one_torch_thread) -> None:
    arrays = [pattern(k % 7) + 0.001 * k for k in range(30)]
    stats = StoreStats()
    # one pair in mode st weighs 3 HR frames of 48x64x3 float32 (108 KiB): 1 MiB holds 9 pairs
    out = STAR(make_clip(arrays), scale=2, engine=engine(net), cache_mb=1, scene_change=False, stats=stats)
    order = list(range(out.num_frames))
    random.Random(1).shuffle(order)
    for j in order[:30]:
        out.get_frame(j)
    assert stats.peak_held <= 9
