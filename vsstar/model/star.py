"""StarNet: the whole STARnet network on the original encodings (normalised RGB, encoded flows)."""
from __future__ import annotations

import torch
from torch import Tensor, nn
import torch.nn.functional as F

from ..flow.settings import FlowSettings
from .baseline import blend_at, blend_middle, upscale
from .blocks import Conv, PyramidRefiner, ResBlock, ResStack, apply_act, conv_layers, leaky_bp
from .config import StarConfig, projection_geometry
from .flow_refine import FlowRefiner
from .net_s import FrameSR

__all__ = ["StarNet", "THRBranch", "TimeModulation", "FEATURES", "TIME_MOTION_FEATURES", "feature_names",
           "GLOBAL_SKIP_RES_GAIN"]

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


class TimeModulation(nn.Module):
    """Per-channel scale and shift of several feature maps as a function of the time t (FiLM).

    A two-layer perceptron maps 2t - 1 to (1 + gamma, beta) for every channel of every map. Its output layer
    starts at zero, so a freshly added modulation is the identity: a model fine-tuned from weights without
    time input starts exactly where they were at every t (the t-aware baseline aside).
    """

    def __init__(self, channels: tuple[int, ...], hidden: int = 32) -> None:
        super().__init__()
        self.channels = tuple(channels)
        self.fc1 = nn.Linear(1, hidden)
        self.fc2 = nn.Linear(hidden, 2 * sum(self.channels))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """fc1 as PyTorch initialises it, fc2 at zero (the identity)."""
        self.fc1.reset_parameters()
        nn.init.zeros_(self.fc2.weight)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, maps: tuple[Tensor, ...], t: Tensor) -> tuple[Tensor, ...]:
        """maps: (N, C_i, H, W) tensors with the channels given at construction; t: (N,)."""
        h = F.leaky_relu(self.fc1((t * 2.0 - 1.0).view(-1, 1).to(self.fc1.weight.dtype)), 0.1)
        gamma, beta = self.fc2(h).to(maps[0].dtype).view(t.shape[0], 2, -1, 1, 1).unbind(1)
        out, c0 = [], 0
        for x, c in zip(maps, self.channels):
            out.append(torch.addcmul(beta[:, c0:c0 + c], x, gamma[:, c0:c0 + c] + 1.0))
            c0 += c
        return tuple(out)


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


#: The t-independent features encode() hands to synthesize() (besides baseline_inputs).
FEATURES = ("H1", "H2", "L1", "L2", "M", "M_half")
#: The same with config.time_motion: M and M_half depend on t there, so synthesize gets the (refined) flows.
TIME_MOTION_FEATURES = ("H1", "H2", "L1", "L2", "motion_ff", "motion_fb")


def feature_names(config: StarConfig) -> tuple[str, ...]:
    """The features StarNet.encode hands to synthesize for this config (the exported encode graph's outputs)."""
    return TIME_MOTION_FEATURES if config.time_motion else FEATURES


