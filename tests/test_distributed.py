"""`vsstar enhance --ray` / vsstar.distributed on a local Ray instance: chunk planning, frame-for-frame the same
output as a local run (lossless codec), a killed worker rerun by Ray, a chunk that fails for good named and no
OUTPUT left, one progress bar fed by the workers."""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vsstar.distributed import Chunk, plan_chunks

FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
ROOT = Path(__file__).resolve().parent.parent


def covered(chunks: list[Chunk]) -> list[int]:
    return [k for c in chunks for k in range(c.start, c.stop)]


def test_plan_chunks_ends_at_cuts_and_splits_long_scenes() -> None:
    # cuts after frames 9 and 14: scenes [0,10) [10,15) [15,40)
    chunks = plan_chunks(40, [9, 14], max_frames=16)
    assert [(c.start, c.stop) for c in chunks] == [(0, 15), (15, 27), (27, 40)]
    assert [c.index for c in chunks] == [0, 1, 2]
    # no cuts: fixed lengths of at most max_frames, nearly equal
    chunks = plan_chunks(10, [], max_frames=4)
    assert [(c.start, c.stop) for c in chunks] == [(0, 3), (3, 6), (6, 10)]
    assert covered(plan_chunks(1, [], 5)) == [0]
    assert covered(plan_chunks(23, [0, 1, 2, 21, 30], 3)) == list(range(23))
    assert all(c.stop - c.start <= 3 for c in plan_chunks(23, [0, 1, 2, 21], 3))
    with pytest.raises(ValueError, match="max_frames"):
        plan_chunks(10, [], 0)


def test_chunk_reads_one_frame_of_context_each_side() -> None:
    assert Chunk(0, 0, 5).read_range(12) == (0, 6)
    assert Chunk(1, 5, 9).read_range(12) == (4, 10)
    assert Chunk(2, 9, 12).read_range(12) == (8, 12)
    assert Chunk(3, 4, 8).read_range(12) == (2, 9)  # from an even frame: mode "s" pairs (2i, 2i+1)
    assert "input frames 5-8" in Chunk(1, 5, 9).describe()


# ----------------------------------------------------------------------------------- on Ray
try:
    import ray
except ImportError:  # the chunk planning above is tested all the same
    ray = None
try:
    import vapoursynth
except ImportError:
    vapoursynth = None
# Every test from here on runs on Ray, reads video with VapourSynth and encodes with ffmpeg.
needs_ray_stack = pytest.mark.skipif(
    ray is None or vapoursynth is None or not (FFMPEG and FFPROBE),
    reason="needs ray (pip install vsstar[ray]), vapoursynth, ffmpeg and ffprobe")


@pytest.fixture(scope="module")
def cluster():
    if ray.is_initialized():
        pytest.skip("a Ray connection is open already in this process")
    # Workers import this checkout's vsstar, whatever is installed.
    # tests/ too, for ray_faults (the fault-injecting chunk runner).
    path = os.pathsep.join(p for p in (str(ROOT), str(ROOT / "tests"), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {"PYTHONPATH": path, "OMP_NUM_THREADS": "1"}})
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    from support import tiny_net
    from vsstar.cli import main
    from vsstar.model import save_weights

    d = tmp_path_factory.mktemp("dist")
    model = d / "tiny_x2.safetensors"
    save_weights(tiny_net(2, seed=0, damp=False), model)
    clip = d / "cut.mp4"
    # 14 frames with a cut after frame 6 (two moving test patterns) and audio.
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=25:duration=0.28",
                    "-f", "lavfi", "-i", "testsrc2=size=32x24:rate=25:duration=0.28", "-f", "lavfi", "-i",
                    "sine=frequency=440:sample_rate=48000:duration=0.6", "-filter_complex",
                    "[0:v][1:v]concat=n=2:v=1:a=0[v]", "-map", "[v]", "-map", "2:a", "-pix_fmt", "yuv420p",
                    "-c:v", "libx264", "-c:a", "aac", str(clip)], check=True)
    local = d / "local.mkv"
    assert main(["enhance", str(clip), str(local), "--scale", "2", "--model", str(model), "--fast-flow",
                 "--codec", "ffv1", "-q"]) == 0
    return {"model": model, "clip": clip, "local": local}


