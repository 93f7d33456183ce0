"""`vsstar enhance` keeps what the input had: timing (VFR), audio, bit depth, chroma, colour tags, the whole
picture at odd sizes; it refuses interlaced and video-less input in one line; SIGTERM leaves nothing behind and
stale partial files are removed; the last line sums the job up; --debug shows the traceback."""
from __future__ import annotations

import json
import re
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")

from vsstar.cli import main  # noqa: E402

from support import tiny_net  # noqa: E402

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="needs ffmpeg and ffprobe")
FAST = ["--scale", "2", "--fast-flow"]


def ffmpeg(*args: str) -> None:
    subprocess.run([FFMPEG, "-v", "error", "-y", *args], check=True)


def streams(path: Path) -> list[dict]:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_streams", "-of", "json", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)["streams"]


def video(path: Path) -> dict:
    return next(s for s in streams(path) if s["codec_type"] == "video")


def packet_times(path: Path, stream: str = "v:0") -> list[tuple[Fraction, Fraction]]:
    """(pts, duration) in seconds of every packet of `stream`, in presentation order."""
    tb = Fraction(next(s for s in streams(path) if s["codec_type"] == ("video" if stream[0] == "v" else "audio"))
                  ["time_base"])
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", stream, "-show_entries", "packet=pts,duration",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    rows = [line.split(",")[:2] for line in out.split()]
    return sorted((int(p) * tb, int(d) * tb) for p, d in rows)


def audio_span(path: Path) -> float:
    """Seconds from the first audio sample to the end of the last audio packet."""
    pk = packet_times(path, "a:0")
    return float(pk[-1][0] + pk[-1][1] - pk[0][0])


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    from vsstar.model import save_weights

    p = tmp_path_factory.mktemp("keep") / "tiny_x2.safetensors"
    save_weights(tiny_net(2, seed=0, damp=False), p)
    return p


def run(capfd, *args: str) -> tuple[int, str]:
    code = main(list(args))
    return code, capfd.readouterr().err


def test_variable_frame_rate_and_audio_are_kept(model, tmp_path, capfd) -> None:
    src, out = tmp_path / "vfr.mp4", tmp_path / "out.mp4"
    # 16 frames: 6 at 25 fps, then gaps of 80-120 ms; 1.22 s of audio, longer than the video.
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25:duration=0.64", "-f", "lavfi", "-i",
           "sine=frequency=440:sample_rate=48000:duration=1.22", "-vf",
           "setpts='if(lt(N,6),N*0.04/TB,(0.24+(N-6)*0.1)/TB)'", "-fps_mode", "vfr", "-c:v", "libx264",
           "-pix_fmt", "yuv420p", "-c:a", "aac", str(src))
    times = packet_times(src)
    assert len({b[0] - a[0] for a, b in zip(times, times[1:])}) > 1, "the clip must be VFR"
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model))
    assert code == 0, err
    expected = []
    for k, (t, d) in enumerate(times):
        nxt = times[k + 1][0] if k + 1 < len(times) else t + d
        expected += [t, (t + nxt) / 2]  # each frame, then its in-between at the midpoint of the pair
    got = [t for t, _ in packet_times(out)]
    assert len(got) == len(expected)
    assert max(abs(float(a - b)) for a, b in zip(got, expected)) < 1e-3
    assert abs(audio_span(out) - audio_span(src)) < 1e-3 and audio_span(src) > 1.2
    # the summary: frames, sizes, rates (variable), time taken, average speed
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"wrote {out}: 32 frames 128x96") and "from 16 frames 64x48" in last, last
    assert "(variable)" in last and " s, " in last and last.endswith("frames/s"), last