class StarNet(nn.Module):
    """STARnet (CVPR 2020) for any StarConfig.

    forward(im1, im2, flow_f, flow_b, t=None): ImageNet-normalised RGB frames (N,3,H,W) and encoded flows (N,2,H,W)
    (-clip(px, +-150)/150; flow_f: im2(x+u) ~ im1(x), flow_b the reverse). Eval mode returns the tuple
    (ht, h1, h2, l) = (HR middle, HR t, HR t+1, LR middle); train mode returns a dict with the stage-2
    outputs ht, h1, h2, l, the stage-1 outputs ht_s1, h1_s1, h2_s1, l_s1 and, with FR, the refined flows
    flow_f, flow_b. H, W: multiples of config.size_multiple and >= config.min_size (Star pads for you).
    With config.time_input, t (a number or (N,) tensor in (0, 1), default 1/2) is the time of the in-between
    frame; :meth:`encode` runs the t-independent parts once per pair, :meth:`synthesize` the rest per t.
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
        # Modulates L1, L2 (2f channels each), M and M_half (f each) by t.
        self.time_mod = TimeModulation((2 * f, 2 * f, f, f)) if config.time_input else None
        self.reset_parameters()

    # ------------------------------------------------------------------ init
    def _main_modules(self) -> list[nn.Module]:
        return [m for name, m in self.named_children() if name not in ("flow_refiner", "time_mod")]

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
        if self.time_mod is not None:
            self.time_mod.reset_parameters()

    # --------------------------------------------------------------- forward
    def _check_inputs(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor) -> None:
        check_pair_inputs(("im1", im1), ("im2", im2), ("flow_f", flow_f), ("flow_b", flow_b))
        h, w = im1.shape[2:]
        m, lo = self.config.size_multiple, self.config.min_size
        if h % m or w % m or h < lo or w < lo:
            raise ValueError(f"im1 size must be a multiple of {m} and at least {lo} (use Star to pad), "
                             f"got {h}x{w}")

    def forward(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor, t: Tensor | float | None = None):
        """The whole network: :meth:`encode` then :meth:`synthesize` at time t (None: 1/2)."""
        return self.synthesize(self.encode(im1, im2, flow_f, flow_b), t, consume=True)

    def time_tensor(self, t: Tensor | float | None, n: int, like: Tensor) -> Tensor | None:
        """t as an (n,) tensor of like's dtype and device, checked; None for a model without time input."""
        if t is None:
            return torch.full((n,), 0.5, dtype=like.dtype, device=like.device) if self.config.time_input else None
        tt = torch.as_tensor(t, dtype=like.dtype, device=like.device)
        if tt.dim() == 0:
            tt = tt.expand(n)
        if tt.dim() != 1 or tt.shape[0] != n:
            raise ValueError(f"t must be a number or an ({n},) tensor, got shape {tuple(tt.shape)}")
        if not torch.compiler.is_compiling() and not torch.jit.is_tracing() and tt.device.type == "cpu":
            if bool(((tt <= 0) | (tt >= 1) | tt.isnan()).any()):
                raise ValueError(f"t must lie strictly between 0 and 1, got {tt.tolist()}")
            if not self.config.time_input and bool((tt != 0.5).any()):
                raise ValueError(f"t: this model synthesises only t = 1/2 (its config has no time input), "
                                 f"got {tt.tolist()}")
        return tt if self.config.time_input else None

    def encode(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor) -> dict[str, Tensor]:
        """The parts that do not depend on t: both frames' super-resolution (Net_S) and down-projection
        (Net_D), the motion features (Net_M), the flow refinement and the bicubic baselines. The result
        feeds :meth:`synthesize` once per wanted t."""
        self._check_inputs(im1, im2, flow_f, flow_b)
        cfg = self.config
        train = self.training
        feat = self.baseline_inputs(im1, im2, flow_f, flow_b)
        if self.flow_refiner is not None:
            flow_f = self.flow_refiner.refine(flow_f, im1, im2)
            flow_b = self.flow_refiner.refine(flow_b, im2, im1)
            if train:
                feat.update(flow_f=flow_f, flow_b=flow_b)

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
        else:
            sr1, H1 = self.sr(im1, im2, flow_f, want_image=train)
            sr2, H2 = self.sr(im2, im1, flow_b, want_image=train)
            L1 = self.down(H1)
            L2 = self.down(H2)
        feat.update(H1=H1, H2=H2, L1=L1, L2=L2)
        if cfg.time_motion:
            # Net_M runs per t in synthesize (motion_at), on the refined flows.
            feat.update(motion_ff=flow_f, motion_fb=flow_b)
        else:
            feat["M"], feat["M_half"] = self.motion_at(flow_f, flow_b)
        if train:
            feat.update(sr1=sr1, sr2=sr2)
        return feat

    def motion_at(self, flow_f: Tensor, flow_b: Tensor, t: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Net_M's two passes, M and M_half, for the in-between frame at time t ((N,)); None: the middle.

        STARnet computes the middle's M on the flows and M_half on the halved flows. config.time_motion
        generalises them to the motion from either frame to t: M on (2t flow_f, 2(1 - t) flow_b), M_half on
        (t flow_f, (1 - t) flow_b), which at t = 1/2 are those same numbers (x1 and x0.5 are exact)."""
        if t is None:
            wf = wb = 0.5
        else:
            wf = t.to(flow_f.dtype).view(-1, 1, 1, 1)
            wb = 1.0 - wf
        full = torch.cat((flow_f * (2.0 * wf), flow_b * (2.0 * wb)), 1)
        half = torch.cat((flow_f * wf, flow_b * wb), 1)
        if self.batch_frames:
            return self.motion(self.motion_head(torch.cat((full, half)))).split(flow_f.shape[0])
        return self.motion(self.motion_head(full)), self.motion(self.motion_head(half))

    def baseline_inputs(self, im1: Tensor, im2: Tensor, flow_f: Tensor, flow_b: Tensor) -> dict[str, Tensor]:
        """What synthesize needs besides FEATURES for the global skip: the inputs and both frames' bicubic
        upscales (nothing without global_skip). The baselines use the input flows: the FR correction starts
        at sigmoid(.) ~ 0.5, far off."""
        if not self.config.global_skip:
            return {}
        s = self.config.scale
        return {"im1": im1, "im2": im2, "base_ff": flow_f, "base_fb": flow_b,
                "base_h1": upscale(im1, s), "base_h2": upscale(im2, s)}

    def synthesize(self, feat: dict[str, Tensor], t: Tensor | float | None = None, consume: bool = False):
        """The parts that depend on t, on :meth:`encode`'s features: interpolation (Net_ST), the cycle
        refinement (Net_F, Net_B) and the reconstructions; outputs as :meth:`forward`'s.

        t: a number or an (N,) tensor in (0, 1), the time of the in-between frame (None: 1/2); a model
        without time input accepts only 1/2. Without autograd the refinement works in place, so ``feat``
        is copied first unless ``consume`` (the caller does not use it again).
        """
        cfg = self.config
        train = self.training
        names = feature_names(cfg)
        H1, H2, L1, L2 = (feat[k] for k in names[:4])
        tt = self.time_tensor(t, H1.shape[0], H1)
        if cfg.time_motion:
            M, M_half = self.motion_at(feat["motion_ff"], feat["motion_fb"], tt)
        else:
            M, M_half = feat["M"], feat["M_half"]
        if not torch.is_grad_enabled() and (not consume or self.batch_frames):
            # Own storage: H1, H2, L1, L2 are updated in place below (split views share one buffer too).
            H1, H2, L1, L2 = H1.clone(), H2.clone(), L1.clone(), L2.clone()
        if not consume:
            feat = dict(feat)
        else:
            for k in names:
                del feat[k]
        if tt is not None:
            # Time conditioning: a per-channel scale and shift of the pair features, a function of t.
            L1, L2, M, M_half = self.time_mod((L1, L2, M, M_half), tt)

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
            stage1 = {"ht_s1": self.rec_h(Ht), "h1_s1": feat.get("sr1"), "h2_s1": feat.get("sr2"),
                      "l_s1": self.rec_l(L)}

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
        if cfg.global_skip:
            if tt is None:
                mid = blend_middle(feat["im1"], feat["im2"], feat["base_ff"], feat["base_fb"])
            else:
                mid = blend_at(feat["im1"], feat["im2"], feat["base_ff"], feat["base_fb"], tt)
            base = {"h1": feat["base_h1"], "h2": feat["base_h2"], "l": mid, "ht": upscale(mid, cfg.scale)}
            for key in list(out):
                ref = base[key.removesuffix("_s1")]
                out[key] = out[key] + ref if torch.is_grad_enabled() else out[key].add_(ref)
        if not train:
            return out["ht"], out["h1"], out["h2"], out["l"]
        if self.flow_refiner is not None:
            out["flow_f"], out["flow_b"] = feat["flow_f"], feat["flow_b"]
        return out