def frame_hashes(path: Path) -> list[str]:
    """framemd5 lines of the video (times, sizes and an MD5 of every decoded frame)."""
    out = subprocess.run([FFMPEG, "-v", "error", "-i", str(path), "-map", "0:v:0", "-f", "framemd5", "-"],
                         capture_output=True, text=True, check=True).stdout
    return [line for line in out.splitlines() if not line.startswith("#")]


def has_audio(path: Path) -> bool:
    out = subprocess.run([FFPROBE, "-v", "error", "-show_entries", "stream=codec_type", "-of", "csv=p=0", str(path)],
                         capture_output=True, text=True, check=True).stdout
    return "audio" in out.split()


def options(assets) -> dict:
    return {"scale": 2, "model": str(assets["model"]), "fast_flow": True, "codec": "ffv1", "chunk_frames": 4,
            "quiet": True}


@needs_ray_stack
def test_ray_output_is_frame_for_frame_the_local_one(cluster, assets, tmp_path, capfd) -> None:
    from vsstar import distributed

    out = tmp_path / "ray.mkv"
    seen = []
    line = distributed.enhance(assets["clip"], out, on_progress=seen.append, **options(assets))
    assert line.startswith(f"wrote {out}: 28 frames 64x48 yuv420p")
    local = frame_hashes(assets["local"])
    assert len(local) == 28 and frame_hashes(out) == local
    assert has_audio(out)
    # chunks end at the cut (after frame 6) and are at most 4 frames: [0,3) [3,7) [7,10) [10,14)
    assert sorted(seen[-1].attempts) == [0, 1, 2, 3]
    assert seen[-1].done == seen[-1].total == 28
    assert all(0 <= e.done <= e.total for e in seen)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ray.mkv"]


def crashes(marks: Path) -> list[int]:
    """Pids of the worker processes that crashed on purpose (see ray_faults)."""
    return sorted(int(p.name) for p in marks.iterdir())


@needs_ray_stack
def test_killed_worker_is_rerun_and_the_output_is_the_same(cluster, assets, tmp_path, monkeypatch) -> None:
    from ray_faults import crashing_run_chunk
    from vsstar import distributed

    out, marks = tmp_path / "out" / "ray.mkv", tmp_path / "marks"
    out.parent.mkdir()
    marks.mkdir()
    # The worker running chunk 1 dies after its first frame, once, as on a lost node; Ray reruns the chunk.
    monkeypatch.setattr(distributed, "_run_chunk", crashing_run_chunk(str(marks), 1, 1))
    seen = []
    distributed.enhance(assets["clip"], out, on_progress=seen.append, max_retries=2, **options(assets))
    killed = crashes(marks)
    assert len(killed) == 1
    attempts = seen[-1].attempts[1]
    assert attempts[0] == killed[0] and len(attempts) == 2 and attempts[1] != killed[0]
    assert frame_hashes(out) == frame_hashes(assets["local"])
    assert all(0 <= e.done <= e.total for e in seen) and seen[-1].done == seen[-1].total == 28


@needs_ray_stack
def test_chunk_failing_for_good_fails_the_job_and_leaves_no_output(cluster, assets, tmp_path, monkeypatch) -> None:
    from ray_faults import crashing_run_chunk
    from vsstar import distributed

    out, marks = tmp_path / "out" / "ray.mkv", tmp_path / "marks"
    out.parent.mkdir()
    marks.mkdir()
    out.write_bytes(b"previous result")
    # Chunk 2's worker dies on every attempt: the first run and its one retry.
    monkeypatch.setattr(distributed, "_run_chunk", crashing_run_chunk(str(marks), 2, None))
    with pytest.raises(distributed.ChunkError, match=r"chunk 2 \(input frames 7-9\) failed: .*"):
        distributed.enhance(assets["clip"], out, max_retries=1, **options(assets))
    assert len(crashes(marks)) == 2
    assert [p.name for p in out.parent.iterdir()] == ["ray.mkv"] and out.read_bytes() == b"previous result"


