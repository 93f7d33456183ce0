"""The quality bar on a held-out clip (default carphone_pristine.mp4), and the speed at 240p.

Protocol: odd frames dropped, the even frames downscaled by antialiased bicubic (PIL), every frame
reconstructed through the path ``vsstar.STAR`` runs (its frame schedule and its ``Star`` wrapper; even frames
super-resolved, odd frames interpolated), Y-PSNR (BT.601) averaged over all
output frames and over the in-between frames alone, beside bicubic (and Lanczos) upscaling with linear
blending for the in-between frames. Outputs are rounded to 8 bits before measuring.

    python -m training.evaluate --model star_st_x4 --clip ../shared/data/clips/carphone_pristine.mp4
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["load_any", "evaluate", "bench", "main"]


def load_any(spec: str):
    """A StarNet from a training checkpoint (.pt written by training), our safetensors, a bundled name or
    an authors' checkpoint; ``preset:NAME:SCALE`` builds an untrained preset (for --bench)."""
    if spec.startswith("preset:"):
        from vsstar.model import StarNet
        from .presets import preset_config
        try:
            _, name, scale = spec.split(":")
            return StarNet(preset_config(name, int(scale))).eval()
        except ValueError as e:
            raise ValueError(f"model: expected preset:NAME:SCALE, got {spec!r} ({e})") from e
    from .checkpoint import load_net
    return load_net(spec, what="model")[0]


