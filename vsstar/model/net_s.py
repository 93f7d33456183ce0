"""Net_S: the single-frame super-resolution sub-network (RBPN with one neighbour), shared by both frames."""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .blocks import BackProjectionBody, Conv, ResStack
from .config import StarConfig, projection_geometry

__all__ = ["FrameSR"]


class FrameSR(nn.Module):
    """Super-resolves a target frame with help from its neighbour and the flow between them.

    forward(target, neighbour, flow) -> (stage-1 SR image or None, HR features H).
    """

    def __init__(self, config: StarConfig) -> None:
        super().__init__()
        k, s, p = projection_geometry(config.scale)
        bf, feat, depth = config.base_filter, config.feat, config.s_resblocks
        self.feat_target = Conv(3, bf, 3, 1, 1, "prelu")
        self.feat_pair = Conv(8, bf, 3, 1, 1, "prelu")
        self.dbpn = BackProjectionBody(bf, feat, config.num_stages, k, s, p)
        self.pair_branch = ResStack(bf, depth, "prelu", Conv(bf, feat, k, s, p, "prelu", transposed=True))
        self.error_branch = ResStack(feat, depth, "prelu", Conv(feat, feat, 3, 1, 1, "prelu"))
        # The original computes res_feat3(H) and discards the result: its weights are kept for checkpoint
        # compatibility (and the parameter count) but the forward pass never runs it.
        self.res_feat3 = (ResStack(feat, depth, "prelu", Conv(feat, bf, k, s, p, "prelu"))
                          if config.keep_res_feat3 else None)
        self.to_rgb = Conv(feat, 3, 3, 1, 1, None)

    def forward(self, target: Tensor, neighbour: Tensor, flow: Tensor, want_image: bool = True
                ) -> tuple[Tensor | None, Tensor]:
        h0 = self.dbpn(self.feat_target(target))
        h1 = self.pair_branch(self.feat_pair(torch.cat((target, neighbour, flow), 1)))
        if torch.is_grad_enabled():
            h = h0 + self.error_branch(h0 - h1)
        else:
            h1.neg_().add_(h0)  # h0 - h1 without a new buffer
            e = self.error_branch(h1)
            del h1
            h = e.add_(h0)  # h0 + e, same rounding as the original (addition commutes exactly)
            del h0
        image = self.to_rgb(h) if want_image else None
        return image, h