def test_bit_depth_chroma_and_colour_are_kept(model, tmp_path, capfd) -> None:
    src = tmp_path / "hlg10.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "2", "-pix_fmt", "yuv422p10le",
           "-colorspace", "bt2020nc", "-color_primaries", "bt2020", "-color_trc", "arib-std-b67",
           "-color_range", "tv", "-c:v", "ffv1", str(src))
    tags = ("color_space", "color_primaries", "color_transfer", "color_range")
    want = {k: video(src)[k] for k in tags}
    assert want == {"color_space": "bt2020nc", "color_primaries": "bt2020", "color_transfer": "arib-std-b67",
                    "color_range": "tv"}
    out = tmp_path / "out.mp4"
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s", "-q")
    assert code == 0, err
    v = video(out)
    assert (v["pix_fmt"], v["width"], v["height"]) == ("yuv422p10le", 128, 96)
    assert {k: v.get(k) for k in tags} == want
    # --pix-fmt still overrides (the tags stay)
    out8 = tmp_path / "out8.mkv"
    code, err = run(capfd, "enhance", str(src), str(out8), *FAST, "--model", str(model), "--mode", "s", "-q",
                    "--pix-fmt", "yuv420p")
    assert code == 0, err
    v = video(out8)
    assert v["pix_fmt"] == "yuv420p" and {k: v.get(k) for k in tags} == want


def test_interlaced_input_is_refused_naming_the_field_order(tmp_path, capfd) -> None:
    src, out = tmp_path / "tff.mp4", tmp_path / "out.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "4", "-vf", "setfield=tff",
           "-flags", "+ilme+ildct", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(src))
    assert video(src)["field_order"] == "tt"
    code, err = run(capfd, "enhance", str(src), str(out), "--scale", "2")
    assert code == 2 and "interlaced (top field first" in err, err
    assert err.count("\n") == 1 and not out.exists()


def test_odd_size_420_keeps_the_whole_picture(model, tmp_path, capfd) -> None:
    import numpy as np

    src = tmp_path / "odd.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=321x137:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p",
           "-c:v", "ffv1", str(src))

    def luma(path: Path, w: int, h: int) -> np.ndarray:
        raw = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-frames:v", "1", "-f", "rawvideo",
                              "-pix_fmt", "gray", "-"], capture_output=True, check=True).stdout
        return np.frombuffer(raw, np.uint8).reshape(h, w).astype(np.float32)

    out = tmp_path / "out.mkv"
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s", "-q")
    assert code == 0, err
    v = video(out)
    assert (v["width"], v["height"], v["pix_fmt"]) == (642, 274, "yuv420p")
    # The last column and row are the picture's (testsrc's edge there is white), not padding.
    a, b = luma(src, 321, 137), luma(out, 642, 274)
    assert a[:, -1].mean() > 200 and abs(b[:, -2:].mean() - a[:, -1].mean()) < 25
    assert abs(b[-2:, :].mean() - a[-1, :].mean()) < 25
    # mode t keeps the size; 4:2:0 cannot hold 321x137, so it is written 4:4:4 (and says so)
    out_t = tmp_path / "t.mkv"
    code, err = run(capfd, "enhance", str(src), str(out_t), *FAST, "--model", str(model), "--mode", "t", "-q")
    assert code == 0, err
    v = video(out_t)
    assert (v["width"], v["height"], v["pix_fmt"]) == (321, 137, "yuv444p") and "4:4:4" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["odd.mkv", "out.mkv", "t.mkv"]


def test_no_video_stream_is_one_clear_line(tmp_path, capfd) -> None:
    src = tmp_path / "song.m4a"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=0.5", "-c:a", "aac", str(src))
    code, err = run(capfd, "enhance", str(src), str(tmp_path / "out.mp4"))
    assert code == 2 and err == f"vsstar: error: no video stream in {str(src)!r}\n"


def test_debug_shows_the_traceback(tmp_path, capfd) -> None:
    src = tmp_path / "a.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p", str(src))
    args = ["enhance", str(src), str(tmp_path / "o.mp4"), "--scale", "2", "--model", "no-such-model"]
    code, err = run(capfd, *args)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err and "model" in err
    code, err = run(capfd, *args, "--debug")
    assert code == 2 and "Traceback (most recent call last)" in err and err.splitlines()[-1].startswith("vsstar: error:")


@pytest.fixture()
def long_clip(tmp_path) -> Path:
    p = tmp_path / "long.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=48x32:rate=25", "-f", "lavfi", "-i", "sine=sample_rate=48000",
           "-frames:v", "1500", "-shortest", "-pix_fmt", "yuv420p", "-c:a", "aac", str(p))
    return p


