"""Y-PSNR of in-between frames at t = 1/4, 1/2, 3/4: recursive midpoints vs bicubic + linear blend.

Keeps every 4th frame of a held-out clip (x4 in time), downscales the kept frames (antialiased
bicubic, as for training) and reconstructs the three frames between each kept pair with
:meth:`vsstar.engine.StarEngine.process_times` (the bundled models know only t = 1/2, so t = 1/4 and
3/4 come from a second midpoint pass on (k, LR middle) and (LR middle, k+1)). Baseline: PIL bicubic
upscaling of both kept frames, blended linearly at the same t. Outputs are rounded to 8 bits and
compared with the dropped HR frames on BT.601 luma.

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/eval_rate.py [--clip ../shared/data/clips/carphone_pristine.mp4]
        [--scales 4,2] [--pairs N] [--device cpu] [--threads 2]
"""
from __future__ import annotations

import argparse
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

TIMES = (Fraction(1, 4), Fraction(1, 2), Fraction(3, 4))


def main() -> None:
    from training.data import read_video
    from training.imaging import crop_to_multiple, downscale_bicubic, rgb_to_y, to_tensor, upscale_pil
    from training.metrics import psnr
    from vsstar.engine import StarEngine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default=str(ROOT.parent / "shared" / "data" / "clips" / "carphone_pristine.mp4"))
    p.add_argument("--scales", default="4,2")
    p.add_argument("--pairs", type=int, default=None, help="first N kept pairs only (default all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    frames = read_video(args.clip).frames
    n_pairs = (len(frames) - 1) // 4
    if args.pairs:
        n_pairs = min(n_pairs, args.pairs)
    print(f"# {args.clip}: {len(frames)} frames, {n_pairs} kept pairs (frames 4i, 4i+4), device {args.device}")
    print("| scale | method | t=1/4 | t=1/2 | t=3/4 | all |")
    print("|---|---|---|---|---|---|")
    for scale in (int(s) for s in args.scales.split(",")):
        hr = [crop_to_multiple(f, scale) for f in frames[: 4 * n_pairs + 1]]
        lr = {k: downscale_bicubic(hr[k], scale) for k in range(0, 4 * n_pairs + 1, 4)}
        up = {k: upscale_pil(v, scale, "bicubic") for k, v in lr.items()}
        eng = StarEngine(None, scale=scale, mode="st", device=args.device, batch_size=1)
        res: dict[str, dict[Fraction, list[float]]] = {m: {t: [] for t in TIMES} for m in ("recursive midpoints", "bicubic + blend")}
        for i in range(n_pairs):
            a, b = 4 * i, 4 * i + 4
            out = eng.process_times(to_tensor(lr[a])[None], to_tensor(lr[b])[None], [list(TIMES)])
            for q, t in enumerate(TIMES, start=1):
                truth = rgb_to_y(to_tensor(hr[a + q]))
                ours = out.mids[0][t].clamp(0, 1).mul(255).round().div(255)
                blend = np.round((1 - float(t)) * up[a].astype(np.float64) + float(t) * up[b]).astype(np.uint8)
                res["recursive midpoints"][t].append(psnr(rgb_to_y(ours), truth))
                res["bicubic + blend"][t].append(psnr(rgb_to_y(to_tensor(blend)), truth))
        for m, per_t in res.items():
            cells = [f"{np.mean(per_t[t]):.2f}" for t in TIMES]
            allv = np.mean([v for t in TIMES for v in per_t[t]])
            print(f"| x{scale} | {m} | {' | '.join(cells)} | {allv:.2f} |", flush=True)


if __name__ == "__main__":
    main()
