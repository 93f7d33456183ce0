"""User-facing wrapper: RGB in [0, 1] and pixel flows in, RGB in [0, 1] out, any frame size."""
from __future__ import annotations

import contextlib
from typing import NamedTuple, Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from .baseline import encode_flow
from .config import IMAGENET_MEAN, IMAGENET_STD
from .star import StarNet, check_pair_inputs

__all__ = ["Star", "StarOutput", "normalize", "denormalize", "pad_reflect", "padded_size", "network_inputs",
           "network_outputs"]


class StarOutput(NamedTuple):
    """ht: HR middle, h1: HR t, h2: HR t+1 (N,3,H*s,W*s); l: LR middle (N,3,H,W); RGB in [0, 1]."""

    ht: Tensor
    h1: Tensor
    h2: Tensor
    l: Tensor


def _stats(x: Tensor) -> tuple[Tensor, Tensor]:
    mean = torch.tensor(IMAGENET_MEAN, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
    return mean, std


def normalize(rgb: Tensor) -> Tensor:
    """RGB in [0, 1] -> the ImageNet-normalised space the network works in."""
    mean, std = _stats(rgb)
    return (rgb - mean) / std


def denormalize(x: Tensor, clamp: bool = True) -> Tensor:
    """Inverse of normalize, clamped to [0, 1] by default."""
    mean, std = _stats(x)
    y = x * std + mean
    return y.clamp_(0.0, 1.0) if clamp else y


def padded_size(size: int, multiple: int, minimum: int) -> int:
    """Smallest size >= max(size, minimum) that is a multiple of `multiple`."""
    target = max(size, minimum)
    return -(-target // multiple) * multiple


def pad_reflect(x: Tensor, height: int, width: int, flow: bool = False) -> Tensor:
    """Pad at the bottom/right to (height, width) by reflection (repeated when the pad exceeds the size).

    flow=True: x is a flow field (channel 0 horizontal, 1 vertical). In a band mirrored across the bottom
    edge the picture moves up where the original moves down, so the vertical component is negated there
    (the horizontal one in a band mirrored across the right edge); the padded flow then describes the
    motion of the padded pictures. Flow encodings that are linear in the pixels (encode_flow) pad alike.
    """
    while x.shape[2] < height or x.shape[3] < width:
        h, w = x.shape[2], x.shape[3]
        ph, pw = min(height - h, h - 1), min(width - w, w - 1)
        if (ph <= 0 and height > h) or (pw <= 0 and width > w):
            # A 1-pixel side cannot be reflected: repeat its edge instead (flows too: a picture that
            # repeats one row along an axis fits any motion along that axis).
            return F.pad(x, (0, width - w, 0, height - h), mode="replicate")
        x = F.pad(x, (0, max(pw, 0), 0, max(ph, 0)), mode="reflect")
        if flow:
            # The new bands are mirror images: negate the component normal to the mirror line.
            if ph > 0:
                x[:, 1, h:, :] = -x[:, 1, h:, :]
            if pw > 0:
                x[:, 0, :, w:] = -x[:, 0, :, w:]
    return x


def network_inputs(config, im1: Tensor, im2: Tensor, flow_f_px: Tensor,
                   flow_b_px: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """RGB [0, 1] frames and pixel flows (checked) in the network's encodings, padded at the bottom/right by
    reflection to the size `config` needs (the flows' normal component negated in mirrored bands, see
    pad_reflect). Shared by every runner of the network (torch, OpenVINO) so they see the same inputs."""
    check_pair_inputs(("im1", im1), ("im2", im2), ("flow_f_px", flow_f_px), ("flow_b_px", flow_b_px),
                      floating=True)
    h, w = im1.shape[2:]
    ph = padded_size(h, config.size_multiple, config.min_size)
    pw = padded_size(w, config.size_multiple, config.min_size)
    x1, x2 = normalize(im1), normalize(im2)
    ff, fb = encode_flow(flow_f_px), encode_flow(flow_b_px)
    if (ph, pw) != (h, w):
        x1, x2 = pad_reflect(x1, ph, pw), pad_reflect(x2, ph, pw)
        ff, fb = pad_reflect(ff, ph, pw, flow=True), pad_reflect(fb, ph, pw, flow=True)
    return x1, x2, ff, fb


def network_outputs(out: Sequence[Tensor], height: int, width: int, scale: int) -> StarOutput:
    """The network's (ht, h1, h2, l) cropped to the unpadded input size (height, width), in RGB [0, 1], as new
    contiguous NCHW tensors (they never share memory with `out`)."""
    ht, h1, h2, l = out
    hs, ws = height * scale, width * scale
    return StarOutput(*(denormalize(x.contiguous()) for x in (
        ht[..., :hs, :ws], h1[..., :hs, :ws], h2[..., :hs, :ws], l[..., :height, :width])))


class Star(nn.Module):
    """Wraps a StarNet for RGB [0, 1] frames and pixel flows of any size.

    forward(im1, im2, flow_f_px, flow_b_px): im1/im2 (N,3,H,W) RGB in [0, 1]; flows (N,2,H,W) in pixels,
    channel 0 horizontal (flow_f: im2(x+u) ~ im1(x); flow_b: im1(x+u) ~ im2(x)). Pads by reflection to the
    size the network needs (in the mirrored bands the flows' normal component is negated, see pad_reflect),
    normalises, encodes the flows, runs the network and returns StarOutput with the padding cropped away,
    RGB clamped to [0, 1]. In eval mode (the default) it runs under
    torch.inference_mode. A model with time input (config.time_input) takes the in-between frame's time t;
    :meth:`times` synthesises several times of the same pairs, running the t-independent parts once.

    channels_last: keep the weights and activations in NHWC (faster on the CPU, the same numbers to float
    rounding; docs/model.md has the measurement). It converts `net`'s weights in place.
    """

    def __init__(self, net: StarNet, *, channels_last: bool = True) -> None:
        super().__init__()
        if not isinstance(net, StarNet):
            raise ValueError(f"net must be a StarNet, got {type(net).__name__}")
        self.net = net
        self.channels_last = bool(channels_last)
        if self.channels_last:
            net.to(memory_format=torch.channels_last)
        self.eval()

    @property
    def config(self):
        """The wrapped network's StarConfig."""
        return self.net.config

    @property
    def scale(self) -> int:
        """Spatial upscaling factor of the HR outputs."""
        return self.net.config.scale

    def forward(self, im1: Tensor, im2: Tensor, flow_f_px: Tensor, flow_b_px: Tensor,
                t: Tensor | float | None = None) -> StarOutput:
        """The four outputs of every pair; t (a number or (N,) tensor, default 1/2) is the in-between
        frame's time, for a model with time input."""
        return self.times(im1, im2, flow_f_px, flow_b_px, [t])[0]

    def times(self, im1: Tensor, im2: Tensor, flow_f_px: Tensor, flow_b_px: Tensor,
              ts: Sequence[Tensor | float | None]) -> list[StarOutput]:
        """One StarOutput per entry of ts (a number or an (N,) tensor of times each). The parts of the
        network that do not depend on t (StarNet.encode) run once for all of them."""
        ts = list(ts)
        if not ts:
            raise ValueError("ts: give at least one time")
        cfg = self.net.config
        ctx = torch.inference_mode() if not self.training else contextlib.nullcontext()
        results = []
        with ctx:
            x1, x2, ff, fb = network_inputs(cfg, im1, im2, flow_f_px, flow_b_px)
            h, w = im1.shape[2:]
            if self.channels_last:
                x1, x2, ff, fb = (t.contiguous(memory_format=torch.channels_last) for t in (x1, x2, ff, fb))
            feat = self.net.encode(x1, x2, ff, fb)
            del x1, x2, ff, fb
            for i, t in enumerate(ts):
                out = self.net.synthesize(feat, t, consume=i == len(ts) - 1)
                if isinstance(out, dict):
                    out = (out["ht"], out["h1"], out["h2"], out["l"])
                results.append(network_outputs(out, h, w, cfg.scale))
        return results
