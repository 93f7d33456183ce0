#!/usr/bin/env python3
"""GPU measurements that need no VapourSynth: reduced-precision drift and the whole engine pipeline.

    python benchmarks/bench_cuda.py drift [--pairs 20]      # Y-PSNR on carphone in fp32 / fp16 / bf16
    python benchmarks/bench_cuda.py pipeline [--pairs 8]    # flow + network + host copies, frames/s, memory

``drift``: the README protocol (even frames of carphone_pristine.mp4 downscaled by antialiased bicubic, every
frame reconstructed) through the bundled x4 model under autocast in each precision, flows computed once on
the device; Y-PSNR of the SR and in-between frames against the pristine ones, and of each precision's outputs
against fp32's. The precision the engine uses by default on CUDA must stay within 0.05 dB of fp32.

``pipeline``: 8-bit frames on the host -> StarEngine (device copy, both flow directions batched, the
network) -> 8-bit frames on the host, the path every host adapter takes; cases at 720x576 -> x4 and
1920x1080 -> x2, with the bundled weights and the paper-size model (random weights). Reports output frames/s,
the engine's own flow and network seconds, the rest ("plumbing": conversions and copies to and from the
device; the network figure includes the copy of its outputs to the host), and peak device memory.

Both print Markdown tables and, with ``--json FILE``, write the figures. On a machine without CUDA they run
on the CPU (``--device cpu``, with ``--quick`` sizes) so the script itself can be tried anywhere.
"""
from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

DTYPES = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}


def _clip(name: str) -> Path:
    for cand in (ROOT.parent / "shared" / "data" / "clips" / name, ROOT / "samples" / "bikes_320x136.mp4"):
        if cand.is_file():
            return cand
    raise SystemExit(f"no source clip: {name} nor samples/bikes_320x136.mp4")


def _read(path: Path, n: int, size: tuple[int, int] | None = None) -> list[np.ndarray]:
    """The first n frames of a video as HxWx3 uint8 RGB (resized to size=(w, h) with area filtering)."""
    import cv2

    cap = cv2.VideoCapture(str(path))
    out = []
    while len(out) < n:
        ok, img = cap.read()
        if not ok:
            break
        if size is not None:
            img = cv2.resize(img, size, interpolation=cv2.INTER_AREA if size[0] < img.shape[1] else cv2.INTER_CUBIC)
        out.append(np.ascontiguousarray(img[:, :, ::-1]))
    if len(out) < min(n, 2):
        raise SystemExit(f"{path}: fewer than {n} frames")
    return out


