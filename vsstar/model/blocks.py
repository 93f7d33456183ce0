"""Building blocks shared by the STARnet sub-networks (pure torch, no I/O)."""
from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F

__all__ = ["make_act", "apply_act", "conv_transpose_subpixel", "subpixel_plan", "Conv", "ResBlock", "ResStack",
           "UpProjection", "DownProjection", "BackProjectionBody", "PyramidRefiner", "leaky_bp"]

LEAKY_SLOPE = 0.1


def make_act(kind: str | None) -> nn.Module | None:
    """'prelu' (one shared slope, 0.25 init), 'lrelu' (slope 0.1) or None."""
    if kind is None:
        return None
    if kind == "prelu":
        return nn.PReLU()
    if kind == "lrelu":
        # In place is safe: the activation always acts on a fresh conv/add result.
        return nn.LeakyReLU(LEAKY_SLOPE, inplace=True)
    raise ValueError(f"activation must be 'prelu', 'lrelu' or None, got {kind!r}")


def apply_act(act: nn.Module | None, y: Tensor) -> Tensor:
    """act(y), with a one-slope PReLU run as an in-place leaky ReLU when autograd is off on the CPU.

    prelu(y) = y if y > 0 else w * y is exactly leaky_relu(y, w); the in-place form saves a buffer and a
    pass over memory. (On CUDA the slope would have to be read back to the host, and under torch.compile
    the read-back breaks the graph, so there it stays a PReLU.)
    """
    if act is None:
        return y
    if (isinstance(act, nn.PReLU) and act.weight.numel() == 1 and y.device.type == "cpu"
            and not torch.is_grad_enabled() and not torch.compiler.is_compiling()):
        return F.leaky_relu_(y, float(act.weight))
    return act(y)


def leaky_bp(x: Tensor) -> Tensor:
    """The refinement non-linearity sigma = LeakyReLU(0.1), applied in place to a fresh difference tensor."""
    return F.leaky_relu_(x, LEAKY_SLOPE)


@functools.lru_cache(maxsize=16)
def subpixel_plan(kernel: int, stride: int, padding: int) -> tuple[tuple[int, ...], int] | None:
    """How a square transposed convolution becomes a stride-1 convolution and a pixel shuffle, or None.

    Output pixel s*q + r of a transposed convolution sums inputs q - d with kernel tap s*d + r + p, so every
    output phase r is a small ordinary convolution of the input. Returns the index of the transposed kernel's
    tap (ky * k + kx, or k * k for "no tap": a zero) for each (ry, rx, a, b) of the phase kernels, and their
    padding; None when the output sizes differ (k != s + 2p), the taps are not centred, or the phase kernels
    would do more multiply-adds than the transposed convolution (x4's 8x8 stride-4 kernels: 2.25x more).
    Plain integers, so nothing here is a tensor made while torch.export traces."""
    k, s, p = kernel, stride, padding
    if k != s + 2 * p:
        return None
    ds = [d for r in range(s) for d in range(-k, k + 1) if 0 <= s * d + r + p < k]
    reach = max(ds)
    if min(ds) != -reach or (2 * reach + 1) ** 2 * s * s > k * k:
        return None
    kt = 2 * reach + 1
    index = []
    for ry in range(s):
        for rx in range(s):
            for a in range(kt):
                for b in range(kt):
                    ky, kx = s * (reach - a) + ry + p, s * (reach - b) + rx + p
                    index.append(ky * k + kx if 0 <= ky < k and 0 <= kx < k else k * k)
    return tuple(index), reach


def conv_transpose_subpixel(x: Tensor, weight: Tensor, bias: Tensor | None, stride: int, padding: int) -> Tensor:
    """F.conv_transpose2d(x, weight, bias, stride, padding) as phase convolutions and a pixel shuffle (same
    numbers to float rounding); see :func:`subpixel_plan` for when it applies (ValueError otherwise)."""
    cin, cout, k, _ = weight.shape
    s = stride
    plan = subpixel_plan(k, s, padding)
    if plan is None:
        raise ValueError(f"kernel {k}, stride {s}, padding {padding}: no cheaper phase-convolution form")
    index, reach = plan
    kt = 2 * reach + 1
    taps = torch.cat((weight.transpose(0, 1).reshape(cout, cin, k * k), weight.new_zeros(cout, cin, 1)), 2)
    w = taps[:, :, torch.tensor(index, device=weight.device)].reshape(cout, cin, s * s, kt, kt)
    w = w.transpose(1, 2).reshape(cout * s * s, cin, kt, kt)
    b = None if bias is None else bias.repeat_interleave(s * s)
    return F.pixel_shuffle(F.conv2d(x, w, b, padding=reach), s)