@needs_ray_stack
def test_cli_ray_option_mode_s(cluster, assets, tmp_path, capfd) -> None:
    from vsstar.cli import main

    local, out = tmp_path / "local.mkv", tmp_path / "cli.mkv"
    common = [str(assets["clip"]), "--scale", "2", "--model", str(assets["model"]), "--codec", "ffv1", "--mode", "s"]
    assert main(["enhance", common[0], str(local), *common[1:], "-q"]) == 0
    # The connection of this process is used as it is (and left open). Mode "s" pairs frames (2i, 2i+1):
    # chunks [0,3) [3,7) [7,10) [10,14) start on odd and even frames.
    code = main(["enhance", common[0], str(out), *common[1:], "--ray", "--chunk-frames", "4"])
    err = capfd.readouterr().err
    assert code == 0, err
    assert "4 chunks of up to 4 frames (1 scene cuts) on Ray" in err and "frame/s" in err
    assert err.strip().splitlines()[-1].startswith(f"wrote {out}: 14 frames 64x48")
    hashes = frame_hashes(out)
    assert len(hashes) == 14 and hashes == frame_hashes(local)
    code = main(["enhance", str(assets["clip"]), str(out), "--ray", "--compare", str(tmp_path / "c.png")])
    assert code == 2 and "--compare cannot be combined with --ray" in capfd.readouterr().err


@needs_ray_stack
@pytest.mark.parametrize("rate, frames", [(("--factor", "5/2"), 35), (("--fps", "60000/1001"), 34)])
def test_cli_ray_any_rate_is_the_local_run(cluster, assets, tmp_path, capfd, rate, frames) -> None:
    from vsstar.cli import main

    local, out = tmp_path / "local.mkv", tmp_path / "ray.mkv"
    common = ["--scale", "2", "--model", str(assets["model"]), "--fast-flow", "--codec", "ffv1", *rate, "-q"]
    assert main(["enhance", str(assets["clip"]), str(local), *common]) == 0, capfd.readouterr().err
    # Chunks [0,3) [3,7) [7,10) [10,14): at 5/2 and 2400/1001 their outputs start between the source's frames.
    code = main(["enhance", str(assets["clip"]), str(out), *common, "--ray", "--chunk-frames", "4"])
    assert code == 0, capfd.readouterr().err
    hashes = frame_hashes(out)  # each frame's time, duration and picture
    assert len(hashes) == frames and hashes == frame_hashes(local)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["local.mkv", "ray.mkv"]


def test_ray_address_where_nothing_listens_fails_at_once(tmp_path) -> None:
    pytest.importorskip("ray")
    out = tmp_path / "out" / "o.mkv"
    out.parent.mkdir()
    start = time.monotonic()
    # Generous limit: Ray alone retries such an address for minutes.
    r = subprocess.run([sys.executable, "-m", "vsstar.cli", "enhance", str(tmp_path / "in.mp4"), str(out),
                        "--ray", "127.0.0.1:1"], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "RAY_ADDRESS": ""})
    took = time.monotonic() - start
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().splitlines() == [
        "vsstar: error: --ray 127.0.0.1:1: nothing answers at 127.0.0.1:1 (Connection refused); is the Ray head "
        "running?"]
    assert took < 60, took
    assert list(out.parent.iterdir()) == []


@needs_ray_stack
def test_sigterm_stops_a_ray_run_and_leaves_nothing(assets, tmp_path) -> None:
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    out = out_dir / "o.mkv"
    out.write_bytes(b"previous result")
    clip = tmp_path / "long.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=32x24:rate=25", "-frames:v", "400",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "vsstar.cli", "enhance", str(clip), str(out), "--scale", "2",
                             "--model", str(assets["model"]), "--fast-flow", "--ray", "local", "--chunk-frames", "50",
                             "--ray-cpus", "1", "-q"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        deadline = time.time() + 300
        # The job's partial folder appears when the chunks are submitted.
        while time.time() < deadline and proc.poll() is None:
            if any(p.name.endswith(".d") for p in out_dir.iterdir()):
                break
            time.sleep(0.2)
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(2.0)
        proc.send_signal(signal.SIGTERM)
        start = time.monotonic()
        _, err = proc.communicate(timeout=120)  # generous: a loaded machine
        took = time.monotonic() - start
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "stopped by SIGTERM; no output written" in err
    assert took < 60, took
    assert [p.name for p in out_dir.iterdir()] == ["o.mkv"] and out.read_bytes() == b"previous result"
