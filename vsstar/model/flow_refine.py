"""FR: the flow-refinement U-Net of STARnet ("V4_REF")."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor, nn
import torch.nn.functional as F

__all__ = ["DoubleConv", "FlowRefiner"]


class DoubleConv(nn.Module):
    """(conv3x3 -> BatchNorm -> ReLU) twice."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(cout)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.bn1(self.conv1(x)))
        return F.relu_(self.bn2(self.conv2(x)))


class FlowRefiner(nn.Module):
    """U-Net from cat(flow, frame a, frame b) (8 channels) to a flow correction in [0, 1] (sigmoid).

    widths[i] is the width of level i (len(widths)-1 max-pools). Decoder k joins the upsampled deeper
    features with the skip of the matching level and narrows to the next level's width.
    """

    def __init__(self, widths: Sequence[int] = (64, 128, 256, 512, 1024, 1024), cin: int = 8, cout: int = 2) -> None:
        super().__init__()
        w = list(widths)
        n = len(w) - 1
        self.enc = nn.ModuleList([DoubleConv(cin, w[0])] + [DoubleConv(w[i - 1], w[i]) for i in range(1, n + 1)])
        dec = []
        prev = w[n]
        for k in range(1, n + 1):
            skip = w[n - k]
            out = w[max(n - k - 1, 0)]
            dec.append(DoubleConv(prev + skip, out))
            prev = out
        self.dec = nn.ModuleList(dec)
        self.head = nn.Conv2d(prev, cout, 1)

    def forward(self, x: Tensor) -> Tensor:
        skips = [self.enc[0](x)]
        for enc in self.enc[1:]:
            skips.append(enc(F.max_pool2d(skips[-1], 2)))
        y = skips.pop()
        for dec in self.dec:
            skip = skips.pop()
            y = F.interpolate(y, scale_factor=2.0, mode="bilinear", align_corners=True)
            dy = skip.shape[2] - y.shape[2]
            dx = skip.shape[3] - y.shape[3]
            if dy or dx:
                y = F.pad(y, (dx // 2, dx - dx // 2, dy // 2, dy - dy // 2))
            y = dec(torch.cat((skip, y), 1))
            del skip
        return torch.sigmoid(self.head(y))

    def refine(self, flow: Tensor, a: Tensor, b: Tensor) -> Tensor:
        """flow + U(cat(flow, a, b)): the refined encoded flow."""
        return flow + self(torch.cat((flow, a, b), 1))
