"""Compact STARnet configurations trained here (global skip: step 0 equals the classical answer).

Speeds are measured on the project's 2-core CPU; see docs/training.md for the table.
"""
from __future__ import annotations

from vsstar.model.config import StarConfig

__all__ = ["PRESETS", "preset_config"]

_COMMON = dict(global_skip=True, keep_res_feat3=False, flow_refine=False, objective="STAR")

#: name -> StarConfig keyword arguments (scale added by preset_config).
PRESETS: dict[str, dict] = {
    # ~0.3 M parameters: 8 HR channels, the cheapest build that still has every sub-network.
    "tiny": dict(base_filter=32, feat=8, num_stages=1, n_resblock=1, s_resblocks=1, down_resblocks=0,
                 motion_resblocks=1, t_lr_resblocks=1),
    # 12 HR channels, wider LR trunk.
    "small": dict(base_filter=48, feat=12, num_stages=1, n_resblock=1, s_resblocks=1, down_resblocks=0,
                  motion_resblocks=1, t_lr_resblocks=1),
    # 16 HR channels, two residual blocks in Net_S.
    "base": dict(base_filter=48, feat=16, num_stages=1, n_resblock=1, s_resblocks=2, down_resblocks=0,
                 motion_resblocks=1, t_lr_resblocks=1),
    # About 4.3 M parameters at x4: 24 HR channels, deeper residual stacks everywhere. The candidate for the
    # quality tier; a GPU-sized training job (benchmarks/gpu_check.py --train-steps), slow to train on a CPU.
    "large": dict(base_filter=64, feat=24, num_stages=1, n_resblock=2, s_resblocks=3, down_resblocks=1,
                  motion_resblocks=2, t_lr_resblocks=2),
    # A test-sized build (unit tests only).
    "test": dict(base_filter=8, feat=4, num_stages=1, n_resblock=1, s_resblocks=1, down_resblocks=0,
                 motion_resblocks=1, t_lr_resblocks=1),
}


def preset_config(name: str, scale: int, **overrides) -> StarConfig:
    """The StarConfig of a preset at ``scale`` (2, 4 or 8), with field overrides."""
    if name not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {name!r}")
    return StarConfig(scale=scale, **{**_COMMON, **PRESETS[name], **overrides})
