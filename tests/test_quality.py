"""quality=: the tier of bundled weights model=None picks ("fast", the defaults, or "high"), on every host."""
from __future__ import annotations

import pytest

from vsstar import engine

FAST = {"scale": 4, "objective": "STAR", "config": {"time_input": False}}
HIGH = {**FAST, "quality": "high"}


@pytest.fixture
def fake(monkeypatch):
    def set_records(records):
        monkeypatch.setattr(engine, "_bundled", lambda: records)
    return set_records


def test_quality_picks_the_tier_and_fast_never_gets_a_high_file(fake) -> None:
    fake({"a_fast": FAST, "z_high": HIGH})
    assert engine.default_model_name(4) == "a_fast"
    assert engine.default_model_name(4, "st", "fast") == "a_fast"
    assert engine.default_model_name(4, "st", "high") == "z_high"
    fake({"z_high": HIGH})  # only a high file at x4: the fast tier has nothing there
    with pytest.raises(ValueError, match="model=None: no bundled weights for scale=4"):
        engine.default_model_name(4)


def test_quality_errors_name_the_argument(fake) -> None:
    fake({"a_fast": FAST, "z_high": HIGH, "b_fast_x2": {**FAST, "scale": 2}})
    with pytest.raises(ValueError, match=r"quality='high': no bundled weights of that tier for scale=2 .*z_high \(x4\)"):
        engine.default_model_name(2, "st", "high")
    with pytest.raises(ValueError, match=r"quality must be one of 'fast', 'high', got 'best'"):
        engine.default_model_name(4, "st", "best")
    with pytest.raises(ValueError, match=r"quality='high' picks the bundled weights; it cannot go with model="):
        engine.resolve_model("a_fast", 4, "st", "high")
    with pytest.raises(ValueError, match="quality must be one of"):
        engine.StarEngine(None, scale=4, device="cpu", quality=None)


def test_vs_quality_errors() -> None:
    vs = pytest.importorskip("vapoursynth")
    from vsstar.vs import STAR

    clip = vs.core.std.BlankClip(width=32, height=24, format=vs.RGBS, length=3)
    with pytest.raises(vs.Error, match="quality must be one of"):
        STAR(clip, scale=4, quality="best", device="cpu")
    with pytest.raises(vs.Error, match=r"quality='high': no bundled weights of that tier for scale=2"):
        STAR(clip, scale=2, quality="high", device="cpu")
    with pytest.raises(vs.Error, match=r"quality='high' picks the bundled weights; it cannot go with model="):
        STAR(clip, scale=4, model="star_st_x4", quality="high", device="cpu")
    from support import tiny_net
    eng = engine.StarEngine(tiny_net(4), scale=4, device="cpu")
    with pytest.raises(vs.Error, match="quality must be one of"):  # an unknown tier is named as such
        STAR(clip, scale=4, engine=eng, quality="best")
    with pytest.raises(vs.Error, match=r"quality='high' picks bundled weights; it cannot go with engine="):
        STAR(clip, scale=4, engine=eng, quality="high")


def test_cli_quality_option(capfd, tmp_path) -> None:
    pytest.importorskip("vapoursynth")
    from vsstar.cli import build_parser, main

    assert build_parser().parse_args(["enhance", "a.mp4", "b.mp4"]).quality == "fast"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["enhance", "a.mp4", "b.mp4", "--quality", "best"])
    assert "--quality: invalid choice: 'best'" in capfd.readouterr().err
    import shutil
    from pathlib import Path
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not found (apt: ffmpeg)")
    sample = Path(__file__).resolve().parent.parent / "samples" / "bikes_320x136.mp4"
    code = main(["enhance", str(sample), str(tmp_path / "o.mkv"), "--scale", "2", "--quality", "high", "--frames", "2"])
    err = capfd.readouterr().err
    assert code == 2 and "--quality high: no bundled weights of that tier for --scale 2" in err  # in flag words
    assert not (tmp_path / "o.mkv").exists()


def test_vs_quality_high_runs_the_bundled_quality_tier() -> None:
    vs = pytest.importorskip("vapoursynth")
    import numpy as np

    from test_vs import make_clip, pattern
    from vsstar.vs import STAR

    clip = make_clip([pattern(0), pattern(1), pattern(2)])
    fast_flow = {"n_outer": 2, "n_sor": 4}
    high = STAR(clip, scale=4, quality="high", device="cpu", backend="torch", flow_options=fast_flow)
    named = STAR(clip, scale=4, model="star_st_x4_hq", device="cpu", backend="torch", flow_options=fast_flow)
    assert (high.width, high.height, high.num_frames) == (128, 96, 6)
    for n in (0, 1):
        a, b = high.get_frame(n), named.get_frame(n)
        assert all(np.array_equal(np.asarray(a[p]), np.asarray(b[p])) for p in range(3))


def test_cli_quality_high_writes_the_x4_output(capfd, tmp_path) -> None:
    pytest.importorskip("vapoursynth")
    import shutil
    from pathlib import Path

    from support import probe
    from vsstar.cli import main
    if shutil.which("ffmpeg") is None or shutil.which("ffprobe") is None:
        pytest.skip("ffmpeg/ffprobe not found (apt: ffmpeg)")
    sample = Path(__file__).resolve().parent.parent / "samples" / "bikes_320x136.mp4"
    out = tmp_path / "hq.mp4"
    code = main(["enhance", str(sample), str(out), "--scale", "4", "--quality", "high", "--frames", "2",
                 "--fast-flow", "--no-audio", "--backend", "torch"])
    assert code == 0, capfd.readouterr().err
    assert probe(out)[:2] == (1280, 544)
