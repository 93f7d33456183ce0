"""End to end: the example scripts through `vspipe -c y4m ... | ffmpeg`, checked with ffprobe."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")

from support import probe, tiny_net  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
VSPIPE = shutil.which("vspipe", path=os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]))
FFMPEG, FFPROBE = shutil.which("ffmpeg"), shutil.which("ffprobe")
pytestmark = pytest.mark.skipif(not (VSPIPE and FFMPEG and FFPROBE), reason="needs vspipe, ffmpeg and ffprobe")


def tiny_weights(path: Path, scale: int) -> Path:
    from vsstar.model import save_weights

    save_weights(tiny_net(scale, seed=scale, damp=False), path)
    return path


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    d = tmp_path_factory.mktemp("vspipe")
    src = d / "tiny.mp4"
    subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc=size=48x32:rate=25", "-frames:v", "3",
                    "-pix_fmt", "yuv420p", str(src)], check=True)
    return {"src": src, 2: tiny_weights(d / "tiny_x2.safetensors", 2), 4: tiny_weights(d / "tiny_x4.safetensors", 4),
            "dir": d}


@pytest.mark.parametrize("script, scale, expected", [
    ("upscale_x4.vpy", 4, (192, 128, "25/1", 3)),
    ("slowmo_x2.vpy", 4, (48, 32, "25/1", 6)),
    ("yuv_bestsource.vpy", 2, (96, 64, "50/1", 6)),
])
def test_example_through_vspipe_and_ffmpeg(assets, script: str, scale: int, expected) -> None:
    out = assets["dir"] / f"{script}.mkv"
    vspipe = subprocess.Popen([VSPIPE, "-c", "y4m", "-a", f"src={assets['src']}", "-a", f"model={assets[scale]}",
                               "-a", "fast=1", str(ROOT / "filters" / "vapoursynth" / script), "-"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    enc = subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "yuv4mpegpipe", "-i", "-", "-c:v", "ffv1", str(out)],
                         stdin=vspipe.stdout, capture_output=True, timeout=300)
    vspipe.stdout.close()
    err = vspipe.stderr.read().decode(errors="replace")
    assert vspipe.wait(timeout=60) == 0, err[-2000:]
    assert enc.returncode == 0, enc.stderr.decode(errors="replace")
    assert probe(out) == expected


def test_vspipe_reports_bad_model(assets) -> None:
    r = subprocess.run([VSPIPE, "-c", "y4m", "-a", f"src={assets['src']}", "-a", "model=no-such-model",
                        str(ROOT / "filters" / "vapoursynth" / "yuv_bestsource.vpy"), "-"],
                       capture_output=True, timeout=120)
    assert r.returncode != 0
    assert b"STAR: model" in r.stderr
