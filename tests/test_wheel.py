"""vsstar installed as a package, not used from a checkout: `pip wheel`, the wheel installed into a fresh venv,
then `vsstar info`, `vsstar enhance` on the bundled sample and `vsstar.STAR` in a script, all run from a folder
outside the checkout.

A slow test (128 s on a busy 2-core machine), kept in the suite: the fresh venv gets its heavy dependencies
(torch, VapourSynth, ...) from the test's own environment through a .pth file rather than downloading them, and that
.pth is added only after the wheel is installed, so pip and Python see no other vsstar. A .pth file adds a folder to
sys.path without running the .pth files inside it, so the checkout's editable install stays invisible.
"""
from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from support import probe

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "samples" / "bikes_320x136.mp4"

# What the installed package reports about itself, and which loaded modules come from the checkout's source
# folders (argv[1:]); run by the fresh venv's Python.
CHECK = """
import importlib.util, json, sys
import vsstar, vsstar.cli, vsstar.engine, vsstar.vs
from vsstar.backends.openvino import CALIBRATION_FILE
from vsstar.model import bundled_models
from vsstar.model.weights import BUNDLED_DIR
files = [getattr(m, "__file__", None) or "" for m in list(sys.modules.values())]
print(json.dumps({"vsstar": vsstar.__file__, "weights": str(BUNDLED_DIR), "calibration": str(CALIBRATION_FILE),
                  "calibration_exists": CALIBRATION_FILE.is_file(), "models": sorted(bundled_models()),
                  "training": importlib.util.find_spec("training") is not None,
                  "from_checkout": [f for f in files if f.startswith(tuple(sys.argv[1:]))]}))
"""

SCRIPT = """
import vapoursynth as vs
import vsstar
clip = vs.core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=3, color=[0.2, 0.5, 0.7])
out = vsstar.STAR(clip, scale=2, model="star_st_x2", device="cpu", flow_options={"n_outer": 2, "n_sor": 4})
frames = [out.get_frame(i) for i in range(out.num_frames)]
print("STAR", out.num_frames, out.width, out.height, sum(f.props.get("STAR_Interpolated", 0) for f in frames))
"""


def _source_tree(dest: Path) -> Path:
    """The checkout without what .gitignore names (venvs, build outputs, runs): what a fresh clone has, plus
    files not committed yet. The wheel is built from this copy, so building leaves nothing in the checkout."""
    ignored = [".git"] + [line.strip().rstrip("/") for line in (ROOT / ".gitignore").read_text().splitlines()
                          if line.strip() and not line.startswith("#")]
    shutil.copytree(ROOT, dest, ignore=shutil.ignore_patterns(*ignored), symlinks=True)
    return dest


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}:\n{r.stdout[-2000:]}{r.stderr[-3000:]}"
    return r


@pytest.mark.skipif(not (shutil.which("ffmpeg") and shutil.which("ffprobe")),
                    reason="ffmpeg/ffprobe not on PATH (vsstar enhance encodes with the system ffmpeg)")
@pytest.mark.skipif(importlib.util.find_spec("setuptools") is None,
                    reason="setuptools is not installed here (the wheel is built without build isolation, offline)")
def test_wheel_installs_and_runs_outside_the_checkout(tmp_path) -> None:
    # No PYTHONPATH (pytest's or the user's): only what is installed counts.
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP")}
    env.update(OMP_NUM_THREADS="1", PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    src = _source_tree(tmp_path / "src")
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-cache-dir",
          "-w", str(dist), str(src)], tmp_path, env)
    wheels = list(dist.glob("vsstar-*.whl"))
    assert len(wheels) == 1, wheels
    shutil.rmtree(src)  # what the installed package needs must be in the wheel

    # The wheel holds the package with its weights and calibration data, and nothing else at the top.
    names = zipfile.ZipFile(wheels[0]).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert {t for t in tops if not t.endswith(".dist-info")} == {"vsstar"}, sorted(tops)
    shipped = {p.name for p in (ROOT / "vsstar" / "weights").glob("*.safetensors")}
    assert shipped and {n.rsplit("/", 1)[1] for n in names if n.startswith("vsstar/weights/")} >= shipped
    assert "vsstar/data/calibration_pairs.safetensors" in names

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", str(venv)], tmp_path, env)
    py = venv / "bin" / "python"
    _run([str(py), "-m", "pip", "install", "--no-deps", "--no-index", str(wheels[0])], tmp_path, env)
    # Only now the dependencies: this environment's site-packages, after the venv's own (which has vsstar).
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                     tmp_path, env).stdout.strip())
    deps = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    (site / "zz_test_dependencies.pth").write_text("\n".join(sorted(deps)) + "\n")

    work = tmp_path / "work"  # outside the checkout: nothing of it on sys.path
    work.mkdir()
    env["PATH"] = f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}"

    sources = [str(ROOT / d) + os.sep for d in ("vsstar", "training", "tests")]
    facts = json.loads(_run([str(py), "-c", CHECK, *sources], work, env).stdout.strip().splitlines()[-1])
    for key in ("vsstar", "weights", "calibration"):
        assert Path(facts[key]).resolve().is_relative_to(site.resolve()), (key, facts[key])
    assert facts["calibration_exists"] and facts["training"] is False and facts["from_checkout"] == []
    assert set(facts["models"]) == {Path(n).stem for n in shipped}
    assert not (site / "training").exists()

    info = _run([str(venv / "bin" / "vsstar"), "info"], work, env).stdout
    assert info.startswith("vsstar ") and str(venv) in info
    assert all(f"  {Path(n).stem}: " in info for n in shipped), info

    out = work / "bikes_x2.mp4"
    _run([str(venv / "bin" / "vsstar"), "enhance", str(SAMPLE), str(out), "--scale", "2", "--frames", "4", "-q",
          "--device", "cpu"], work, env, timeout=420)
    w, h, _rate, n = probe(out)
    assert (w, h, n) == (640, 272, 8)

    (work / "star.py").write_text(SCRIPT)
    line = _run([str(py), "star.py"], work, env).stdout.strip().splitlines()[-1]
    assert line == "STAR 6 128 96 3", line
