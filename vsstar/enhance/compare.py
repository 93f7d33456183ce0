"""The ``--compare`` picture of an ``enhance`` job: bicubic (or a linear blend) beside STAR."""
from __future__ import annotations

import os
from fractions import Fraction
from pathlib import Path
from typing import Any

__all__ = ["write_compare"]


def _rgb_image(frame: Any) -> Any:
    import numpy as np
    from PIL import Image

    planes = [np.asarray(frame[p]) for p in range(3)]
    return Image.fromarray(np.stack(planes, axis=-1).astype(np.uint8), "RGB")


def write_compare(src: Any, result: Any, mode: str, scale: int, path: str, label: str = "STAR",
                  factor: Fraction | int | None = None) -> None:
    """Side-by-side PNG of the middle frame: bicubic (or linear blend in mode t) vs STAR, centre crop.

    factor: output frames per input frame of ``result`` (default 2 in modes st/t, 1 in mode s)."""
    import vapoursynth as vs
    from PIL import Image, ImageDraw

    core = vs.core
    f = Fraction(1 if mode == "s" else 2) if factor is None else Fraction(factor)
    k = max(0, (src.num_frames - 1) // 2) // f.denominator * f.denominator  # k * f: an output frame
    to_rgb = lambda c: core.resize.Bicubic(c, format=vs.RGB24, matrix_in_s="709") \
        if c.format.color_family == vs.YUV else core.resize.Bicubic(c, format=vs.RGB24)
    if mode == "t":
        a, b = src[k], src[min(k + 1, src.num_frames - 1)]
        out_n = int(k * f) + 1  # the first in-between frame after k, at t of the way to k+1
        ref = core.std.Merge(a, b, float(out_n / f - k))
        ref_label = "linear blend"
    else:
        ref = core.resize.Bicubic(src[k], src.width * scale, src.height * scale)
        out_n, ref_label = int(k * f), "bicubic"
    left = _rgb_image(to_rgb(ref).get_frame(0))
    right = _rgb_image(to_rgb(result[out_n]).get_frame(0))
    w, h = right.size
    cw, ch = min(w, 480), min(h, 480)
    box = ((w - cw) // 2, (h - ch) // 2, (w - cw) // 2 + cw, (h - ch) // 2 + ch)
    gap = 6
    canvas = Image.new("RGB", (2 * cw + gap, ch + 22), (255, 255, 255))
    canvas.paste(left.crop(box), (0, 22))
    canvas.paste(right.crop(box), (cw + gap, 22))
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 4), ref_label, fill=(0, 0, 0))
    draw.text((cw + gap + 4, 4), label, fill=(0, 0, 0))
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(path).with_name(f".{Path(path).name}.partial-{os.getpid()}.png")
    try:
        canvas.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
