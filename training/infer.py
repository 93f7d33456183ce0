"""Running a StarNet on [0, 1] frames and pixel flows (normalisation, flow encoding, padding)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from vsstar.model.baseline import encode_flow
from vsstar.model.config import IMAGENET_MEAN, IMAGENET_STD

__all__ = ["normalize", "denormalize", "encode_batch", "run_net"]


def normalize(x: torch.Tensor) -> torch.Tensor:
    """RGB in [0, 1] -> the network's ImageNet-normalised space."""
    m = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return (x - m) / s


def denormalize(x: torch.Tensor) -> torch.Tensor:
    """Inverse of normalize (no clamping)."""
    m = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    s = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return x * s + m


def encode_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A data-set batch ([0, 1] images, pixel flows) in the network's encodings."""
    out = {k: normalize(v) for k, v in batch.items() if not k.startswith("flow")}
    out["flow_f"] = encode_flow(batch["flow_f"])
    out["flow_b"] = encode_flow(batch["flow_b"])
    return out


@torch.no_grad()
def run_net(net, lr1: torch.Tensor, lr2: torch.Tensor, flow_f: torch.Tensor, flow_b: torch.Tensor
            ) -> dict[str, torch.Tensor]:
    """Eval-mode outputs {ht, h1, h2, l} in [0, 1] (clamped) for (N,3,h,w) frames in [0, 1] and pixel flows;
    pads (replicate) to the network's size constraints and crops back."""
    cfg = net.config
    h, w = lr1.shape[-2:]
    m = cfg.size_multiple
    ph = max(-(-h // m) * m, cfg.min_size) - h
    pw = max(-(-w // m) * m, cfg.min_size) - w

    def pad(t):
        return F.pad(t, (0, pw, 0, ph), mode="replicate") if (ph or pw) else t

    was_training = net.training
    net.eval()
    try:
        ht, h1, h2, l = net(pad(normalize(lr1)), pad(normalize(lr2)), pad(encode_flow(flow_f)),
                            pad(encode_flow(flow_b)))
    finally:
        net.train(was_training)
    s = cfg.scale
    out = {"ht": ht[..., :h * s, :w * s], "h1": h1[..., :h * s, :w * s], "h2": h2[..., :h * s, :w * s],
           "l": l[..., :h, :w]}
    return {k: denormalize(v).clamp_(0, 1) for k, v in out.items()}
