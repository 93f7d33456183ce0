"""Several devices in one STAR filter: one engine per device, all fed from the one frame schedule. On the CPU
with two CPU engines (one torch thread): the same frames as one device whatever the thread count and request
order, pairs spread over both engines, each pair computed once. CUDA tests need two GPUs."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

vs = pytest.importorskip("vapoursynth")

from vsstar.vs import STAR, StoreStats  # noqa: E402

from test_vs import FAST_FLOW, CountingEngine, make_clip, pattern  # noqa: E402
from support import tiny_net  # noqa: E402

core = vs.core


@pytest.fixture
def vs_threads():
    before = core.num_threads
    yield
    core.num_threads = before


def planes(frame) -> list[np.ndarray]:
    return [np.array(frame[p], copy=True) for p in range(frame.format.num_planes)]


def render(clip, order: list[int]) -> dict[int, list[np.ndarray]]:
    """Every frame of `clip`, requested all at once (asynchronously) in `order`."""
    futs = {j: clip.get_frame_async(j) for j in order}
    return {j: planes(f.result()) for j, f in futs.items()}


# 16 frames: a cut after frame 9 (the second scene is another picture).
ARRAYS = [pattern(k) for k in range(10)] + [pattern(k, scene=1) for k in range(6)]


@pytest.mark.parametrize("mode", ["st", "s"])
@pytest.mark.parametrize("threads", [1, 4])
def test_two_cpu_engines_same_frames_each_pair_once(one_torch_thread, vs_threads, mode, threads) -> None:
    net = tiny_net()
    core.num_threads = threads
    ref_engine = CountingEngine(net, ARRAYS, mode=mode)
    ref = STAR(make_clip(ARRAYS), scale=2, mode=mode, engine=ref_engine)
    expected = render(ref, list(range(ref.num_frames)))

    engines = [CountingEngine(net, ARRAYS, mode=mode) for _ in range(2)]
    stats = StoreStats()
    clip = STAR(make_clip(ARRAYS), scale=2, mode=mode, engine=engines, stats=stats)
    order = list(range(clip.num_frames))
    random.Random(threads).shuffle(order)
    got = render(clip, order)
    for j in range(clip.num_frames):
        for a, b in zip(got[j], expected[j]):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {j}")
    # Each pair once, over both engines together; the same pairs as on one device.
    counts = {}
    for e in engines:
        for key, c in e.counts.items():
            counts[key] = counts.get(key, 0) + c
    assert all(c == 1 for c in counts.values()), counts
    assert set(counts) == set(ref_engine.counts)
    assert stats.computed == len(counts) and sum(stats.by_engine) == stats.computed
    assert stats.by_engine == [sum(e.counts.values()) for e in engines]
    assert all(n > 0 for n in stats.by_engine), f"pairs were not spread over both engines: {stats.by_engine}"


def test_device_list_builds_one_engine_per_device(one_torch_thread, tmp_path) -> None:
    from vsstar.model import save_weights

    path = tmp_path / "tiny.safetensors"
    save_weights(tiny_net(), path)
    stats = StoreStats()
    clip = STAR(make_clip(ARRAYS[:6]), scale=2, model=str(path), device=["cpu", "cpu"], flow_options=FAST_FLOW,
                stats=stats)
    ref = STAR(make_clip(ARRAYS[:6]), scale=2, model=str(path), device="cpu", flow_options=FAST_FLOW)
    got, expected = render(clip, list(range(12))[::-1]), render(ref, list(range(12)))
    for j in range(12):
        for a, b in zip(got[j], expected[j]):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {j}")
    assert len(stats.by_engine) == 2 and sum(stats.by_engine) == stats.computed == 5


def test_device_arguments_are_checked() -> None:
    clip = make_clip(ARRAYS[:2])
    net = tiny_net()
    with pytest.raises(vs.Error, match="pass device or device_index, not both"):
        STAR(clip, scale=2, model=net, device="cpu", device_index=0)
    with pytest.raises(vs.Error, match="device_index must be an int >= 0 or a non-empty list"):
        STAR(clip, scale=2, model=net, device_index=[])
    with pytest.raises(vs.Error, match="device_index must be an int >= 0"):
        STAR(clip, scale=2, model=net, device_index=-1)
    with pytest.raises(vs.Error, match="device must be None, a device name or a non-empty list"):
        STAR(clip, scale=2, model=net, device=[])
    with pytest.raises(vs.Error, match="device must be None, 'cpu'.*got 'tpu'"):
        STAR(clip, scale=2, model=net, device=["cpu", "tpu"])
    if not torch.cuda.is_available():
        with pytest.raises(vs.Error, match="CUDA is not available"):
            STAR(clip, scale=2, model=net, device_index=[0, 1])


two_gpus = pytest.mark.skipif(not torch.cuda.is_available() or torch.cuda.device_count() < 2,
                              reason="needs two CUDA devices")


@two_gpus
@pytest.mark.parametrize("alias", [{"device": ["cuda:0", "cuda:1"]}, {"device_index": [0, 1]}])
def test_two_gpus_same_frames_each_pair_once(alias) -> None:
    net = tiny_net()
    ref = STAR(make_clip(ARRAYS), scale=2, model=net, device="cuda:0", batch_size=1, flow_options=FAST_FLOW)
    stats = StoreStats()
    clip = STAR(make_clip(ARRAYS), scale=2, model=net, batch_size=1, flow_options=FAST_FLOW, stats=stats, **alias)
    order = list(range(clip.num_frames))
    random.Random(0).shuffle(order)
    got, expected = render(clip, order), render(ref, list(range(ref.num_frames)))
    for j in range(clip.num_frames):
        for a, b in zip(got[j], expected[j]):
            np.testing.assert_array_equal(a, b, err_msg=f"frame {j}")
    assert len(stats.by_engine) == 2 and all(n > 0 for n in stats.by_engine)
