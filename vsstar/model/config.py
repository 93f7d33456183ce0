"""Configuration of the STARnet model family (one dataclass describes every paper variant)."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "StarConfig",
    "OBJECTIVES",
    "OBJECTIVE_OUTPUTS",
    "projection_geometry",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "FLOW_CLIP",
]

#: ImageNet statistics used by the original to normalise RGB in [0, 1].
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
#: Flows are encoded as -clip(pixels, -FLOW_CLIP, FLOW_CLIP) / FLOW_CLIP.
FLOW_CLIP = 150.0

#: Paper models: the outputs each training objective reads (and so the ones that are meaningful).
OBJECTIVE_OUTPUTS: dict[str, tuple[str, ...]] = {
    "STAR": ("ht", "h1", "h2", "l"),
    "STAR-ST": ("ht", "h1", "h2"),
    "STAR-S": ("h1", "h2"),
    "STAR-T_LR": ("l",),
    # STAR-T_HR is fed the HR pair; its "LR middle" output is the interpolated frame at input size.
    "STAR-T_HR": ("l",),
}
OBJECTIVES = tuple(OBJECTIVE_OUTPUTS)

# (kernel, stride, padding) of every up/down projection, per scale.
_PROJECTION = {2: (6, 2, 2), 4: (8, 4, 2), 8: (12, 8, 2)}

_OFFICIAL_FR_WIDTHS = (64, 128, 256, 512, 1024, 1024)


def projection_geometry(scale: int) -> tuple[int, int, int]:
    """(kernel, stride, padding) of the strided (de)convolutions for `scale`."""
    if scale not in _PROJECTION:
        raise ValueError(f"scale must be one of 2, 4, 8, got {scale!r}")
    return _PROJECTION[scale]


@dataclass(frozen=True)
class StarConfig:
    """Size and behaviour of a STARnet build.

    Defaults are the paper's (official) hyper-parameters. Knobs:
      scale: 2, 4 or 8. base_filter: Net_S / motion width (256). feat: HR feature width (64); the
      LR latent has 2*feat channels and the motion blocks 5*feat. num_stages: up-projection units in
      Net_S's DBPN body (3). n_resblock: depth of Net_ST, Net_F and Net_B (the 5*feat blocks).
      s_resblocks: Net_S residual depth (5). down_resblocks: Net_D depth (2). motion_resblocks: Net_M
      depth (2). t_lr_resblocks: T_LR branch depth (2). flow_refine: with the FR U-Net ("V4_REF").
      fr_widths: FR U-Net widths per level. keep_res_feat3: keep Net_S's res_feat3 weights (present in the
      official checkpoints, never used by the forward pass; no computation either way).
      global_skip: outputs = classical baseline (bicubic / flow-compensated blend) + learned residual.
      objective: the paper model the weights were trained as (decides which outputs are meaningful).
      time_input: the network takes the time t in (0, 1) of the in-between frame (STARnet itself knows only
      t = 1/2); the parts that do not depend on t run once per pair (StarNet.encode / synthesize).
      time_motion: (needs time_input) Net_M's second pass, which STARnet feeds the halved flows (the motion
      from either frame to the middle), sees the flows scaled to the wanted time instead, t * F and
      (1 - t) * B; the two agree at t = 1/2. That pass then runs once per t.
    """

    scale: int = 4
    base_filter: int = 256
    feat: int = 64
    num_stages: int = 3
    n_resblock: int = 5
    s_resblocks: int = 5
    down_resblocks: int = 2
    motion_resblocks: int = 2
    t_lr_resblocks: int = 2
    flow_refine: bool = False
    fr_widths: tuple[int, ...] = field(default=_OFFICIAL_FR_WIDTHS)
    keep_res_feat3: bool = True
    global_skip: bool = False
    objective: str = "STAR"
    time_input: bool = False
    time_motion: bool = False

    def __post_init__(self) -> None:
        projection_geometry(self.scale)
        for name in ("base_filter", "feat", "num_stages", "n_resblock"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        for name in ("s_resblocks", "down_resblocks", "motion_resblocks", "t_lr_resblocks"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise ValueError(f"{name} must be an int >= 0, got {value!r}")
        widths = tuple(self.fr_widths)
        if len(widths) < 2 or any((not isinstance(w, int)) or w < 1 for w in widths):
            raise ValueError(f"fr_widths must be >= 2 positive ints, got {self.fr_widths!r}")
        object.__setattr__(self, "fr_widths", widths)
        if self.objective not in OBJECTIVE_OUTPUTS:
            raise ValueError(f"objective must be one of {', '.join(OBJECTIVES)}, got {self.objective!r}")
        for name in ("flow_refine", "keep_res_feat3", "global_skip", "time_input", "time_motion"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"{name} must be a bool, got {getattr(self, name)!r}")
        if self.time_motion and not self.time_input:
            raise ValueError("time_motion needs time_input (the flows are scaled to the time t)")

    @classmethod
    def official(cls, scale: int = 4, flow_refine: bool = False, objective: str = "STAR") -> "StarConfig":
        """The paper's configuration (58.1 M parameters at x4, 111.6 M with FR)."""
        return cls(scale=scale, flow_refine=flow_refine, objective=objective)

    @property
    def outputs(self) -> tuple[str, ...]:
        """Names of the outputs this objective trains (and so the ones to read)."""
        return OBJECTIVE_OUTPUTS[self.objective]

    @property
    def hr_input(self) -> bool:
        """True for STAR-T_HR, whose input pair is at the high resolution."""
        return self.objective == "STAR-T_HR"

    @property
    def variant(self) -> str:
        """The authors' model name: FBPNSR_RBPN_V4 or FBPNSR_RBPN_V4_REF (with FR)."""
        return "FBPNSR_RBPN_V4_REF" if self.flow_refine else "FBPNSR_RBPN_V4"

    @property
    def size_multiple(self) -> int:
        """LR height/width must be a multiple of this (the T_HR pyramid halves the HR size twice)."""
        return max(1, 4 // self.scale)

    @property
    def min_size(self) -> int:
        """Smallest LR height/width (the FR U-Net max-pools len(fr_widths)-1 times)."""
        return 2 ** (len(self.fr_widths) - 1) if self.flow_refine else 1

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-able) of every field."""
        d = dataclasses.asdict(self)
        d["fr_widths"] = list(self.fr_widths)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StarConfig":
        """Inverse of to_dict; unknown keys are an error (a newer file format, or a typo)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"config has unknown fields: {', '.join(unknown)}")
        d = dict(d)
        if "fr_widths" in d:
            d["fr_widths"] = tuple(d["fr_widths"])
        return cls(**d)

    def replace(self, **changes: Any) -> "StarConfig":
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)