def _y(rgb: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of 8-bit-rounded RGB in [0, 1]."""
    q = (rgb.clamp(0, 1) * 255).round() / 255
    return 0.299 * q[:, 0] + 0.587 * q[:, 1] + 0.114 * q[:, 2]


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = float(((_y(a.float().cpu()) - _y(b.float().cpu())) ** 2).mean())
    return float("inf") if mse == 0 else 10 * math.log10(1.0 / mse)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _paper_model(scale: int):
    """The paper's STAR with flow refinement at `scale`, damped random weights (bench_openvino's), seed 0."""
    from bench_openvino import _damped_official

    torch.manual_seed(0)
    return _damped_official(scale)


# ------------------------------------------------------------------------------------------- drift
def bench_drift(args) -> dict:
    from PIL import Image

    from vsstar.flow import coarse2fine_flow_batch
    from vsstar.model import Star, load_model

    device = torch.device(args.device)
    truth = [torch.from_numpy(f).permute(2, 0, 1).float() / 255.0
             for f in _read(_clip("carphone_pristine.mp4"), 2 * args.pairs + 1)]
    truth = torch.stack(truth[: (len(truth) - 1) // 2 * 2 + 1])
    s = 4
    h, w = truth.shape[2] // s, truth.shape[3] // s
    lr = []
    for t in truth[::2]:  # even frames, antialiased bicubic (PIL), as training/evaluate.py does
        img = Image.fromarray((t.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8))
        lr.append(torch.from_numpy(np.array(img.resize((w, h), Image.BICUBIC))).permute(2, 0, 1).float() / 255.0)
    lr = torch.stack(lr).to(device)
    a, b = lr[:-1], lr[1:]
    n = a.shape[0]
    flows = coarse2fine_flow_batch(torch.cat([a, b]), torch.cat([b, a]))
    star = Star(load_model("star_st_x4")).to(device).eval()
    outs, rows = {}, {}
    for name in args.dtypes.split(","):
        dtype = DTYPES[name]
        ctx = torch.autocast(device.type, dtype=dtype) if dtype is not None else torch.autocast(device.type,
                                                                                               enabled=False)
        sr, mid = [], []
        with ctx:
            for i in range(0, n, 4):
                j = min(i + 4, n)
                o = star(a[i:j], b[i:j], flows[i:j], flows[n + i:n + j])
                sr.append(o.h1.float().clamp(0, 1).cpu())
                mid.append(o.ht.float().clamp(0, 1).cpu())
        sr, mid = torch.cat(sr), torch.cat(mid)
        outs[name] = torch.cat([sr, mid])
        rows[name] = {"sr_db": statistics.mean(_psnr(sr[i:i + 1], truth[2 * i:2 * i + 1]) for i in range(n)),
                      "mid_db": statistics.mean(_psnr(mid[i:i + 1], truth[2 * i + 1:2 * i + 2]) for i in range(n))}
    ref = rows.get("fp32")
    print(f"\nY-PSNR on carphone ({n} pairs, x4 from {w}x{h}, bundled star_st_x4, {device}, 8-bit outputs)")
    print("| precision | SR frames dB | in-between dB | drift vs fp32 (SR / in-between) dB | PSNR vs fp32 outputs dB |")
    print("|---|---|---|---|---|")
    for name, r in rows.items():
        if ref is not None and name != "fp32":
            r["drift_sr_db"], r["drift_mid_db"] = r["sr_db"] - ref["sr_db"], r["mid_db"] - ref["mid_db"]
            r["vs_fp32_db"] = _psnr(outs[name], outs["fp32"])
            extra = f"{r['drift_sr_db']:+.3f} / {r['drift_mid_db']:+.3f} | {r['vs_fp32_db']:.1f}"
        else:
            extra = "- | -"
        print(f"| {name} | {r['sr_db']:.3f} | {r['mid_db']:.3f} | {extra} |")
    return {"device": str(device), "pairs": n, "rows": rows}


# ---------------------------------------------------------------------------------------- pipeline
def _cases(args) -> list[tuple[str, object, int, tuple[int, int]]]:
    from vsstar.model import load_model

    if args.quick:
        return [("bundled star_st_x4", lambda: load_model("star_st_x4"), 4, (64, 48)),
                ("bundled star_st_x2", lambda: load_model("star_st_x2"), 2, (96, 64))]
    # Most telling first (a GPU run may be cut short): the paper's model at Vid4's LR size (180x144 -> 720x576)
    # is what the authors' 14 frames/s (network only) was measured on.
    return [("bundled star_st_x4", lambda: load_model("star_st_x4"), 4, (720, 576)),
            ("paper STAR x4 + FR (random)", lambda: _paper_model(4), 4, (180, 144)),
            ("bundled star_st_x2", lambda: load_model("star_st_x2"), 2, (1920, 1080)),
            ("paper STAR x4 + FR (random)", lambda: _paper_model(4), 4, (720, 576)),
            ("paper STAR x2 + FR (random)", lambda: _paper_model(2), 2, (1920, 1080))]


def bench_pipeline(args) -> dict:
    from vsstar.engine import StarEngine

    device = torch.device(args.device)
    src = _clip("bikes.mp4")
    rows = []
    for name, make, scale, size in _cases(args):
        if args.only and not any(k in name for k in args.only.split(",")):
            continue
        frames = _read(src, args.pairs + 1, size)
        for fp16 in ([True, False] if device.type == "cuda" else [False]):
            eng = None
            row = {"case": name, "input": f"{size[0]}x{size[1]}", "scale": scale, "fp16": fp16}
            try:
                eng = StarEngine(make(), scale=scale, device=device, fp16=fp16, backend="torch")
                row.update(_run_pipeline(eng, frames, device))
            except Exception as exc:  # noqa: BLE001 - one failing case must not hide the others
                row["error"] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            finally:
                eng = None
                if device.type == "cuda":
                    torch.cuda.empty_cache()
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(f"\nWhole pipeline through StarEngine on {device} ({args.pairs} pairs, mode st, 8-bit host frames in "
          "and out; the first batch untimed)")
    print("| case | input | fp16 | output frames/s | flow s | network s | plumbing | peak device memory | batch |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        if "error" in r:
            print(f"| {r['case']} | {r['input']} | {r['fp16']} | failed: {r['error']} | | | | | |")
            continue
        print(f"| {r['case']} | {r['input']} -> x{r['scale']} | {r['fp16']} | {r['fps']:.2f} | {r['flow_s']:.2f} | "
              f"{r['net_s']:.2f} | {100 * r['plumbing']:.1f}% | {r['peak_mb']:.0f} MB | {r['batch']} |")
    return {"device": str(device), "rows": rows}


def _run_pipeline(eng, frames: list[np.ndarray], device: torch.device) -> dict:
    """Time the timed part of the frame list through eng: host uint8 -> engine -> host uint8."""

    def to_tensor(batch: list[np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(np.stack(batch)).permute(0, 3, 1, 2).float().div_(255.0)

    def to_host(t: torch.Tensor) -> np.ndarray:
        return t.mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()

    def step(i: int, j: int) -> int:
        out = eng.process(to_tensor(frames[i:j]), to_tensor(frames[i + 1:j + 1]))
        got = [to_host(out.sr_first), to_host(out.mid)]
        return sum(len(g) for g in got)

    bs = eng.batch_size
    npairs = len(frames) - 1
    step(0, min(bs, npairs))  # warm-up: allocations, kernel selection, CUDA graphs capture
    _sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    st = eng.stats
    f0, n0 = st.flow_s, st.net_s
    t0 = time.perf_counter()
    produced = 0
    for i in range(0, npairs, bs):
        produced += step(i, min(i + bs, npairs))
    _sync(device)
    wall = time.perf_counter() - t0
    flow_s, net_s = st.flow_s - f0, st.net_s - n0
    peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else float("nan")
    return {"fps": produced / wall, "wall_s": wall, "flow_s": flow_s, "net_s": net_s,
            "plumbing": max(0.0, wall - flow_s - net_s) / wall, "peak_mb": peak, "batch": bs, "frames": produced,
            "tiles": st.tiles}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("section", choices=("drift", "pipeline"))
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--pairs", type=int, default=None, help="frame pairs (drift: 20, pipeline: 8)")
    p.add_argument("--dtypes", default=None, help="drift: precisions (default fp32,fp16,bf16; CPU: fp32,bf16)")
    p.add_argument("--only", default=None, help="pipeline: run the cases whose names contain one of these words")
    p.add_argument("--quick", action="store_true", help="tiny sizes (to try the script on a CPU)")
    p.add_argument("--json", default=None, help="write the figures to this file")
    args = p.parse_args()
    if args.dtypes is None:
        args.dtypes = "fp32,fp16,bf16" if args.device.startswith("cuda") else "fp32,bf16"
    if args.pairs is None:
        args.pairs = (20 if args.section == "drift" else 8) if not args.quick else 3
    result = bench_drift(args) if args.section == "drift" else bench_pipeline(args)
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
