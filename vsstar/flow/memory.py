"""How much memory a flow call needs and how it is kept under a cap.

The flow's working memory is linear in the pixels of the images solved at once (about 78 float64
planes per image on the CPU path, see docs/flow.md). Under a cap (`max_bytes`) a call is planned in
three steps, each taken only when the previous one does not fit:

1. as many images at once as the threads and the batch allow (the unbounded behaviour);
2. fewer images at once, one per thread (exact: the images are independent problems);
3. one image per thread, and every pyramid level whose working set does not fit solved in
   horizontal strips of whole rows, each grown by `overlap` rows on both sides that are solved and
   thrown away (approximate at the strip seams; the error is measured in docs/flow.md). Only the
   planes a strip cannot do without stay whole-frame: the two pyramids, the second image's features
   (the warp samples them anywhere) and the flow itself.

The torch path (CUDA, or the CPU without numba) only takes step 2, in chunks of the batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .pyramid import level_sizes

__all__ = ["DEFAULT_MAX_BYTES", "STRIP_OVERLAP", "FlowPlan", "plan_flow"]

#: Working-memory cap of a CPU flow call when none is given: a 3840x2160 pair in strips, a
#: 1920x1080 pair untiled. Fixed rather than a share of the free memory because strips change the
#: result slightly, and the same input must give the same flow on every run.
DEFAULT_MAX_BYTES = 3 << 30
#: Rows each strip is grown by on both sides (solved, then dropped). The seam error falls off with it:
#: Sintel 436x1024, two strips at full size, max 9.2e-3 / 2.0e-3 / 1.0e-5 px at 32 / 64 / 128 rows
#: (docs/flow.md); flat regions carry the smoothness term furthest.
STRIP_OVERLAP = 96
#: Fewest rows a strip keeps besides its overlap; a cap too small for this is exceeded (and said so).
MIN_STRIP_ROWS = 16

# float64 planes per pixel of the CPU path (cpu.py), counted from its allocations, C_f = feature
# channels, C_in = image channels:
#   level working set (cpu._level_group and its callers): f1, f2, w2, i1, i2, ix, iy, it (8 C_f),
#   tmp (C_f), 12 solver planes, uu/vv/lap (3), the flow before and after upsampling (4);
#   what stays whole-frame while a level is in strips: f2 (C_f) and the flow, old and new (4);
#   a strip: the level working set less f2, plus its image rows (C_in) and its flow rows (2).
_F64 = 8
# The torch path's peak per pixel per image, in values of the working dtype: measured 140 (float32)
# and 152 (float64) at 360x640, 2 images, on the CPU (peak RSS increase of one call), rounded up.
_TORCH_PLANES = 160


def _feature_channels(channels: int, col_type: int) -> int:
    return 5 if (col_type == 0 and channels >= 3) else 3 * channels


@dataclass(frozen=True)
class FlowPlan:
    """How one flow call runs: images at once, threads, and the levels solved in strips.

    `strip_rows[k]` is the rows of a strip at pyramid level k (0 = finest) without its overlap, 0
    where the level is solved whole. `estimate` is the planned peak working memory in bytes (the
    inputs excluded); `fits` is False when even the smallest strips exceed `max_bytes`.
    `strip_threads`: strips of one image solved at the same time (with one image in flight).
    """

    images: int
    height: int
    width: int
    threads: int
    group: int
    strip_rows: tuple[int, ...]
    overlap: int
    estimate: int
    max_bytes: int | None
    fits: bool = True
    strip_threads: int = 1

    @property
    def tiled(self) -> bool:
        """Whether any level is solved in strips."""
        return any(self.strip_rows)

    @property
    def in_flight(self) -> int:
        """Images solved at the same time."""
        return min(self.images, self.threads * self.group)

    def strips(self, level: int, height: int) -> list[tuple[int, int]]:
        """Core row ranges [y0, y1) of the strips of a level of `height` rows (one range if whole)."""
        rows = self.strip_rows[level] if level < len(self.strip_rows) else 0
        if not rows or rows >= height:
            return [(0, height)]
        n = math.ceil(height / rows)
        # Equal strips rather than a short last one: the same cost, and no thin strip at the border.
        edges = [round(i * height / n) for i in range(n + 1)]
        return list(zip(edges[:-1], edges[1:]))

    def describe(self) -> str:
        """One line for the log: what is split or tiled, and why."""
        cap = f"{self.max_bytes / 2**30:.2f} GiB" if self.max_bytes else "none"
        head = (f"flow of {self.images} image(s) of {self.width}x{self.height}: estimated "
                f"{self.estimate / 2**30:.2f} GiB (cap {cap})")
        parts = [f"{self.in_flight} image(s) at a time on {self.threads} thread(s)"]
        levels = [k for k, r in enumerate(self.strip_rows) if r]
        if levels:
            parts.append(f"pyramid level(s) {', '.join(map(str, levels))} (0 = full size) in row strips of "
                         f"{self.strip_rows[levels[0]]} rows (+{self.overlap} overlap each side at level "
                         f"{levels[0]}), {self.strip_threads} strip(s) at a time")
        if not self.fits:
            parts.append("the cap is below the smallest strips and is exceeded")
        return head + "; " + ", ".join(parts)


def plan_flow(n: int, channels: int, height: int, width: int, *, ratio: float, min_width: int,
              col_type: int, threads: int, max_bytes: int | None, out_itemsize: int = 4,
              strips: bool = True, torch_itemsize: int = 4) -> FlowPlan:
    """Plan a flow call of `n` images (see the module docstring); max_bytes None = no cap.

    `strips=False` plans the torch path (`threads` = images it may solve at once, in values of
    `torch_itemsize` bytes): it only lowers the images at once. `out_itemsize`: bytes per value of
    the returned flow.
    """
    if not strips:
        per_image = _TORCH_PLANES * torch_itemsize * height * width
        fit = n if max_bytes is None else max(1, min(n, max_bytes // per_image))
        return FlowPlan(n, height, width, fit, 1, (0,), 0, fit * per_image, max_bytes,
                        fits=max_bytes is None or fit * per_image <= max_bytes)
    threads = max(1, min(threads, n)) if n else 1
    # Groups of 4 or 2 images share one loop (their sweeps overlap), one group per thread at least.
    group = 4 if n >= 4 * threads else (2 if n >= 2 * threads else 1)
    sizes = level_sizes(height, width, ratio, min_width)
    cf = _feature_channels(channels, col_type)
    cin = 3 if (col_type == 0 and channels >= 3) else channels
    pyramid = 2 * cin * sum(h * w for h, w in sizes)  # both images' pyramids
    level = [(9 * cf + 19) * h * w for h, w in sizes]
    out = 2 * n * height * width * out_itemsize

    def whole(images: int) -> int:
        return _F64 * images * (pyramid + max(level)) + out

    no_tiles = (0,) * len(sizes)
    if max_bytes is None or whole(min(n, threads * group)) <= max_bytes:
        return FlowPlan(n, height, width, threads, group, no_tiles, 0, whole(min(n, threads * group)),
                        max_bytes)
    fit = (max_bytes - out) // (_F64 * (pyramid + max(level)))
    if fit >= 1:
        t = int(max(1, min(threads, fit)))
        est = whole(t)
        return FlowPlan(n, height, width, t, 1, no_tiles, 0, est, max_bytes, fits=est <= max_bytes)
    # Strips: per image in flight, the pyramids, and per level either its whole working set or
    # its whole-frame part plus `s` strips solved at once.
    ov = STRIP_OVERLAP
    strip_px = 9 * cf + 21 + cin - cf  # a strip's planes (level set less f2, plus image and flow rows)

    def strip_plan(t: int, s: int) -> tuple[list[int], int, bool]:
        budget = (max_bytes - out) // t // _F64 - pyramid  # planes x pixels per image in flight
        rows, worst = [], pyramid
        for (h, w), lv in zip(sizes, level):
            if lv <= budget:
                rows.append(0)
                worst = max(worst, pyramid + lv)
                continue
            room = budget - (cf + 4) * h * w
            r = int(room // (s * strip_px * w)) - 2 * ov if room > 0 else 0
            r = max(MIN_STRIP_ROWS, r)
            if r + 2 * ov >= h:  # a strip would hold the whole level: nothing to gain
                rows.append(0)
                worst = max(worst, pyramid + lv)
                continue
            rows.append(r)
            worst = max(worst, pyramid + (cf + 4) * h * w + s * strip_px * w * (r + 2 * ov))
        # Several at once only while strips stay tall: a strip of r rows solves r + 2 overlap.
        tall = all(r == 0 or r >= min(h, 4 * ov) for r, (h, _) in zip(rows, sizes))
        return rows, _F64 * t * worst + out, tall

    # Preference: more images at once (each its own thread), then one image with its strips on
    # several threads (the coarse levels of that image then run on one), then one thread.
    tries = [(t, 1) for t in range(threads, 1, -1)] + [(1, s) for s in range(threads, 0, -1)]
    for t, s in tries:
        rows, est, tall = strip_plan(t, s)
        if (est <= max_bytes and tall) or (t, s) == (1, 1):
            return FlowPlan(n, height, width, t, 1, tuple(rows), ov, est, max_bytes, fits=est <= max_bytes,
                            strip_threads=s)
    raise AssertionError("unreachable")  # the last try returns
