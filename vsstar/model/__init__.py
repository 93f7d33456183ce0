"""STARnet (Space-Time-Aware Multi-Resolution video enhancement, CVPR 2020) in PyTorch.

StarConfig describes a build; StarNet is the network on the original encodings; Star wraps it for RGB
in [0, 1] and pixel flows; load_official reads the authors' checkpoints; save_weights / load_model handle
our safetensors format and the bundled models.
"""
from .baseline import backward_warp, blend_middle, decode_flow, encode_flow, upscale
from .config import FLOW_CLIP, IMAGENET_MEAN, IMAGENET_STD, OBJECTIVE_OUTPUTS, OBJECTIVES, StarConfig
from .official import (CheckpointError, infer_official_config, load_official, objective_from_filename,
                       official_to_ours, ours_to_official)
from .precision import exact_float32
from .star import StarNet
from .weights import bundled_models, load_model, load_weights, read_metadata, save_weights
from .wrapper import Star, StarOutput, denormalize, normalize

__all__ = [
    "exact_float32",
    "StarConfig", "StarNet", "Star", "StarOutput", "load_official", "load_model", "load_weights",
    "save_weights", "bundled_models", "read_metadata", "CheckpointError", "infer_official_config",
    "objective_from_filename",
    "official_to_ours", "ours_to_official", "normalize", "denormalize", "encode_flow", "decode_flow",
    "backward_warp", "blend_middle", "upscale", "OBJECTIVES", "OBJECTIVE_OUTPUTS", "IMAGENET_MEAN",
    "IMAGENET_STD", "FLOW_CLIP",
]
