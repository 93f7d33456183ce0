"""vspreview (a real VapourSynth host) opens a STAR script, seeks forward and back, and closes cleanly.

Runs under Qt's offscreen platform. vspreview and PyQt6 come with the dev extra (scripts/setup.sh --test), so
the suite runs it; it skips only where vsstar was installed without that extra.
docs/vapoursynth.md describes the same check by hand on filters/vapoursynth/upscale_x4.vpy.
"""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")
# Only looked up here: importing vspreview registers a VapourSynth environment policy in this process.
if importlib.util.find_spec("vspreview") is None:
    pytest.skip("vspreview is not installed (it comes with the dev extra: pip install -e '.[dev]')",
                allow_module_level=True)

ROOT = Path(__file__).resolve().parent.parent

SCRIPT = """
import vapoursynth as vs
import vsstar
core = vs.core
clip = core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=20, color=[0.2, 0.5, 0.7])
out = vsstar.STAR(clip, scale=2, model=MODEL, device="cpu", flow_options={"n_outer": 2, "n_sor": 4})
core.resize.Bicubic(out, format=vs.YUV420P8, matrix_s="709").set_output()
"""

# Drives vspreview's own entry point: once the script's output is loaded, show frames forward and
# back, then close the main window as a user would.
DRIVER = """
import os, sys, time
import vspreview.init as vi
from PyQt6.QtCore import QTimer
from PyQt6.QtWidgets import QApplication

start = time.time()

def drive():
    from vspreview.main import MainWindow
    app = QApplication.instance()
    wins = [w for w in app.topLevelWidgets() if isinstance(w, MainWindow)]
    w = wins[0] if wins else None
    if w is None or not getattr(w, "outputs", None) or w.current_output is None:
        if time.time() - start > 120:
            print("DRIVER: the script did not load", flush=True)
            app.exit(3)
            return
        QTimer.singleShot(200, drive)
        return
    for f in (3, 17, 38, 9, 0, 25):
        w.switch_frame(f)
        app.processEvents()
        print(f"DRIVER: frame {f} of {w.current_output.total_frames}", flush=True)
    w.close()
    QTimer.singleShot(100, app.quit)

loop = vi.set_vsengine_loop

def with_driver():
    loop()
    QTimer.singleShot(200, drive)

vi.set_vsengine_loop = with_driver
sys.exit(vi.main(sys.argv[1:]))
"""


def test_vspreview_opens_seeks_and_closes(tmp_path) -> None:
    sys.path.insert(0, str(ROOT / "tests"))
    from support import tiny_net
    from vsstar.model import save_weights

    weights = tmp_path / "tiny.safetensors"
    save_weights(tiny_net(), weights)
    script = tmp_path / "preview.vpy"
    script.write_text(f"MODEL = {str(weights)!r}\n" + SCRIPT)
    driver = tmp_path / "driver.py"
    driver.write_text(DRIVER)
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1",
               HOME=str(tmp_path))  # vspreview keeps its settings under the home folder
    r = subprocess.run([sys.executable, str(driver), str(script)], env=env, capture_output=True, text=True,
                       timeout=300, cwd=tmp_path)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-3000:]
    assert "terminate called" not in out
    assert out.count("DRIVER: frame") == 6 and "frame 25 of 40" in out