class Conv(nn.Module):
    """Convolution (or transposed convolution) followed by an optional activation."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, padding: int = 0,
                 act: str | None = None, transposed: bool = False) -> None:
        super().__init__()
        cls = nn.ConvTranspose2d if transposed else nn.Conv2d
        self.conv = cls(cin, cout, kernel, stride, padding)
        self.act = make_act(act)
        # x2's 6x6 stride-2 up-projections: in an exported graph, phase convolutions and a DepthToSpace ran
        # 1.6x faster than OpenVINO's transposed convolution at the same multiply-adds (the x2 network 1.07x);
        # torch eager measured no clear gain, so it keeps its own.
        self._subpixel = transposed and subpixel_plan(kernel, stride, padding) is not None

    def forward(self, x: Tensor) -> Tensor:
        if self._subpixel and torch.compiler.is_exporting():
            c = self.conv
            return apply_act(self.act, conv_transpose_subpixel(x, c.weight, c.bias, c.stride[0], c.padding[0]))
        return apply_act(self.act, self.conv(x))


class ResBlock(nn.Module):
    """conv3x3 -> act -> conv3x3 -> + input -> act, one activation module used at both places."""

    def __init__(self, channels: int, act: str) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.conv2 = nn.Conv2d(channels, channels, 3, 1, 1)
        self.act = make_act(act)

    def forward(self, x: Tensor) -> Tensor:
        out = self.conv2(apply_act(self.act, self.conv1(x)))
        # In place: conv2's output is not needed by its own backward pass.
        out += x
        return apply_act(self.act, out)


class ResStack(nn.Module):
    """`depth` residual blocks followed by a tail (conv or deconv) block."""

    def __init__(self, channels: int, depth: int, act: str, tail: nn.Module) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*[ResBlock(channels, act) for _ in range(depth)])
        self.tail = tail

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(self.blocks(x))


class UpProjection(nn.Module):
    """DBPN up-projection unit: h0 = Up(x); l0 = Down(h0); out = h0 + Up(l0 - x)."""

    def __init__(self, channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.expand = Conv(channels, channels, kernel, stride, padding, "prelu", transposed=True)
        self.contract = Conv(channels, channels, kernel, stride, padding, "prelu")
        self.correct = Conv(channels, channels, kernel, stride, padding, "prelu", transposed=True)

    def forward(self, x: Tensor) -> Tensor:
        h0 = self.expand(x)
        l0 = self.contract(h0)
        l0 -= x
        h1 = self.correct(l0)
        del l0
        h1 += h0
        return h1


class DownProjection(nn.Module):
    """DBPN down-projection unit: l0 = Down(x); h0 = Up(l0); out = l0 + Down(h0 - x)."""

    def __init__(self, channels: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.contract = Conv(channels, channels, kernel, stride, padding, "prelu")
        self.expand = Conv(channels, channels, kernel, stride, padding, "prelu", transposed=True)
        self.correct = Conv(channels, channels, kernel, stride, padding, "prelu")

    def forward(self, x: Tensor) -> Tensor:
        l0 = self.contract(x)
        h0 = self.expand(l0)
        h0 -= x
        l1 = self.correct(h0)
        del h0
        l1 += l0
        return l1


class BackProjectionBody(nn.Module):
    """DBPN body of Net_S: 1x1 reduce, alternating up/down projections, 1x1 fusion of all up outputs."""

    def __init__(self, cin: int, feat: int, stages: int, kernel: int, stride: int, padding: int) -> None:
        super().__init__()
        self.reduce = Conv(cin, feat, 1, 1, 0, "prelu")
        self.ups = nn.ModuleList([UpProjection(feat, kernel, stride, padding) for _ in range(stages)])
        self.downs = nn.ModuleList([DownProjection(feat, kernel, stride, padding) for _ in range(stages - 1)])
        self.fuse = Conv(stages * feat, feat, 1, 1, 0, None)

    def forward(self, x: Tensor) -> Tensor:
        if torch.is_grad_enabled():
            h = self.ups[0](self.reduce(x))
            highs = [h]
            for up, down in zip(self.ups[1:], self.downs):
                h = up(down(h))
                highs.append(h)
            # The original concatenates the up outputs newest first.
            return self.fuse(torch.cat(highs[::-1], 1))
        # Inference: apply the 1x1 fusion to each up output as soon as it exists (the fusion of a
        # concatenation is the sum of per-part convolutions), so no HR output waits for the others.
        n = len(self.ups)
        weight, bias = self.fuse.conv.weight, self.fuse.conv.bias
        c = weight.shape[1] // n

        def part(i: int, h: Tensor) -> Tensor:
            j = n - 1 - i  # newest first in the concatenation
            # A contiguous copy of the (tiny) weight slice keeps the conv on the fast oneDNN path.
            return F.conv2d(h, weight[:, j * c:(j + 1) * c].contiguous(), bias if i == 0 else None)

        h = self.ups[0](self.reduce(x))
        acc = part(0, h)
        for i, (up, down) in enumerate(zip(self.ups[1:], self.downs), start=1):
            low = down(h)
            del h
            h = up(low)
            del low
            acc += part(i, h)
        return acc


class PyramidRefiner(nn.Module):
    """Three-level pyramid of residual blocks (widths c, 2c, 4c) with 4x4 stride-2 (de)convs between levels.

    Used by Net_ST's T_HR branch; the HR size must be divisible by 4.
    """

    def __init__(self, channels: int, act: str = "lrelu") -> None:
        super().__init__()
        c = channels
        self.level1 = nn.ModuleList([ResBlock(c, act) for _ in range(5)])
        self.level2 = nn.ModuleList([ResBlock(2 * c, act) for _ in range(4)])
        self.level3 = nn.ModuleList([ResBlock(4 * c, act) for _ in range(3)])
        self.down1 = Conv(c, 2 * c, 4, 2, 1, act)
        self.down2 = Conv(2 * c, 4 * c, 4, 2, 1, act)
        self.up1 = Conv(2 * c, c, 4, 2, 1, act, transposed=True)
        self.up2 = Conv(4 * c, 2 * c, 4, 2, 1, act, transposed=True)
        self.out = Conv(c, c, 3, 1, 1, act)

    def forward(self, x: Tensor) -> Tensor:
        if not torch.is_grad_enabled():
            return self._forward_lean(x)
        a1, a2, a3 = self.level1, self.level2, self.level3
        x1 = a1[0](x)
        x2 = a2[0](self.down1(x1))
        x3 = a3[0](self.down2(x2))
        # Sums are written left to right as in the original so float rounding matches.
        x1 = a1[1](x1 + self.up1(x2))
        x2 = a2[1](x2 + self.down1(x1) + self.up2(x3))
        x3 = a3[1](x3 + self.down2(x2))
        x1 = a1[2](x1 + self.up1(x2))
        x2 = a2[2](x2 + self.down1(x1) + self.up2(x3))
        x3 = a3[2](x3 + self.down2(x2))
        x1 = a1[3](x1 + self.up1(x2))
        x2 = a2[3](x2 + self.down1(x1) + self.up2(x3))
        del x3
        x1 = a1[4](x1 + self.up1(x2))
        del x2
        return self.out(x1)

    def _forward_lean(self, x: Tensor) -> Tensor:
        """Inference form: sums built in place in a fresh buffer and each old level freed before the next
        block runs. (a + b) + c is computed as (b += a) += c: addition commutes exactly, so the rounding
        is the original's."""
        a1, a2, a3 = self.level1, self.level2, self.level3
        x1 = a1[0](x)
        x2 = a2[0](self.down1(x1))
        x3 = a3[0](self.down2(x2))
        for step in (1, 2, 3, 4):
            s = self.up1(x2).add_(x1)
            x1 = None
            x1 = a1[step](s)
            del s
            if step == 4:
                break
            s = self.down1(x1).add_(x2)
            s += self.up2(x3)
            x2 = None
            x2 = a2[step](s)
            del s
            if step < 3:
                s = self.down2(x2).add_(x3)
                x3 = None
                x3 = a3[step](s)
                del s
        del x2, x3
        return self.out(x1)


def conv_layers(module: nn.Module) -> Sequence[nn.Module]:
    """Every Conv2d / ConvTranspose2d inside `module`."""
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]
