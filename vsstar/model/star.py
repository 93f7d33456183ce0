"""StarNet: the whole STARnet network on the original encodings (normalised RGB, encoded flows)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..flow.settings import FlowSettings
from .baseline import blend_middle, upscale
from .blocks import Conv, PyramidRefiner, ResBlock, ResStack, apply_act, conv_layers, leaky_bp
from .config import StarConfig, projection_geometry
from .flow_refine import FlowRefiner
from .net_s import FrameSR

__all__ = ["StarNet", "THRBranch", "GLOBAL_SKIP_RES_GAIN"]

#: With global_skip, the second conv of every residual block is scaled by this after the kaiming init, so
#: each block starts near the identity: the default init gives activations in the hundreds, scaling every
#: conv by 0.5 makes them vanish (~1e-3); this keeps them at 0.2-3 (measured, see docs/model.md).
GLOBAL_SKIP_RES_GAIN = 0.1


class THRBranch(nn.Module):
    """Net_ST's T_HR correction branch: 1x1 reduce of cat(H1, H2, up(M)), pyramid module, conv3x3."""

    def __init__(self, feat: int) -> None:
        super().__init__()
        self.reduce = Conv(3 * feat, feat, 1, 1, 0, "lrelu")
        self.pyramid = PyramidRefiner(feat, "lrelu")
        self.tail = Conv(feat, feat, 3, 1, 1, "lrelu")

    def forward(self, h1: Tensor, h2: Tensor, motion: Tensor, scale: int) -> Tensor:
        """h1, h2: HR features of both frames; motion: the LR motion features M (upsampled here)."""
        if torch.is_grad_enabled():
            m_up = F.interpolate(motion, scale_factor=scale, mode="bilinear", align_corners=True)
            x = self.reduce(torch.cat((h1, h2, m_up), 1))
        else:
            # The 1x1 conv of a concatenation is the sum of per-part convs: no 3-map concatenation and
            # the upsampled motion lives only as long as its own term.
            w, b = self.reduce.conv.weight, self.reduce.conv.bias
            c = h1.shape[1]
            x = F.conv2d(h1, w[:, :c].contiguous(), b)
            x += F.conv2d(h2, w[:, c:2 * c].contiguous())
            m_up = F.interpolate(motion, scale_factor=scale, mode="bilinear", align_corners=True)
            x += F.conv2d(m_up, w[:, 2 * c:].contiguous())
            del m_up
            x = apply_act(self.reduce.act, x)
        return self.tail(self.pyramid(x))


def check_pair_inputs(*named: tuple[str, Tensor], floating: bool = False) -> None:
    """Check (name, tensor) pairs: two (N,3,H,W) frames then two (N,2,H,W) flows, all of the first's N, H, W."""
    ref = named[0][1]
    for (name, t), c in zip(named, (3, 3, 2, 2)):
        if not isinstance(t, Tensor) or t.dim() != 4 or t.shape[1] != c:
            got = tuple(t.shape) if isinstance(t, Tensor) else type(t).__name__
            raise ValueError(f"{name} must be a (N,{c},H,W) tensor, got {got}")
        if t.shape[0] != ref.shape[0] or t.shape[2:] != ref.shape[2:]:
            raise ValueError(f"{name} must match {named[0][0]}'s batch and size {tuple(ref.shape[2:])}, "
                             f"got {tuple(t.shape)}")
        if floating and not t.is_floating_point():
            raise ValueError(f"{name} must be a floating-point tensor, got {t.dtype}")


def _bp_update(x: Tensor, pred: Tensor, consume: bool = False) -> Tensor:
    """x + sigma(x - pred). Without autograd it is done in place in x (and in pred's buffer when
    `consume`: pred is not used afterwards); the rounding is the out-of-place form's."""
    if torch.is_grad_enabled():
        return x + leaky_bp(x - pred)
    d = pred.neg_().add_(x) if consume else torch.sub(x, pred)  # -p + x == x - p exactly
    leaky_bp(d)
    return x.add_(d)


