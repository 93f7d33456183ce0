"""vsstar.media: frame times, raw formats, the raw-video Matroska writer (read back by ffmpeg), encoder choice."""
from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction as F

import numpy as np
import pytest

from vsstar import media

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="needs ffmpeg and ffprobe")


def test_timeline_times_within_pairs() -> None:
    tl = media.Timeline((F(0), F(1, 25), F(3, 25), F(7, 25)), F(8, 25))
    assert tl.at(1, F(1, 2)) == F(2, 25) and tl.at(3, F(1, 2)) == F(15, 50)  # the last pair ends at `end`
    assert tl.at(2, F(1, 4)) == F(3, 25) + F(1, 25)  # any t within a pair, for rates other than x2 later
    assert tl.output_times("s") == [F(0), F(1, 25), F(3, 25), F(7, 25)]
    st = tl.output_times("st")
    assert st == [F(0), F(1, 50), F(1, 25), F(2, 25), F(3, 25), F(5, 25), F(7, 25), F(15, 50)]
    assert tl.output_times("t") == st
    # 5/2: output j at source time 2j/5, inside its own pair (VFR aware)
    assert tl.output_times("st", F(5, 2))[:4] == [F(0), tl.at(0, F(2, 5)), tl.at(0, F(4, 5)), tl.at(1, F(1, 5))]
    assert len(tl.output_times("st", F(5, 2))) == 10
    assert not tl.is_constant() and tl.rate() == F(4) / F(8, 25)
    assert tl.head(2) == media.Timeline((F(0), F(1, 25)), F(3, 25))
    assert tl.shifted(F(1)).starts[0] == 1 and tl.shifted(F(1)).end == F(33, 25)
    assert media.time_base(st) == F(1, 50)
    assert media.time_base([F(1, 3), F(1, 7)]) == F(1, 21)
    assert media.time_base([F(1, 10**7)]) == F(1, 10**6)  # capped: microseconds
    c = media.Timeline.constant(3, F(30000, 1001))
    assert c.is_constant() and c.starts[2] == F(2002, 30000) and c.end == F(3003, 30000)
    with pytest.raises(ValueError, match="increase"):
        media.Timeline((F(1), F(1)), F(2))
    with pytest.raises(ValueError, match="mode"):
        tl.output_times("x")


def test_raw_formats() -> None:
    assert media.raw_format("yuv", 8, 1, 1) == media.RawFormat("yuv420p", b"I420", (0, 1, 2), 1)
    assert media.raw_format("yuv", 10, 1, 0).pix_fmt == "yuv422p10le"
    assert media.raw_format("yuv", 12, 0, 0).fourcc == b"Y3\x00\x0c"
    assert media.raw_format("gray", 16).pix_fmt == "gray16le"
    rgb = media.raw_format("rgb", 8)
    assert (rgb.pix_fmt, rgb.plane_order) == ("gbrp", (1, 2, 0))  # stored G, B, R
    with pytest.raises(media.MediaError, match="subsampling"):
        media.raw_format("yuv", 10, 2, 0)
    with pytest.raises(media.MediaError, match="32-bit"):
        media.raw_format("rgb", 32)


@needs_ffmpeg
@pytest.mark.parametrize("family, bits, ssw, ssh", [("yuv", 10, 1, 1), ("rgb", 8, 0, 0), ("gray", 12, 0, 0),
                                                     ("yuv", 8, 1, 0)])
def test_muxer_round_trip_through_ffmpeg(tmp_path, family, bits, ssw, ssh) -> None:
    fmt = media.raw_format(family, bits, ssw, ssh)
    w, h = 16, 8
    shapes = [(h, w)] if family == "gray" else [(h, w), (h >> ssh, w >> ssw), (h >> ssh, w >> ssw)]
    rng = np.random.default_rng(0)
    dtype = np.uint8 if bits == 8 else np.dtype("<u2")
    frames = [[rng.integers(0, 1 << bits, s).astype(dtype) for s in shapes] for _ in range(3)]
    times = [F(0), F(1, 25), F(1, 8)]  # exact in the nanoseconds Matroska stores
    colour = media.Colour("bt709", "bt709", "bt709", "tv") if family != "rgb" else media.Colour(range="pc")
    path = tmp_path / "raw.mkv"
    with open(path, "wb") as f:
        mux = media.RawVideoMuxer(f, w, h, fmt, colour)
        for planes, t, nxt in zip(frames, times, times[1:] + [F(2, 10)]):
            mux.write([memoryview(p).cast("B") for p in planes], t, nxt - t)
    info = media.probe(path)
    assert info.video is not None and (info.video.pix_fmt, info.video.width, info.video.height) == (fmt.pix_fmt, w, h)
    if family != "rgb":
        assert info.video.colour == colour
    tl = media.read_timeline(path, info.video)
    assert tl is not None and list(tl.starts) == times and tl.end == F(2, 10)
    raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-vsync", "passthrough", "-f", "rawvideo",
                          "-pix_fmt", fmt.pix_fmt, "-"],
                         capture_output=True, check=True).stdout
    expected = b"".join(frames[i][p].tobytes() for i in range(3) for p in fmt.plane_order)
    assert raw == expected


@needs_ffmpeg
def test_pick_codec_keeps_the_format() -> None:
    ff = FFMPEG
    if not media.encoder_pix_fmts(ff, "libx264") or not media.encoder_pix_fmts(ff, "libx265"):
        pytest.skip("this ffmpeg lacks libx264 or libx265")
    assert media.pick_codec(ff, "yuv420p10le", ".mp4") == "libx264"
    assert media.pick_codec(ff, "yuv444p12le", ".mp4") == "libx265"
    assert media.pick_codec(ff, "yuv444p16le", ".mkv") == "ffv1"
    with pytest.raises(media.MediaError, match=r"\.mkv"):
        media.pick_codec(ff, "yuv444p16le", ".mp4")
    with pytest.raises(media.MediaError, match="--codec libx264 cannot encode yuv444p12le"):
        media.pick_codec(ff, "yuv444p12le", ".mp4", "libx264")
    with pytest.raises(media.MediaError, match="no such encoder"):
        media.pick_codec(ff, "yuv420p", ".mp4", "no-such-encoder")


def test_stale_partials_only_of_that_output(tmp_path) -> None:
    out = tmp_path / "clip.mp4"
    gone = subprocess.Popen(["true"])
    gone.wait()
    names = [f".clip.vsstar-partial-{gone.pid}.mp4", f".clip.vsstar-partial-{gone.pid}.source.mkv",
             f".clip.vsstar-partial-{gone.pid}.mkv", f".clip2.vsstar-partial-{gone.pid}.mp4",
             ".clip.vsstar-partial-1.mp4"]
    for n in names:
        (tmp_path / n).write_bytes(b"")
    assert [p.name for p in media.stale_partials(out)] == sorted(names[:2])
    assert media.partial_path(out, 42) == tmp_path / ".clip.vsstar-partial-42.mp4"
    assert media.partial_path(out, 42, "source") == tmp_path / ".clip.vsstar-partial-42.source.mkv"
