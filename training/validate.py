"""Validation / evaluation on a held-out clip, the way the project's bar is defined.

Odd frames are dropped, the even frames are downscaled (antialiased bicubic, as for training), and every
frame is reconstructed through the code users run: the low-resolution even frames form a clip, and
:class:`vsstar.schedule.FrameSchedule` in mode "st" says which pair and which output makes each frame,
exactly as for ``vsstar.STAR`` (even frames super-resolved from the pair starting there, the last one from
the last pair; odd frames are the network's HR middle output); the network runs through the
:class:`vsstar.model.Star` wrapper (normalisation, flow encoding, reflect padding) that
:class:`vsstar.engine.StarEngine` uses. Baselines on the same frames: PIL bicubic (and Lanczos) upscaling of
the LR frames, with the linear blend of the two upscaled neighbours for the in-between frames. A trailing
odd frame without a right neighbour repeats the last reconstructed frame (for every method, as the
schedule says). Outputs are rounded to 8 bits before measuring, as a video filter would deliver them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from vsstar.model import Star, StarNet
from vsstar.schedule import PARTS, FrameSchedule, batches

from .imaging import crop_to_multiple, downscale_bicubic, rgb_to_y, to_tensor, upscale_pil
from .metrics import frame_metrics, psnr

__all__ = ["Validator", "ValidationResult", "METHODS"]

METHODS = ("model", "bicubic", "lanczos")


@dataclass
class ValidationResult:
    """Per-frame metrics per method, and averages over all / SR / in-between frames."""

    frames: list[int]
    kinds: list[str]                       # "sr" or "mid" per evaluated frame
    per_frame: dict[str, list[dict[str, float]]]  # method -> list aligned with frames
    lr_mid_psnr_y: dict[str, float] = field(default_factory=dict)  # LR-middle output vs linear blend at LR
    images: dict[str, dict[int, np.ndarray]] = field(default_factory=dict)  # method -> frame -> uint8 (kept ones)

    def mean(self, method: str, kind: str = "all", metric: str = "psnr_y") -> float:
        vals = [m[metric] for m, k in zip(self.per_frame[method], self.kinds) if kind in ("all", k)]
        return float(np.mean(vals)) if vals else float("nan")

    def summary(self) -> dict[str, float]:
        """Flat dict: '<method>/<kind>/<metric>' for every method, kind (all, sr, mid) and metric."""
        out = {}
        metrics = list(self.per_frame["model"][0]) if self.per_frame["model"] else []
        for method in self.per_frame:
            for kind in ("all", "sr", "mid"):
                for metric in metrics:
                    out[f"{method}/{kind}/{metric}"] = self.mean(method, kind, metric)
        for k, v in self.lr_mid_psnr_y.items():
            out[f"{k}/lrmid/psnr_y"] = v
        return out


class Validator:
    """Holds a clip's HR frames, LR even frames, flows and baseline outputs; evaluates networks on it.

    ``max_pairs`` evaluates only that many pairs, evenly spread (quick validation during training);
    ``None`` reconstructs every frame (the bar's protocol).
    """

    def __init__(self, frames: Sequence[np.ndarray], scale: int, flow_cache=None, max_pairs: int | None = None,
                 with_ssim: bool = True, keep_images: Sequence[int] = ()) -> None:
        if len(frames) < 3:
            raise ValueError(f"frames: validation needs at least 3 frames, got {len(frames)}")
        self.scale = scale
        self.hr = [crop_to_multiple(f, scale) for f in frames]
        n = len(self.hr)
        # The LR clip is the even HR frames: output frame j of its schedule is HR frame j.
        self.schedule = FrameSchedule((n + 1) // 2, "st")
        self.n_pairs = (n - 1) // 2           # LR pairs (k, k+1) = HR frames (2k, 2k+2)
        self.full = max_pairs is None
        if self.full:
            self.pairs = list(range(self.n_pairs))
            outputs = range(n)                 # every HR frame (the schedule's last slot has no truth when n is odd)
        else:
            idx = np.linspace(0, self.n_pairs - 1, min(max_pairs, self.n_pairs))
            self.pairs = sorted(set(int(round(i)) for i in idx))
            outputs = [j for k in self.pairs for j in (2 * k, 2 * k + 1)]
        self.plan = [self.schedule.output(j) for j in outputs]
        self.with_ssim = with_ssim
        self.keep_images = set(keep_images)
        run_pairs = self.schedule.pairs(outputs)
        lr_idx = sorted({k for p in run_pairs for k in p} | {o.source for o in self.plan})
        self.lr = {2 * k: downscale_bicubic(self.hr[2 * k], scale) for k in lr_idx}
        # LR truth of the in-between frames (for the network's LR middle output).
        self.lr_mid = {2 * a + 1: downscale_bicubic(self.hr[2 * a + 1], scale) for a, b in run_pairs if b == a + 1}
        # Flows of every pair the schedule runs (cached on disk when a cache is given).
        from .flowcache import compute_flows
        self.flows = {}
        for a, b in run_pairs:
            la, lb = self.lr[2 * a], self.lr[2 * b]
            self.flows[(a, b)] = flow_cache.get(la, lb) if flow_cache is not None else compute_flows(la, lb)
        self.run_pairs = run_pairs
        # Frames to evaluate: (frame index, kind).
        self.targets: list[tuple[int, str]] = [(o.index, "mid" if o.between else "sr") for o in self.plan]
        self.baseline: dict[str, dict[int, np.ndarray]] = {}
        for method in ("bicubic", "lanczos"):
            up = {k // 2: upscale_pil(v, scale, method) for k, v in self.lr.items()}
            self.baseline[method] = self._assemble(
                lambda o, up=up: _blend(up[o.pair[0]], up[o.pair[1]]) if o.synthesised else up[o.source])
        self._baseline_metrics = {m: [self._metrics(self.baseline[m][i], i) for i, _ in self.targets]
                                  for m in self.baseline}
        self._lr_blend_psnr = float(np.mean([
            psnr(rgb_to_y(to_tensor(_blend(self.lr[i - 1], self.lr[i + 1]))), rgb_to_y(to_tensor(v)))
            for i, v in self.lr_mid.items()]))

    def _assemble(self, make) -> dict[int, np.ndarray]:
        """Output frames in schedule order; ``make(OutputFrame)`` gives the picture of each."""
        return {o.index: make(o) for o in self.plan}

    def _metrics(self, img: np.ndarray, i: int) -> dict[str, float]:
        return frame_metrics(to_tensor(img), to_tensor(self.hr[i]), with_ssim=self.with_ssim)

    @torch.no_grad()
    def run(self, net: StarNet | Star, batch: int = 4, device: str | torch.device = "cpu") -> ValidationResult:
        """Evaluate ``net`` on the clip; returns metrics for it and for the baselines.

        ``net``: a :class:`vsstar.model.Star` (as ``vsstar.engine`` builds it) or a StarNet, which is wrapped in
        one without changing its weights' memory layout (training keeps its own) and put back in its mode.
        """
        was_training = net.training
        star = net if isinstance(net, Star) else Star(net, channels_last=False)
        outs: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}
        lr_mid_psnr = []
        try:
            star.eval()
            for chunk in batches(self.run_pairs, batch):
                lr1 = torch.stack([to_tensor(self.lr[2 * a]) for a, _ in chunk]).to(device)
                lr2 = torch.stack([to_tensor(self.lr[2 * b]) for _, b in chunk]).to(device)
                ff = torch.stack([torch.from_numpy(np.array(self.flows[p][0])) for p in chunk]).to(device)
                fb = torch.stack([torch.from_numpy(np.array(self.flows[p][1])) for p in chunk]).to(device)
                out = star(lr1, lr2, ff, fb)
                for i, (a, b) in enumerate(chunk):
                    outs[(a, b)] = (_u8(out.h1[i]), _u8(out.ht[i]), _u8(out.h2[i]))
                    if b == a + 1:
                        lm = out.l[i].float().cpu()
                        lr_mid_psnr.append(psnr(rgb_to_y(_q(lm)), rgb_to_y(to_tensor(self.lr_mid[2 * a + 1]))))
        finally:
            net.train(was_training)
        imgs = self._assemble(lambda o: outs[o.pair][PARTS[o.part]])
        per = {"model": [self._metrics(imgs[i], i) for i, _ in self.targets]}
        per.update(self._baseline_metrics)
        keep = {"model": {i: imgs[i] for i in self.keep_images if i in imgs}}
        for m in self.baseline:
            keep[m] = {i: self.baseline[m][i] for i in self.keep_images if i in self.baseline[m]}
        keep["truth"] = {i: self.hr[i] for i in self.keep_images if i < len(self.hr)}
        return ValidationResult([i for i, _ in self.targets], [k for _, k in self.targets], per,
                                {"model": float(np.mean(lr_mid_psnr)), "blend": self._lr_blend_psnr}, keep)


def _u8(t: torch.Tensor) -> np.ndarray:
    return t.float().clamp(0, 1).mul(255).round().byte().permute(1, 2, 0).cpu().numpy()


def _q(t: torch.Tensor) -> torch.Tensor:
    return t.clamp(0, 1).mul(255).round().div(255)


def _blend(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Linear blend of two 8-bit frames, rounded (what a classical frame-rate doubler delivers)."""
    return ((a.astype(np.uint16) + b.astype(np.uint16) + 1) // 2).astype(np.uint8)
