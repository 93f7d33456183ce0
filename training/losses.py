"""Training objectives of the paper models, and the optional VGG19 perceptual term (local weights only)."""
from __future__ import annotations

import os

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["OBJECTIVE_TERMS", "star_loss", "VGG19Features", "perceptual_loss"]

#: output name -> (target name, weight) per paper model (ARCHITECTURE.md, "The models").
OBJECTIVE_TERMS: dict[str, dict[str, tuple[str, float]]] = {
    "STAR": {"ht": ("hr_mid", 1.0), "h1": ("hr1", 0.5), "h2": ("hr2", 0.5), "l": ("lr_mid", 1.0)},
    "STAR-ST": {"ht": ("hr_mid", 1.0), "h1": ("hr1", 0.5), "h2": ("hr2", 0.5)},
    "STAR-S": {"h1": ("hr1", 1.0), "h2": ("hr2", 1.0)},
    "STAR-T_LR": {"l": ("lr_mid", 1.0)},
    # Fed the HR pair (the data set is built at scale 1), so "lr_mid" is the HR middle frame.
    "STAR-T_HR": {"l": ("lr_mid", 1.0)},
}


def star_loss(out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor], objective: str,
              stage1_weight: float = 0.4, stage2_weight: float = 1.0) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 of the objective's outputs, stage-1 outputs (``<name>_s1``) x0.4 and stage-2 outputs x1.0.

    ``out`` is the train-mode dict of StarNet, ``targets`` the batch in the same (normalised) space.
    Returns the total and its parts (floats, for logging).
    """
    if objective not in OBJECTIVE_TERMS:
        raise ValueError(f"objective must be one of {', '.join(OBJECTIVE_TERMS)}, got {objective!r}")
    total = None
    parts: dict[str, float] = {}
    for name, (tname, w) in OBJECTIVE_TERMS[objective].items():
        tgt = targets[tname]
        for key, sw in ((name, stage2_weight), (f"{name}_s1", stage1_weight)):
            if key not in out or sw == 0:
                continue
            term = F.l1_loss(out[key].float(), tgt.float())
            parts[key] = float(term.detach())
            total = term * (w * sw) if total is None else total + term * (w * sw)
    if total is None:
        raise ValueError(f"out: the model returned none of the outputs objective {objective} trains")
    return total, parts


# torchvision's VGG19 "features" layout: numbers are conv widths, "M" max-pools.
_VGG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512]


class VGG19Features(nn.Module):
    """VGG19 convolutional features up to relu5_4, keys compatible with torchvision's ``features.N``."""

    def __init__(self) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = 3
        for v in _VGG19:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
                c = int(v)
        self.features = nn.Sequential(*layers)
        for p in self.parameters():
            p.requires_grad_(False)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "VGG19Features":
        """Load from a local file (torchvision vgg19 state dict, .pth or .safetensors); never downloads."""
        if not os.path.isfile(path):
            raise ValueError(f"vgg_weights: {str(path)!r} is not a file (the perceptual term needs local weights)")
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        sd = {k: v for k, v in sd.items() if k.startswith("features.")}
        m = cls()
        missing, _ = m.load_state_dict(sd, strict=False)
        if missing:
            raise ValueError(f"vgg_weights: {str(path)!r} lacks VGG19 feature weights, e.g. {missing[0]}")
        return m.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)


def perceptual_loss(vgg: VGG19Features, out: dict[str, torch.Tensor], targets: dict[str, torch.Tensor],
                    objective: str) -> torch.Tensor:
    """MSE of VGG19 features (relu5_4) of the stage-2 HR outputs against their targets (normalised inputs,
    which is what VGG expects: the ImageNet normalisation is the network's own)."""
    terms = []
    for name, (tname, w) in OBJECTIVE_TERMS[objective].items():
        if name not in out:
            continue
        terms.append(w * F.mse_loss(vgg(out[name].float()), vgg(targets[tname].float())))
    if not terms:
        raise ValueError(f"objective {objective}: no output for the perceptual term")
    return torch.stack(terms).sum()
