"""Small test helpers: a tiny random-weight STARnet, an ffprobe summary and where the shared data is."""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
import torch

from vsstar.model import StarConfig, StarNet

#: Overrides where the shared read-only data is (``VSSTAR_SHARED=/nonexistent`` runs the suite as a fresh clone).
SHARED_ENV = "VSSTAR_SHARED"


def shared_dir() -> Path:
    """The shared read-only data folder: ``$VSSTAR_SHARED`` when set, else ``../shared`` beside the checkout.

    It may not exist (a fresh clone has none); tests reach it only through :func:`shared_path` (conftest's
    ``shared`` fixture), so this is the one place that knows where it is."""
    env = os.environ.get(SHARED_ENV)
    return Path(env) if env else Path(__file__).resolve().parent.parent.parent / "shared"


def shared_path(rel: str, local: Path | None = None) -> Path:
    """``local`` when it exists (data the repository ships), else ``rel`` under :func:`shared_dir`.

    Skips the calling test, naming the missing file, when neither is there."""
    if local is not None and local.exists():
        return local
    path = shared_dir() / rel
    if not path.exists():
        pytest.skip(f"needs {rel} from the shared data: {path} does not exist (set {SHARED_ENV} to the shared folder)")
    return path


def tiny_net(scale: int = 2, objective: str = "STAR", seed: int = 0, damp: bool = True,
             time_input: bool = False, time_motion: bool = False) -> StarNet:
    """A small random-weight STARnet with a global skip, in eval mode (objective STAR: every mode runs it).

    damp=True halves every conv weight, as a trained model's residual would be small, so outputs stay
    in a sensible range for tests that compare pixels. time_input=True: a model that takes t, with a
    random (not identity) time modulation so that t changes every output; time_motion=True adds Net_M on the
    flows scaled to t (config.time_motion).
    """
    torch.manual_seed(seed)
    cfg = StarConfig(scale=scale, base_filter=8, feat=8, n_resblock=1, s_resblocks=1, down_resblocks=1,
                     motion_resblocks=1, t_lr_resblocks=1, global_skip=True, objective=objective,
                     time_input=time_input or time_motion, time_motion=time_motion)
    net = StarNet(cfg)
    with torch.no_grad():
        if damp:
            for m in net.modules():
                if isinstance(m, (torch.nn.Conv2d, torch.nn.ConvTranspose2d)):
                    m.weight.mul_(0.5)
        if time_input or time_motion:
            net.time_mod.fc2.weight.normal_(0.0, 0.2)
    return net.eval()


def probe(path: Path) -> tuple[int, int, str, int]:
    """(width, height, r_frame_rate, counted frames) of the first video stream."""
    out = subprocess.run([shutil.which("ffprobe") or "ffprobe", "-v", "error", "-select_streams", "v:0",
                          "-count_frames", "-show_entries", "stream=width,height,r_frame_rate,nb_read_frames",
                          "-of", "csv=p=0", str(path)], capture_output=True, text=True, check=True).stdout.strip()
    w, h, rate, n = out.split(",")
    return int(w), int(h), rate, int(n)