def test_sigterm_leaves_nothing_behind(model, tmp_path, long_clip) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.mkv"
    out.write_bytes(b"previous result")
    proc = subprocess.Popen([sys.executable, "-m", "vsstar.cli", "enhance", str(long_clip), str(out), *FAST,
                             "--model", str(model), "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(".vsstar-partial" in p.name for p in out_dir.iterdir()):
            break
        time.sleep(0.2)
    assert proc.poll() is None, "finished before it could be stopped"
    time.sleep(1.0)  # frames are flowing into the partial file
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM; no output written" in err
    assert [p.name for p in out_dir.iterdir()] == ["o.mkv"] and out.read_bytes() == b"previous result"


def test_stale_partials_of_the_output_are_removed(model, tmp_path, capfd) -> None:
    src, out = tmp_path / "a.mp4", tmp_path / "o.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p", str(src))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process is gone
    stale = [tmp_path / f".o.vsstar-partial-{gone.pid}.mkv", tmp_path / f".o.vsstar-partial-{gone.pid}.source.mkv"]
    keep = [tmp_path / f".o.vsstar-partial-{os.getppid()}.mkv",  # its process still runs
            tmp_path / f".o.vsstar-partial-{gone.pid}.mp4",  # another output (o.mp4)
            tmp_path / f".other.vsstar-partial-{gone.pid}.mkv"]
    for p in stale + keep:
        p.write_bytes(b"x")
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s", "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.mp4", "o.mkv"] + [p.name for p in keep])
    assert err.count("removed .o.vsstar-partial-") == 2


def test_last_line_sums_the_job_up(model, tmp_path, capfd) -> None:
    src, out = tmp_path / "a.mp4", tmp_path / "o.mp4"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "3", "-pix_fmt", "yuv420p", str(src))
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s")
    assert code == 0, err
    last = err.strip().splitlines()[-1]
    m = re.fullmatch(rf"wrote {re.escape(str(out))}: 3 frames 128x96 yuv420p @ 25\.000 fps from 3 frames 64x48 "
                     r"@ 25\.000 fps; (\d+\.\d) s, (\d+\.\d\d) frames/s", last)
    assert m and float(m.group(1)) > 0 and float(m.group(2)) > 0, last


def test_progress_line_names_the_backend_and_precision(model, tmp_path, capfd) -> None:
    src, out = tmp_path / "a.mp4", tmp_path / "o.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "3", "-pix_fmt", "yuv420p", str(src))
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s",
                    "--backend", "torch")
    assert code == 0, err
    assert "torch f32: 100%" in err, err


def test_unforeseen_failure_is_one_line_unless_debug(monkeypatch, capfd) -> None:
    import vsstar.cli as cli

    def broken(args):
        try:
            {}["key"]
        except KeyError as exc:
            raise RuntimeError("boom") from exc

    monkeypatch.setattr(cli, "enhance", broken)
    code, err = run(capfd, "enhance", "a.mp4", "b.mp4")
    assert code == 1 and err == "vsstar: error: RuntimeError: boom (--debug shows the traceback)\n"
    code, err = run(capfd, "enhance", "a.mp4", "b.mp4", "--debug")
    assert code == 1 and "KeyError: 'key'" in err and "direct cause" in err  # the cause is kept
    assert err.splitlines()[-1] == "vsstar: error: RuntimeError: boom"


def test_stale_partial_folder_of_a_killed_ray_driver_is_removed(model, tmp_path, capfd) -> None:
    # A SIGKILLed `--ray` driver leaves its segments folder; the next run to the same OUTPUT removes it.
    src, out = tmp_path / "a.mp4", tmp_path / "o.mkv"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=25", "-frames:v", "2", "-pix_fmt", "yuv420p", str(src))
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid whose process is gone
    stale = tmp_path / f".o.vsstar-partial-{gone.pid}.d"
    stale.mkdir()
    (stale / "segment-0.mkv").write_bytes(b"x")
    alive = tmp_path / f".o.vsstar-partial-{os.getppid()}.d"  # its process still runs
    alive.mkdir()
    code, err = run(capfd, "enhance", str(src), str(out), *FAST, "--model", str(model), "--mode", "s", "-q")
    assert code == 0, err
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["a.mp4", "o.mkv", alive.name])
    assert f"removed {stale.name}, left by an earlier run that was stopped" in err
