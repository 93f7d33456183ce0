"""Training validation and training.evaluate measure what users get: the same frames as vsstar.STAR."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from support import tiny_net
from training.imaging import downscale_bicubic
from training.validate import Validator
from vsstar.flow import FlowSettings
from vsstar.model import Star

vs = pytest.importorskip("vapoursynth")


def smooth_frames(n: int, h: int, w: int) -> list[np.ndarray]:
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for k in range(n):
        f = np.stack([np.sin((xx - 1.5 * k) / 4.0), np.cos((yy + k) / 5.0), np.sin((xx + yy - k) / 6.0)], -1)
        out.append(np.round((0.4 * f + 0.5) * 255).astype(np.uint8))
    return out


@pytest.mark.parametrize("n", [6, 7])  # an even count ends on a repeated in-between frame
def test_validation_frames_are_the_filters_frames(n: int) -> None:
    # 26x22 HR -> 13x11 LR: not a multiple of the network's size, so padding is exercised
    frames = smooth_frames(n, 22, 26)
    net = tiny_net(scale=2)
    val = Validator(frames, 2, max_pairs=None, with_ssim=False, keep_images=range(n))
    res = val.run(Star(net))
    assert res.frames == list(range(n))

    from vsstar.vs import STAR

    core = vs.core
    lr = [downscale_bicubic(frames[i], 2) for i in range(0, n, 2)]
    blank = core.std.BlankClip(width=lr[0].shape[1], height=lr[0].shape[0], format=vs.RGBS, length=len(lr))

    def fill(n, f):
        out = f.copy()
        for p in range(3):
            np.copyto(np.asarray(out[p]), lr[n][..., p].astype(np.float32) / 255)
        return out

    clip = core.std.ModifyFrame(blank, blank, fill)
    out = STAR(clip, scale=2, model=net, device="cpu", scene_change=False, flow_options=FlowSettings().to_dict())
    for j in range(n):
        f = out.get_frame(j)
        got = np.stack([np.asarray(f[p]) for p in range(3)], -1)
        got = np.round(np.clip(got, 0, 1) * 255).astype(np.int16)
        diff = np.abs(got - res.images["model"][j].astype(np.int16))
        assert diff.max() <= 1, (j, diff.max())  # 8-bit rounding of float-level differences only


def test_validation_leaves_a_training_network_as_it_was() -> None:
    net = tiny_net(scale=2).train()
    fmt = [p.is_contiguous() for p in net.parameters()]
    Validator(smooth_frames(5, 16, 16), 2, max_pairs=1, with_ssim=False).run(net)
    assert net.training and [p.is_contiguous() for p in net.parameters()] == fmt
    with torch.no_grad():
        assert all(torch.isfinite(p).all() for p in net.parameters())
