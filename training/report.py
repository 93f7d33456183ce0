"""Final report of a run: Markdown plus PNG plots (drawn with Pillow: no plotting dependency).

    python -m training.report runs/x4
"""
from __future__ import annotations

import json
import math
import re
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

__all__ = ["line_plot", "side_by_side", "write_report"]

_COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if hi <= lo:
        hi = lo + 1
    step = 10 ** math.floor(math.log10((hi - lo) / n))
    for m in (1, 2, 2.5, 5, 10):
        if (hi - lo) / (step * m) <= n:
            step *= m
            break
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step) + 1)]


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, title: str = "",
              xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (800, 480),
              hlines: dict[str, float] | None = None) -> Path:
    """Draw named (x, y) series (and dashed horizontal reference lines) into a PNG."""
    w, h = size
    left, right, top, bottom = 70, 20, 36, 60
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    font = ImageFont.load_default()
    xs = [x for s in series.values() for x in s[0]]
    ys = [y for s in series.values() for y in s[1] if np.isfinite(y)] + list((hlines or {}).values())
    if not xs or not ys:
        d.text((w // 2 - 30, h // 2), "no data", fill="black", font=font)
        img.save(path)
        return Path(path)
    x0, x1 = min(xs), max(xs)
    if x1 == x0:
        x1 = x0 + 1
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.08 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    pw, ph = w - left - right, h - top - bottom

    def px(x: float, y: float) -> tuple[float, float]:
        return left + (x - x0) / (x1 - x0) * pw, top + (1 - (y - y0) / (y1 - y0)) * ph

    d.rectangle([left, top, left + pw, top + ph], outline="black")
    for t in _nice_ticks(y0, y1):
        _, yy = px(x0, t)
        d.line([left - 4, yy, left + pw, yy], fill=(225, 225, 225))
        d.text((4, yy - 6), f"{t:g}", fill="black", font=font)
    for t in _nice_ticks(x0, x1, 6):
        xx, _ = px(t, y0)
        d.line([xx, top + ph, xx, top + ph + 4], fill="black")
        d.text((xx - 10, top + ph + 8), f"{t:g}", fill="black", font=font)
    d.text((left, 10), title, fill="black", font=font)
    d.text((left + pw // 2 - 20, h - 20), xlabel, fill="black", font=font)
    d.text((4, top - 16), ylabel, fill="black", font=font)
    legend_y = top + 6
    k = 0
    for name, val in (hlines or {}).items():
        c = _COLORS[k % len(_COLORS)]
        k += 1
        _, yy = px(x0, val)
        for xx in range(left, left + pw, 12):
            d.line([xx, yy, min(xx + 6, left + pw), yy], fill=c, width=2)
        d.text((left + pw - 230, legend_y), f"- - {name} ({val:.2f})", fill=c, font=font)
        legend_y += 14
    for name, (sx, sy) in series.items():
        c = _COLORS[k % len(_COLORS)]
        k += 1
        pts = [px(x, y) for x, y in zip(sx, sy) if np.isfinite(y)]
        if len(pts) > 1:
            d.line(pts, fill=c, width=2)
        for p in pts if len(pts) < 60 else []:
            d.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=c)
        d.text((left + pw - 230, legend_y), f"--- {name}", fill=c, font=font)
        legend_y += 14
    img.save(path)
    return Path(path)


def side_by_side(images: dict[str, np.ndarray], path: str | Path, zoom: int = 1) -> Path:
    """Label and concatenate equally sized (H, W, 3) uint8 crops horizontally (nearest-neighbour zoom)."""
    tiles = []
    font = ImageFont.load_default()
    for name, im in images.items():
        t = Image.fromarray(im)
        if zoom > 1:
            t = t.resize((t.width * zoom, t.height * zoom), Image.NEAREST)
        canvas = Image.new("RGB", (t.width, t.height + 18), "white")
        canvas.paste(t, (0, 18))
        ImageDraw.Draw(canvas).text((4, 3), name, fill="black", font=font)
        tiles.append(canvas)
    gap = 4
    out = Image.new("RGB", (sum(t.width for t in tiles) + gap * (len(tiles) - 1), max(t.height for t in tiles)),
                    "white")
    x = 0
    for t in tiles:
        out.paste(t, (x, 0))
        x += t.width + gap
    out.save(path)
    return Path(path)


_STEP_RE = re.compile(r"step (\d+)/\d+ loss ([0-9.eE+-]+)")


def _losses(run_dir: Path) -> tuple[list[int], list[float]]:
    xs, ys = [], []
    log = run_dir / "train.log"
    jl = run_dir / "losses.jsonl"
    if jl.is_file():  # every step, full precision
        for line in jl.read_text(errors="replace").splitlines():
            try:
                r = json.loads(line)
                xs.append(int(r["step"]))
                ys.append(float(r["loss"]))
            except (ValueError, KeyError):
                continue  # a line cut by a kill
    elif log.is_file():
        for line in log.read_text(errors="replace").splitlines():
            m = _STEP_RE.search(line)
            if m:
                xs.append(int(m.group(1)))
                ys.append(float(m.group(2)))
    # A resumed run logs some steps twice: keep the latest value per step.
    last = dict(zip(xs, ys))
    ks = sorted(last)
    return ks, [last[k] for k in ks]


def write_report(run_dir: str | Path) -> Path:
    """Write RUN_DIR/report.md with plots from the checkpoint history, train.log and eval*.json files."""
    run_dir = Path(run_dir)
    ckpt = run_dir / "last.pt"
    history, best, cfg, step = [], None, {}, 0
    if ckpt.is_file():
        from .checkpoint import load_checkpoint
        st = load_checkpoint(ckpt, what="report")  # weights_only: a planted pickle is refused
        history, best, cfg, step = st.get("history", []), st.get("best"), st.get("config", {}), st.get("step", 0)
    lines = [f"# Training report: {run_dir.name}", "", f"Steps trained: {step}", ""]
    if cfg:
        lines += ["## Model", "", "```json", json.dumps(cfg, indent=1), "```", ""]
    ks, ls = _losses(run_dir)
    if ks:
        ema, acc = [], ls[0]
        for v in ls:  # per-batch losses vary with the content: show a smoothed curve beside them
            acc = 0.95 * acc + 0.05 * v
            ema.append(acc)
        line_plot({"loss (per logged step)": (ks, ls), "moving average": (ks, ema)}, run_dir / "loss.png",
                  "training loss", "step", "L1 (normalised)")
        lines += ["## Training loss", "", "![loss](loss.png)", ""]
    if history:
        steps = [r["step"] for r in history]
        last = history[-1]
        for kind in ("all", "sr", "mid"):
            line_plot({f"model ({kind})": (steps, [r[f"model/{kind}/psnr_y"] for r in history])},
                      run_dir / f"val_psnr_{kind}.png", f"validation Y-PSNR, {kind} frames", "step", "dB",
                      hlines={"bicubic+blend": last[f"bicubic/{kind}/psnr_y"],
                              "lanczos+blend": last[f"lanczos/{kind}/psnr_y"]})
        lines += ["## Validation (held-out clip, Y-PSNR)", ""]
        lines += [f"![{k}](val_psnr_{k}.png)" for k in ("all", "sr", "mid")] + [""]
        lines += ["| step | all | SR frames | in-between | bicubic+blend all | lanczos+blend all | SSIM-Y all |",
                  "|---|---|---|---|---|---|---|"]
        for r in history[-15:]:
            lines.append(f"| {r['step']} | {r['model/all/psnr_y']:.3f} | {r['model/sr/psnr_y']:.3f} | "
                         f"{r['model/mid/psnr_y']:.3f} | {r['bicubic/all/psnr_y']:.3f} | "
                         f"{r['lanczos/all/psnr_y']:.3f} | {r.get('model/all/ssim_y', float('nan')):.4f} |")
        lines.append("")
        if best:
            lines += [f"Best validation: step {best['step']}, Y-PSNR {best['model/all/psnr_y']:.3f} dB over all "
                      f"frames (bicubic+blend {best['bicubic/all/psnr_y']:.3f}).", ""]
    for ev in sorted(run_dir.glob("eval*.json")):
        e = json.loads(ev.read_text())
        name = ev.stem
        pf = e.get("per_frame", {})
        if pf:
            series = {m: (pf["frames"], pf[m]) for m in ("model", "bicubic", "lanczos") if m in pf}
            line_plot(series, run_dir / f"{name}_per_frame.png", f"{name}: Y-PSNR per frame", "frame", "dB")
        lines += [f"## Evaluation: {name}", "", "```", e.get("table", ""), "```", ""]
        if pf:
            lines += [f"![per-frame]({name}_per_frame.png)", ""]
        for png in e.get("pictures", []):
            lines += [f"![crops]({png})", ""]
    out = run_dir / "report.md"
    out.write_text("\n".join(lines))
    return out


if __name__ == "__main__":
    for a in sys.argv[1:] or ["."]:
        try:
            print(write_report(a))
        except ValueError as e:
            print(f"error: {e}", file=sys.stderr)
            sys.exit(2)
