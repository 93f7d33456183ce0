"""Validation / evaluation on a held-out clip, the way the project's bar is defined.

Odd frames are dropped, the even frames are downscaled (antialiased bicubic, as for training), and every
frame is reconstructed: even frames by super-resolution (h1 of the pair starting there, h2 for the last
one), odd frames by the network's HR middle output. Baselines on the same frames: PIL bicubic (and Lanczos)
upscaling of the LR frames, with the linear blend of the two upscaled neighbours for the in-between frames.
A trailing odd frame without a right neighbour repeats the last reconstructed frame (for every method).
Outputs are rounded to 8 bits before measuring, as a video filter would deliver them.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch

from .imaging import crop_to_multiple, downscale_bicubic, to_tensor, upscale_pil
from .infer import run_net
from .metrics import frame_metrics, psnr
from .imaging import rgb_to_y

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
        self.n_pairs = (n - 1) // 2           # pairs (2k, 2k+2)
        self.full = max_pairs is None
        if self.full:
            self.pairs = list(range(self.n_pairs))
        else:
            idx = np.linspace(0, self.n_pairs - 1, min(max_pairs, self.n_pairs))
            self.pairs = sorted(set(int(round(i)) for i in idx))
        self.with_ssim = with_ssim
        self.keep_images = set(keep_images)
        evens = sorted({2 * k for k in self.pairs} | {2 * k + 2 for k in self.pairs})
        self.lr = {i: downscale_bicubic(self.hr[i], scale) for i in evens}
        lr_odd = {2 * k + 1: downscale_bicubic(self.hr[2 * k + 1], scale) for k in self.pairs}
        self.lr_mid = lr_odd
        # Flows of every pair (cached on disk when a cache is given).
        from .flowcache import compute_flows
        self.flows = {}
        for k in self.pairs:
            a, b = self.lr[2 * k], self.lr[2 * k + 2]
            self.flows[k] = flow_cache.get(a, b) if flow_cache is not None else compute_flows(a, b)
        # Frames to evaluate: (frame index, kind, source).
        self.targets: list[tuple[int, str]] = []
        for k in self.pairs:
            self.targets += [(2 * k, "sr"), (2 * k + 1, "mid")]
        if self.full:
            last = 2 * self.n_pairs
            self.targets.append((last, "sr"))
            if last + 1 < n:
                self.targets.append((last + 1, "mid"))
        self.baseline: dict[str, dict[int, np.ndarray]] = {}
        for method in ("bicubic", "lanczos"):
            up = {i: upscale_pil(v, scale, method) for i, v in self.lr.items()}
            self.baseline[method] = self._assemble(
                {i: up[i] for i in up},
                {2 * k + 1: _blend(up[2 * k], up[2 * k + 2]) for k in self.pairs})
        self._baseline_metrics = {m: [self._metrics(self.baseline[m][i], i) for i, _ in self.targets]
                                  for m in self.baseline}
        self._lr_blend_psnr = float(np.mean([
            psnr(rgb_to_y(to_tensor(_blend(self.lr[2 * k], self.lr[2 * k + 2]))), rgb_to_y(to_tensor(lr_odd[2 * k + 1])))
            for k in self.pairs]))

    def _assemble(self, sr: dict[int, np.ndarray], mid: dict[int, np.ndarray]) -> dict[int, np.ndarray]:
        out = {}
        for i, kind in self.targets:
            if kind == "sr":
                out[i] = sr[i]
            elif i in mid:
                out[i] = mid[i]
            else:  # trailing odd frame: repeat the last reconstructed frame
                out[i] = out[i - 1]
        return out

    def _metrics(self, img: np.ndarray, i: int) -> dict[str, float]:
        return frame_metrics(to_tensor(img), to_tensor(self.hr[i]), with_ssim=self.with_ssim)

    @torch.no_grad()
    def run(self, net, batch: int = 4, device: str | torch.device = "cpu") -> ValidationResult:
        """Evaluate ``net`` (a StarNet) on the clip; returns metrics for it and for the baselines."""
        sr: dict[int, np.ndarray] = {}
        mid: dict[int, np.ndarray] = {}
        lr_mid_psnr = []
        last_pair = self.pairs[-1]
        for j in range(0, len(self.pairs), batch):
            ks = self.pairs[j:j + batch]
            lr1 = torch.stack([to_tensor(self.lr[2 * k]) for k in ks]).to(device)
            lr2 = torch.stack([to_tensor(self.lr[2 * k + 2]) for k in ks]).to(device)
            ff = torch.stack([torch.from_numpy(np.array(self.flows[k][0])) for k in ks]).to(device)
            fb = torch.stack([torch.from_numpy(np.array(self.flows[k][1])) for k in ks]).to(device)
            out = run_net(net, lr1, lr2, ff, fb)
            for n, k in enumerate(ks):
                sr[2 * k] = _u8(out["h1"][n])
                mid[2 * k + 1] = _u8(out["ht"][n])
                if k == last_pair:
                    sr[2 * k + 2] = _u8(out["h2"][n])
                lm = out["l"][n].float().cpu()
                lr_mid_psnr.append(psnr(rgb_to_y(_q(lm)), rgb_to_y(to_tensor(self.lr_mid[2 * k + 1]))))
        imgs = self._assemble(sr, mid)
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
