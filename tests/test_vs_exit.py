"""A Python process that builds STAR clips, asks for frames and exits must exit cleanly.

Before the pair store was closed at interpreter exit, these scripts aborted most of the time
("terminate called without an active exception", exit status 134): a prefetch request completing
in a VapourSynth thread, or the worker thread inside torch, met a finalising interpreter.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("vapoursynth")

ROOT = Path(__file__).resolve().parent.parent

PRELUDE = """
import sys, torch
torch.set_num_threads(1)
import vapoursynth as vs
import vsstar
from support import tiny_net
from vsstar.engine import StarEngine
core = vs.core
net = tiny_net()
clip = core.std.BlankClip(width=64, height=48, format=vs.RGBS, length=20)
def star():
    eng = StarEngine(net, scale=2, device="cpu", flow_options={"n_outer": 2, "n_sor": 4})
    return vsstar.STAR(clip, scale=2, engine=eng)
"""

SCRIPTS = {
    "two clips, one frame each": "a, b = star(), star()\na.get_frame(1)\nb.get_frame(1)\n",
    "out of order": "a = star()\nfor j in (17, 3, 30, 8, 39):\n    a.get_frame(j)\n",
    "async, not waited for": "a = star()\nfuts = [a.get_frame_async(j) for j in (5, 1, 12)]\n",
    "raises": "a = star()\na.get_frame(1)\nraise RuntimeError('script failed on purpose')\n",
}


@pytest.mark.parametrize("name", list(SCRIPTS))
def test_process_exits_cleanly(name: str, tmp_path) -> None:
    script = tmp_path / "script.py"
    script.write_text(PRELUDE + SCRIPTS[name])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), str(ROOT / "tests")]), OMP_NUM_THREADS="1")
    want = 1 if name == "raises" else 0
    # Five processes side by side (most of each run is importing torch).
    procs = [subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(5)]
    for p in procs:
        try:
            _out, err = p.communicate(timeout=180)
        except subprocess.TimeoutExpired:
            p.kill()
            _out, err = p.communicate()
        assert p.returncode == want, f"exit status {p.returncode}: {err[-2000:]}"
        assert "terminate called" not in err
        if name == "raises":
            assert "script failed on purpose" in err
