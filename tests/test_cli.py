"""The `vsstar` command: enhance end to end (ffprobe-checked), atomic output on failure and Ctrl-C, info."""
from __future__ import annotations

import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")

from vsstar.cli import build_parser, main  # noqa: E402

from support import probe, tiny_net  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "bikes_320x136.mp4"
FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
needs_ffmpeg = pytest.mark.skipif(not (FFMPEG and FFPROBE), reason="needs ffmpeg and ffprobe")


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from vsstar.model import save_weights

    d = tmp_path_factory.mktemp("cli")
    save_weights(tiny_net(2, seed=0, damp=False), d / "tiny_x2.safetensors")
    out = {"dir": d, "model": d / "tiny_x2.safetensors"}
    if FFMPEG:
        # "long" must outlast the Ctrl-C test's wait on a fast, idle machine (60 frames did not).
        for name, frames in (("short", 3), ("ten", 10), ("long", 1500)):
            p = d / f"{name}.mp4"
            subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=25",
                            "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-frames:v", str(frames),
                            "-shortest", "-pix_fmt", "yuv420p", "-c:a", "aac", str(p)], check=True)
            out[name] = p
    return out


class Result:
    def __init__(self, returncode: int, stderr: str) -> None:
        self.returncode, self.stderr = returncode, stderr


def run_cli(capfd, *args: str) -> Result:
    """Run the command in-process (saves a torch import per call); main(argv) returns the status."""
    code = main(list(args))
    return Result(code, capfd.readouterr().err)


@needs_ffmpeg
def test_enhance_sample_clip_with_compare(assets, tmp_path, capfd) -> None:
    out, cmp_png = tmp_path / "bikes_x2.mp4", tmp_path / "cmp.png"
    r = run_cli(capfd, "enhance", str(SAMPLE), str(out), "--scale", "2", "--model", str(assets["model"]), "--frames", "2",
                "--fast-flow", "--compare", str(cmp_png))
    assert r.returncode == 0, r.stderr
    assert probe(out) == (640, 272, "50/1", 4)
    from PIL import Image

    with Image.open(cmp_png) as im:
        assert im.size == (2 * 480 + 6, 272 + 22)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bikes_x2.mp4", "cmp.png"]
    assert "frame/s" in r.stderr or "s/frame" in r.stderr  # tqdm progress with a rate


@needs_ffmpeg
@pytest.mark.parametrize("mode, expected", [("s", (96, 64, "25/1", 3)), ("t", (48, 32, "50/1", 6))])
def test_enhance_modes_keep_audio(assets, tmp_path, capfd, mode, expected) -> None:
    out = tmp_path / "o.mkv"
    r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--mode", mode, "--model",
                str(assets["model"]), "--fast-flow", "-q")
    assert r.returncode == 0, r.stderr
    assert probe(out) == expected
    streams = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(out)],
                             capture_output=True, text=True).stdout.split()
    assert "audio" in streams


