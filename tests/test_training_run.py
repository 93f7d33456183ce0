"""training/: a training step, checkpoints and exact resume (also after SIGKILL), DDP, export, evaluation."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

cv2 = pytest.importorskip("cv2")

from training.checkpoint import load_checkpoint, save_checkpoint
from training.presets import preset_config
from training.train import main as train_main

torch.set_num_threads(1)
ROOT = Path(__file__).resolve().parents[1]
ENV = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))


def _texture(h, w, seed=0):
    rng = np.random.default_rng(seed)
    img = cv2.GaussianBlur(rng.random((h, w, 3)).astype(np.float32), (0, 0), 1.5)
    return ((img - img.min()) / (img.max() - img.min()) * 255).astype(np.uint8)


@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Two small moving clips for training and one for validation, as frame folders."""
    root = tmp_path_factory.mktemp("footage")
    for name, (dx, dy, seed) in {"a": (1, 0, 1), "b": (0, 1, 2), "val": (1, 1, 3)}.items():
        big = _texture(80, 90, seed)
        d = root / ("train" if name != "val" else "") / name
        d.mkdir(parents=True)
        for k in range(6):
            Image.fromarray(big[8 + k * dy:8 + k * dy + 32, 8 + k * dx:8 + k * dx + 40]).save(d / f"{k:03d}.png")
    return root


def _args(footage, run_dir, steps, *extra):
    return ["--run-dir", str(run_dir), "--scale", "2", "--preset", "test", "--data", str(footage / "train"),
            "--crop", "8", "--batch", "2", "--steps", str(steps), "--threads", "1", "--no-progress",
            "--flow-cache", str(footage / "flowcache"), "--optimizer", "adam", "--lr", "1e-3",
            "--schedule", "cosine", "--ckpt-every", "2", "--log-every", "1", "--min-motion", "0", *extra]


def _losses(run_dir):
    out = {}
    for line in (Path(run_dir) / "losses.jsonl").read_text().splitlines():
        r = json.loads(line)
        out[r["step"]] = r["loss"]
    return out


def _same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_global_skip_starts_at_the_baseline_and_a_few_steps_lower_the_loss():
    from training.infer import encode_batch
    from training.losses import star_loss
    from vsstar.model import StarNet
    from vsstar.model.baseline import upscale
    torch.manual_seed(0)
    net = StarNet(preset_config("test", 2)).train()
    img = torch.from_numpy(_texture(40, 40)).permute(2, 0, 1).float()[None] / 255
    batch = {"lr1": torch.nn.functional.avg_pool2d(img[..., :32, :32], 2),
             "lr2": torch.nn.functional.avg_pool2d(img[..., 2:34, 1:33], 2),
             "flow_f": torch.zeros(1, 2, 16, 16), "flow_b": torch.zeros(1, 2, 16, 16)}
    batch["hr1"], batch["hr2"] = img[..., :32, :32], img[..., 2:34, 1:33]
    batch["hr_mid"] = img[..., 1:33, :32]
    batch["lr_mid"] = torch.nn.functional.avg_pool2d(batch["hr_mid"], 2)
    enc = encode_batch(batch)
    out = net(enc["lr1"], enc["lr2"], enc["flow_f"], enc["flow_b"])
    assert torch.allclose(out["h1"], upscale(enc["lr1"], 2), atol=1e-6)  # step 0 = bicubic
    # one small plain gradient step lowers the loss (checks the gradients of every output)
    opt = torch.optim.SGD(net.parameters(), 1e-4)
    losses = []
    for _ in range(2):
        out = net(enc["lr1"], enc["lr2"], enc["flow_f"], enc["flow_b"])
        loss, parts = star_loss(out, enc, "STAR")
        assert set(parts) == {"ht", "ht_s1", "h1", "h1_s1", "h2", "h2_s1", "l", "l_s1"}
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[1] < losses[0]


def test_objective_terms_and_weights():
    from training.losses import star_loss
    t = {k: torch.zeros(1, 3, 4, 4) for k in ("hr_mid", "hr1", "hr2", "lr_mid")}
    out = {k: torch.ones(1, 3, 4, 4) for k in ("ht", "h1", "h2", "l", "ht_s1", "h1_s1", "h2_s1", "l_s1")}
    # STAR: (1 + .5 + .5 + 1) * (1.0 + 0.4)
    assert star_loss(out, t, "STAR")[0].item() == pytest.approx(3.0 * 1.4)
    assert star_loss(out, t, "STAR-ST")[0].item() == pytest.approx(2.0 * 1.4)
    assert star_loss(out, t, "STAR-S")[0].item() == pytest.approx(2.0 * 1.4)
    assert star_loss(out, t, "STAR-T_LR")[0].item() == pytest.approx(1.4)
    with pytest.raises(ValueError, match="objective"):
        star_loss(out, t, "STAR-X")


