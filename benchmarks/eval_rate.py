"""Y-PSNR of in-between frames at t = 1/4, 1/2, 3/4: models with time input, recursive midpoints and
bicubic + linear blend.

Keeps every 4th frame of a held-out clip (x4 in time; ``--keep N``: every Nth, times j/N), downscales the kept frames (antialiased
bicubic, as for training) and reconstructs the three frames between each kept pair with
:meth:`vsstar.engine.StarEngine.process_times`, the path every host uses. A model with time input
synthesises each t directly; a model that knows only t = 1/2 reaches t = 1/4 and 3/4 by recursive
midpoints (a second pass on (k, LR middle) and (LR middle, k+1)). Baseline: PIL bicubic upscaling of
both kept frames, blended linearly at the same t. Outputs are rounded to 8 bits and compared with the
dropped HR frames on BT.601 luma. ``--plot`` draws the per-t table (matplotlib).

Usage:
    PYTHONPATH=. .venv/bin/python benchmarks/eval_rate.py [--clip ../shared/data/clips/carphone_pristine.mp4]
        [--scales 4,2] [--models star_st_x{s},star_time_x{s}] [--pairs N] [--device cpu] [--threads 2]
        [--json out.json] [--plot docs/images/rate_per_t.png]
"""
from __future__ import annotations

import argparse
import json
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

BASELINE = "bicubic + blend"


def method_name(eng) -> str:
    how = "t input" if eng.takes_time else "recursive midpoints"
    return f"{eng.model_name} ({how})"


def main() -> None:
    from training.data import read_video
    from training.imaging import crop_to_multiple, downscale_bicubic, rgb_to_y, to_tensor, upscale_pil
    from training.metrics import psnr
    from vsstar.engine import StarEngine

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clip", default=str(ROOT.parent / "shared" / "data" / "clips" / "carphone_pristine.mp4"))
    p.add_argument("--scales", default="4,2")
    p.add_argument("--models", default="star_st_x{s},star_time_x{s}",
                   help="comma-separated models per scale ({s} is the scale)")
    p.add_argument("--keep", type=int, default=4,
                   help="keep every Nth frame (default 4: t = 1/4, 1/2, 3/4; 5 gives t = 1/5 .. 4/5, which a t = 1/2 "
                        "model can only approximate)")
    p.add_argument("--pairs", type=int, default=None, help="first N kept pairs only (default all)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None, help="write the table as JSON here")
    p.add_argument("--plot", default=None, help="draw the per-t Y-PSNR here (PNG, needs matplotlib)")
    args = p.parse_args()
    if args.keep < 2:
        p.error(f"--keep must be at least 2, got {args.keep}")
    torch.set_num_threads(args.threads)
    K = args.keep
    times = tuple(Fraction(q, K) for q in range(1, K))
    frames = read_video(args.clip).frames
    n_pairs = (len(frames) - 1) // K
    if args.pairs:
        n_pairs = min(n_pairs, args.pairs)
    print(f"# {args.clip}: {len(frames)} frames, {n_pairs} kept pairs (frames {K}i, {K}i+{K}), device {args.device}")
    print(f"| scale | method | {' | '.join(f't={t}' for t in times)} | all |")
    print("|---|---|" + "---|" * len(times) + "---|")
    table: dict[str, dict[str, list[float]]] = {}
    for scale in (int(s) for s in args.scales.split(",")):
        hr = [crop_to_multiple(f, scale) for f in frames[: K * n_pairs + 1]]
        lr = {k: downscale_bicubic(hr[k], scale) for k in range(0, K * n_pairs + 1, K)}
        up = {k: upscale_pil(v, scale, "bicubic") for k, v in lr.items()}
        engines = []
        for name in args.models.split(","):
            eng = StarEngine(name.format(s=scale), scale=scale, mode="st", device=args.device, batch_size=1)
            eng.model_name = name.format(s=scale)
            engines.append(eng)
        res: dict[str, dict[Fraction, list[float]]] = {m: {t: [] for t in times}
                                                        for m in [BASELINE] + [method_name(e) for e in engines]}
        for i in range(n_pairs):
            a, b = K * i, K * i + K
            truths = {t: rgb_to_y(to_tensor(hr[a + q])) for q, t in enumerate(times, start=1)}
            for t in times:
                blend = np.round((1 - float(t)) * up[a].astype(np.float64) + float(t) * up[b]).astype(np.uint8)
                res[BASELINE][t].append(psnr(rgb_to_y(to_tensor(blend)), truths[t]))
            for eng in engines:
                out = eng.process_times(to_tensor(lr[a])[None], to_tensor(lr[b])[None], [list(times)])
                for t in times:
                    ours = out.mids[0][t].clamp(0, 1).mul(255).round().div(255)
                    res[method_name(eng)][t].append(psnr(rgb_to_y(ours), truths[t]))
        for m, per_t in res.items():
            cells = [float(np.mean(per_t[t])) for t in times]
            allv = float(np.mean([v for t in times for v in per_t[t]]))
            table[f"x{scale} {m}"] = cells + [allv]
            print(f"| x{scale} | {m} | {' | '.join(f'{c:.2f}' for c in cells)} | {allv:.2f} |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"clip": args.clip, "keep": K, "pairs": n_pairs,
                                               "times": [str(t) for t in times], "rows": table}, indent=1))
    if args.plot:
        plot(table, args.plot, Path(args.clip).name, times)


def plot(table: dict[str, list[float]], path: str, clip: str, times: tuple[Fraction, ...]) -> None:
    """One panel per scale: Y-PSNR against t for every method."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scales = sorted({k.split()[0] for k in table}, key=lambda s: int(s[1:]))
    fig, axes = plt.subplots(1, len(scales), figsize=(5.2 * len(scales), 3.8), squeeze=False)
    xs = [float(t) for t in times]
    for ax, sc in zip(axes[0], scales):
        for key, row in table.items():
            if key.split()[0] != sc:
                continue
            ax.plot(xs, row[:len(times)], marker="o", label=key.split(" ", 1)[1])
        ax.set_title(f"{sc}, {clip}, every {len(times) + 1}th frame kept")
        ax.set_xlabel("t (between kept frames)")
        ax.set_ylabel("Y-PSNR (dB)")
        ax.set_xticks(xs, [str(t) for t in times])
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
