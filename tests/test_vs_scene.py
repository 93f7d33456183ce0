"""The built-in scene-change detector (vsstar.scene), on synthetic frames and on the sample clip."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from vsstar.scene import DEFAULT_SC_THRESHOLD, scene_change, scene_score

SAMPLE = Path(__file__).resolve().parent.parent / "samples" / "bikes_320x136.mp4"


def smooth(seed: int, h: int = 72, w: int = 128) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w] / 20.0
    f = [np.sin(xx * rng.uniform(0.5, 2) + rng.uniform(0, 6)) * np.cos(yy * rng.uniform(0.5, 2)) for _ in range(3)]
    return (0.4 * np.stack(f) + 0.5).astype(np.float32)


def test_identical_and_moving_frames_are_not_cuts() -> None:
    a = smooth(0)
    assert scene_score(a, a) == 0.0
    moved = np.roll(a, 3, axis=2)
    assert not scene_change(a, moved)
    assert not scene_change(a, np.clip(a * 1.05, 0, 1))  # a small exposure change


def test_different_scenes_are_cuts() -> None:
    a, b = smooth(0), smooth(1) * 0.3  # another picture, darker
    assert scene_score(a, b) > DEFAULT_SC_THRESHOLD
    assert scene_change(a, b)
    assert not scene_change(a, b, threshold=1.0)


def test_layouts_and_types_agree() -> None:
    a, b = smooth(2), smooth(3)
    ref = scene_score(a, b)
    assert scene_score(a.transpose(1, 2, 0), b.transpose(1, 2, 0)) == pytest.approx(ref, abs=1e-6)
    assert scene_score(torch.from_numpy(a)[None], torch.from_numpy(b)[None]) == pytest.approx(ref, abs=1e-6)
    luma_a = a.mean(axis=0)
    assert 0.0 <= scene_score(luma_a, luma_a + 0.5) <= 1.0


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="threshold"):
        scene_change(smooth(0), smooth(1), threshold=2)
    with pytest.raises(ValueError, match="same size"):
        scene_score(smooth(0), smooth(0, 64, 64))
    with pytest.raises(ValueError, match="frame"):
        scene_score(np.zeros((2, 5, 7, 9)), np.zeros((2, 5, 7, 9)))


def test_finds_the_cut_in_the_sample_clip() -> None:
    vs = pytest.importorskip("vapoursynth")
    core = vs.core
    if not hasattr(core, "bs") or not SAMPLE.exists():
        pytest.skip("needs BestSource and the sample clip")
    clip = core.resize.Bicubic(core.bs.VideoSource(str(SAMPLE)), format=vs.RGBS, matrix_in_s="709")
    frames = [np.stack([np.asarray(clip.get_frame(i)[p]) for p in range(3)]) for i in range(clip.num_frames)]
    cuts = [k for k in range(len(frames) - 1) if scene_change(frames[k], frames[k + 1])]
    assert cuts == [19]  # bikes.mp4 frames 10..57: the cut between source frames 29 and 30