def test_perceptual_term_needs_local_weights(tmp_path):
    from training.losses import VGG19Features, perceptual_loss
    with pytest.raises(ValueError, match="vgg_weights.*not a file"):
        VGG19Features.from_file(tmp_path / "missing.pth")
    torch.save({f"features.{k}": v for k, v in VGG19Features().features.state_dict().items()}, tmp_path / "v.pth")
    vgg = VGG19Features.from_file(tmp_path / "v.pth")
    x = torch.rand(1, 3, 32, 32)
    loss = perceptual_loss(vgg, {"h1": x, "h2": x}, {"hr1": x, "hr2": x * 0.5}, "STAR-S")
    assert loss.item() > 0
    torch.save({"classifier.0.weight": torch.zeros(1)}, tmp_path / "w.pth")
    with pytest.raises(ValueError, match="lacks VGG19"):
        VGG19Features.from_file(tmp_path / "w.pth")


def test_checkpoint_is_atomic(tmp_path, monkeypatch):
    p = tmp_path / "c.pt"
    save_checkpoint(p, {"step": 1, "model": {}, "optimizer": {}, "config": {}})
    before = p.read_bytes()

    def boom(*a, **k):
        raise OSError("disk full")
    monkeypatch.setattr(torch, "save", boom)
    with pytest.raises(OSError):
        save_checkpoint(p, {"step": 2, "model": {}, "optimizer": {}, "config": {}})
    assert p.read_bytes() == before and [x.name for x in tmp_path.iterdir()] == ["c.pt"]  # no temp left


def test_train_resume_sigkill_and_corrupt_checkpoint(footage, tmp_path):
    # Uninterrupted reference run.
    ref = tmp_path / "ref"
    assert train_main(_args(footage, ref, 30)) == 0
    st = load_checkpoint(ref / "last.pt")
    assert st["step"] == 30 and sorted(_losses(ref)) == list(range(1, 31))
    assert (ref / "step_0000030.pt").is_file() and (ref / "report.md").is_file()
    assert len(list(ref.glob("step_*.pt"))) == 3  # --keep
    # Stopped cleanly half-way (--stop-at), then resumed: bit-identical to the uninterrupted run.
    half = tmp_path / "half"
    assert train_main(_args(footage, half, 30, "--stop-at", "13")) == 0
    assert load_checkpoint(half / "last.pt")["step"] == 13
    assert train_main(_args(footage, half, 30, "--resume")) == 0
    assert _same_weights(ref / "last.pt", half / "last.pt")
    # Killed with SIGKILL after a few checkpoints, then resumed: same step count, same weights.
    run = tmp_path / "killed"
    cmd = [sys.executable, "-m", "training.train", *_args(footage, run, 30), "--ckpt-every", "1"]
    proc = subprocess.Popen(cmd, env=ENV, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    t0 = time.time()
    while time.time() - t0 < 120 and proc.poll() is None:
        try:
            if (run / "last.pt").is_file() and load_checkpoint(run / "last.pt")["step"] >= 3:
                break
        except ValueError:
            pass
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(run / "last.pt")["step"]
    assert 3 <= killed_at < 30, "the run ended before it could be killed"
    assert train_main(_args(footage, run, 30, "--resume")) == 0
    assert not list(run.glob(".*.tmp"))  # a temp file left by the kill is cleaned up on resume
    assert load_checkpoint(run / "last.pt")["step"] == 30
    assert _same_weights(ref / "last.pt", run / "last.pt")
    l1, l2 = _losses(ref), _losses(run)
    assert all(l1[s] == l2[s] for s in l1)

    # A corrupt checkpoint on resume: a clear error and nothing written or overwritten.
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "last.pt").write_bytes(b"\x80\x04garbage" * 20)
    before = {p.name: p.read_bytes() for p in bad.iterdir()}
    assert train_main(_args(footage, bad, 8, "--resume")) == 2
    assert {p.name: p.read_bytes() for p in bad.iterdir()} == before
    # Options that change the data stream are refused on resume.
    assert train_main(_args(footage, ref, 40, "--resume", "--seed", "5")) == 2
    assert load_checkpoint(ref / "last.pt")["step"] == 30


