"""Classical baselines for the global skip: bicubic upscaling and flow-compensated blending."""
from __future__ import annotations

import functools
import math

import torch
from torch import Tensor
import torch.nn.functional as F

from .config import FLOW_CLIP

__all__ = ["decode_flow", "encode_flow", "backward_warp", "blend_middle", "blend_at", "upscale"]


def encode_flow(flow_px: Tensor) -> Tensor:
    """Pixels -> the network's encoding: -clip(px, -150, 150) / 150."""
    return flow_px.clamp(-FLOW_CLIP, FLOW_CLIP).div(-FLOW_CLIP)


def decode_flow(flow_enc: Tensor) -> Tensor:
    """The network's encoding -> pixels (inverse of encode_flow inside the clip range)."""
    return flow_enc * -FLOW_CLIP


def backward_warp(image: Tensor, flow_px: Tensor) -> Tensor:
    """out(x) = image(x + flow(x)), bilinear, border values outside (flow channel 0 horizontal)."""
    n, _, h, w = image.shape
    ys = torch.arange(h, device=image.device, dtype=image.dtype).view(1, h, 1)
    xs = torch.arange(w, device=image.device, dtype=image.dtype).view(1, 1, w)
    gx = (xs + flow_px[:, 0]) * (2.0 / max(w - 1, 1)) - 1.0
    gy = (ys + flow_px[:, 1]) * (2.0 / max(h - 1, 1)) - 1.0
    grid = torch.stack((gx, gy), dim=-1)
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def blend_middle(im1: Tensor, im2: Tensor, flow_f_enc: Tensor, flow_b_enc: Tensor) -> Tensor:
    """Flow-compensated middle frame: 0.5 * (im1(x + F_b/2) + im2(x + F_f/2)), flows given encoded.

    flow_f maps im1's grid into im2 (im2(x+u) ~ im1(x)), flow_b the other way; halving them lands on the
    temporal middle. Works in any affine colour space (here the normalised one).
    """
    a = backward_warp(im1, decode_flow(flow_b_enc) * 0.5)
    b = backward_warp(im2, decode_flow(flow_f_enc) * 0.5)
    return (a + b) * 0.5


def blend_at(im1: Tensor, im2: Tensor, flow_f_enc: Tensor, flow_b_enc: Tensor, t: Tensor) -> Tensor:
    """Flow-compensated frame at time t (N,) in (0, 1): (1-t) im1(x + t F_b) + t im2(x + (1-t) F_f).

    The linear-motion reading of the flows: from time t the way back to im1 is t of the way from im2 to
    im1, the way on to im2 is (1 - t) of the way from im1 to im2. At t = 1/2 it is blend_middle exactly.
    """
    w = t.to(im1.dtype).view(-1, 1, 1, 1)
    a = backward_warp(im1, decode_flow(flow_b_enc) * w)
    b = backward_warp(im2, decode_flow(flow_f_enc) * (1.0 - w))
    return a * (1.0 - w) + b * w


def _cubic(x: float, a: float = -0.75) -> float:
    """Keys' cubic convolution kernel with torch's a = -0.75."""
    x = abs(x)
    if x <= 1.0:
        return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    if x < 2.0:
        return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    return 0.0


@functools.lru_cache(maxsize=16)
def _phase_taps(scale: int) -> tuple[tuple[float, ...], ...]:
    """For each output phase r, the weights of input samples i-2 .. i+2 for output sample scale*i + r.

    Output sample scale*i + r sits at input position i + (r + 0.5) / scale - 0.5 (align_corners=False), so its
    four cubic taps always fall inside i-2 .. i+2. Plain floats, not a tensor: a cached tensor made while
    torch.export traces would be a fake one."""
    rows = []
    for r in range(scale):
        pos = (r + 0.5) / scale - 0.5
        first = math.floor(pos) - 1
        rows.append(tuple(_cubic(pos - k) if first <= k < first + 4 else 0.0 for k in range(-2, 3)))
    return tuple(rows)


def _upscale_phases(image: Tensor, scale: int) -> Tensor:
    """Bicubic upscaling as one small convolution per output phase and a pixel shuffle.

    The same numbers as F.interpolate(mode="bicubic") to float rounding (edge replication = torch's index
    clamping), and faster with torch on the CPU; in an exported graph it becomes a convolution and a
    DepthToSpace instead of OpenVINO's generic Interpolate (docs/openvino.md has the per-layer profile)."""
    c = image.shape[1]
    taps = torch.tensor(_phase_taps(scale), dtype=torch.float64)
    kernel = (taps[:, None, :, None] * taps[None, :, None, :]).reshape(scale * scale, 1, 5, 5)
    kernel = kernel.to(image.dtype).repeat(c, 1, 1, 1)
    padded = F.pad(image, (2, 2, 2, 2), mode="replicate")
    return F.pixel_shuffle(F.conv2d(padded, kernel, groups=c), scale)


def upscale(image: Tensor, scale: int) -> Tensor:
    """Bicubic upscaling by an integer factor (align_corners=False).

    Inference on the CPU (and so the ONNX export) runs the phase-convolution form; training and other
    devices keep F.interpolate (exact on CUDA too, where cuDNN might run the convolution as TF32 or fp16)."""
    if image.device.type == "cpu" and image.dtype == torch.float32 and not torch.is_grad_enabled():
        return _upscale_phases(image, scale)
    return F.interpolate(image, scale_factor=scale, mode="bicubic", align_corners=False)