def evaluate(net, frames, out_dir: Path | None = None, flow_cache=None, name: str = "eval",
             with_ssim: bool = True, bar_db: float = 1.0) -> dict:
    """Run the protocol; returns a dict with the summary, a text table, per-frame PSNR and picture paths."""
    from .report import side_by_side
    from .validate import Validator
    scale = net.config.scale
    n = len(frames)
    mid_pick = min(n - 2, (n // 4) * 2 + 1)   # an in-between frame near the first quarter
    sr_pick = mid_pick - 1
    val = Validator(frames, scale, flow_cache, max_pairs=None, with_ssim=with_ssim, keep_images=(sr_pick, mid_pick))
    from vsstar.model import Star
    star = Star(net)  # the wrapper vsstar.engine builds around the network (resolve_model)
    t = time.time()
    res = val.run(star)
    elapsed = time.time() - t
    s = res.summary()
    rows = []
    for method, label in (("model", "model"), ("bicubic", "bicubic+blend"), ("lanczos", "lanczos+blend")):
        rows.append(f"| {label} | {s[f'{method}/all/psnr_y']:.3f} | {s[f'{method}/mid/psnr_y']:.3f} | "
                    f"{s[f'{method}/sr/psnr_y']:.3f} | "
                    + (f"{s[f'{method}/all/ssim_y']:.4f} |" if with_ssim else "- |"))
    d_all = s["model/all/psnr_y"] - s["bicubic/all/psnr_y"]
    d_mid = s["model/mid/psnr_y"] - s["bicubic/mid/psnr_y"]
    ok = d_all >= bar_db and d_mid >= bar_db
    table = "\n".join([
        f"x{scale}, {len(res.frames)} output frames ({res.kinds.count('mid')} in-between), Y-PSNR dB",
        "| method | all frames | in-between | SR frames | SSIM-Y all |", "|---|---|---|---|---|", *rows,
        f"gain over bicubic+blend: all {d_all:+.3f} dB, in-between {d_mid:+.3f} dB -> "
        f"bar (+{bar_db:.1f} dB on both): {'PASS' if ok else 'FAIL'}"])
    out = {"scale": scale, "summary": s, "table": table, "passed": ok, "gain_all": d_all, "gain_mid": d_mid,
           "seconds": elapsed,
           "per_frame": {"frames": res.frames, "kinds": res.kinds,
                         **{m: [r["psnr_y"] for r in res.per_frame[m]] for m in res.per_frame}},
           "pictures": []}
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for idx, kind in ((mid_pick, "in-between"), (sr_pick, "sr")):
            imgs = {k: res.images[k][idx] for k in ("truth", "bicubic", "lanczos", "model") if idx in res.images[k]}
            h, w = imgs["truth"].shape[:2]
            ch, cw = min(h, 96 * scale // 2), min(w, 128 * scale // 2)
            y0, x0 = (h - ch) // 2, (w - cw) // 2
            crops = {f"{k} (frame {idx}, {kind})" if k == "truth" else
                     ("model" if k == "model" else f"{k}+blend" if kind == "in-between" else k):
                     v[y0:y0 + ch, x0:x0 + cw] for k, v in imgs.items()}
            png = out_dir / f"{name}_{kind}.png"
            side_by_side(crops, png, zoom=2)
            out["pictures"].append(png.name)
        from .report import line_plot
        pf = out["per_frame"]
        line_plot({m: (pf["frames"], pf[m]) for m in ("model", "bicubic", "lanczos")},
                  out_dir / f"{name}_per_frame.png", f"{name}: Y-PSNR per output frame (odd = in-between)",
                  "frame", "dB")
        (out_dir / f"{name}.json").write_text(json.dumps(out, indent=1))
    return out


def bench(net, size: tuple[int, int] = (240, 426), repeats: int = 2) -> dict:
    """Seconds per frame pair at the given LR size, flow (both directions) and network, on CPU."""
    from vsstar.model import Star
    from .flowcache import compute_flows
    star = Star(net)
    rng = np.random.default_rng(0)
    h, w = size
    base = (rng.random((h + 8, w + 8, 3)) * 255).astype(np.uint8)
    import cv2
    base = cv2.GaussianBlur(base, (0, 0), 2)
    a, b = base[:h, :w], base[3:h + 3, 2:w + 2]
    compute_flows(a[:32, :32], b[:32, :32])  # warm-up: the flow's first call may compile (numba)
    tf, tn = [], []
    for _ in range(repeats):
        t = time.time()
        ff, fb = compute_flows(a, b)
        tf.append(time.time() - t)
        x1 = torch.from_numpy(a.copy()).permute(2, 0, 1)[None].float() / 255
        x2 = torch.from_numpy(b.copy()).permute(2, 0, 1)[None].float() / 255
        t = time.time()
        star(x1, x2, torch.from_numpy(ff)[None], torch.from_numpy(fb)[None])
        tn.append(time.time() - t)
    f, n = min(tf), min(tn)
    # A pair yields two output frames in a stream (the SR frame and the in-between one).
    out = {"flow_s": f, "net_s": n, "pair_s": f + n, "out_fps": 2 / (f + n), "threads": torch.get_num_threads(),
           "size": f"{w}x{h}"}
    try:  # the path users run: vsstar.engine (flow + network + its own padding / tiling)
        from vsstar.engine import StarEngine
    except ImportError:
        return out
    eng = StarEngine(model=net, scale=net.config.scale, mode="st", device="cpu")
    te = []
    for _ in range(repeats):
        t = time.time()
        eng.process(x1, x2)
        te.append(time.time() - t)
    out["engine_s"] = min(te)
    out["engine_fps"] = 2 / min(te)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.evaluate", description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, action="append",
                   help="bundled name, .safetensors, or a training checkpoint .pt (repeatable)")
    p.add_argument("--clip", default="../shared/data/clips/carphone_pristine.mp4")
    p.add_argument("--frames", type=int, default=None, help="only the first N frames")
    p.add_argument("--frame-range", default=None, metavar="FIRST-LAST",
                   help="only frames FIRST..LAST (0-based, inclusive), e.g. a segment held out of training "
                        "with training.train --val-range")
    p.add_argument("--out", default=None, help="folder for the JSON and the comparison pictures")
    p.add_argument("--name", default=None, help="prefix of the output files (NAME_xS.json, NAME_xS_*.png)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-ssim", action="store_true")
    p.add_argument("--bench", action="store_true", help="also time flow + network at 426x240 input")
    p.add_argument("--bench-repeats", type=int, default=2, help="timed runs per measurement (the best counts)")
    p.add_argument("--flow-cache", default=None)
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        from .data import read_frame_folder, read_video
        clip = read_video(a.clip) if Path(a.clip).is_file() else read_frame_folder(a.clip)
        frames = clip.frames
        if a.frame_range:
            from .data import parse_frame_range
            first, last = parse_frame_range(a.frame_range, "frame-range")
            if last >= len(frames):
                raise ValueError(f"frame-range: {a.clip!r} has {len(frames)} frames, got {a.frame_range!r}")
            frames = frames[first:last + 1]
        frames = frames[:a.frames] if a.frames else frames
        cache = None
        if a.flow_cache:
            from .flowcache import FlowCache
            cache = FlowCache(a.flow_cache)
        for spec in a.model:
            net = load_any(spec)
            print(f"## {spec} ({sum(p.numel() for p in net.parameters()) / 1e6:.3f} M parameters)")
            if not (a.bench and spec.startswith("preset:")):
                name = f"{a.name or 'eval_' + Path(spec).stem}_x{net.config.scale}"
                res = evaluate(net, frames, Path(a.out) if a.out else None, cache, name, with_ssim=not a.no_ssim)
                print(res["table"])
            if a.bench:
                b = bench(net, repeats=a.bench_repeats)
                print(f"speed at {b['size']} input, {b['threads']} threads: flow {b['flow_s']:.2f} s + network "
                      f"{b['net_s']:.2f} s per pair = {b['out_fps']:.3f} output frames/s"
                      + (f"; vsstar.engine {b['engine_s']:.2f} s per pair = {b['engine_fps']:.3f} output frames/s"
                         if "engine_s" in b else ""))
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