@pytest.fixture
def torchrun() -> Path:
    path = Path(sys.executable).with_name("torchrun")
    if not path.exists():
        pytest.skip("torchrun not installed")
    return path


def test_ddp_two_gloo_processes_match_one_process(footage, tmp_path, torchrun):
    # float32 (bfloat16 rounds each process's half-batch differently: tests/test_training_amp.py)
    one = tmp_path / "one"
    assert train_main(_args(footage, one, 3, "--amp", "off")) == 0
    two = tmp_path / "two"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "training.train",
           *_args(footage, two, 3, "--amp", "off")]
    r = subprocess.run(cmd, env=ENV, cwd=ROOT, capture_output=True, text=True, timeout=240)
    assert r.returncode == 0, r.stderr[-2000:]
    l1, l2 = _losses(one), _losses(two)
    assert sorted(l1) == sorted(l2) == [1, 2, 3]
    for s in l1:
        assert l2[s] == pytest.approx(l1[s], rel=1e-5)
    sa, sb = load_checkpoint(one / "last.pt")["model"], load_checkpoint(two / "last.pt")["model"]
    for k in sa:
        assert torch.allclose(sa[k], sb[k], rtol=1e-3, atol=1e-4), k


def _pids_with_env(key: str, value: str) -> dict[int, dict[str, str]]:
    """Processes whose environment has key=value, with their environments (Linux /proc)."""
    out = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            env = dict(kv.split("=", 1) for kv in (d / "environ").read_text().split("\0") if "=" in kv)
        except OSError:
            continue
        if env.get(key) == value:
            out[int(d.name)] = env
    return out


