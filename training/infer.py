"""The network's encodings of a training batch.

Inference (normalisation, flow encoding, padding, cropping) has one implementation, the user-facing
:class:`vsstar.model.Star` wrapper; training feeds the bare network, so it only needs the encodings.
"""
from __future__ import annotations

import torch

from vsstar.model import encode_flow, normalize

__all__ = ["encode_batch"]


def encode_batch(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A data-set batch ([0, 1] images, pixel flows, the times t) in the network's encodings."""
    out = {k: normalize(v) if v.dim() == 4 else v for k, v in batch.items() if not k.startswith("flow")}
    out["flow_f"] = encode_flow(batch["flow_f"])
    out["flow_b"] = encode_flow(batch["flow_b"])
    return out
