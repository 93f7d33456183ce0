"""training/: data slicing, LR making, augmentation, flow cache, bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")

from training.data import (Clip, Sample, TripletDataset, augment, cut_triplets, moving_still, read_frame_folder,
                           read_video, read_vimeo_triplets, scan_folder)
from training.flowcache import FlowCache
from training.imaging import crop_to_multiple, downscale_bicubic, to_tensor

torch.set_num_threads(1)


def texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    """A smooth random colour texture (flow can lock on it)."""
    rng = np.random.default_rng(seed)
    img = rng.random((h, w, 3)).astype(np.float32) * 255
    img = cv2.GaussianBlur(img, (0, 0), 1.5)
    img = (img - img.min()) / (img.max() - img.min()) * 255
    return img.astype(np.uint8)


def shifted_clip(n: int = 5, h: int = 48, w: int = 64, dx: int = 1, dy: int = 0, name: str = "c") -> Clip:
    big = texture(h + 40, w + 40)
    return Clip(name, [big[20 + k * dy:20 + k * dy + h, 20 + k * dx:20 + k * dx + w].copy() for k in range(n)])


def write_frames(folder, frames):
    folder.mkdir(parents=True, exist_ok=True)
    for i, f in enumerate(frames):
        Image.fromarray(f).save(folder / f"{i:04d}.png")


# ------------------------------------------------------------------------------------------ LR making
def test_lr_is_pil_bicubic_of_the_cropped_frame():
    img = texture(37, 50)
    hr = crop_to_multiple(img, 4)
    assert hr.shape == (36, 48, 3)
    assert np.array_equal(hr, img[:36, :48])  # cropped from the top-left like the original
    lr = downscale_bicubic(hr, 4)
    ref = np.asarray(Image.fromarray(hr).resize((12, 9), Image.BICUBIC))
    assert lr.shape == (9, 12, 3) and np.array_equal(lr, ref)
    # antialiased: a 1-pixel checkerboard averages to grey instead of aliasing to black or white
    cb = (np.indices((32, 32)).sum(0) % 2 * 255).astype(np.uint8)[..., None].repeat(3, 2)
    assert abs(float(downscale_bicubic(cb, 4).mean()) - 127.5) < 3 and downscale_bicubic(cb, 4).std() < 3


def test_lr_making_rejects_bad_sizes():
    with pytest.raises(ValueError, match="multiple of the scale"):
        downscale_bicubic(texture(30, 30), 4)
    with pytest.raises(ValueError, match="smaller than the scale"):
        crop_to_multiple(texture(3, 30), 4)


def test_dataset_sample_shapes_and_lr_consistency():
    clip = shifted_clip(5, 40, 52)
    ds = TripletDataset([clip], 4, crop=None, augment=False, flow_cache=None)
    assert len(ds) == 3
    s = ds.get(0, 1)
    assert s.hr1.shape == (3, 40, 52) and s.lr1.shape == (3, 10, 13) and s.flow_f.shape == (2, 10, 13)
    assert torch.equal(s.hr_mid, to_tensor(clip.frames[2][:40, :52]))
    assert torch.equal(s.lr_mid, to_tensor(downscale_bicubic(clip.frames[2][:40, :52], 4)))


# ------------------------------------------------------------------------------------------ slicing
def test_cut_triplets_stride_and_motion_filter():
    moving = shifted_clip(9, dx=2)
    still = Clip("still", [texture(48, 64)] * 6)
    t = cut_triplets([moving, still], stride=1)
    assert [(x.clip, x.start) for x in t] == [(0, i) for i in range(7)] + [(1, i) for i in range(4)]
    t = cut_triplets([moving, still], stride=3)
    assert [(x.clip, x.start) for x in t] == [(0, 0), (0, 3), (0, 6), (1, 0), (1, 3)]
    t = cut_triplets([moving, still], stride=1, min_motion=0.5)
    assert {x.clip for x in t} == {0} and len(t) == 7  # static triplets skipped
    with pytest.raises(ValueError, match="stride"):
        cut_triplets([moving], stride=0)


def test_scan_folder_finds_videos_frame_folders_and_vimeo(tmp_path):
    write_frames(tmp_path / "data" / "seqA", shifted_clip(4).frames)
    vw = cv2.VideoWriter(str(tmp_path / "data" / "v.avi"), cv2.VideoWriter_fourcc(*"MJPG"), 10, (64, 48))
    for f in shifted_clip(5).frames:
        vw.write(cv2.cvtColor(f, cv2.COLOR_RGB2BGR))
    vw.release()
    (tmp_path / "data" / "empty_sub").mkdir()
    clips = scan_folder(tmp_path / "data")
    assert sorted((c.name, len(c.frames)) for c in clips) == [("seqA", 4), ("v", 5)]
    assert [c.name for c in scan_folder(tmp_path / "data", exclude=["v"])] == ["seqA"]
    assert read_video(tmp_path / "data" / "v.avi").frames[0].shape == (48, 64, 3)
    # Vimeo-90K triplet layout
    root = tmp_path / "vimeo"
    write_frames(root / "sequences" / "00001" / "0001", shifted_clip(3).frames)
    for i, p in enumerate(sorted((root / "sequences" / "00001" / "0001").iterdir())):
        p.rename(p.with_name(f"im{i + 1}.png"))
    (root / "tri_trainlist.txt").write_text("00001/0001\n")
    v = scan_folder(root)
    assert len(v) == 1 and len(v[0].frames) == 3 and v[0].name == "vimeo/00001/0001"
    assert np.array_equal(v[0].frames[1], shifted_clip(3).frames[1])


def test_max_side_reduces_large_sources(tmp_path):
    write_frames(tmp_path / "big", [texture(100, 200, s) for s in range(3)])
    c = read_frame_folder(tmp_path / "big", max_side=100)
    assert c.frames[0].shape == (50, 100, 3)


# ------------------------------------------------------------------------------------------ bad input
def test_empty_and_unreadable_data_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no videos .* or frame folders found"):
        scan_folder(tmp_path / "empty")
    with pytest.raises(ValueError, match="does not exist"):
        scan_folder(tmp_path / "missing")
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a folder or a video"):
        scan_folder(tmp_path / "notes.txt")
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "broken.mp4").write_bytes(b"this is not a video" * 10)
    with pytest.raises(ValueError, match="broken.mp4"):
        scan_folder(bad)
    frames = tmp_path / "frames"
    write_frames(frames, shifted_clip(3).frames)
    (frames / "0009.png").write_bytes(b"corrupt png")
    with pytest.raises(ValueError, match="0009.png.*cannot be read"):
        read_frame_folder(frames)


def test_short_clips_and_mismatched_sizes(tmp_path):
    write_frames(tmp_path / "short", shifted_clip(3).frames[:2])
    with pytest.raises(ValueError, match="'short'.*at least 3 frames.*got 2"):
        scan_folder(tmp_path)
    frames = shifted_clip(3).frames
    frames[1] = frames[1][:40]
    with pytest.raises(ValueError, match="frame 1 is 64x40 but frame 0 is 64x48"):
        Clip("mixed", frames)
    write_frames(tmp_path / "mixed", frames)
    with pytest.raises(ValueError, match="same size"):
        read_frame_folder(tmp_path / "mixed")


def test_dataset_rejects_too_small_clips_and_empty_lists():
    with pytest.raises(ValueError, match="too small for LR crops"):
        TripletDataset([shifted_clip(3, 40, 40)], 4, crop=16)
    with pytest.raises(ValueError, match="empty"):
        TripletDataset([], 4)
    with pytest.raises(ValueError, match="motion filter"):
        TripletDataset([Clip("s", [texture(48, 64)] * 3)], 2, crop=8, min_motion=1.0)


# ------------------------------------------------------------------------------------------ augmentation
@pytest.mark.parametrize("flags", [(1, 0, 0, 0), (0, 1, 0, 0), (0, 0, 1, 0), (0, 0, 0, 1), (1, 1, 1, 1), (1, 0, 1, 0)])
def test_augment_keeps_flows_consistent_with_images(flags):
    from vsstar.model.baseline import backward_warp
    clip = shifted_clip(3, 40, 56, dx=2, dy=1)  # frame t+2 is frame t moved by (-4, -2): content moves left/up
    a = to_tensor(clip.frames[0])
    b = to_tensor(clip.frames[2])
    ff = torch.tensor([-4.0, -2.0]).view(2, 1, 1).expand(2, 40, 56).clone()  # b(x + ff) = a(x)
    fb = -ff
    s = Sample(a, b, a, a, a, b, ff, fb)
    t = augment(s, *map(bool, flags))
    inner = (slice(None), slice(6, -6), slice(6, -6))
    warped = backward_warp(t.lr2[None], t.flow_f[None])[0]
    assert torch.allclose(warped[inner], t.lr1[inner], atol=1e-5)
    warped = backward_warp(t.lr1[None], t.flow_b[None])[0]
    assert torch.allclose(warped[inner], t.lr2[inner], atol=1e-5)
    # HR targets follow the inputs (temporal reversal swaps them)
    assert torch.equal(t.hr1, t.lr1) and torch.equal(t.hr2, t.lr2)


def test_samples_are_deterministic_per_epoch_and_index():
    ds = TripletDataset([shifted_clip(6, 48, 64)], 2, crop=8, flow_cache=None, seed=3)
    a, b, c = ds.get(1, 2), ds.get(1, 2), ds.get(2, 2)
    assert all(torch.equal(getattr(a, k), getattr(b, k)) for k in Sample.__dataclass_fields__)
    assert not all(torch.equal(getattr(a, k), getattr(c, k)) for k in Sample.__dataclass_fields__)


def test_data_indices_shard_the_global_batch():
    from training.train import data_indices
    single = data_indices(5, 4, 7, seed=1)
    ranks = data_indices(5, 4, 7, seed=1, rank=0, world=2) + data_indices(5, 4, 7, seed=1, rank=1, world=2)
    assert single == ranks
    # every sample once per epoch
    seen = [i for s in range(7) for e, i in data_indices(s, 4, 7, seed=1) if e == 0]
    assert sorted(seen) == list(range(7))
    with pytest.raises(ValueError, match="divisible"):
        data_indices(0, 3, 7, seed=1, world=2)


def test_moving_still_moves():
    clip = moving_still(texture(200, 200), "s", n_frames=4, seed=1, max_shift=3.0)
    assert len(clip.frames) == 4 and clip.frames[0].shape == (84, 84, 3)
    assert np.abs(clip.frames[0].astype(int) - clip.frames[3].astype(int)).mean() > 1


# ------------------------------------------------------------------------------------------ flow cache
def test_flow_cache_hits_and_keys(tmp_path):
    clip = shifted_clip(3, 32, 40, dx=1)
    a, b = clip.frames[0], clip.frames[2]
    cache = FlowCache(tmp_path / "fc")
    f1 = cache.get(a, b)
    assert cache.misses == 1 and cache.hits == 0
    assert abs(float(f1[0][0].mean()) + 2.0) < 0.5  # b(x - 2) ~ a(x)
    f2 = cache.get(a, b)
    assert cache.hits == 1 and np.array_equal(f1[0], f2[0]) and np.array_equal(f1[1], f2[1])
    assert len(list((tmp_path / "fc").rglob("*.npz"))) == 1
    # different content or parameters: different entries
    other = FlowCache(tmp_path / "fc", params={"n_outer": 3})
    assert other.key(a, b) != cache.key(a, b) and cache.key(b, a) != cache.key(a, b)
    b2 = b.copy()
    b2[0, 0, 0] ^= 1
    assert cache.key(a, b2) != cache.key(a, b)
    # fill computes only the missing pairs; a damaged entry is recomputed
    assert cache.fill([(a, b), (b, a)], progress=False) == 1
    p = cache.path(cache.key(a, b))
    p.write_bytes(b"truncated")
    f3 = cache.get(a, b)
    assert np.allclose(f3[0], f1[0])
    with pytest.raises(ValueError, match=r"params: unknown keys \['speed'\]"):
        FlowCache(tmp_path / "fc", params={"speed": 1})
    with pytest.raises(ValueError, match="params: n_sor"):
        FlowCache(tmp_path / "fc", params={"n_sor": -1})


def test_flow_cache_key_is_stable(tmp_path):
    """Keys hash the same parameter dict as before FlowSettings existed, so existing caches stay valid;
    equal settings given as ints or floats give the same key."""
    import hashlib
    import json

    a = np.zeros((8, 10, 3), np.uint8)
    b = np.full((8, 10, 3), 7, np.uint8)
    h = hashlib.sha256()
    old_params = dict(alpha=0.012, ratio=0.75, min_width=20, n_outer=7, n_inner=1, n_sor=30, col_type=0)
    h.update(json.dumps({"v": 1, "params": old_params, "shape": [a.shape, b.shape]}, sort_keys=True).encode())
    h.update(a.tobytes())
    h.update(b.tobytes())
    assert FlowCache(tmp_path / "fc").key(a, b) == h.hexdigest()[:40]
    assert (FlowCache(tmp_path / "fc", {"alpha": 1}).key(a, b)
            == FlowCache(tmp_path / "fc", {"alpha": 1.0}).key(a, b))
    # Flows solved on a GPU (red-black order) are not the CPU's exact ones: they never share a key.
    assert FlowCache(tmp_path / "fc", device="cuda").key(a, b) != FlowCache(tmp_path / "fc").key(a, b)
    assert FlowCache(tmp_path / "fc", device="cpu").key(a, b) == h.hexdigest()[:40]


def test_dataset_uses_the_cache_on_the_second_epoch(tmp_path):
    cache = FlowCache(tmp_path / "fc")
    ds = TripletDataset([shifted_clip(4, 32, 48)], 2, crop=8, flow_cache=cache)
    assert ds.precompute_flows(progress=False) == 2
    cache.misses = 0
    for e in range(2):
        for i in range(len(ds)):
            ds.get(e, i)
    assert cache.misses == 0 and cache.hits == 4


def test_schedules_warmup_step_cosine_and_restart():
    import types
    from training.train import make_scheduler
    base = dict(lr_steps="", steps=100, warmup=10, schedule="cosine", lr_gamma=0.1, min_lr_ratio=0.05)

    def factors(**kw):
        p = torch.nn.Parameter(torch.zeros(1))
        s = make_scheduler(torch.optim.Adam([p], 1.0), types.SimpleNamespace(**{**base, **kw}))
        return [s.lr_lambdas[0](i) for i in range(0, 201)]
    f = factors()
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[100] == pytest.approx(0.05)
    assert all(a >= b for a, b in zip(f[10:100], f[11:101]))  # decreasing after the warm-up
    # extending a finished run with a new cycle leaves the steps already taken unchanged
    g = factors(steps=200, cycle_start=100, cycle_peak=0.4)
    assert g[:100] == f[:100] and g[100] == pytest.approx(0.4) and g[200] == pytest.approx(0.05)
    st = factors(schedule="step", lr_steps="30,60", warmup=0)
    assert st[29] == 1.0 and st[30] == pytest.approx(0.1) and st[60] == pytest.approx(0.01)


# ------------------------------------------------------------------------------------------ held-out segments
def test_drop_frames_leaves_runs_without_the_range():
    from training.data import drop_frames, parse_frame_range
    c = Clip("c", [np.full((8, 8, 3), i, np.uint8) for i in range(12)])
    parts = drop_frames(c, [(3, 5)])
    assert [p.name for p in parts] == ["c[0-2]", "c[6-11]"]
    assert [int(f[0, 0, 0]) for p in parts for f in p.frames] == [0, 1, 2, 6, 7, 8, 9, 10, 11]
    # a run shorter than a triplet is dropped; two ranges at once
    parts = drop_frames(c, [(2, 3), (9, 11)])
    assert [(p.name, len(p.frames)) for p in parts] == [("c[4-8]", 5)]
    assert parse_frame_range(" 187-241 ") == (187, 241)
    for bad in ("187", "9-3", "a-b", "-1-4"):
        with pytest.raises(ValueError, match="range: expected FIRST-LAST"):
            parse_frame_range(bad, "range")
    with pytest.raises(ValueError, match="has only 12 frames"):
        drop_frames(c, [(12, 20)])


def test_camera_footage_is_reduced_before_it_is_ground_truth(shared):
    # The 720p H.264 clips of ../shared/data/footage: decoded, then reduced (antialiased) to --max-side, so
    # the compression noise of the full-size frames is averaged away before they become HR targets.
    path = shared("data/footage/dog.mp4")
    full = read_video(path, max_frames=3)
    small = read_video(path, max_side=640, max_frames=3)
    assert full.frames[0].shape == (720, 1280, 3) and small.frames[0].shape == (360, 640, 3)
    want = np.asarray(Image.fromarray(full.frames[2]).resize((640, 360), Image.BICUBIC))
    assert np.array_equal(small.frames[2], want)
    ds = TripletDataset([small], 4, crop=32, augment=False)
    assert ds.lr(0, 0).shape == (90, 160, 3)