@pytest.mark.skipif(not Path("/proc/self/environ").exists(), reason="needs Linux /proc to find the workers")
def test_ddp_signal_on_one_rank_stops_all_ranks_after_the_same_step(footage, tmp_path, torchrun):
    """SIGTERM reaching one worker only (an OOM killer, a scheduler) must not leave the other one blocked in
    a collective: both finish the step, rank 0 saves it, and torchrun exits 0."""
    run, tag = tmp_path / "run", f"vsstar-{os.getpid()}-{time.time_ns()}"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "training.train",
           *_args(footage, run, 100000), "--ckpt-every", "0"]
    proc = subprocess.Popen(cmd, env=dict(ENV, VSSTAR_TEST_TAG=tag), cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        t0 = time.time()
        while time.time() - t0 < 120 and proc.poll() is None:
            if (run / "losses.jsonl").is_file() and len((run / "losses.jsonl").read_text().splitlines()) >= 2:
                break
            time.sleep(0.05)
        workers = {pid for pid, env in _pids_with_env("VSSTAR_TEST_TAG", tag).items() if env.get("RANK") == "1"}
        assert len(workers) == 1, "rank 1 not found"
        os.kill(workers.pop(), signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    last = max(_losses(run))
    assert 2 <= last < 100000
    assert load_checkpoint(run / "last.pt")["step"] == last
    assert f"stopped at step {last} (a signal on another rank)" in (run / "train.log").read_text()


def test_export_round_trip_and_evaluation(footage, tmp_path):
    from training.evaluate import evaluate, load_any
    from training.export import export_checkpoint, net_from_checkpoint
    from training.report import write_report
    from vsstar.model import load_model, read_metadata
    run = tmp_path / "run"
    assert train_main(_args(footage, run, 2, "--val", str(footage / "val"), "--val-every", "1",
                            "--val-pairs", "2")) == 0
    st = load_checkpoint(run / "last.pt")
    assert [h["step"] for h in st["history"]] == [0, 1, 2] and (run / "best.pt").is_file()
    h0 = st["history"][0]
    # step 0 (global skip) is the classical answer: torch bicubic, near PIL's bicubic (sharper kernel)
    assert -0.5 < h0["model/sr/psnr_y"] - h0["bicubic/sr/psnr_y"] < 3.0
    out = export_checkpoint(run / "last.pt", tmp_path / "w.safetensors", description="test")
    meta = read_metadata(out)
    assert meta["steps"] == 2 and meta["global_skip"] is True and meta["description"] == "test"
    net = load_model(str(out))
    ref, _ = net_from_checkpoint(run / "last.pt")
    x = torch.rand(1, 3, 8, 8)
    f = torch.zeros(1, 2, 8, 8)
    with torch.no_grad():
        for a, b in zip(net(x, x, f, f), ref(x, x, f, f)):
            assert torch.equal(a, b)
    assert load_any(str(run / "last.pt")).config == net.config
    frames = [np.asarray(Image.open(p)) for p in sorted((footage / "val").iterdir())]
    res = evaluate(net, frames, tmp_path / "ev", name="eval_test", with_ssim=False)
    assert res["per_frame"]["frames"] == list(range(6)) and res["per_frame"]["kinds"].count("mid") == 3
    assert (tmp_path / "ev" / "eval_test.json").is_file() and len(res["pictures"]) == 2
    shutil.copy(tmp_path / "ev" / "eval_test.json", run / "eval_test.json")
    md = write_report(run).read_text()
    assert "val_psnr_all.png" in md and (run / "val_psnr_all.png").is_file() and "eval_test" in md
    with pytest.raises(ValueError, match="checkpoint: .* is not a vsstar training checkpoint"):
        export_checkpoint(tmp_path / "w.safetensors", tmp_path / "x.safetensors")
    (tmp_path / "trunc.pt").write_bytes((run / "last.pt").read_bytes()[:500])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        export_checkpoint(tmp_path / "trunc.pt", tmp_path / "x.safetensors")
    assert not (tmp_path / "x.safetensors").exists()


def test_train_cli_bad_data_is_a_clear_error(footage, tmp_path, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    run = tmp_path / "run"
    args = _args(footage, run, 2)
    args[args.index("--data") + 1] = str(empty)
    assert train_main(args) == 2
    assert "no videos" in capsys.readouterr().err
    assert not (run / "last.pt").exists()
    short = tmp_path / "short" / "clip"
    short.mkdir(parents=True)
    for k in range(2):
        Image.fromarray(_texture(32, 40, k)).save(short / f"{k}.png")
    args[args.index("--data") + 1] = str(tmp_path / "short")
    assert train_main(args) == 2
    assert "'clip': needs at least 3 frames" in capsys.readouterr().err


def test_loader_threads_train_the_same_weights(footage, tmp_path):
    # Samples built on threads and the next batch prefetched: the same batches in the same order.
    ref, thr = tmp_path / "ref", tmp_path / "threads"
    assert train_main(_args(footage, ref, 8)) == 0
    assert train_main(_args(footage, thr, 8, "--loader-threads", "3", "--stop-at", "5")) == 0
    assert train_main(_args(footage, thr, 8, "--loader-threads", "3", "--resume")) == 0
    assert _same_weights(ref / "last.pt", thr / "last.pt")
    assert train_main(_args(footage, tmp_path / "bad", 1, "--loader-threads", "-1")) == 2


def test_bad_flow_device_is_refused_before_training(footage, tmp_path, capsys):
    assert train_main(_args(footage, tmp_path / "bad", 1, "--flow-device", "gpu")) == 2
    assert "flow_device: device must be None, 'cpu', 'cuda' or 'cuda:N', got 'gpu'" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert train_main(_args(footage, tmp_path / "bad2", 1, "--flow-device", "cuda")) == 2
        assert "flow_device: device='cuda' but CUDA is not available" in capsys.readouterr().err


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (mixed precision, CUDA flows)")
def test_amp_training_on_cuda(footage, tmp_path):
    run = tmp_path / "cuda"
    gpu = ("--device", "cuda", "--amp", "on", "--flow-device", "cuda", "--loader-threads", "2",
           "--flow-cache", str(tmp_path / "flowcache_cuda"))
    assert train_main(_args(footage, run, 3, *gpu)) == 0
    st = load_checkpoint(run / "last.pt")
    assert st["step"] == 3 and st["scaler"] is not None
    assert train_main(_args(footage, run, 5, *gpu, "--resume")) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 5


class _Plant:
    """Unpickling this creates the marker file (what a planted checkpoint could do with any code)."""

    def __init__(self, marker: Path) -> None:
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _plant_files(tmp_path: Path, marker: Path) -> list[Path]:
    """Planted pickles in the shapes each loader looks for: a training checkpoint, a state dict (zip
    format and the legacy raw pickle)."""
    import pickle

    from training.checkpoint import FORMAT
    ckpt = tmp_path / "evil_ckpt.pt"
    torch.save({"format": FORMAT, "format_version": 2, "step": 1, "model": _Plant(marker), "optimizer": {},
                "config": {}}, ckpt)
    sd = tmp_path / "FBPNSR_RBPN_V4_Lf_STAR.pth"
    torch.save({"state_dict": _Plant(marker)}, sd)
    legacy = tmp_path / "evil_legacy.pt"
    with open(legacy, "wb") as fh:
        pickle.dump({"model": _Plant(marker)}, fh, protocol=2)
    return [ckpt, sd, legacy]


def test_no_loader_runs_a_planted_pickle(footage, tmp_path, capsys):
    """Every way the project reads a .pt/.pth refuses a pickle that would run code, and says what it calls."""
    from training.checkpoint import load_checkpoint as load_ckpt, load_net
    from training.evaluate import main as evaluate_main
    from training.export import main as export_main
    from training.report import write_report
    from vsstar.engine import StarEngine
    from vsstar.model import load_model, load_official
    marker = tmp_path / "planted_code_ran"
    files = _plant_files(tmp_path, marker)
    for evil in files:
        run = tmp_path / f"run_{evil.stem}"
        assert train_main(_args(footage, run, 2, "--init", str(evil))) == 2
        assert train_main(_args(footage, run, 2, "--resume", str(evil))) == 2
        assert evaluate_main(["--model", str(evil), "--clip", str(footage / "val")]) == 2
        assert export_main([str(evil), str(tmp_path / "out.safetensors")]) == 2
        for loader in (load_model, load_official, load_ckpt, load_net, StarEngine):
            with pytest.raises(ValueError):
                loader(str(evil))
        run.mkdir(exist_ok=True)
        shutil.copy(evil, run / "last.pt")
        assert train_main(_args(footage, run, 2, "--resume")) == 2  # last.pt, and nothing to fall back to
        with pytest.raises(ValueError):
            write_report(run)
        assert not marker.exists()
    err = capsys.readouterr().err
    assert len(re.findall(r"refused .*it calls [\w.]*open\b", err)) >= 5 * len(files)
    assert not (tmp_path / "out.safetensors").exists()
    assert not marker.exists()


def test_resume_falls_back_from_a_damaged_last_checkpoint(footage, tmp_path, capsys):
    """A damaged last.pt: the run resumes from the newest intact checkpoint and names it."""
    ref = tmp_path / "ref"
    assert train_main(_args(footage, ref, 8)) == 0
    run = tmp_path / "run"
    assert train_main(_args(footage, run, 8, "--stop-at", "5", "--ckpt-every", "2")) == 0
    assert sorted(p.name for p in run.glob("step_*.pt")) == ["step_0000002.pt", "step_0000004.pt"]
    (run / "last.pt").write_bytes((run / "last.pt").read_bytes()[:300])  # truncated by a full disk, say
    capsys.readouterr()
    assert train_main(_args(footage, run, 8, "--resume", "--ckpt-every", "2")) == 0
    err = capsys.readouterr().err
    assert "corrupt or truncated" in err and "resuming from" in err and "step_0000004.pt (step 4)" in err
    assert "step_0000004.pt (step 4)" in (run / "train.log").read_text()
    assert load_checkpoint(run / "last.pt")["step"] == 8
    assert _same_weights(ref / "last.pt", run / "last.pt")  # resumed exactly from step 4
    # An explicitly named damaged checkpoint is not replaced by another one.
    (run / "step_0000008.pt").write_bytes(b"\x80\x04garbage")
    assert train_main(_args(footage, run, 10, "--resume", str(run / "step_0000008.pt"))) == 2


def test_checkpoints_load_without_pickled_code(tmp_path):
    """Checkpoints (RNG states included) load with weights_only=True and restore every RNG exactly."""
    import random

    from training.checkpoint import rng_state, set_rng_state
    np.random.seed(3)
    np.random.normal()  # a cached Gaussian in the numpy state
    random.seed(4)
    torch.manual_seed(5)
    state = {"step": 1, "model": {"w": torch.ones(2)}, "optimizer": {}, "config": {}, "rng": rng_state(),
             "history": [{"step": 1, "psnr": np.float64(30.5)}], "arr": np.arange(3)}
    save_checkpoint(tmp_path / "c.pt", state)
    st = torch.load(tmp_path / "c.pt", weights_only=True)
    assert st["history"][0]["psnr"] == 30.5 and type(st["history"][0]["psnr"]) is float
    expect = (np.random.random(), random.random(), torch.rand(1))
    np.random.seed(0), random.seed(0), torch.manual_seed(0)
    set_rng_state(load_checkpoint(tmp_path / "c.pt")["rng"])
    assert (np.random.random(), random.random(), torch.rand(1)) == expect


def test_val_range_holds_out_only_that_segment(tmp_path):
    """--val-range validates on a segment of a training clip and leaves exactly that segment out of training."""
    from training.train import build_parser, load_clips
    data = tmp_path / "data"
    for name in ("a", "b"):
        d = data / name
        d.mkdir(parents=True)
        for k in range(10):  # every frame unique: its value says which frame it is
            Image.fromarray(np.full((16, 16, 3), k * 10 + (name == "b"), np.uint8)).save(d / f"{k:03d}.png")
    base = ["--run-dir", str(tmp_path / "r"), "--data", str(data)]

    def frames_of(argv):
        clips = load_clips(build_parser().parse_args(base + argv), lambda _m: None)
        return {c.name: [int(f[0, 0, 0]) for f in c.frames] for c in clips}

    # the whole clip is left out when --val names it without a range
    assert set(frames_of(["--val", str(data / "a")])) == {"b"}
    got = frames_of(["--val", str(data / "a"), "--val-range", "4-6"])
    assert got == {"a[0-3]": [0, 10, 20, 30], "a[7-9]": [70, 80, 90], "b": [k * 10 + 1 for k in range(10)]}
    got = frames_of(["--exclude-frames", "b:0-1", "--exclude-frames", "b:8-9"])
    assert got["b[2-7]"] == [21, 31, 41, 51, 61, 71] and len(got["a"]) == 10
    with pytest.raises(ValueError, match="exclude-frames: no training clip is named 'c'"):
        frames_of(["--exclude-frames", "c:0-1"])
    with pytest.raises(ValueError, match="exclude-frames: expected NAME:FIRST-LAST"):
        frames_of(["--exclude-frames", "0-1"])


def test_partial_init_loads_the_matching_tensors_of_another_scale(tmp_path):
    from training.train import Trainer, build_parser
    from vsstar.model import StarNet, save_weights
    x2 = StarNet(preset_config("test", 2))
    for p in x2.parameters():
        torch.nn.init.normal_(p)
    save_weights(x2, tmp_path / "x2.safetensors")
    args = build_parser().parse_args(["--run-dir", str(tmp_path / "r"), "--scale", "4", "--preset", "test",
                                      "--init", str(tmp_path / "x2.safetensors")])
    tr = Trainer(args)
    tr.net = StarNet(preset_config("test", 4))
    with pytest.raises(ValueError, match="does not fit this run's model"):
        tr._load_init(args.init)  # a plain --init must match exactly
    tr.args.init_partial = True
    fresh = {k: v.clone() for k, v in StarNet(preset_config("test", 4)).state_dict().items()}
    tr.net.load_state_dict(fresh)
    tr._load_init(args.init)
    got, src = tr.net.state_dict(), x2.state_dict()
    same = [k for k in got if tuple(src[k].shape) == tuple(got[k].shape)]
    assert 0 < len(same) < len(got)
    assert all(torch.equal(got[k], src[k]) for k in same)
    assert all(torch.equal(got[k], fresh[k]) for k in got if k not in same)


def test_evaluate_frame_range(footage, tmp_path, capsys):
    from training.evaluate import main as evaluate_main
    from vsstar.model import StarNet, save_weights
    save_weights(StarNet(preset_config("test", 2)), tmp_path / "t.safetensors")
    clip = footage / "val"  # 6 frames
    argv = ["--model", str(tmp_path / "t.safetensors"), "--clip", str(clip), "--no-ssim", "--out", str(tmp_path),
            "--name", "seg"]
    assert evaluate_main(argv + ["--frame-range", "1-5"]) == 0
    res = json.loads((tmp_path / "seg_x2.json").read_text())
    assert res["per_frame"]["frames"] == list(range(5))  # frames 1..5 of the clip, renumbered from 0
    capsys.readouterr()
    assert evaluate_main(argv + ["--frame-range", "2-6"]) == 2
    assert "frame-range: " in capsys.readouterr().err


def test_freeze_keeps_the_named_sub_networks(footage, tmp_path, capsys):
    """--freeze: the named sub-networks keep the --init weights exactly, the rest trains; unknown names and
    freezing everything are refused with one line."""
    from training.export import export_checkpoint

    base = tmp_path / "base"
    assert train_main(_args(footage, base, 2)) == 0
    init = tmp_path / "init.safetensors"
    export_checkpoint(base / "last.pt", init)
    run = tmp_path / "frozen"
    assert train_main(_args(footage, run, 3, "--init", str(init), "--freeze", "sr,motion")) == 0
    before, after = load_checkpoint(base / "last.pt")["model"], load_checkpoint(run / "last.pt")["model"]
    for k, v in after.items():
        same = torch.equal(v.float(), before[k].float())
        assert same == k.startswith(("sr.", "motion.")), k
    assert "frozen: sr, motion" in (run / "train.log").read_text()
    assert train_main(_args(footage, tmp_path / "bad", 1, "--freeze", "sr,net_s")) == 2
    assert "--freeze: net_s is not a sub-network of this model" in capsys.readouterr().err
    every = "sr,down,motion_head,motion,interp,t_hr,t_lr,up_f,up_b,rec_h,rec_l"
    assert train_main(_args(footage, tmp_path / "all", 1, "--freeze", every)) == 2
    assert "nothing would be left to train" in capsys.readouterr().err


def test_plan_steps_fits_the_seconds_left():
    from training.train import plan_steps
    # 10 steps/s, 100 s left, 5% margin: 950 more steps.
    assert plan_steps(20, 10.0, 100.0, 10**6) == 20 + 950
    # A 9.5 s validation every 95 steps doubles the time per step; the final one is kept back too.
    assert plan_steps(20, 10.0, 100.0, 10**6, val_every=95, val_seconds=9.5) == 20 + int((95 - 9.5) / 0.2)
    assert plan_steps(20, 10.0, 100.0, 300) == 300  # never above --steps
    assert plan_steps(20, 10.0, -5.0, 300) == 20  # budget already spent: stop now
    assert plan_steps(20, 0.0, 100.0, 300) == 20


def test_time_budget_ends_the_schedule_in_time_and_resume_keeps_the_plan(footage, tmp_path, capsys):
    run = tmp_path / "budget"
    common = ("--time-budget", "8", "--budget-probe", "6", "--warmup", "6", "--ckpt-every", "1000")
    t0 = time.monotonic()
    assert train_main(_args(footage, run, 100000, *common)) == 0
    took = time.monotonic() - t0
    st = load_checkpoint(run / "last.pt")
    planned = st["args"]["planned_steps"]
    assert 6 < planned < 100000 and st["step"] == planned
    assert took < 8 + 6, f"{took:.1f} s for an 8 s budget"
    # The run ends where its cosine does (the floor), not cut part-way.
    assert st["scheduler"]["_last_lr"][0] == pytest.approx(1e-3 * 0.05)
    assert f"the schedule ends at step {planned} (--steps 100000)" in (run / "train.log").read_text()
    # Stopped before its end and resumed with the same options: the plan is the first part's.
    part = tmp_path / "part"
    assert train_main(_args(footage, part, 100000, *common, "--stop-at", "9")) == 0
    first = load_checkpoint(part / "last.pt")
    assert first["step"] == 9 and first["args"]["planned_steps"] > 9
    assert train_main(_args(footage, part, 100000, *common, "--resume", "--stop-at", "12")) == 0
    again = load_checkpoint(part / "last.pt")
    assert again["step"] == 12 and again["args"]["planned_steps"] == first["args"]["planned_steps"]
    assert train_main(_args(footage, tmp_path / "bad", 10, "--time-budget", "0")) == 2
    assert "time_budget: expected a positive number of seconds, got 0.0" in capsys.readouterr().err


def test_time_budget_counts_from_the_process_start():
    """--time-budget's clock starts with the process (imports and start-up included), not with the Trainer."""
    code = ("import time; time.sleep(1.5); from training.train import process_start; "
            "print(time.monotonic() - process_start())")
    out = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parent.parent,
                         capture_output=True, text=True, timeout=120, check=True)
    assert float(out.stdout) >= 1.5