class StarNet(nn.Module):
    """STARnet (CVPR 2020) for any StarConfig.

    forward(im1, im2, flow_f, flow_b): ImageNet-normalised RGB frames (N,3,H,W) and encoded flows (N,2,H,W)
    (-clip(px, +-150)/150; flow_f: im2(x+u) ~ im1(x), flow_b the reverse). Eval mode returns the tuple
    (ht, h1, h2, l) = (HR middle, HR t, HR t+1, LR middle); train mode returns a dict with the stage-2
    outputs ht, h1, h2, l, the stage-1 outputs ht_s1, h1_s1, h2_s1, l_s1 and, with FR, the refined flows
    flow_f, flow_b. H, W: multiples of config.size_multiple and >= config.min_size (Star pads for you).
    """

    def __init__(self, config: StarConfig | None = None) -> None:
        super().__init__()
        config = StarConfig() if config is None else config
        if not isinstance(config, StarConfig):
            raise ValueError(f"config must be a StarConfig, got {type(config).__name__}")
        self.config = config
        #: The flow settings the weights were trained with (recorded in our weight files; the engine
        #: computes its flows with them). STARnet's unless a loaded file says otherwise.
        self.flow_settings = FlowSettings()
        #: Run the two frames through Net_S / Net_D / Net_M as one batch. Same numbers; off by default
        #: because it measured slower on the CPU with about the same peak memory (docs/model.md).
        self.batch_frames = False
        k, s, p = projection_geometry(config.scale)
        f, bf = config.feat, config.base_filter
        self.flow_refiner = FlowRefiner(config.fr_widths) if config.flow_refine else None
        self.sr = FrameSR(config)  # Net_S
        self.down = ResStack(f, config.down_resblocks, "lrelu", Conv(f, 2 * f, k, s, p, "lrelu"))  # Net_D
        self.motion_head = Conv(4, bf, 3, 1, 1, "lrelu")  # Net_M
        self.motion = ResStack(bf, config.motion_resblocks, "lrelu", Conv(bf, f, 3, 1, 1, "lrelu"))
        self.interp = ResStack(5 * f, config.n_resblock, "lrelu",  # Net_ST
                               Conv(5 * f, f, k, s, p, "lrelu", transposed=True))
        self.t_hr = THRBranch(f)
        self.t_lr = ResStack(5 * f, config.t_lr_resblocks, "lrelu", Conv(5 * f, 2 * f, 3, 1, 1, "lrelu"))
        self.up_f = ResStack(5 * f, config.n_resblock, "lrelu",  # Net_F
                             Conv(5 * f, f, k, s, p, "lrelu", transposed=True))
        self.up_b = ResStack(5 * f, config.n_resblock, "lrelu",  # Net_B
                             Conv(5 * f, f, k, s, p, "lrelu", transposed=True))
        self.rec_h = Conv(f, 3, 3, 1, 1, None)  # Net_rec
        self.rec_l = Conv(2 * f, 3, 3, 1, 1, None)
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def _main_modules(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name != "flow_refiner"]

    def reset_parameters(self) -> None:
        """The original's init (kaiming-normal weights, zero biases; the FR U-Net keeps PyTorch's default).

        With global_skip the output convolutions (rec_h, rec_l, Net_S's to_rgb) start at zero, so step 0
        returns exactly the classical baseline, and every residual block's second conv is scaled by
        GLOBAL_SKIP_RES_GAIN so activations stay O(1).
        """
        for module in self._main_modules():
            for conv in conv_layers(module):
                nn.init.kaiming_normal_(conv.weight)
                if conv.bias is not None:
                    nn.init.zeros_(conv.bias)
        if self.config.global_skip:
            with torch.no_grad():
                for conv in (self.rec_h.conv, self.rec_l.conv, self.sr.to_rgb.conv):
                    conv.weight.zero_()
                for module in self._main_modules():
                    for block in module.modules():
                        if isinstance(block, ResBlock):
                            block.conv2.weight.mul_(GLOBAL_SKIP_RES_GAIN)

    # --------------------------------------------------------------- forward
    def _check_inputs(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor) -> None:
        check_pair_inputs(("im1", im1), ("im2", im2), ("flow_f", flow_f), ("flow_b", flow_b))
        h, w = im1.shape[2:]
        m, lo = self.config.size_multiple, self.config.min_size
        if h % m or w % m or h < lo or w < lo:
            raise ValueError(f"im1 size must be a multiple of {m} and at least {lo} (use Star to pad), "
                             f"got {h}x{w}")

    def forward(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor):
        self._check_inputs(im1, im2, flow_f, flow_b)
        cfg = self.config
        train = self.training
        base = None
        if cfg.global_skip:
            # The baseline uses the input flows: the FR correction starts at sigmoid(.) ~ 0.5, far off.
            mid = blend_middle(im1, im2, flow_f, flow_b)
            base = {"h1": upscale(im1, cfg.scale), "h2": upscale(im2, cfg.scale), "l": mid,
                    "ht": upscale(mid, cfg.scale)}
        if self.flow_refiner is not None:
            flow_f = self.flow_refiner.refine(flow_f, im1, im2)
            flow_b = self.flow_refiner.refine(flow_b, im2, im1)

        # Alignment (Net_S) and down-projection (Net_D) of both frames.
        if self.batch_frames:
            # Both frames (and both motion inputs) go through the shared sub-networks as one batch.
            n = im1.shape[0]
            sr12, H12 = self.sr(torch.cat((im1, im2)), torch.cat((im2, im1)), torch.cat((flow_f, flow_b)),
                                want_image=train)
            sr1, sr2 = (None, None) if sr12 is None else sr12.split(n)
            L1, L2 = self.down(H12).split(n)
            H1, H2 = H12.split(n)
            del H12
            if not torch.is_grad_enabled():
                H1, H2 = H1.clone(), H2.clone()  # own storage: they are updated in place below
            flows = torch.cat((flow_f, flow_b), 1)
            M, M_half = self.motion(self.motion_head(torch.cat((flows, flows / 2.0)))).split(n)
            del flows
        else:
            sr1, H1 = self.sr(im1, im2, flow_f, want_image=train)
            sr2, H2 = self.sr(im2, im1, flow_b, want_image=train)
            L1 = self.down(H1)
            L2 = self.down(H2)
            # Motion (Net_M), on the flows and on the halved flows.
            M = self.motion(self.motion_head(torch.cat((flow_f, flow_b), 1)))
            M_half = self.motion(self.motion_head(torch.cat((flow_f / 2.0, flow_b / 2.0), 1)))

        # Interpolation (Net_ST) with its HR and LR correction branches. The T_HR correction is computed
        # first so its peak does not coincide with Ht's lifetime (same numbers).
        t_hr = self.t_hr(H1, H2, M, cfg.scale)
        lat = torch.cat((L1, L2, M), 1)
        del M
        Ht = _bp_update(self.interp(lat), t_hr, consume=True)
        del t_hr
        L = _bp_update(self.down(Ht), self.t_lr(lat), consume=True)
        del lat
        stage1 = None
        if train:
            stage1 = {"ht_s1": self.rec_h(Ht), "h1_s1": sr1, "h2_s1": sr2, "l_s1": self.rec_l(L)}

        # Stage 2: cycle refinement through Net_B and Net_F. Each projection's down-projection is taken
        # before its HR update so the update can reuse the projection's buffer.
        Hp = self.up_b(torch.cat((L1, L, M_half), 1))
        Lp = self.down(Hp)
        H1 = _bp_update(H1, Hp, consume=True)
        L1 = _bp_update(L1, Lp, consume=True)
        Hp = self.up_f(torch.cat((L, L2, M_half), 1))
        Lp = self.down(Hp)
        H2 = _bp_update(H2, Hp, consume=True)
        L2 = _bp_update(L2, Lp, consume=True)
        Hp = self.up_f(torch.cat((L1, L, M_half), 1))
        del L1
        Lp = self.down(Hp)
        Ht = _bp_update(Ht, Hp, consume=True)
        L = _bp_update(L, Lp, consume=True)
        Hp = self.up_b(torch.cat((L, L2, M_half), 1))
        del L2, M_half
        Lp = self.down(Hp)
        Ht = _bp_update(Ht, Hp, consume=True)
        L = _bp_update(L, Lp, consume=True)
        del Hp, Lp

        out = {"ht": self.rec_h(Ht), "h1": self.rec_h(H1), "h2": self.rec_h(H2), "l": self.rec_l(L)}
        if train:
            out.update(stage1)
        if base is not None:
            for key in list(out):
                ref = base[key.removesuffix("_s1")]
                out[key] = out[key] + ref if torch.is_grad_enabled() else out[key].add_(ref)
        if not train:
            return out["ht"], out["h1"], out["h2"], out["l"]
        if self.flow_refiner is not None:
            out["flow_f"], out["flow_b"] = flow_f, flow_b
        return out
