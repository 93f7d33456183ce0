"""Our weight format (safetensors, configuration in the metadata) and the bundled-model registry."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..flow.settings import FlowSettings
from .config import StarConfig
from .official import CheckpointError, check_state_dict, load_official
from .star import StarNet

__all__ = ["save_weights", "load_weights", "load_model", "bundled_models", "read_metadata", "is_pickled_checkpoint",
           "FORMAT", "BUNDLED_DIR"]

#: Identifies our files; bumped on incompatible changes.
FORMAT = "vsstar-star-1"
#: Bundled weights live in vsstar/weights/ (one <name>.safetensors each).
BUNDLED_DIR = Path(__file__).resolve().parent.parent / "weights"
_SAFETENSORS_MAGIC_MAX = 100 * 1024 * 1024  # a header larger than this is corrupt


def save_weights(net: StarNet, path: str | os.PathLike, **metadata: Any) -> None:
    """Write `net` as safetensors with its StarConfig and `metadata` (JSON-able values) in the header.

    Recorded: format, config (every knob: variant, scale, widths, depths, flow_refine, global_skip,
    objective), variant, scale, objective, global_skip, flow (every field of the FlowSettings the weights
    were trained with: ``net.flow_settings``, or a `flow` entry of `metadata` (a FlowSettings or a dict of
    changes to STARnet's)) and anything else passed in `metadata` (e.g. description, psnr, steps).
    """
    from safetensors.torch import save_file

    if not isinstance(net, StarNet):
        raise ValueError(f"net must be a StarNet, got {type(net).__name__}")
    cfg = net.config
    metadata = dict(metadata)
    try:
        flow = FlowSettings.from_dict(metadata.pop("flow", None), base=net.flow_settings)
    except ValueError as exc:
        raise ValueError(f"metadata 'flow': {exc}") from exc
    meta: dict[str, Any] = {"format": FORMAT, "config": cfg.to_dict(), "variant": cfg.variant,
                            "scale": cfg.scale, "objective": cfg.objective, "global_skip": cfg.global_skip,
                            "flow": flow.to_dict()}
    for key, value in metadata.items():
        if key in ("format", "config"):
            raise ValueError(f"metadata key {key!r} is reserved")
        meta[key] = value
    try:
        header = {k: json.dumps(v) for k, v in meta.items()}
    except TypeError as exc:
        raise ValueError(f"metadata values must be JSON-serialisable: {exc}") from exc
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, os.fspath(path), metadata=header)


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The decoded metadata of one of our safetensors files (CheckpointError if it is not one)."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise CheckpointError(f"weights file not found: {path}")
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (too short)")
        n = int.from_bytes(head, "little")
        if n <= 0 or n > _SAFETENSORS_MAGIC_MAX:
            raise CheckpointError(f"{path}: not a safetensors file (bad header length)")
        raw = fh.read(n)
    if len(raw) < n:
        raise CheckpointError(f"{path}: truncated safetensors header")
    try:
        header = json.loads(raw)
    except ValueError as exc:
        raise CheckpointError(f"{path}: not a safetensors file (header is not JSON)") from exc
    meta = header.get("__metadata__") or {}
    if meta.get("format") is None:
        raise CheckpointError(f"{path}: safetensors file without vsstar metadata (no 'format' entry)")
    try:
        out = {k: json.loads(v) for k, v in meta.items()}
    except ValueError as exc:
        raise CheckpointError(f"{path}: unreadable vsstar metadata") from exc
    if out.get("format") != FORMAT:
        raise CheckpointError(f"{path}: unsupported weights format {out.get('format')!r} (expected {FORMAT!r})")
    return out


def load_weights(path: str | os.PathLike) -> StarNet:
    """Load one of our safetensors files into a StarNet (eval mode, CPU, float32)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    meta = read_metadata(path)
    try:
        cfg = StarConfig.from_dict(meta["config"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: bad config in metadata ({exc})") from exc
    try:
        sd = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(f"{path}: unreadable or truncated safetensors ({str(exc)[:160]})") from exc
    try:
        # Files written before the flow was recorded were all trained with STARnet's settings.
        flow = FlowSettings.from_dict(meta.get("flow"))
    except ValueError as exc:
        raise CheckpointError(f"{path}: bad flow settings in metadata ({exc})") from exc
    with torch.device("meta"):
        net = StarNet(cfg)
    check_state_dict(net, sd, source=path)
    net = net.to_empty(device="cpu")
    net.load_state_dict({k: v.to(torch.float32) if v.is_floating_point() else v for k, v in sd.items()})
    net.flow_settings = flow
    return net.eval()


def bundled_models() -> dict[str, dict[str, Any]]:
    """Bundled weights: name -> {'path': str, **metadata} (name = file stem in vsstar/weights/)."""
    out: dict[str, dict[str, Any]] = {}
    if BUNDLED_DIR.is_dir():
        for f in sorted(BUNDLED_DIR.glob("*.safetensors")):
            try:
                meta = read_metadata(f)
            except CheckpointError:
                continue  # not ours (or damaged): not offered as a bundled model
            out[f.stem] = {"path": str(f), **meta}
    return out


def _looks_like_safetensors(head: bytes, size: int) -> bool:
    """True when a file of `size` bytes starting with `head` (>= 9 bytes read) is laid out like
    safetensors: a little-endian u64 header length, then a JSON '{'.

    Sniffing the first byte alone is not enough: a header length whose low byte is 0x80 looks like the
    pickle protocol marker.
    """
    if len(head) < 9:
        return False
    header_len = int.from_bytes(head[:8], "little")
    return head[8:9] == b"{" and 2 <= header_len <= size - 8


def is_pickled_checkpoint(path: str | os.PathLike) -> bool:
    """True when the file at `path` is a torch.save zip or a legacy pickle (an authors' or a training
    checkpoint), False for anything else (safetensors, which is then read as such)."""
    with open(path, "rb") as fh:
        head = fh.read(9)
    # A safetensors header length can also start with 0x80, the pickle protocol marker.
    return head[:2] == b"PK" or (head[:1] == b"\x80" and not _looks_like_safetensors(head, os.path.getsize(path)))


def load_model(name_or_path: str | os.PathLike, *, objective: str | None = None) -> StarNet:
    """A StarNet (eval mode, CPU) from a bundled name, our safetensors file or an authors' checkpoint.

    `objective` overrides the paper model the weights were trained as. Our files record it; an authors'
    checkpoint takes it from its file name where the name says it (``..._STAR_T_HR.pth``), else STAR.
    """
    if not isinstance(name_or_path, (str, os.PathLike)):
        raise ValueError(f"name_or_path must be a model name or a path, got {type(name_or_path).__name__}")
    key = os.fspath(name_or_path)
    bundled = bundled_models()
    if key in bundled:
        net = load_weights(bundled[key]["path"])
    elif os.path.isfile(key):
        if is_pickled_checkpoint(key):
            return load_official(key, objective=objective)
        net = load_weights(key)
    else:
        names = ", ".join(sorted(bundled)) or "none"
        raise ValueError(f"name_or_path must be a bundled model ({names}) or an existing file, got {key!r}")
    if objective is not None and objective != net.config.objective:
        net.config = net.config.replace(objective=objective)
    return net