@needs_ffmpeg
def test_failure_leaves_no_output(assets, tmp_path, capfd) -> None:
    out = tmp_path / "o.mp4"
    r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--model", "no-such-model")
    assert r.returncode == 2 and "model" in r.stderr
    r = run_cli(capfd, "enhance", str(tmp_path / "missing.mp4"), str(out))
    assert r.returncode == 2 and "input" in r.stderr
    r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                "--fast-flow", "--codec", "no-such-encoder", "-q")
    assert r.returncode == 2 and "--codec 'no-such-encoder': ffmpeg has no such encoder" in r.stderr
    # encoder failure after frames were produced (mp4 cannot hold FFV1; ffmpeg finds out at the first
    # frame): nothing, not even a partial file, is left
    r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                "--fast-flow", "--codec", "ffv1", "-q")
    assert r.returncode == 2 and "ffmpeg failed" in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_ctrl_c_leaves_no_output(assets, tmp_path) -> None:
    out = tmp_path / "o.mkv"
    out.write_bytes(b"previous result")  # an existing OUTPUT survives an interrupted run untouched
    proc = subprocess.Popen([sys.executable, "-m", "vsstar.cli", "enhance", str(assets["long"]), str(out), "--scale", "2",
                             "--model", str(assets["model"]), "--fast-flow", "-q"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # A shell's background job inherits SIGINT ignored, and Python then never raises
                            # KeyboardInterrupt: give the child the default disposition.
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if any(".vsstar-partial" in p.name for p in tmp_path.iterdir()):
            break
        time.sleep(0.2)
    # Interrupt as soon as the partial output exists: the job is then writing frames (waiting longer let a
    # quick run finish first, once in CI).
    assert proc.poll() is None, "finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted" in err
    assert [p.name for p in tmp_path.iterdir()] == ["o.mkv"] and out.read_bytes() == b"previous result"


def test_info_prints_versions_devices_models(capsys) -> None:
    assert main(["info"]) == 0
    text = capsys.readouterr().out
    for word in ("vsstar", "torch", "vapoursynth", "devices:", "cpu:", "bundled models:"):
        assert word in text


def test_parser_rejects_bad_values() -> None:
    p = build_parser()
    for argv in (["enhance", "a", "b", "--scale", "3"], ["enhance", "a", "b", "--mode", "x"],
                 ["enhance", "a", "b", "--device", "cpu,"],
                 ["enhance", "a", "b", "--batch-size", "-1"], ["enhance", "a"]):
        with pytest.raises(SystemExit):
            p.parse_args(argv)
    args = p.parse_args(["enhance", "in.mp4", "out.mp4", "--scale", "2", "--no-fp16", "--tile", "128"])
    assert (args.scale, args.fp16, args.tile, args.mode) == (2, False, 128, "st")


@needs_ffmpeg
def test_device_list_gives_the_same_frames(assets, tmp_path, capfd) -> None:
    outs = {}
    for device in ("cpu", "cpu,cpu"):
        out = tmp_path / f"{device.replace(',', '_')}.mkv"
        r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                    "--fast-flow", "--codec", "ffv1", "--device", device, "-q")
        assert r.returncode == 0, r.stderr
        outs[device] = subprocess.run([FFMPEG, "-v", "error", "-i", str(out), "-map", "0:v", "-f", "framemd5", "-"],
                                      capture_output=True, text=True, check=True).stdout
    assert outs["cpu"].count("\n") > 6 and outs["cpu,cpu"] == outs["cpu"]


def _pts(path: Path) -> list[float]:
    out = subprocess.run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout
    return [float(x.split(",")[0]) for x in out.split()]


@needs_ffmpeg
@pytest.mark.parametrize("opt, value, frames, step", [
    ("--factor", "5/2", 8, 1 / 62.5), ("--fps", "100", 12, 1 / 100), ("--factor", "3", 9, 1 / 75),
])
def test_enhance_factor_and_fps(assets, tmp_path, capfd, opt: str, value: str, frames: int, step: float) -> None:
    out = tmp_path / "rate.mkv"
    r = run_cli(capfd, "enhance", str(assets["short"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                "--fast-flow", "--no-audio", opt, value)
    assert r.returncode == 0, r.stderr
    assert probe(out)[3] == frames  # 3 input frames at 25 fps
    pts = _pts(out)
    assert pts == pytest.approx([j * step for j in range(frames)], abs=1.5e-3)


@needs_ffmpeg
@pytest.mark.parametrize("args, word", [
    (("--factor", "1/2"), "--factor"), (("--factor", "0"), "--factor"), (("--fps", "10"), "--fps"),
    (("--factor", "x"), "--factor"), (("--mode", "s", "--factor", "3"), "--factor"),
    (("--factor", "5/2", "--exact-time"), "--exact-time: the factor 5/2"),  # a t = 1/2 model rounds 2/5
])
def test_enhance_bad_rate(assets, tmp_path, capfd, args, word: str) -> None:
    try:
        code = main(["enhance", str(assets["short"]), str(tmp_path / "o.mkv"), "--scale", "2", "--model",
                     str(assets["model"]), "--no-audio", *args])
    except SystemExit as exc:  # argparse rejects malformed values
        code = exc.code
    assert code == 2
    assert word in capfd.readouterr().err


def _duration(path: Path) -> Fraction:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return Fraction(out.strip())


@needs_ffmpeg
@pytest.mark.parametrize("suffix", [".mkv", ".mp4"])
def test_file_lasts_exactly_the_frames_taken(assets, tmp_path, capfd, suffix: str) -> None:
    # 4 of 1500 frames at 25 fps, factor 4: 16 frames of 10 ms, the last one included (it was lost: 0.150 s).
    out = tmp_path / f"o{suffix}"
    r = run_cli(capfd, "enhance", str(assets["long"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                "--fast-flow", "--frames", "4", "--factor", "4", "--no-audio", "-q")
    assert r.returncode == 0, r.stderr
    assert probe(out)[3] == 16
    assert _duration(out) == Fraction("0.16")


@needs_ffmpeg
@pytest.mark.parametrize("suffix", [".mkv", ".mp4", ".mov"])
def test_last_frame_shorter_than_the_step_ends_with_the_input(assets, tmp_path, capfd, suffix: str) -> None:
    """10 frames at 25 fps, factor 7/3: 24 frames of 3/175 s, the last one 1/175 s (it is cut by the end of
    the input). ffmpeg 5.1 gave it the whole step: the file ended at 0.411 s (.mkv) / 0.412 s (.mp4, .mov)."""
    out = tmp_path / f"o{suffix}"
    r = run_cli(capfd, "enhance", str(assets["ten"]), str(out), "--scale", "2", "--model", str(assets["model"]),
                "--fast-flow", "--factor", "7/3", "--no-audio", "-q")
    assert r.returncode == 0, r.stderr
    assert probe(out)[3] == 24
    tick = Fraction(1, 1000) if suffix == ".mkv" else Fraction(1, 175)  # the file's video time base
    assert abs(_duration(out) - Fraction("0.4")) <= tick
    assert _pts(out)[-1] == pytest.approx(23 * 3 / 175, abs=float(tick))


@needs_ffmpeg
def test_frames_zero_is_refused(assets, tmp_path, capfd) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["enhance", str(assets["short"]), str(tmp_path / "o.mkv"), "--frames", "0"])
    assert exc.value.code == 2 and "--frames must be >= 1, got 0" in capfd.readouterr().err
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_errors_name_the_flags(assets, tmp_path, capfd) -> None:
    common = [str(assets["short"]), str(tmp_path / "o.mkv"), "--scale", "2", "--model", str(assets["model"])]
    r = run_cli(capfd, "enhance", *common, "--device", "cpu", "--fp16")
    assert r.returncode == 2 and "--fp16 needs a CUDA device" in r.stderr and "fp16=" not in r.stderr, r.stderr
    r = run_cli(capfd, "enhance", *common, "--device", "cpu", "--batch-size", "2", "--tile", "3")
    assert r.returncode == 2 and "--tile must be" in r.stderr, r.stderr
    r = run_cli(capfd, "enhance", *common, "--device", "cuda:7")
    assert r.returncode == 2 and "--device cuda:7" in r.stderr and "device=" not in r.stderr, r.stderr
    assert list(tmp_path.iterdir()) == []


@needs_ffmpeg
def test_fps_beyond_the_bound_fails_at_once(assets, tmp_path) -> None:
    # The rate mapping used to build a clip list as long as the factor: memory grew until killed.
    start = time.monotonic()
    r = subprocess.run([sys.executable, "-m", "vsstar.cli", "enhance", str(assets["short"]), str(tmp_path / "o.mkv"),
                        "--scale", "2", "--model", str(assets["model"]), "--fps", "1e9"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vsstar: error: --fps (1000000000/1) must be at most 1024 times")
    assert time.monotonic() - start < 120
    assert list(tmp_path.iterdir()) == []
